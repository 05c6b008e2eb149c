"""Segmentation and biometric metrics: plain functions plus one accumulator.

Definitions (Dice 1945; COCO, Lin et al. 2014; HC18: van den Heuvel et al., 2018)
---------------------------------------------------------------------------------
On boolean (H, W) masks, with TP = |pred & truth|, FP = |pred & ~truth|,
FN = |~pred & truth|:
- dice = 2 TP / (2 TP + FP + FN), iou = TP / (TP + FP + FN),
  recall = TP / (TP + FN), precision = TP / (TP + FP).
- Both masks empty: every one of the four is 1.0 (perfect agreement on "no head").
  Exactly one mask empty: every one of the four is 0.0, including the ratio that is
  0/0 (precision of an empty prediction, recall against an empty truth). A missed or
  invented head is a failure in every metric, so averages are never flattered.
- hausdorff_mm: symmetric Hausdorff distance between the two masks' boundary pixels
  (mask pixels with a 4-neighbour outside the mask), in mm via the pixel size; with
  ``percentile < 100`` the percentile of the pooled directed distances (e.g. 95 ->
  "HD95"). Both empty: 0.0; exactly one empty: inf (there is no boundary to compare).
- hc_difference_mm: signed (pred - ref) and absolute difference.
- mask_average_precision: see its docstring (COCO-style mask AP, one object per image).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fetometry.io.pixel_size import validate_pixel_size

log = logging.getLogger(__name__)

#: COCO IoU thresholds 0.50:0.05:0.95 (Lin et al., "Microsoft COCO", ECCV 2014; the
#: pycocotools ``Params.iouThrs``), built with linspace so that 0.7 is exactly 0.7.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: COCO's 101 recall points 0:0.01:1 (pycocotools ``Params.recThrs``).
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)

MAP_DEFINITION = (
    "COCO-style mask average precision for one object per image: at each IoU threshold "
    "t in 0.50:0.05:0.95, predictions are ranked by score (mean foreground probability "
    "inside the predicted mask; among equal scores false positives rank first), a "
    "prediction is a true positive when IoU >= t, else a false positive; the number of "
    "ground truths is the number of images with a head, and a missing prediction is a "
    "false negative. Precision is made monotone (max to the right) and sampled at the "
    "101 recall points 0:0.01:1 (0 beyond the largest recall reached); AP(t) is their "
    "mean and mAP the mean of AP(t) over the 10 thresholds."
)


# ---------------------------------------------------------------------------------------
# Overlap metrics
# ---------------------------------------------------------------------------------------


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction {pred.shape} and truth {truth.shape} differ in shape; compare masks in the original image grid"
        )
    if pred.ndim != 2:
        raise ValueError(f"masks must be 2D (H, W), got shape {pred.shape}")
    return pred.astype(bool), truth.astype(bool)


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    pred, truth = _pair(pred, truth)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, fp, fn


def _ratio(numerator: int, denominator: int, pred_empty: bool, truth_empty: bool) -> float:
    if pred_empty and truth_empty:
        return 1.0  # perfect agreement on "no head" (module docstring)
    if denominator == 0:
        return 0.0  # exactly one mask empty: a failure (module docstring)
    return numerator / denominator


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2TP / (2TP + FP + FN) of two (H, W) bool masks; both empty -> 1.0."""
    tp, fp, fn = _counts(pred, truth)
    return _ratio(2 * tp, 2 * tp + fp + fn, tp + fp == 0, tp + fn == 0)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU (Jaccard) = TP / (TP + FP + FN) of two (H, W) bool masks; both empty -> 1.0."""
    tp, fp, fn = _counts(pred, truth)
    return _ratio(tp, tp + fp + fn, tp + fp == 0, tp + fn == 0)


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Recall (sensitivity) = TP / (TP + FN); both empty -> 1.0, empty truth only -> 0.0."""
    tp, fp, fn = _counts(pred, truth)
    return _ratio(tp, tp + fn, tp + fp == 0, tp + fn == 0)


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Precision = TP / (TP + FP); both empty -> 1.0, empty prediction only -> 0.0."""
    tp, fp, fn = _counts(pred, truth)
    return _ratio(tp, tp + fp, tp + fp == 0, tp + fn == 0)


# ---------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with at least one 4-neighbour outside the mask (image border = outside)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    return mask & ~eroded


def hausdorff_mm(pred: np.ndarray, truth: np.ndarray, pixel_size_mm: float, *, percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance (mm) between the boundaries of two (H, W) bool masks.

    max(max_p d(p, truth boundary), max_t d(t, pred boundary)) over boundary pixels,
    Euclidean, via scipy's exact distance transform scaled by ``pixel_size_mm``.
    ``percentile < 100`` returns that percentile of all directed distances pooled
    (95 -> HD95). Both empty -> 0.0, exactly one empty -> inf.
    """
    pred, truth = _pair(pred, truth)
    pixel_size_mm = validate_pixel_size(pixel_size_mm)
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    pred_edge, truth_edge = _boundary(pred), _boundary(truth)
    if not pred_edge.any() and not truth_edge.any():
        return 0.0
    if not pred_edge.any() or not truth_edge.any():
        return math.inf
    to_truth = ndimage.distance_transform_edt(~truth_edge, sampling=pixel_size_mm)[pred_edge]
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=pixel_size_mm)[truth_edge]
    if percentile == 100:
        return float(max(to_truth.max(), to_pred.max()))
    return float(np.percentile(np.concatenate([to_truth, to_pred]), percentile))


