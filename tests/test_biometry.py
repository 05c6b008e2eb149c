"""biometry: ellipse geometry, sub-pixel boundary, robust fit, HC/BPD/OFD, offset calibration."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetometry.biometry import (
    Ellipse,
    EllipseFitError,
    NoHeadError,
    calibrate_offset_px,
    ellipse_from_probability,
    fit_ellipse,
    hc18_row,
    largest_component,
    measure_ellipse,
    offset_for_reference_px,
    ramanujan_perimeter,
    subpixel_boundary,
)
from fetometry.io.pixel_size import PixelSizeError

SHAPE = (540, 800)  # HC18 image size (H, W)


def _angle_error(a: float, b: float) -> float:
    """Distance between two axis directions (mod pi)."""
    d = abs(a - b) % math.pi
    return min(d, math.pi - d)


def _perimeter(e: Ellipse) -> float:
    return ramanujan_perimeter(e.semi_major_px, e.semi_minor_px)


# ---------------------------------------------------------------------------------------
# Ellipse
# ---------------------------------------------------------------------------------------


def test_from_axes_sorts_axes_and_normalises_angle():
    e = Ellipse.from_axes(10, 20, 3, 5, 0.1)
    assert (e.semi_major_px, e.semi_minor_px) == (5, 3)
    assert e.angle_rad == pytest.approx(0.1 + math.pi / 2)
    assert Ellipse.from_axes(0, 0, 5, 3, -0.1).angle_rad == pytest.approx(math.pi - 0.1)
    assert Ellipse.from_axes(0, 0, 5, 3, math.pi).angle_rad == pytest.approx(0.0)
    assert Ellipse.from_axes(0, 0, 5, 3, -1e-17).angle_rad < math.pi
    assert e.axis_ratio == pytest.approx(0.6)


@pytest.mark.parametrize(
    "params",
    [(0, 0, 3, 5, 0.0), (0, 0, 5, 3, math.pi), (0, 0, 5, 3, -0.1), (0, 0, 5, 0, 0.0), (0, 0, math.nan, 3, 0.0)],
)
def test_ellipse_rejects_invalid_parameters(params):
    with pytest.raises(ValueError):
        Ellipse(*params)


def test_points_follow_the_angle_convention():
    # angle 0: major axis along +x; angle pi/2: major axis along +y (DOWN in the image).
    e0 = Ellipse(100.0, 50.0, 30.0, 10.0, 0.0)
    np.testing.assert_allclose(e0.points(4), [[130, 50], [100, 60], [70, 50], [100, 40]], atol=1e-9)
    e90 = Ellipse(100.0, 50.0, 30.0, 10.0, math.pi / 2)
    np.testing.assert_allclose(e90.points(1), [[100, 80]], atol=1e-9)
    tilted = Ellipse(10.0, 20.0, 7.0, 2.0, 0.7)
    radius = tilted.normalised_radius(*tilted.points(50).T)
    np.testing.assert_allclose(radius, 1.0, atol=1e-12)


def test_to_mask_uses_pixel_centers():
    # Lattice points within radius 2 of an integer center: 13 (1 + 4 + 4 + 4).
    circle = Ellipse(5.0, 5.0, 2.0, 2.0, 0.0).to_mask((11, 11))
    assert circle.sum() == 13
    assert circle[5, 7] and circle[7, 5] and not circle[6, 7]
    # Major axis at +45 degrees from +x towards +y: down-right is inside, up-right is not.
    tilted = Ellipse(50.0, 50.0, 20.0, 5.0, math.pi / 4).to_mask((100, 100))
    assert tilted[60, 60] and tilted[40, 40]
    assert not tilted[40, 60] and not tilted[60, 40]


def test_to_mask_matches_opencv_orientation():
    # cv2.ellipse is an independent rasteriser with the same angle sense.
    drawn = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(drawn, ((400.0, 270.0), (300.0, 120.0), 25.0), 255, -1)
    ours = Ellipse(400.0, 270.0, 150.0, 60.0, math.radians(25.0)).to_mask(SHAPE)
    disagreement = np.logical_xor(drawn > 0, ours).sum() / ours.sum()
    assert disagreement < 0.02


# ---------------------------------------------------------------------------------------
# Components and boundary
# ---------------------------------------------------------------------------------------


def test_largest_component_keeps_the_biggest_and_fills_holes():
    mask = np.zeros((60, 60), bool)
    mask[5:35, 5:35] = True
    mask[15:20, 15:20] = False  # hole
    mask[40:50, 40:50] = True  # smaller blob
    out = largest_component(mask)
    assert out[15:20, 15:20].all()
    assert not out[40:50, 40:50].any()
    assert out.sum() == 30 * 30


def test_largest_component_is_8_connected_and_handles_empty():
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[3, 3] = mask[4, 4] = True  # diagonal chain: one 8-connected component
    mask[8, 0] = mask[8, 1] = True
    assert largest_component(mask).sum() == 3
    assert not largest_component(np.zeros((10, 10), bool)).any()
    assert not largest_component(mask, min_area_px=4).any()


def test_subpixel_boundary_of_a_binary_mask_lies_on_pixel_edges():
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True  # outermost pixel centers at 10 and 19
    xy = subpixel_boundary(mask)
    assert len(xy) == 40  # 10 edge segments per side
    on_vertical = np.isclose(xy[:, 0], 9.5) | np.isclose(xy[:, 0], 19.5)
    on_horizontal = np.isclose(xy[:, 1], 9.5) | np.isclose(xy[:, 1], 19.5)
    assert (on_vertical | on_horizontal).all()


def test_subpixel_boundary_interpolates_a_soft_map():
    # Radial linear ramp crossing 0.5 at r = 30: sub-pixel points must sit on that circle.
    rows, cols = np.mgrid[:100, :100]
    r = np.hypot(cols - 50.3, rows - 49.6)
    prob = np.clip(0.5 + (30.0 - r) / 8.0, 0.0, 1.0)
    xy = subpixel_boundary(prob, level=0.5)
    radii = np.hypot(xy[:, 0] - 50.3, xy[:, 1] - 49.6)
    assert np.abs(radii - 30.0).max() < 0.02
    # Thresholding alone would be off by up to ~0.7 px.
    assert len(subpixel_boundary(np.zeros((20, 20)))) == 0


def test_subpixel_boundary_ignores_the_image_border():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 5:15] = True  # touches the top border
    xy = subpixel_boundary(mask)
    assert (xy[:, 1] >= 0).all()  # no points invented along y = -0.5
    assert len(xy) == 10 + 2 * 10  # bottom edge + two sides


# ---------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------

ROUND_TRIPS = [
    # cx, cy, a, b, angle: varied size, angle, eccentricity
    (400.3, 270.7, 250.0, 190.0, 0.3),
    (200.0, 150.0, 120.0, 90.0, 2.0),
    (100.5, 100.5, 40.0, 38.0, 1.0),
    (400.0, 270.0, 300.0, 150.0, 0.0),
    (160.2, 120.8, 60.0, 30.0, 3.0),
    (500.0, 300.0, 80.0, 70.0, math.pi / 2),
]


@pytest.mark.parametrize("cx, cy, a, b, angle", ROUND_TRIPS)
def test_round_trip_on_analytic_masks(cx, cy, a, b, angle):
    truth = Ellipse.from_axes(cx, cy, a, b, angle)
    fitted = ellipse_from_probability(truth.to_mask(SHAPE))
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=2e-3)  # spec: 0.5%
    # 0.1 px: the quantised mask's own pixel centroid is off by up to ~0.06 px.
    assert fitted.center_x_px == pytest.approx(cx, abs=0.1)
    assert fitted.center_y_px == pytest.approx(cy, abs=0.1)
    assert fitted.semi_major_px == pytest.approx(truth.semi_major_px, abs=0.15)
    assert fitted.semi_minor_px == pytest.approx(truth.semi_minor_px, abs=0.15)
    if truth.axis_ratio < 0.9:  # the angle of a near-circle is ill-defined
        assert _angle_error(fitted.angle_rad, truth.angle_rad) < 0.01


@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 120.0, 165.0])
def test_round_trip_on_opencv_drawn_masks(angle_deg):
    drawn = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(drawn, ((390.0, 260.0), (2 * 200.0, 2 * 130.0), angle_deg), 255, -1)
    fitted = ellipse_from_probability(drawn > 0)
    expected_hc = ramanujan_perimeter(200.0, 130.0)
    assert _perimeter(fitted) == pytest.approx(expected_hc, rel=5e-3)
    assert _angle_error(fitted.angle_rad, math.radians(angle_deg)) < 0.01
    assert math.hypot(fitted.center_x_px - 390.0, fitted.center_y_px - 260.0) < 0.5


def test_fit_is_robust_to_noise_and_outliers():
    rng = np.random.default_rng(7)
    truth = Ellipse.from_axes(300.0, 250.0, 150.0, 100.0, 0.7)
    inliers = truth.points(400) + rng.normal(0.0, 0.5, (400, 2))
    outliers = rng.uniform([0, 0], [600, 500], (130, 2))  # 25% of all points
    fitted = fit_ellipse(np.concatenate([inliers, outliers]))
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=5e-3)
    assert math.hypot(fitted.center_x_px - 300.0, fitted.center_y_px - 250.0) < 1.0
    assert _angle_error(fitted.angle_rad, 0.7) < 0.02
    # Without outlier rejection the same data would be far off: prove the test has teeth.
    naive = cv2.fitEllipse(np.concatenate([inliers, outliers]).astype(np.float32))
    naive_hc = ramanujan_perimeter(naive[1][0] / 2, naive[1][1] / 2)
    assert abs(naive_hc / _perimeter(truth) - 1) > 0.02


def test_a_clean_outline_skips_the_subsets_and_ends_on_the_same_ellipse(monkeypatch):
    """The all-point fit starts a clean outline (median residual within 2% of the radius);
    the inlier refit and refinement then give what the least-median search gives."""
    import fetometry.biometry.ellipse as ellipse_module

    rng = np.random.default_rng(3)
    truth = Ellipse.from_axes(400.0, 270.0, 160.0, 120.0, 0.4)
    wobble = 1 + 0.01 * np.sin(5 * np.linspace(0, 2 * np.pi, 900, endpoint=False))[:, None]  # a network's smooth wobble
    centre = np.array([400.0, 270.0])
    points = centre + (truth.points(900) - centre) * wobble + rng.normal(0.0, 0.4, (900, 2))
    searched = []
    original = ellipse_module._direct_fit_batch
    monkeypatch.setattr(ellipse_module, "_direct_fit_batch", lambda subsets: searched.append(1) or original(subsets))
    fast = fit_ellipse(points)
    assert not searched  # the clean outline took no random subsets
    monkeypatch.setattr(ellipse_module, "_CLEAN_OUTLINE_MEDIAN", 0.0)
    full = fit_ellipse(points)
    assert searched  # ... and with the shortcut off it did
    for name in ("center_x_px", "center_y_px", "semi_major_px", "semi_minor_px", "angle_rad"):
        assert getattr(fast, name) == pytest.approx(getattr(full, name), abs=1e-9)


def test_an_outline_with_outliers_still_takes_the_least_median_search(monkeypatch):
    import fetometry.biometry.ellipse as ellipse_module

    rng = np.random.default_rng(7)
    truth = Ellipse.from_axes(300.0, 250.0, 150.0, 100.0, 0.7)
    points = np.concatenate([truth.points(400), rng.uniform([0, 0], [600, 500], (130, 2))])
    searched = []
    original = ellipse_module._direct_fit_batch
    monkeypatch.setattr(ellipse_module, "_direct_fit_batch", lambda subsets: searched.append(1) or original(subsets))
    fit_ellipse(points)
    assert searched


def test_fit_of_exact_points_is_exact():
    truth = Ellipse.from_axes(-3.0, 12.0, 9.0, 4.0, 2.5)
    fitted = fit_ellipse(truth.points(7))
    assert fitted.center_x_px == pytest.approx(-3.0, abs=1e-6)
    assert fitted.center_y_px == pytest.approx(12.0, abs=1e-6)
    assert fitted.semi_major_px == pytest.approx(9.0, abs=1e-6)
    assert fitted.semi_minor_px == pytest.approx(4.0, abs=1e-6)
    assert fitted.angle_rad == pytest.approx(2.5, abs=1e-6)


def test_fit_works_on_a_partial_arc():
    truth = Ellipse.from_axes(0.0, 0.0, 100.0, 70.0, 0.4)
    arc = truth.points(360)[:220]  # ~60% of the outline
    fitted = fit_ellipse(arc)
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=1e-4)


def _hyperbola_points() -> np.ndarray:
    y = np.linspace(-2.0, 2.0, 50)
    x = np.sqrt(1.0 + y**2)
    return np.concatenate([np.stack([x, y], 1), np.stack([-x, y], 1)])


@pytest.mark.parametrize(
    "points",
    [
        np.array([[0, 0], [1, 0], [0, 1], [1, 1.0]]),  # too few
        np.stack([np.arange(20.0), 2 * np.arange(20.0) + 1], 1),  # collinear
        np.repeat([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]], 4, axis=0),  # 3 distinct points
        _hyperbola_points(),
        np.array([[0, 0], [1, 0], [0, 1], [1, 1.0], [np.nan, 2]]),
        np.zeros((10, 3)),
    ],
    ids=["too-few", "collinear", "duplicates", "hyperbola", "nan", "bad-shape"],
)
def test_fit_rejects_points_that_do_not_determine_an_ellipse(points):
    with pytest.raises(EllipseFitError):
        fit_ellipse(points)


def test_fit_error_is_a_value_error():
    assert issubclass(EllipseFitError, ValueError) and issubclass(NoHeadError, ValueError)


# ---------------------------------------------------------------------------------------
# From a probability map
# ---------------------------------------------------------------------------------------


def test_probability_map_with_blob_and_hole():
    truth = Ellipse.from_axes(400.0, 260.0, 180.0, 120.0, 2.2)
    prob = cv2.GaussianBlur(truth.to_mask(SHAPE).astype(np.float32), (0, 0), 3)
    prob[50:70, 50:80] = 0.9  # spurious smaller component
    prob[250:262, 390:402] = 0.1  # hole inside the head
    fitted = ellipse_from_probability(prob)
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=2e-3)
    assert math.hypot(fitted.center_x_px - 400.0, fitted.center_y_px - 260.0) < 0.1


def test_head_cut_by_the_image_border():
    truth = Ellipse.from_axes(150.0, 270.0, 200.0, 140.0, 0.4)  # extends past x = 0
    mask = truth.to_mask(SHAPE)
    assert mask[:, 0].any()
    fitted = ellipse_from_probability(mask)
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=2e-3)


def test_uint8_mask_is_accepted():
    truth = Ellipse.from_axes(300.0, 200.0, 100.0, 80.0, 1.2)
    mask = np.where(truth.to_mask(SHAPE), 255, 0).astype(np.uint8)
    fitted = ellipse_from_probability(mask)
    assert _perimeter(fitted) == pytest.approx(_perimeter(truth), rel=2e-3)


def test_no_head_raises():
    with pytest.raises(NoHeadError):
        ellipse_from_probability(np.zeros(SHAPE, np.float32))
    tiny = np.zeros(SHAPE, bool)
    tiny[10:15, 10:15] = True  # 25 px
    with pytest.raises(NoHeadError, match="min"):
        ellipse_from_probability(tiny)
    below = np.full(SHAPE, 0.3, np.float32)
    with pytest.raises(NoHeadError):
        ellipse_from_probability(below, threshold=0.5)


@pytest.mark.parametrize(
    "prob, match",
    [
        (np.full((50, 50), 3.0), "sigmoid"),
        (np.zeros((1, 50, 50)), "2D"),
        (np.full((50, 50), np.nan), "NaN"),
    ],
)
def test_bad_probability_maps_say_how_to_fix(prob, match):
    with pytest.raises(ValueError, match=match):
        ellipse_from_probability(prob)


# ---------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------


def test_ramanujan_check_values():
    assert ramanujan_perimeter(50, 40) == pytest.approx(283.617, abs=5e-4)  # Ramanujan 1914, formula II
    assert ramanujan_perimeter(40, 50) == pytest.approx(283.617, abs=5e-4)
    assert ramanujan_perimeter(10, 10) == pytest.approx(2 * math.pi * 10, rel=1e-12)
    # Degenerate ellipse (a segment of length 2a) has perimeter 4a; Ramanujan II gives
    # pi * 14/11 * a = 3.99839 a (0.04% low).
    assert ramanujan_perimeter(1.0, 0.0) == pytest.approx(math.pi * 14 / 11, rel=1e-12)
    np.testing.assert_allclose(
        ramanujan_perimeter(np.array([50, 10]), np.array([40, 10])), [283.6166789, 62.8318531], rtol=1e-8
    )
    with pytest.raises(ValueError):
        ramanujan_perimeter(-1, 2)


@pytest.mark.parametrize("ratio, rel", [(0.9, 1e-12), (0.5, 1e-9), (0.1, 2e-5)])
def test_ramanujan_against_the_exact_elliptic_integral(ratio, rel):
    from scipy.special import ellipe  # exact perimeter 4a E(m), m = 1 - b^2/a^2

    exact = 4 * 50.0 * ellipe(1 - ratio**2)
    assert ramanujan_perimeter(50.0, 50.0 * ratio) == pytest.approx(exact, rel=rel)


def test_measure_ellipse_converts_with_the_pixel_size():
    e = Ellipse(200.0, 150.0, 100.0, 80.0, 0.25)
    m = measure_ellipse(e, 0.1)
    assert m.ofd_mm == pytest.approx(20.0)
    assert m.bpd_mm == pytest.approx(16.0)
    assert m.cephalic_index == pytest.approx(80.0)
    assert m.hc_mm == pytest.approx(ramanujan_perimeter(10.0, 8.0))
    assert (m.center_x_mm, m.center_y_mm) == pytest.approx((20.0, 15.0))
    assert m.angle_rad == 0.25 and m.offset_px == 0.0
    assert set(m.to_dict()) >= {"hc_mm", "bpd_mm", "ofd_mm", "cephalic_index", "pixel_size_mm", "offset_px"}


def test_measure_ellipse_subtracts_the_offset_from_both_axes():
    e = Ellipse(200.0, 150.0, 100.0, 80.0, 0.25)
    m = measure_ellipse(e, 0.2, offset_px=1.4)
    assert m.semi_axes_a_mm == pytest.approx(98.6 * 0.2)
    assert m.semi_axes_b_mm == pytest.approx(78.6 * 0.2)
    assert m.hc_mm == pytest.approx(ramanujan_perimeter(98.6, 78.6) * 0.2)
    assert m.center_x_mm == pytest.approx(40.0)  # the offset does not move the center
    with pytest.raises(ValueError, match="offset"):
        measure_ellipse(e, 0.2, offset_px=80.0)


@pytest.mark.parametrize("pixel_size", [None, 0.0, -0.1, 5.0, "abc", math.nan])
def test_measure_ellipse_requires_a_plausible_pixel_size(pixel_size):
    with pytest.raises(PixelSizeError):
        measure_ellipse(Ellipse(1.0, 1.0, 2.0, 1.0, 0.0), pixel_size)


def test_hc18_row_convention():
    e = Ellipse(400.0, 270.0, 150.0, 100.0, 2.0)
    row = hc18_row(e, 0.1, offset_px=1.0)
    assert list(row) == ["center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad"]
    assert row["center_x_mm"] == pytest.approx(40.0)  # x = column
    assert row["center_y_mm"] == pytest.approx(27.0)  # y = row
    assert row["semi_axes_a_mm"] == pytest.approx(14.9)  # major, minus the offset
    assert row["semi_axes_b_mm"] == pytest.approx(9.9)
    assert row["angle_rad"] == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------
# Offset calibration
# ---------------------------------------------------------------------------------------


def test_offset_for_reference_inverts_the_perimeter():
    e = Ellipse(0.0, 0.0, 120.0, 90.0, 0.0)
    reference = ramanujan_perimeter(118.6, 88.6) * 0.15
    assert offset_for_reference_px(e, 0.15, reference) == pytest.approx(1.4, abs=1e-7)
    # A reference larger than the fit gives a negative offset.
    assert offset_for_reference_px(e, 0.15, ramanujan_perimeter(125, 95) * 0.15) == pytest.approx(-5.0, abs=1e-7)
    with pytest.raises(ValueError, match="too small"):
        offset_for_reference_px(e, 0.15, 1.0)


def test_calibration_recovers_a_known_outward_offset_from_masks():
    rng = np.random.default_rng(3)
    ellipses, pixel_sizes, references = [], [], []
    for _ in range(8):
        a = rng.uniform(60, 240)
        b = a * rng.uniform(0.65, 0.95)
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(300, 500), rng.uniform(220, 320)
        pixel_size = rng.uniform(0.06, 0.3)
        drawn = Ellipse.from_axes(cx, cy, a + 1.4, b + 1.4, angle)  # 1.4 px outside the truth
        ellipses.append(ellipse_from_probability(drawn.to_mask(SHAPE)))
        pixel_sizes.append(pixel_size)
        references.append(ramanujan_perimeter(a, b) * pixel_size)
    offset = calibrate_offset_px(ellipses, pixel_sizes, references)
    assert offset == pytest.approx(1.4, abs=0.05)
    corrected = [measure_ellipse(e, ps, offset_px=offset).hc_mm for e, ps in zip(ellipses, pixel_sizes)]
    np.testing.assert_allclose(corrected, references, rtol=2e-3)


def test_calibration_converts_each_offset_to_the_reference_frame_by_its_scale_ratio():
    """A head drawn 0.7 px outside on a grid of half the reference's resolution (ratio 2:
    its pass saw twice as many canvas pixels per image pixel) is 1.4 reference px out."""
    ellipses, sizes, references = [], [], []
    for a, b, size in ((120.0, 100.0, 0.2), (90.0, 70.0, 0.25), (150.0, 120.0, 0.3)):
        ellipses.append(Ellipse(400.0, 270.0, a + 0.7, b + 0.7, 0.0))
        sizes.append(size)
        references.append(ramanujan_perimeter(a, b) * size)
    assert calibrate_offset_px(ellipses, sizes, references) == pytest.approx(0.7, abs=1e-6)
    assert calibrate_offset_px(ellipses, sizes, references, scale_ratios=[2.0] * 3) == pytest.approx(1.4, abs=1e-6)
    with pytest.raises(ValueError, match="one scale ratio"):
        calibrate_offset_px(ellipses, sizes, references, scale_ratios=[2.0])


def test_calibration_validates_inputs():
    e = Ellipse(0.0, 0.0, 100.0, 80.0, 0.0)
    with pytest.raises(ValueError, match="one pixel size"):
        calibrate_offset_px([e, e], [0.1], [50.0, 50.0])
    with pytest.raises(ValueError, match="at least one"):
        calibrate_offset_px([e], [0.1], [0.5])  # reference impossible for this ellipse


# ---------------------------------------------------------------------------------------
# Real HC18 reference masks (only where the shared data exists)
# ---------------------------------------------------------------------------------------


def _hc18_root() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "data" / "hc18", repo / "shared" / "data" / "hc18"):
        if (candidate / "training_set").is_dir():
            return candidate
    return None


@pytest.mark.shared
def test_hc18_reference_masks_reproduce_the_csv_hc():
    root = _hc18_root()
    if root is None:
        pytest.skip("shared/data/hc18 is not available")
    from fetometry.data.hc18 import load_hc18

    samples = [s for s in load_hc18(root) if s.mask_path and s.pixel_size_mm and s.hc_mm][:40]
    fits = [ellipse_from_probability(s.load_mask()) for s in samples]
    # Split by SUBJECT (alternating sorted subjects): calibrate on one half, test on the other.
    subjects = sorted({s.subject for s in samples})
    calibration = set(subjects[::2])
    cal = [i for i, s in enumerate(samples) if s.subject in calibration]
    held_out = [i for i, s in enumerate(samples) if s.subject not in calibration]
    assert len(cal) >= 10 and len(held_out) >= 10
    offset = calibrate_offset_px(
        [fits[i] for i in cal], [samples[i].pixel_size_mm for i in cal], [samples[i].hc_mm for i in cal]
    )
    assert 1.2 < offset < 1.6  # README: about 1.4 px
    errors = [
        measure_ellipse(fits[i], samples[i].pixel_size_mm, offset_px=offset).hc_mm - samples[i].hc_mm for i in held_out
    ]
    assert np.mean(np.abs(errors)) <= 0.3


def test_largest_component_fills_holes_exactly_as_a_whole_frame_fill():
    """The bounding-box fill (a speed-up for video frames) equals scipy's fill of the whole frame."""
    import cv2
    from scipy import ndimage

    from fetometry.biometry.ellipse import largest_component

    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((40, 60)) < rng.uniform(0.3, 0.7)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        best = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
        np.testing.assert_array_equal(largest_component(mask), ndimage.binary_fill_holes(labels == best))


