"""Other scanners and capture styles: the training augmentation and the out-of-domain renderer."""

from __future__ import annotations

import numpy as np
import pytest

from fetometry.biometry.ellipse import ellipse_from_probability
from fetometry.biometry.measures import measure_ellipse
from fetometry.data.scanner_styles import (
    BeamWidthAugmenter,
    ScannerAugmenter,
    beam_blur,
    lateral_dropout,
    lateral_wall_loss,
    place_in_frame,
    sector,
)
from fetometry.data.synthetic import make_phantom
from fetometry.evaluation.cross_scanner import STYLES, frame_filling, large_head, lateral_blur, render
from fetometry.training.config import TrainConfig


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(
        rng_or_seed=3, semi_major_px=150, semi_minor_px=120, angle_rad=0.3, center=(400, 270), pixel_size_mm=0.15
    )


def _ring(height=256, width=384, a=110, b=90):
    """A bright elliptical skull ring on grey tissue, and its filled mask."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.sqrt(((x - width / 2) / a) ** 2 + ((y - height / 2) / b) ** 2)
    image = np.full((height, width), 0.3, np.float32)
    image[np.abs(r - 1) < 0.04] = 0.95
    return image, (r <= 1.02).astype(np.float32)


def test_scanner_augmenter_is_deterministic_and_keeps_shapes(phantom):
    augment = ScannerAugmenter()
    image, mask = phantom.image[::2, ::2].copy(), phantom.mask[::2, ::2].astype(np.float32)
    changed = 0
    for seed in range(12):
        a, m = augment(image, mask, np.random.default_rng(seed))
        b, n = augment(image, mask, np.random.default_rng(seed))
        assert np.array_equal(a, b) and np.array_equal(m, n)
        assert a.shape == image.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        assert m.sum() > 0.2 * mask.sum()  # the head is still there (zoom may clip it, never remove it)
        changed += not np.allclose(a, image)
    assert changed >= 10
    same, same_mask = ScannerAugmenter(strength=0)(image, mask, np.random.default_rng(0))
    assert np.array_equal(same, image) and np.array_equal(same_mask, mask)


def test_capture_overlays_never_touch_the_head():
    image, mask = _ring()
    augment = ScannerAugmenter()
    rng = np.random.default_rng(5)
    framed, moved = place_in_frame(image, mask, image.shape, 0.6, (100, 20), background=0.2)
    before = framed.copy()
    augment._overlays(framed, moved, rng, (100, 20), 0.6)
    inside = moved > 0.05
    assert np.array_equal(framed[inside], before[inside])
    assert not np.array_equal(framed, before)  # something was burned in around it


def test_lateral_dropout_fades_the_side_walls_not_the_top_and_bottom():
    image, mask = _ring()
    out = lateral_dropout(image, mask, darkness=0.9, band_px=6)
    h, w = image.shape
    side = (slice(h // 2 - 10, h // 2 + 10), slice(w // 2 + 100, w // 2 + 120))
    top = (slice(h // 2 - 100, h // 2 - 80), slice(w // 2 - 10, w // 2 + 10))
    assert out[side].max() < 0.6 * image[side].max()
    assert out[top].max() == pytest.approx(image[top].max(), abs=0.05)
    assert np.all(out <= image + 1e-6)  # it only removes echo


def test_lateral_wall_loss_blacks_out_the_side_walls_and_keeps_the_top_and_bottom():
    image, mask = _ring()
    lost = lateral_wall_loss(image, mask, 45.0, 0.08, 1.0)
    h, w = image.shape
    side = (slice(h // 2 - 5, h // 2 + 5), slice(w // 2 + 105, w // 2 + 115))  # the right wall, a = 110
    top = (slice(h // 2 - 93, h // 2 - 87), slice(w // 2 - 5, w // 2 + 5))  # the top wall, b = 90
    assert image[side].max() > 0.9 and lost[side].max() < 0.05
    np.testing.assert_array_equal(lost[top], image[top])
    assert lateral_wall_loss(image, np.zeros_like(mask), 45.0, 0.08, 1.0) is image  # no head: nothing to lose
    half = lateral_wall_loss(image, mask, 45.0, 0.08, 0.5)
    assert half[side].max() == pytest.approx(0.5 * image[side].max(), abs=0.05)


def test_the_wall_loss_augmenter_is_a_recipe_choice_and_darkens_the_side_walls(monkeypatch):
    from fetometry.data.scanner_styles import ScannerAugmenter, WallLossAugmenter

    assert TrainConfig.from_dict({"augmentation": "scanners-walls"}).augmentation == "scanners-walls"
    monkeypatch.setattr(ScannerAugmenter, "_physics", lambda self, image, mask, rng: image)  # only the new step
    monkeypatch.setattr(WallLossAugmenter, "P_WALL_LOSS", 1.0)
    image, mask = _ring()
    h, w = image.shape
    side = (slice(h // 2 - 5, h // 2 + 5), slice(w // 2 + 100, w // 2 + 120))
    top = (slice(h // 2 - 93, h // 2 - 87), slice(w // 2 - 5, w // 2 + 5))
    for seed in range(5):
        lost = WallLossAugmenter(seed=seed)._physics(image, mask, np.random.default_rng(seed))
        assert lost[side].mean() < 0.8 * image[side].mean()  # a band of 3-7% of 180 px, 60-95% dark
        np.testing.assert_array_equal(lost[top], image[top])


def test_lateral_blur_smears_the_side_walls_more_with_depth_and_keeps_the_top_and_bottom():
    """Across the beam (horizontally) the walls widen, along it (vertically) they stay
    sharp; deeper rows are blurred more; the black outside the fan stays black."""
    image, mask = _ring(height=320, width=384, a=110, b=120)
    image[:, :8] = 0.0  # outside the fan
    out, same_mask, pixel = lateral_blur(image, mask, 0.1)  # sigma 5 px at the top, 12 px at the bottom
    assert same_mask is mask and pixel == 0.1
    h, w = image.shape
    side = out[h // 2, w // 2 + 95 : w // 2 + 125]  # across the right wall
    top = out[h // 2 - 135 : h // 2 - 105, w // 2]  # across the top wall
    assert side.max() < 0.75 and (side > 0.4).sum() > (image[h // 2, w // 2 + 95 : w // 2 + 125] > 0.4).sum()
    assert top.max() > 0.85  # a wall across the beam keeps its echo
    step = np.zeros((320, 384), np.float32)
    step[:, 192:] = 0.8
    blurred, _, _ = lateral_blur(step + 0.1, mask, 0.1)
    width_top = ((blurred[5] > 0.2) & (blurred[5] < 0.8)).sum()
    width_bottom = ((blurred[-5] > 0.2) & (blurred[-5] < 0.8)).sum()
    assert width_bottom > 1.8 * width_top
    assert np.all(out[:, :8] == 0.0)


def test_the_beam_width_augmenter_adds_the_lateral_blur_to_the_scanner_styles(phantom, monkeypatch):
    """With the blur certain, an augmented ring's side walls come out wider than the
    same draw without it (the base styles use the random numbers before the blur's),
    and the top and bottom walls keep their echo."""
    image, mask = _ring(height=256, width=384, a=110, b=90)
    monkeypatch.setattr(BeamWidthAugmenter, "P_BEAM_BLUR", 1.0)
    for name in ("P_TGC", "P_COMPRESS", "P_RESAMPLE", "P_LATERAL", "P_LARGE_HEAD", "P_CAPTURE"):
        monkeypatch.setattr(ScannerAugmenter, name, 0.0)
    monkeypatch.setattr("fetometry.data.augment.Augmenter.__call__", lambda self, i, m, rng: (i.copy(), m.copy()))
    plain, _ = ScannerAugmenter()(image, mask, np.random.default_rng(0))
    blurred, same_mask = BeamWidthAugmenter()(image, mask, np.random.default_rng(0))
    assert np.array_equal(plain, image) and np.array_equal(same_mask, mask)
    h, w = image.shape
    side, side_plain = blurred[h // 2, w // 2 + 95 : w // 2 + 125], plain[h // 2, w // 2 + 95 : w // 2 + 125]
    assert (side > 0.35).sum() > (side_plain > 0.35).sum() and side.max() < side_plain.max()
    assert blurred[h // 2 - 90, w // 2] > 0.85 and blurred[h // 2 + 90, w // 2] > 0.85
    assert repr(BeamWidthAugmenter()).startswith("BeamWidthAugmenter")


def test_beam_blur_is_the_lateral_blur_style_in_pixels():
    image, mask = _ring(height=200, width=300)
    styled, _, _ = lateral_blur(image, mask, 0.2)  # 0.5 and 1.2 mm at 0.2 mm a pixel
    assert np.array_equal(styled, beam_blur(image, 2.5, 6.0))


def test_sector_fan_is_a_fan():
    fan = sector((100, 200), (100.0, -20.0), 0.5, 110.0)
    assert fan[50, 100] > 0.99 and fan[5, 5] < 0.01 and fan[99, 100] < 0.5


@pytest.mark.parametrize("style", list(STYLES))
def test_each_out_of_domain_style_keeps_the_reference_hc(style, phantom):
    """The moved mask at the new pixel size measures the same head (within 0.5%): the
    CSV's HC in mm stays the reference."""
    image, mask, pixel = render(style, phantom.image, phantom.mask, phantom.pixel_size_mm)
    assert image.dtype == np.float32 and mask.dtype == bool and 0 <= image.min() and image.max() <= 1
    hc = measure_ellipse(ellipse_from_probability(mask.astype(np.float32)), pixel).hc_mm
    assert hc == pytest.approx(phantom.hc_mm, rel=0.005)
    if style != "hc18":
        assert not np.array_equal(image, phantom.image) or image.shape != phantom.image.shape


@pytest.mark.parametrize("fill", [0.9, 1.0, 1.1])
def test_frame_filling_centres_the_head_at_the_asked_size(fill, phantom):
    """The head's box becomes ``fill`` of the frame (here its height binds), centred;
    the pixel size shrinks by the zoom, so the reference HC in mm holds."""
    image, mask, pixel = frame_filling(fill)(phantom.image, phantom.mask.astype(np.float32), phantom.pixel_size_mm)
    zoom = phantom.pixel_size_mm / pixel
    ys, xs = np.nonzero(phantom.mask)
    assert zoom == pytest.approx(fill * 540 / (np.ptp(ys) + 1), rel=1e-6)
    rows = np.flatnonzero((mask > 0.5).any(axis=1))
    cols = np.flatnonzero((mask > 0.5).any(axis=0))
    assert (cols.min() + cols.max()) / 2 == pytest.approx(400, abs=1.5)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(270, abs=1.5)
    assert rows.max() - rows.min() + 1 == pytest.approx(min(fill, 1.0) * 540, abs=2)
    if fill > 1:
        assert rows.min() == 0 and rows.max() == 539  # the skull runs off the top and the bottom
    if fill <= 1:
        hc = measure_ellipse(ellipse_from_probability((mask > 0.5).astype(np.float32)), pixel).hc_mm
        assert hc == pytest.approx(phantom.hc_mm, rel=0.005)


def test_large_head_is_frame_filling_at_its_share_and_leaves_a_large_head_alone(phantom):
    mask = phantom.mask.astype(np.float32)
    for got, expected in zip(large_head(phantom.image, mask, 0.15), frame_filling(0.9)(phantom.image, mask, 0.15)):
        np.testing.assert_array_equal(got, expected)
    filling = frame_filling(0.95)(phantom.image, mask, 0.15)
    unchanged = large_head(filling[0], filling[1], filling[2])
    assert unchanged[2] == filling[2] and unchanged[0] is filling[0]


def test_unknown_style_is_named():
    with pytest.raises(KeyError, match="capture"):
        render("mri", np.zeros((10, 10)), np.zeros((10, 10)), 0.1)


def test_scanners_is_a_recipe_choice():
    assert TrainConfig.from_dict({"augmentation": "scanners"}).augmentation == "scanners"
    assert TrainConfig.from_dict({"augmentation": "scanners-beam"}).augmentation == "scanners-beam"
    with pytest.raises(ValueError, match="scanners"):
        TrainConfig.from_dict({"augmentation": "any"})


def test_cut_beyond_line_blacks_out_past_a_line_at_a_share_of_the_head():
    from fetometry.data.scanner_styles import cut_beyond_line

    image = np.full((200, 300), 0.5, np.float32)
    mask = np.zeros((200, 300), np.float32)
    mask[60:140, 110:190] = 1.0  # a head 80 px wide, centred at x = 149.5
    touching = cut_beyond_line(image, mask, 1.0, 0.0)  # the line at the head's right edge
    assert touching[100, 185] == pytest.approx(0.5) and touching[100, 200] == 0.0
    cut = cut_beyond_line(image, mask, 0.5, 0.0)  # half of its right half out of view
    assert cut[100, 160] == pytest.approx(0.5) and cut[100, 175] == 0.0 and cut[100, 100] == pytest.approx(0.5)
    upwards = cut_beyond_line(image, mask, 0.5, -np.pi / 2)
    assert upwards[70, 150] == 0.0 and upwards[130, 150] == pytest.approx(0.5)
    assert np.array_equal(cut_beyond_line(image, np.zeros_like(mask), 0.5, 0.0), image)


def test_the_sector_cut_augmenter_cuts_the_image_and_keeps_the_whole_mask(monkeypatch):
    from fetometry.data.scanner_styles import SectorCutAugmenter

    image, mask = _ring(height=256, width=384, a=110, b=90)
    monkeypatch.setattr(SectorCutAugmenter, "P_SECTOR_CUT", 1.0)
    monkeypatch.setattr(ScannerAugmenter, "__call__", lambda self, i, m, rng=None: (i.copy(), m.copy()))
    out, same_mask = SectorCutAugmenter()(image, mask, np.random.default_rng(3))
    assert np.array_equal(same_mask, mask)
    lost = (image > 0.5) & (out < 0.05)  # skull echo gone past the line
    assert lost.sum() > 50 and (out <= image + 1e-6).all()
    assert TrainConfig.from_dict({"augmentation": "scanners-cut"}).augmentation == "scanners-cut"
    assert repr(SectorCutAugmenter()).startswith("SectorCutAugmenter")