def hc_difference_mm(pred_hc_mm: float, ref_hc_mm: float) -> tuple[float, float]:
    """(signed, absolute) HC difference in mm; signed = pred - ref (HC18 definition)."""
    pred_hc_mm, ref_hc_mm = float(pred_hc_mm), float(ref_hc_mm)
    if not (math.isfinite(pred_hc_mm) and math.isfinite(ref_hc_mm)):
        raise ValueError(f"HC values must be finite, got pred={pred_hc_mm}, ref={ref_hc_mm}")
    difference = pred_hc_mm - ref_hc_mm
    return difference, abs(difference)


def mask_score(prob: np.ndarray, mask: np.ndarray) -> float | None:
    """Detection score: mean of the (H, W) probability map inside the predicted mask.

    None for an empty mask (no prediction, nothing to score).
    """
    prob, mask = np.asarray(prob, dtype=float), np.asarray(mask, dtype=bool)
    if prob.shape != mask.shape:
        raise ValueError(f"probability map {prob.shape} and mask {mask.shape} differ in shape")
    return float(prob[mask].mean()) if mask.any() else None


# ---------------------------------------------------------------------------------------
# Mask average precision
# ---------------------------------------------------------------------------------------


def _average_precision_at(ious: np.ndarray, scores: np.ndarray, has_truth: np.ndarray, threshold: float) -> float:
    """COCO AP at one IoU threshold (pycocotools ``COCOeval.accumulate`` semantics)."""
    n_truth = int(has_truth.sum())
    predicted = np.isfinite(scores)
    if not predicted.any():
        return 0.0
    hit = (ious[predicted] >= threshold - 1e-12) & has_truth[predicted]
    # Rank by score descending; among equal scores misses first (pessimistic), then
    # IoU ascending (lexsort sorts by the LAST key first).
    order = np.lexsort((ious[predicted], hit, -scores[predicted]))
    hit = hit[order]
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    rec = tp / n_truth
    prec = tp / np.maximum(tp + fp, np.finfo(float).eps)
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # monotone envelope, max to the right
    index = np.searchsorted(rec, COCO_RECALL_POINTS, side="left")
    sampled = np.where(index < len(prec), prec[np.minimum(index, len(prec) - 1)], 0.0)
    return float(sampled.mean())


def mask_average_precision(
    ious: Sequence[float],
    scores: Sequence[float | None],
    thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    *,
    has_truth: Sequence[bool] | None = None,
) -> float:
    """COCO-style mask mAP for one object per image; the definition is ``MAP_DEFINITION``.

    ``ious[i]``: IoU of image i's predicted mask with its truth (0 when missing).
    ``scores[i]``: the prediction's score, None/NaN for a missing prediction (then the
    image's head is a false negative). ``has_truth[i]`` (default all True): whether
    image i has a head; a prediction on an image without one is a false positive.
    Returns NaN when no image has a head (AP undefined).
    """
    iou_arr = np.asarray(ious, dtype=float)
    score_arr = np.array([np.nan if s is None else float(s) for s in scores], dtype=float)
    truth_arr = np.ones(len(iou_arr), dtype=bool) if has_truth is None else np.asarray(has_truth, dtype=bool)
    if not (len(iou_arr) == len(score_arr) == len(truth_arr)):
        raise ValueError(
            f"need one IoU, score and has_truth per image, got {len(iou_arr)}, {len(score_arr)}, {len(truth_arr)}"
        )
    if np.isnan(iou_arr).any() or (iou_arr < 0).any() or (iou_arr > 1).any():
        raise ValueError("IoUs must lie in [0, 1]; give 0 for a missing prediction")
    if not truth_arr.any():
        return math.nan
    return float(np.mean([_average_precision_at(iou_arr, score_arr, truth_arr, t) for t in thresholds]))


# ---------------------------------------------------------------------------------------
# Accumulator
# ---------------------------------------------------------------------------------------