def test_fill_holes_equals_scipy_on_random_masks():
    """The flood fill is scipy's binary_fill_holes (default structure), edges and all."""
    from scipy import ndimage

    from fetometry.masks import fill_holes

    rng = np.random.default_rng(1)
    for _ in range(200):
        shape = (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
        mask = rng.random(shape) < rng.uniform(0.1, 0.9)
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_geometric_jacobian_matches_finite_differences():
    from fetometry.biometry.ellipse import _geometric_distance, _geometric_jacobian

    rng = np.random.default_rng(2)
    for _ in range(20):
        params = np.array([rng.normal(), rng.normal(), rng.uniform(1, 2), rng.uniform(0.3, 1), rng.uniform(0, 3)])
        xy = rng.normal(size=(60, 2)) * 1.5
        distance, jacobian = _geometric_jacobian(params, xy)
        np.testing.assert_allclose(distance, _geometric_distance(params, xy))
        numeric = np.stack(
            [
                (_geometric_distance(params + step, xy) - _geometric_distance(params - step, xy)) / 2e-6
                for step in np.eye(5) * 1e-6
            ],
            axis=1,
        )
        np.testing.assert_allclose(jacobian, numeric, atol=1e-6 * np.abs(jacobian).max())


def test_geometric_refine_reaches_the_huber_minimum_that_scipy_finds():
    """The Levenberg-Marquardt refinement ends where scipy's least_squares (Huber loss)
    ends, from a start that is off in every parameter, with 10% gross outliers."""
    from scipy import optimize

    from fetometry.biometry.ellipse import _geometric_distance, _geometric_refine, _params

    rng = np.random.default_rng(3)
    truth = Ellipse(0.1, -0.2, 1.3, 0.8, 0.7)
    xy = truth.points(400) + rng.normal(scale=0.01, size=(400, 2))
    xy[::10] *= 1.3  # gross outliers
    start = Ellipse(0.15, -0.1, 1.2, 0.85, 0.6)
    sigma = 0.04
    ours = _params(_geometric_refine(xy, start, sigma))
    theirs = optimize.least_squares(
        _geometric_distance, _params(start), args=(xy,), loss="huber", f_scale=sigma, x_scale="jac", xtol=1e-12
    ).x
    np.testing.assert_allclose(ours[:4], theirs[:4], atol=1e-7)
    assert _angle_error(ours[4], theirs[4]) < 1e-7
    np.testing.assert_allclose(ours[:4], _params(truth)[:4], atol=5e-3)


def test_component_boundary_equals_the_four_scan_form_and_the_listed_centroid():
    """The outline's crossings are found with one comparison per axis and the centroid
    from row and column counts; both must give exactly the points, in exactly the order,
    of one scan per crossing kind and the mean of np.nonzero's indices."""
    from fetometry.biometry.ellipse import _centroid, _component_boundary, largest_component

    def four_scans(prob, component, level, origin):
        points = []
        for axis in (0, 1):
            first, second = [slice(None)] * 2, [slice(None)] * 2
            first[axis], second[axis] = slice(None, -1), slice(1, None)
            inside_a, inside_b = component[tuple(first)], component[tuple(second)]
            value_a, value_b = prob[tuple(first)], prob[tuple(second)]
            for a_in in (True, False):
                rows, cols = np.nonzero(inside_a & ~inside_b if a_in else ~inside_a & inside_b)
                v_in = (value_a if a_in else value_b)[rows, cols].astype(float)
                v_out = (value_b if a_in else value_a)[rows, cols].astype(float)
                t = np.clip((v_in - level) / np.maximum(v_in - v_out, 1e-12), 0.0, 1.0)
                step = t if a_in else 1.0 - t
                y, x = (rows + origin[0]).astype(float), (cols + origin[1]).astype(float)
                y, x = (y + step, x) if axis == 0 else (y, x + step)
                points.append(np.stack([x, y], axis=1))
        xy = np.concatenate(points)
        rows, cols = np.nonzero(component)
        rows, cols = rows + origin[0], cols + origin[1]
        return xy[np.argsort(np.arctan2(xy[:, 1] - rows.mean(), xy[:, 0] - cols.mean()), kind="stable")]

    rng = np.random.default_rng(4)
    for _ in range(50):
        prob = cv2.GaussianBlur(rng.random((60, 90)).astype(np.float32), (0, 0), 3.0)
        prob = (prob - prob.min()) / (prob.max() - prob.min())
        component = largest_component(prob >= 0.5)
        origin = (int(rng.integers(0, 500)), int(rng.integers(0, 500)))
        np.testing.assert_array_equal(
            _component_boundary(prob, component, 0.5, origin=origin), four_scans(prob, component, 0.5, origin)
        )
        rows, cols = np.nonzero(component)
        assert _centroid(component, origin) == ((rows + origin[0]).mean(), (cols + origin[1]).mean())


def test_head_from_probability_returns_the_component_it_fitted():
    from fetometry.biometry.ellipse import ellipse_from_probability, head_from_probability, largest_component

    truth = Ellipse(400.0, 270.0, 150.0, 110.0, 0.4)
    prob = truth.to_mask((540, 800)).astype(np.float32) * 0.9
    prob[20:30, 20:30] = 0.8  # a fragment the component leaves out
    ellipse, head = head_from_probability(prob)
    assert ellipse == ellipse_from_probability(prob)
    whole = np.zeros(prob.shape, bool)
    (row, col), (height, width) = head.origin, head.pixels.shape
    whole[row : row + height, col : col + width] = head.pixels
    np.testing.assert_array_equal(whole, largest_component(prob >= 0.5))
    assert head.threshold == 0.5
