"""fetometry.data.synthetic: phantoms whose truth (mask, ellipse, HC) is exact."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest
from scipy import special

from fetometry.data.synthetic import (
    Phantom,
    PhantomParameterError,
    make_phantom,
    make_phantom_set,
    write_phantom_dataset,
)

SMALL = {"height": 180, "width": 270}


def _ramanujan_ii(a: float, b: float) -> float:
    h = (a - b) ** 2 / (a + b) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def _exact_perimeter(a: float, b: float) -> float:
    """4 a E(e^2), the complete elliptic integral of the second kind."""
    return 4 * a * special.ellipe(1 - (b / a) ** 2)


def _moments(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cx, cy, semi_major, semi_minor, angle in [0, pi)) of a filled region from its
    second moments: a filled ellipse has covariance eigenvalues a^2/4 and b^2/4."""
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, 1]
    angle = math.atan2(major[1], major[0]) % math.pi
    return cx, cy, 2 * math.sqrt(values[1]), 2 * math.sqrt(values[0]), angle


def _angle_diff(a: float, b: float) -> float:
    d = (a - b) % math.pi
    return min(d, math.pi - d)


def test_same_seed_same_phantom_and_generator_equals_seed():
    first = make_phantom(rng_or_seed=7, **SMALL)
    second = make_phantom(rng_or_seed=7, **SMALL)
    third = make_phantom(rng_or_seed=np.random.default_rng(7), **SMALL)
    for other in (second, third):
        np.testing.assert_array_equal(first.image, other.image)
        np.testing.assert_array_equal(first.mask, other.mask)
        assert (first.center_x_px, first.semi_major_px, first.angle_rad, first.hc_mm) == (
            other.center_x_px,
            other.semi_major_px,
            other.angle_rad,
            other.hc_mm,
        )


def test_image_and_mask_types_and_range():
    phantom = make_phantom(rng_or_seed=3)
    assert isinstance(phantom, Phantom)
    assert phantom.image.shape == phantom.mask.shape == (540, 800)
    assert phantom.image.dtype == np.float32 and phantom.mask.dtype == bool
    assert phantom.image.min() >= 0.0 and phantom.image.max() <= 1.0
    assert 0.05 < phantom.image.mean() < 0.5  # a dark ultrasound picture, not blank or white
    # Fan-shaped field of view: the top corners lie outside the sector and are black.
    assert phantom.image[:5, :5].max() == 0.0 and phantom.image[:5, -5:].max() == 0.0
    assert (phantom.image > 0).mean() > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_mask_matches_ellipse_parameters(seed):
    p = make_phantom(rng_or_seed=seed, speckle=0.0, noise=0.0)
    cx, cy, a, b, angle = _moments(p.mask)
    assert cx == pytest.approx(p.center_x_px, abs=0.1)
    assert cy == pytest.approx(p.center_y_px, abs=0.1)
    assert a == pytest.approx(p.semi_major_px, abs=0.3)
    assert b == pytest.approx(p.semi_minor_px, abs=0.3)
    assert _angle_diff(angle, p.angle_rad) < 0.01
    assert p.mask.sum() == pytest.approx(math.pi * p.semi_major_px * p.semi_minor_px, rel=0.005)


def test_explicit_parameters_are_respected():
    p = make_phantom(
        rng_or_seed=1,
        semi_major_px=150.0,
        semi_minor_px=120.0,
        angle_rad=1.5 * math.pi + 0.3,
        center=(420.0, 300.0),
        pixel_size_mm=0.12,
    )
    assert (p.semi_major_px, p.semi_minor_px, p.pixel_size_mm) == (150.0, 120.0, 0.12)
    assert p.angle_rad == pytest.approx(0.5 * math.pi + 0.3)  # taken modulo pi, same ellipse
    cx, cy, a, b, angle = _moments(p.mask)
    assert (cx, cy) == (pytest.approx(420.0, abs=0.1), pytest.approx(300.0, abs=0.1))
    assert _angle_diff(angle, 0.5 * math.pi + 0.3) < 0.01
    assert p.cephalic_index == pytest.approx(0.8)
    # Only the semi-major given: the semi-minor follows a cephalic index of 70-90%.
    q = make_phantom(rng_or_seed=4, semi_major_px=100.0, **SMALL)
    assert 70.0 <= q.semi_minor_px <= 90.0


