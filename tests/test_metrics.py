"""evaluation.metrics: overlap metrics, Hausdorff, HC difference, mask mAP, accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from fetometry.evaluation.metrics import (
    COCO_IOU_THRESHOLDS,
    MAP_DEFINITION,
    SegmentationMetrics,
    describe,
    dice,
    hausdorff_mm,
    hc_difference_mm,
    iou,
    mask_average_precision,
    mask_score,
    precision,
    recall,
)
from fetometry.io.pixel_size import PixelSizeError

PRED = np.array([[1, 1, 0], [0, 1, 0]], bool)
TRUTH = np.array([[1, 0, 0], [0, 1, 1]], bool)  # TP = 2, FP = 1, FN = 1


def test_overlap_metrics_hand_computed():
    assert dice(PRED, TRUTH) == pytest.approx(4 / 6)
    assert iou(PRED, TRUTH) == pytest.approx(2 / 4)
    assert recall(PRED, TRUTH) == pytest.approx(2 / 3)
    assert precision(PRED, TRUTH) == pytest.approx(2 / 3)
    pred = np.array([[1, 1, 1, 1]], bool)
    truth = np.array([[1, 0, 0, 0]], bool)  # TP 1, FP 3, FN 0
    assert (dice(pred, truth), iou(pred, truth), recall(pred, truth), precision(pred, truth)) == pytest.approx(
        (2 / 5, 1 / 4, 1.0, 1 / 4)
    )


def test_empty_mask_conventions():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    for metric in (dice, iou, recall, precision):
        assert metric(empty, empty) == 1.0
        assert metric(empty, full) == 0.0  # missed head: a failure
        assert metric(full, empty) == 0.0  # invented head: a failure


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_hausdorff_hand_computed():
    pred = np.zeros((8, 12), bool)
    truth = np.zeros((8, 12), bool)
    pred[2:5, 2:5] = True
    truth[2:5, 5:8] = True  # the same 3x3 square moved 3 columns
    assert hausdorff_mm(pred, truth, 0.5) == pytest.approx(1.5)
    # Square vs its center pixel: corner-to-center dominates and the result is symmetric.
    square, center = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    square[:] = True
    center[4, 4] = True
    assert hausdorff_mm(square, center, 0.2) == pytest.approx(math.sqrt(32) * 0.2)
    assert hausdorff_mm(center, square, 0.2) == pytest.approx(math.sqrt(32) * 0.2)


def _boundary_oracle(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels by explicit 4-neighbour loops (independent of the implementation)."""
    points = []
    h, w = mask.shape
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            neighbours = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
            if any(not (0 <= rr < h and 0 <= cc < w) or not mask[rr, cc] for rr, cc in neighbours):
                points.append((r, c))
    return np.array(points, float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_a_brute_force_oracle(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random((15, 17)) > 0.6
    truth = rng.random((15, 17)) > 0.5
    distances = cdist(_boundary_oracle(pred), _boundary_oracle(truth)) * 0.3
    directed = np.concatenate([distances.min(axis=1), distances.min(axis=0)])
    assert hausdorff_mm(pred, truth, 0.3) == pytest.approx(directed.max())
    assert hausdorff_mm(pred, truth, 0.3, percentile=95) == pytest.approx(np.percentile(directed, 95))


def test_hausdorff_empty_and_pixel_size():
    empty, blob = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    blob[1:3, 1:3] = True
    assert hausdorff_mm(empty, empty, 0.1) == 0.0
    assert hausdorff_mm(empty, blob, 0.1) == math.inf
    assert hausdorff_mm(blob, empty, 0.1) == math.inf
    with pytest.raises(PixelSizeError):
        hausdorff_mm(blob, blob, None)


def test_hc_difference():
    assert hc_difference_mm(182.5, 180.0) == pytest.approx((2.5, 2.5))
    assert hc_difference_mm(178.0, 180.0) == pytest.approx((-2.0, 2.0))
    with pytest.raises(ValueError):
        hc_difference_mm(math.nan, 180.0)


def test_mask_score():
    prob = np.array([[0.9, 0.7], [0.2, 0.0]])
    mask = np.array([[1, 1], [0, 0]], bool)
    assert mask_score(prob, mask) == pytest.approx(0.8)
    assert mask_score(prob, np.zeros((2, 2), bool)) is None


# ---------------------------------------------------------------------------------------
# mAP (hand-computed with the COCO 101-point interpolation)
# ---------------------------------------------------------------------------------------


def test_coco_thresholds():
    np.testing.assert_allclose(COCO_IOU_THRESHOLDS, np.arange(0.5, 0.96, 0.05))
    # IoU exactly 0.7 is a hit at t = 0.7: hits at 0.50..0.70 (5 of 10 thresholds).
    assert mask_average_precision([0.7], [1.0]) == pytest.approx(0.5)


def test_map_all_perfect_and_all_missing():
    assert mask_average_precision([0.99] * 4, [0.9, 0.8, 0.7, 0.6]) == pytest.approx(1.0)
    assert mask_average_precision([0.0, 0.0], [None, None]) == 0.0


def test_map_two_images_ranked_well():
    # A: IoU .83 score .9; B: IoU .62 score .6.
    # t in .50-.60: both TP -> AP 1. t in .65-.80: A TP then B FP: precision 1 up to
    # recall .5 -> 51 of 101 recall points. t in .85-.95: no TP -> 0.
    expected = (3 * 1.0 + 4 * 51 / 101 + 3 * 0.0) / 10
    assert mask_average_precision([0.83, 0.62], [0.9, 0.6]) == pytest.approx(expected)


def test_map_two_images_ranked_badly():
    # Same IoUs, scores swapped: for t in .65-.80 the FP comes first, precision at
    # recall .5 is 1/2 -> 51 points at 0.5.
    expected = (3 * 1.0 + 4 * 51 * 0.5 / 101) / 10
    assert mask_average_precision([0.83, 0.62], [0.6, 0.9]) == pytest.approx(expected)


def test_map_missing_prediction_is_a_false_negative():
    # Two perfect predictions out of three heads: recall 2/3 at precision 1 -> recall
    # points 0.00..0.66 (67 of 101) at every threshold.
    assert mask_average_precision([0.99, 0.99, 0.0], [0.8, 0.7, None]) == pytest.approx(67 / 101)
    # A false positive ranked first: precision envelope 2/3 over recall 0..2/3.
    assert mask_average_precision([0.99, 0.99, 0.0], [0.8, 0.7, 0.9]) == pytest.approx(2 / 3 * 67 / 101)


def test_map_ties_are_broken_pessimistically_and_no_truth_images():
    # One head, one prediction on an image without a head, equal scores: the FP ranks
    # first -> precision 1/2 over recall 0..1 at thresholds up to 0.90 (IoU .92).
    value = mask_average_precision([0.92, 0.0], [0.5, 0.5], has_truth=[True, False])
    assert value == pytest.approx(9 / 10 * 0.5)
    assert math.isnan(mask_average_precision([0.0], [0.5], has_truth=[False]))


def test_map_custom_thresholds_and_validation():
    assert mask_average_precision([0.83, 0.62], [0.9, 0.6], thresholds=[0.5]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mask_average_precision([0.5, 0.5], [0.1])
    with pytest.raises(ValueError):
        mask_average_precision([1.5], [0.1])
    assert "101" in MAP_DEFINITION and "0.50:0.05:0.95" in MAP_DEFINITION


# ---------------------------------------------------------------------------------------
# Accumulator
# ---------------------------------------------------------------------------------------


def _square(shape=(20, 20), rows=slice(5, 15), cols=slice(5, 15)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_describe():
    stats = describe([1.0, 0.5, 0.0, None, math.inf])
    assert stats == {"mean": 0.5, "median": 0.5, "sd": pytest.approx(0.5), "n": 3, "n_nonfinite": 1}
    assert describe([None])["mean"] is None
    assert describe([2.0])["sd"] is None


def test_accumulator_rows_and_summary():
    metrics = SegmentationMetrics()
    truth = _square()
    shifted = _square(cols=slice(7, 17))  # 10x10 moved 2 columns: overlap 80
    metrics.add("a.png", truth, truth, pixel_size_mm=0.1, pred_hc_mm=101.0, ref_hc_mm=100.0, score=0.9)
    metrics.add("b.png", shifted, truth, pixel_size_mm=0.1, pred_hc_mm=97.0, ref_hc_mm=100.0, score=0.8)
    metrics.add("c.png", None, truth, pixel_size_mm=None, ref_hc_mm=100.0)  # missing, no pixel size
    rows = metrics.rows()
    assert [r["name"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert rows[0]["dice"] == 1.0 and rows[0]["hausdorff_mm"] == 0.0
    assert rows[1]["dice"] == pytest.approx(160 / 200)
    assert rows[1]["iou"] == pytest.approx(80 / 120)
    assert rows[1]["hausdorff_mm"] == pytest.approx(0.2)
    assert rows[1]["hc_difference_mm"] == pytest.approx(-3.0)
    assert rows[2]["predicted"] is False and rows[2]["dice"] == 0.0
    assert rows[2]["hausdorff_mm"] is None  # no pixel size: no mm, never invented
    assert rows[2]["hc_difference_mm"] is None

    summary = metrics.summary()
    assert summary["count"] == 3 and summary["n_missed"] == 1 and summary["n_false_detections"] == 0
    assert summary["metrics"]["dice"]["mean"] == pytest.approx((1 + 0.8 + 0) / 3)
    assert summary["metrics"]["dice"]["median"] == pytest.approx(0.8)
    assert summary["metrics"]["hausdorff_mm"]["n"] == 2
    assert summary["metrics"]["hc_abs_difference_mm"]["mean"] == pytest.approx(2.0)
    assert summary["metrics"]["hc_difference_mm"]["sd"] == pytest.approx(math.sqrt(8.0))
    # mAP: a (IoU 1) then b (IoU .667) of 3 heads: thresholds .50-.65 reach recall 2/3
    # (67 points); .70-.95 reach 1/3 (34 points).
    expected = (4 * 67 + 6 * 34) / 101 / 10
    assert summary["map"] == pytest.approx(expected)


def test_accumulator_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        SegmentationMetrics().add("x", np.zeros((3, 3), bool), np.zeros((4, 4), bool))
