"""The quality gate: each rule refuses what it should, names itself, and lets good
heads through (synthetic predictions, plus the default model on bundled HC18 images)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fetometry.biometry.ellipse import Ellipse, ellipse_from_probability
from fetometry.biometry.ellipse import largest_component as real_largest_component
from fetometry.biometry.quality import (
    DEFAULT_THRESHOLDS,
    RULES,
    QualityThresholds,
    assess_quality,
    clipped_advice,
    clipped_fraction,
    clipped_sides,
    mask_fit_iou,
)
from fetometry.inference.predictor import Prediction

SHAPE = (540, 800)  # HC18 image size
GOOD = Ellipse(400.0, 270.0, 180.0, 150.0, 0.3)  # axis ratio 0.83; HC ~ 1040 px


def prediction_for(mask: np.ndarray, confidence: float = 0.97) -> Prediction:
    return Prediction(mask.astype(np.float32) * confidence, mask.astype(bool), confidence)


def speckle(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """A frame of speckle everywhere: scanned from border to border."""
    return np.random.default_rng(seed).uniform(0.05, 0.6, shape).astype(np.float32)


def assess(
    ellipse: Ellipse | None,
    *,
    mask=None,
    confidence=0.97,
    pixel_size_mm: float | None = 0.15,
    shape=SHAPE,
    image: np.ndarray | None = None,
):
    if mask is None:
        mask = ellipse.to_mask(shape) if ellipse is not None else np.zeros(shape, bool)
    return assess_quality(
        prediction_for(mask, confidence),
        ellipse,
        pixel_size_mm=pixel_size_mm,
        image_shape=shape,
        image=speckle(shape) if image is None else image,
    )


def test_a_plausible_head_passes_every_check():
    report = assess(GOOD)
    assert report.passed and report.rule is None
    assert all(check["passed"] for check in report.checks.values()), report.checks
    assert set(report.checks) == set(RULES)
    # score = confidence x mask-fit IoU x (1 - clipped): about the confidence here.
    assert 0.95 < report.score <= 0.97
    json.dumps(report.to_dict())  # JSON-ready


def test_no_ellipse_is_refused_as_no_head():
    report = assess(None)
    assert not report.passed and report.rule == "no_head" and report.score == 0.0
    assert "no head" in report.detail


def test_low_confidence_is_refused():
    report = assess(GOOD, confidence=DEFAULT_THRESHOLDS.min_confidence - 0.05)
    assert report.rule == "low_confidence" and "unsure" in report.detail


def test_a_flat_ellipse_is_not_a_head_section():
    flat = Ellipse(400.0, 270.0, 200.0, 0.4 * 200.0, 0.0)
    report = assess(flat)
    assert report.rule == "axis_ratio"
    assert report.checks["axis_ratio"]["value"] == pytest.approx(0.4)


def test_head_size_depends_on_the_pixel_size():
    # ~1040 px of perimeter: 156 mm at 0.15 mm/px (plausible), 1040 mm at 1 mm/px (not).
    assert assess(GOOD, pixel_size_mm=0.15).passed
    report = assess(GOOD, pixel_size_mm=1.0)
    assert report.rule == "head_size" and "pixel size" in report.detail
    assert report.checks["head_size"]["value"] == pytest.approx(1040, rel=0.02)
    # Without a pixel size the mm rule is not checked (never guess a size) ...
    unchecked = assess(GOOD, pixel_size_mm=None)
    assert unchecked.passed and unchecked.checks["head_size"]["passed"] is None


def test_a_speck_is_refused_by_its_extent_even_without_pixel_size():
    speck = Ellipse(400.0, 270.0, 12.0, 10.0, 0.0)
    report = assess(speck, pixel_size_mm=None)
    assert report.rule == "head_extent"
    assert report.detail.endswith("zoom in or reduce the depth until the head fills more of the image")


def test_a_head_that_fills_the_frame_is_refused_by_extent_and_told_to_zoom_out():
    filling = Ellipse(400.0, 270.0, 380.0, 268.0, 0.0)  # inside the image, 74% of its area
    report = assess(filling, pixel_size_mm=None)
    assert report.rule == "head_extent" and report.checks["clipped"]["passed"] is True
    assert "zoom out or increase the depth" in report.detail


def test_a_head_cut_by_the_border_is_refused():
    cut = Ellipse(60.0, 270.0, 180.0, 150.0, 0.0)  # 120 px of its 180 px half-axis leave the image
    report = assess(cut)
    assert report.rule == "clipped" and "outside the image" in report.detail
    assert report.checks["clipped"]["value"] > 0.2
    assert report.detail.endswith("move the head away from the left edge")


def test_a_centred_head_larger_than_the_image_is_told_to_zoom_out_not_to_move():
    """Moving a head cut on two opposite edges cannot bring it into view: the advice
    says so instead of asking to center a head that is centred already."""
    larger = Ellipse(400.0, 270.0, 300.0, 290.0, 0.0)  # centred; 290 px half-axis in a 540 px tall image
    report = assess(larger)
    assert report.rule == "clipped"
    assert clipped_sides(larger, SHAPE) == ("top", "bottom")
    assert "larger than the image" in report.detail and "zoom out" in report.detail
    assert "center" not in report.detail and "move the head" not in report.detail


def test_clipped_sides_name_each_edge_the_outline_passes():
    assert clipped_sides(GOOD, SHAPE) == ()
    assert clipped_sides(Ellipse(780.0, 10.0, 100.0, 80.0, 0.0), SHAPE) == ("top", "right")
    assert clipped_sides(Ellipse(400.0, 270.0, 420.0, 200.0, 0.0), SHAPE) == ("left", "right")
    assert clipped_advice(("top", "right")) == "move the head away from the top and right edges"
    assert "larger than the image" in clipped_advice(("left", "right"))


def test_a_head_the_scan_sector_cuts_is_refused_and_one_inside_it_is_not():
    """The black beyond a fan's straight side: a head whose outline crosses it is
    refused by ``outside_scan`` (the image's border is not near it, so ``clipped`` passes);
    the same head with the side clear of it passes."""
    image = speckle()
    columns = np.arange(SHAPE[1])[None, :]
    rows = np.arange(SHAPE[0])[:, None]
    cut_by_side = np.where(columns - 0.6 * rows > 380, 0.0, image).astype(np.float32)
    report = assess(GOOD, image=cut_by_side)
    assert report.rule == "outside_scan" and "edge of the scanned area" in report.detail
    assert report.checks["clipped"]["passed"] is True
    assert report.checks["outside_scan"]["value"] > 0.2
    clear_of_it = np.where(columns - 0.6 * rows > 600, 0.0, image).astype(np.float32)
    assert assess(GOOD, image=clear_of_it).passed
    assert report.detail.endswith("move the head into the middle of the sector")


def test_a_head_touching_the_top_and_bottom_is_told_to_zoom_out():
    """A centred head whose skull reaches the image's top and bottom edges: inside the
    image (``clipped`` passes), but the skull outside its outline is not all in view, on
    two opposite sides, so the advice is to zoom out rather than to move it."""
    touching = Ellipse(400.0, 270.0, 330.0, 268.0, 0.0)  # 2 px from the top and the bottom
    report = assess(touching)
    assert report.rule == "outside_scan" and report.checks["clipped"]["value"] == 0.0
    assert "larger than the scanned area: zoom out or increase the depth" in report.detail


def test_without_the_image_the_scan_edge_is_not_checked():
    report = assess_quality(prediction_for(GOOD.to_mask(SHAPE)), GOOD, pixel_size_mm=0.15, image_shape=SHAPE)
    assert report.passed and report.checks["outside_scan"]["passed"] is None
    with pytest.raises(ValueError, match="measured image"):
        assess(GOOD, image=speckle((100, 100)))


def test_an_outline_that_is_not_an_ellipse_is_refused():
    mask = GOOD.to_mask(SHAPE)
    mask[100:440, 150:650] = True  # a box glued to the head
    report = assess(GOOD, mask=mask)
    assert report.rule == "mask_fit"
    assert report.checks["mask_fit"]["value"] < DEFAULT_THRESHOLDS.min_mask_fit_iou


def test_the_first_failing_rule_in_order_is_named():
    flat = Ellipse(400.0, 270.0, 200.0, 60.0, 0.0)
    report = assess(flat, confidence=0.3)
    assert report.rule == "low_confidence"  # before axis_ratio in RULES
    assert report.checks["axis_ratio"]["passed"] is False


def test_clipped_fraction_of_a_circle_on_the_edge_is_half():
    on_edge = Ellipse(-0.5, 270.0, 100.0, 100.0, 0.0)  # centred on the image's left edge
    assert clipped_fraction(on_edge, SHAPE) == pytest.approx(0.5, abs=2e-3)
    assert clipped_fraction(GOOD, SHAPE) == 0.0


def test_mask_fit_iou_of_an_ellipse_and_its_own_mask_is_one():
    assert mask_fit_iou(GOOD.to_mask(SHAPE), GOOD) == pytest.approx(1.0)
    shifted = Ellipse(420.0, 270.0, 180.0, 150.0, 0.3)
    assert 0.7 < mask_fit_iou(GOOD.to_mask(SHAPE), shifted) < 0.95
    assert mask_fit_iou(np.zeros(SHAPE, bool), GOOD) == 0.0


def test_mask_fit_iou_on_the_crop_equals_the_whole_image_computation():
    """Noise blobs, a hole and a head cut by the border: the cropped computation must
    give exactly the IoU of the whole-image definition."""
    from fetometry.biometry.ellipse import largest_component

    rng = np.random.default_rng(0)
    for ellipse in (GOOD, Ellipse(60.0, 270.0, 180.0, 150.0, 1.0)):
        mask = ellipse.to_mask(SHAPE) ^ (rng.random(SHAPE) < 0.002)  # specks in and out
        mask[260:280, 390:410] = False  # a hole, filled by largest_component
        component, inside = largest_component(mask), ellipse.to_mask(SHAPE)
        expected = np.count_nonzero(component & inside) / np.count_nonzero(component | inside)
        assert mask_fit_iou(mask, ellipse) == pytest.approx(expected, abs=1e-12)


def test_bad_thresholds_and_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="fraction"):
        QualityThresholds(min_confidence=1.5)
    with pytest.raises(ValueError, match="low < high"):
        QualityThresholds(hc_range_mm=(400.0, 35.0))
    with pytest.raises(ValueError, match="ORIGINAL image"):
        assess_quality(prediction_for(GOOD.to_mask(SHAPE)), GOOD, pixel_size_mm=0.1, image_shape=(270, 400))


def test_thresholds_from_a_weights_config():
    assert QualityThresholds.from_config({"model": "x"}) == DEFAULT_THRESHOLDS
    limits = QualityThresholds.from_config({"quality": {"min_confidence": 0.9, "hc_range_mm": [30, 450]}})
    assert limits.min_confidence == 0.9 and limits.hc_range_mm == (30, 450)
    assert limits.min_axis_ratio == DEFAULT_THRESHOLDS.min_axis_ratio
    with pytest.raises(ValueError, match="unknown quality thresholds"):
        QualityThresholds.from_config({"quality": {"min_confidance": 0.9}})


def test_custom_thresholds_change_the_verdict():
    strict = QualityThresholds(min_confidence=0.99)
    report = assess_quality(
        prediction_for(GOOD.to_mask(SHAPE)), GOOD, pixel_size_mm=0.15, image_shape=SHAPE, thresholds=strict
    )
    assert report.rule == "low_confidence"


def test_default_model_passes_real_heads_and_refuses_noise():
    """Bundled HC18 images (validation split, all measured within 5%) pass; a frame of
    pure speckle-like noise is refused."""
    from fetometry.data.hc18 import load_hc18
    from fetometry.inference.predictor import Predictor
    from fetometry.resources import SAMPLES_DIR

    predictor = Predictor.from_weights()
    for sample in load_hc18(SAMPLES_DIR):
        image = sample.load_image()
        prediction = predictor.predict(image)
        report = assess_quality(
            prediction,
            ellipse_from_probability(prediction.probability),
            pixel_size_mm=sample.pixel_size_mm,
            image_shape=image.shape,
        )
        assert report.passed, (sample.name, report.detail)
    noise = np.random.default_rng(0).random(SHAPE, dtype=np.float32) ** 3
    prediction = predictor.predict(noise)
    try:
        ellipse = ellipse_from_probability(prediction.probability)
    except ValueError:  # NoHeadError / EllipseFitError
        ellipse = None
    report = assess_quality(prediction, ellipse, pixel_size_mm=0.1, image_shape=SHAPE)
    assert not report.passed and report.rule in RULES, report.checks
    assert math.isfinite(report.score)


def test_the_scanned_area_is_the_sector_with_its_fluid_and_without_its_panels():
    """Speckle inside a fan, a flat black pool of fluid in it, a flat grey panel and a
    text-sized speckled patch outside: the scanned area is the fan, fluid included."""
    from fetometry.biometry.field_of_view import scanned_area

    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    fan = (np.abs(cols - 400) < 0.7 * rows + 20) & (rows < 520)
    image = np.where(fan, speckle(), 0.0).astype(np.float32)
    pool = (rows - 300) ** 2 + (cols - 400) ** 2 < 60**2
    image[pool] = 0.0
    image[:, 720:] = 0.4  # a vendor's grey panel
    image[20:40, 20:60] = speckle((20, 40), seed=1)  # vendor text
    area = scanned_area(image)
    assert area[pool].all() and area[400, 400]
    assert not area[30, 40] and not area[270, 760] and not area[100, 100]
    assert scanned_area(np.zeros(SHAPE, np.float32)).all()  # no sector to find: the image bounds it


def test_outside_scan_fraction_is_the_share_of_the_outline_past_the_edge():
    from fetometry.biometry.field_of_view import outside_scan_fraction

    circle = Ellipse(400.0, 270.0, 100.0, 100.0, 0.0)
    everywhere = np.ones(SHAPE, bool)
    assert outside_scan_fraction(circle, everywhere) == 0.0
    left_half = everywhere.copy()
    left_half[:, 400:] = False  # the sector ends at the circle's centre
    assert outside_scan_fraction(circle, left_half) == pytest.approx(0.5, abs=0.02)


def test_mask_fit_iou_from_the_fits_component_is_the_same_number():
    """The fit hands its component to the gate (``head=``): the IoU must be exactly the
    one found from the mask, with specks, a hole, a head cut by the border, an ellipse
    partly outside the image and one beside the mask."""
    from fetometry.biometry.ellipse import head_from_probability

    rng = np.random.default_rng(3)
    cases = [(GOOD, GOOD), (Ellipse(60.0, 270.0, 180.0, 150.0, 1.0),) * 2, (GOOD, Ellipse(700.0, 100.0, 90, 60, 0.2))]
    for drawn, judged in cases:
        probability = np.clip(drawn.to_mask(SHAPE) * 0.9 + rng.normal(0, 0.15, SHAPE), 0, 1).astype(np.float32)
        probability[260:280, 390:410] = 0.0  # a hole the component fills
        _, head = head_from_probability(probability)
        mask = probability >= head.threshold
        assert mask_fit_iou(mask, judged, head=head) == mask_fit_iou(mask, judged)


def test_the_gate_takes_the_fits_component_only_at_the_masks_threshold(monkeypatch):
    """result_from_prediction hands the component over when the prediction's threshold is
    the fit's (the gate then finds no component of its own); the report is the same either way."""
    import fetometry.biometry.quality as quality
    from fetometry.pipeline import fit_head, result_from_prediction
    from fetometry.weights_config import WeightsConfig

    found_again = []
    monkeypatch.setattr(
        quality, "largest_component", lambda mask: found_again.append(1) or real_largest_component(mask)
    )

    class StandIn:
        name, hc_offset_px, config = "stand-in", 0.0, WeightsConfig()

        def boundary_offset_px(self, prediction) -> float:
            return self.hc_offset_px

    mask = GOOD.to_mask(SHAPE)
    mask[100:104, 100:104] = True  # a speck beside the head
    probability = mask.astype(np.float32) * 0.97
    reports, searches = [], []
    for threshold in (0.5, None):
        prediction = Prediction(probability, mask, 0.97, threshold)
        head = fit_head(prediction)
        assert head.component is not None and head.component.threshold == 0.5
        found_again.clear()
        reports.append(result_from_prediction(StandIn(), "x", prediction, 0.15, head=head).quality)
        searches.append(len(found_again))
    assert searches == [0, 1]
    assert reports[0].checks == reports[1].checks and reports[0].score == reports[1].score