def test_fixing_one_parameter_keeps_the_others():
    free = make_phantom(rng_or_seed=11, **SMALL)
    fixed = make_phantom(rng_or_seed=11, angle_rad=0.25, **SMALL)
    assert fixed.angle_rad == 0.25
    assert (fixed.semi_major_px, fixed.semi_minor_px) == (free.semi_major_px, free.semi_minor_px)
    assert fixed.pixel_size_mm == free.pixel_size_mm


@pytest.mark.parametrize("seed", [0, 9])
def test_hc_is_ramanujan_perimeter_times_pixel_size(seed):
    p = make_phantom(rng_or_seed=seed, **SMALL)
    perimeter_px = _ramanujan_ii(p.semi_major_px, p.semi_minor_px)
    assert p.hc_mm == pytest.approx(perimeter_px * p.pixel_size_mm, rel=1e-12)
    # And Ramanujan II is the true perimeter at these eccentricities (to 1e-9).
    assert p.hc_mm == pytest.approx(_exact_perimeter(p.semi_major_px, p.semi_minor_px) * p.pixel_size_mm, rel=1e-9)


def test_variety_across_seeds():
    phantoms = make_phantom_set(12, seed=2024, **SMALL)
    a = np.array([p.semi_major_px for p in phantoms])
    ci = np.array([p.cephalic_index for p in phantoms])
    angles = np.array([p.angle_rad for p in phantoms])
    pixel = np.array([p.pixel_size_mm for p in phantoms])
    centers = np.array([(p.center_x_px, p.center_y_px) for p in phantoms])
    assert np.all((ci >= 0.70) & (ci <= 0.90)) and np.ptp(ci) > 0.08
    assert np.all((angles >= 0) & (angles < math.pi)) and np.ptp(angles) > 1.5
    assert np.all((pixel >= 0.05) & (pixel <= 0.30)) and np.ptp(pixel) > 0.05
    assert np.ptp(a) > 0.1 * a.mean()
    assert np.ptp(centers[:, 0]) > 10 and np.ptp(centers[:, 1]) > 5
    assert len({p.image.tobytes() for p in phantoms}) == 12
    hc = np.array([p.hc_mm for p in phantoms])
    assert np.all((hc > 20) & (hc < 450))


def test_skull_ring_is_bright_and_inside_the_outer_edge():
    p = make_phantom(rng_or_seed=5, speckle=0.0, noise=0.0, shadow=False)
    mask = p.mask.astype(np.uint8)
    # Signed distance to the mask edge, computed independently of the generator.
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
    signed = np.where(p.mask, -inside + 0.5, outside - 0.5)
    visible = p.image > 0
    profile = {d: p.image[visible & (np.round(signed) == d)].mean() for d in range(-25, 12)}
    peak = max(profile, key=profile.get)
    assert -0.09 * p.semi_minor_px - 1 <= peak <= 0, profile
    brain = p.image[visible & (signed < -0.2 * p.semi_minor_px)].mean()
    assert profile[peak] > 2.0 * brain


def test_shadow_only_darkens():
    with_shadow = make_phantom(rng_or_seed=8, shadow=True, noise=0.0, **SMALL)
    without = make_phantom(rng_or_seed=8, shadow=False, noise=0.0, **SMALL)
    difference = with_shadow.image - without.image
    assert difference.max() <= 1e-5
    assert (difference < -0.05).sum() > 50


def test_speckle_adds_texture():
    smooth = make_phantom(rng_or_seed=6, speckle=0.0, noise=0.0, shadow=False, **SMALL)
    grainy = make_phantom(rng_or_seed=6, speckle=1.0, noise=0.0, shadow=False, **SMALL)
    core = cv2.erode(smooth.mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert grainy.image[core].std() > 1.5 * smooth.image[core].std()


def test_outline_is_thin_band_on_the_ellipse():
    p = make_phantom(rng_or_seed=2)
    outline = p.outline()
    perimeter = _ramanujan_ii(p.semi_major_px, p.semi_minor_px)
    assert outline.sum() == pytest.approx(2.0 * perimeter, rel=0.1)
    # Every outline pixel is within about a pixel of the mask's edge.
    edge = p.mask ^ cv2.erode(p.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    near_edge = cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert near_edge[outline].all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"semi_major_px": 50.0, "semi_minor_px": 60.0},
        {"semi_major_px": -5.0},
        {"semi_minor_px": float("nan")},
        {"center": (-10.0, 50.0)},
        {"height": 8},
        {"speckle": 2.0},
        {"pixel_size_mm": 5.0},
        {"semi_major_px": 5000.0},
        {"rng_or_seed": "seed"},
    ],
)
def test_invalid_parameters_raise_value_errors(kwargs):
    kwargs = {"rng_or_seed": 0, **SMALL, **kwargs}
    with pytest.raises(ValueError):
        make_phantom(**kwargs)