#: Per-case numeric metrics summarised by ``SegmentationMetrics.summary``.
METRIC_NAMES = (
    "dice",
    "iou",
    "recall",
    "precision",
    "hausdorff_mm",
    "hd95_mm",
    "hc_difference_mm",
    "hc_abs_difference_mm",
)


def describe(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, median, sample SD (ddof=1) and n over the finite values; n_nonfinite counts inf/NaN.

    None entries (metric not computable, e.g. no pixel size) are left out and not counted.
    """
    present = np.array([v for v in values if v is not None], dtype=float)
    finite = present[np.isfinite(present)]
    n = len(finite)
    return {
        "mean": float(finite.mean()) if n else None,
        "median": float(np.median(finite)) if n else None,
        "sd": float(finite.std(ddof=1)) if n > 1 else None,
        "n": n,
        "n_nonfinite": int(len(present) - n),
    }


@dataclass
class SegmentationMetrics:
    """Accumulates per-case metrics; ``rows()`` per case, ``summary()`` over all cases.

    Metrics in mm are None when the case has no pixel size (never invented); HC
    differences are None unless both HCs are given.
    """

    _rows: list[dict] = field(default_factory=list)

    def add(
        self,
        name: str,
        pred_mask: np.ndarray | None,
        truth_mask: np.ndarray,
        pixel_size_mm: float | None = None,
        pred_hc_mm: float | None = None,
        ref_hc_mm: float | None = None,
        score: float | None = None,
    ) -> dict:
        """Add one case; ``pred_mask=None`` or an empty mask means "no head predicted".

        ``score`` ranks the prediction for mAP (mean foreground probability, see
        ``mask_score``); for mAP a prediction without one counts as 1.0 (unscored
        predictions tie; ties are broken pessimistically). Returns the case's row.
        """
        truth = np.asarray(truth_mask).astype(bool)
        pred = np.zeros_like(truth) if pred_mask is None else np.asarray(pred_mask).astype(bool)
        _pair(pred, truth)
        predicted = bool(pred.any())
        row = {
            "name": name,
            "predicted": predicted,
            "dice": dice(pred, truth),
            "iou": iou(pred, truth),
            "recall": recall(pred, truth),
            "precision": precision(pred, truth),
            "pixel_size_mm": pixel_size_mm,
            "hausdorff_mm": None,
            "hd95_mm": None,
            "pred_hc_mm": pred_hc_mm,
            "ref_hc_mm": ref_hc_mm,
            "hc_difference_mm": None,
            "hc_abs_difference_mm": None,
            "has_truth": bool(truth.any()),
            "score": None if (score is None or not predicted) else float(score),
        }
        if pixel_size_mm is not None:
            row["hausdorff_mm"] = hausdorff_mm(pred, truth, pixel_size_mm)
            row["hd95_mm"] = hausdorff_mm(pred, truth, pixel_size_mm, percentile=95)
        if pred_hc_mm is not None and ref_hc_mm is not None:
            row["hc_difference_mm"], row["hc_abs_difference_mm"] = hc_difference_mm(pred_hc_mm, ref_hc_mm)
        self._rows.append(row)
        return row

    def rows(self) -> list[dict]:
        """Per-case dicts in the order added (copies)."""
        return [dict(row) for row in self._rows]

    def mean_average_precision(self) -> float:
        """``mask_average_precision`` over the cases added (NaN if none has a head)."""
        if not self._rows:
            return math.nan
        scores = [
            None if not row["predicted"] else (1.0 if row["score"] is None else row["score"]) for row in self._rows
        ]
        return mask_average_precision(
            [row["iou"] if row["predicted"] else 0.0 for row in self._rows],
            scores,
            has_truth=[row["has_truth"] for row in self._rows],
        )

    def summary(self) -> dict:
        """``{"count", "n_missed", "n_false_detections", "map", "map_definition", "metrics"}``.

        ``n_missed``: cases with a head but no prediction; ``n_false_detections``: cases
        without a head but with one; ``metrics``: ``{name: describe(values)}``.
        """
        predicted = [row for row in self._rows if row["predicted"]]
        unscored = sum(1 for row in predicted if row["score"] is None)
        if 0 < unscored < len(predicted):
            log.warning("mAP: %d predictions have no score and tie at 1.0 with the scored ones", unscored)
        return {
            "count": len(self._rows),
            "n_missed": sum(1 for row in self._rows if row["has_truth"] and not row["predicted"]),
            "n_false_detections": sum(1 for row in predicted if not row["has_truth"]),
            "map": self.mean_average_precision(),
            "map_definition": MAP_DEFINITION,
            "metrics": {name: describe([row[name] for row in self._rows]) for name in METRIC_NAMES},
        }
