"""Segmentation and biometric metrics, and evaluation of prediction folders."""

from fetometry.evaluation.evaluate import EvaluationInputError, evaluate_dirs
from fetometry.evaluation.metrics import (
    COCO_IOU_THRESHOLDS,
    MAP_DEFINITION,
    SegmentationMetrics,
    dice,
    hausdorff_mm,
    hc_difference_mm,
    iou,
    mask_average_precision,
    mask_score,
    precision,
    recall,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "EvaluationInputError",
    "MAP_DEFINITION",
    "SegmentationMetrics",
    "dice",
    "evaluate_dirs",
    "hausdorff_mm",
    "hc_difference_mm",
    "iou",
    "mask_average_precision",
    "mask_score",
    "precision",
    "recall",
]