def test_invalid_axis_message_says_how_to_fix():
    with pytest.raises(PhantomParameterError, match="swap them"):
        make_phantom(rng_or_seed=0, semi_major_px=50.0, semi_minor_px=60.0, **SMALL)


def test_phantom_set_is_prefix_stable():
    five = make_phantom_set(5, seed=3, **SMALL)
    three = make_phantom_set(3, seed=3, **SMALL)
    for a, b in zip(three, five[:3]):
        np.testing.assert_array_equal(a.image, b.image)
    assert make_phantom_set(0, seed=3) == []


def _read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_write_hc18_dataset_layout_and_determinism(tmp_path):
    root = write_phantom_dataset(tmp_path / "a", 7, seed=5, size=(120, 180))
    again = write_phantom_dataset(tmp_path / "b", 7, seed=5, size=(120, 180))
    rows = _read_csv(root / "training_set_pixel_size_and_HC.csv")
    assert rows[0] == ["filename", "pixel size(mm)", "head circumference (mm)"]
    names = [r[0] for r in rows[1:]]
    assert len(names) == 7 and any("_2HC" in n for n in names)
    files = sorted(p.name for p in (root / "training_set").iterdir())
    assert files == sorted(names + [n.replace(".png", "_Annotation.png") for n in names])
    for name in files:
        assert (root / "training_set" / name).read_bytes() == (again / "training_set" / name).read_bytes()
    image = cv2.imread(str(root / "training_set" / names[0]), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(root / "training_set" / names[0].replace(".png", "_Annotation.png")), cv2.IMREAD_UNCHANGED)
    assert image.shape == mask.shape == (120, 180) and image.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    # Two images of one subject show the same head: same pixel size and HC.
    table = {r[0]: r[1:] for r in rows[1:]}
    second = next(n for n in names if "_2HC" in n)
    assert table[second] == table[second.replace("_2HC", "_HC")]


def test_written_hc_matches_phantom_and_mask(tmp_path):
    root = write_phantom_dataset(tmp_path, 2, seed=9, size=(270, 400))
    phantom = make_phantom_set(1, seed=9, height=270, width=400)[0]
    rows = _read_csv(root / "training_set_pixel_size_and_HC.csv")
    assert rows[1][0] == "000_HC.png"
    assert float(rows[1][1]) == pytest.approx(phantom.pixel_size_mm, rel=1e-9)
    assert float(rows[1][2]) == pytest.approx(phantom.hc_mm, abs=0.005)
    stored = cv2.imread(str(root / "training_set" / "000_HC_Annotation.png"), cv2.IMREAD_UNCHANGED) > 0
    np.testing.assert_array_equal(stored, phantom.mask)


def test_write_folder_layout_and_bad_layout(tmp_path):
    root = write_phantom_dataset(tmp_path, 3, seed=1, layout="folder", outline=True, size=(120, 180))
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(["000_HC.png", "001_HC.png", "001_2HC.png"])
    assert (root / "masks" / "001_2HC.png").is_file()
    rows = _read_csv(root / "pixel_sizes.csv")
    assert rows[0][-1] == "subject" and {r[-1] for r in rows[1:]} == {"000", "001"}
    outline = cv2.imread(str(root / "masks" / "000_HC.png"), cv2.IMREAD_UNCHANGED) > 0
    assert outline.mean() < 0.1  # a thin curve, not a filled head
    with pytest.raises(PhantomParameterError, match="'hc18' or 'folder'"):
        write_phantom_dataset(tmp_path / "x", 2, seed=0, layout="zip")
