"""Evaluate ``fetometry predict`` output against a truth folder (``fetometry evaluate``).

Inputs
------
- ``pred_dir/measurements.csv`` (columns start ``filename,center_x_mm,...,hc_mm,...,
  pixel_size_mm,model,status``, optional ``confidence``) and
  ``pred_dir/masks/<image stem>_mask.png`` (uint8 0/255, original image size).
- ``truth_dir``: a data-set folder of any registered layout (``fetometry.data.load``:
  HC18, or a folder data set with images/ and masks/).

Outputs (``out_dir``, default ``pred_dir``)
-------------------------------------------
- ``summary.json`` (nnU-Net style, sorted keys): ``metadata`` (inputs, counts, the mAP
  definition, conventions), ``mean`` (metric -> mean), ``summary`` (metric -> mean,
  median, sd, n, n_nonfinite), ``map`` and ``per_case`` rows. Non-finite numbers
  (e.g. an infinite Hausdorff distance for a missed head) are written as null.
- ``metrics.csv``: one row per truth case (``CSV_COLUMNS``); empty = not computable
  (e.g. no pixel size), ``inf`` = the Hausdorff distance of a missed head.

Truth images without a prediction are reported (``status`` = missing ...) and count as
failures (Dice 0, false negative in mAP). Predictions without truth are ignored with a
warning. The HC error compares the predicted ``hc_mm`` with the truth's reference HC
(HC18 CSV); mm metrics use the TRUTH's pixel size and are empty without one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import fetometry
from fetometry.data.loaders import load
from fetometry.data.sample import Sample
from fetometry.evaluation.metrics import MAP_DEFINITION, METRIC_NAMES, SegmentationMetrics
from fetometry.formatting import json_safe
from fetometry.io.images import read_mask

log = logging.getLogger(__name__)

MEASUREMENTS_CSV = "measurements.csv"
MASK_DIR = "masks"
MASK_SUFFIX = "_mask.png"
#: Columns of metrics.csv, in order.
CSV_COLUMNS = (
    "name",
    "status",
    "predicted",
    "has_truth",
    "dice",
    "iou",
    "recall",
    "precision",
    "hausdorff_mm",
    "hd95_mm",
    "pred_hc_mm",
    "ref_hc_mm",
    "hc_difference_mm",
    "hc_abs_difference_mm",
    "pixel_size_mm",
    "score",
)


class EvaluationInputError(ValueError):
    """The prediction or truth folder cannot be evaluated (missing files, bad layout)."""


def _optional_float(text: str | None) -> float | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_measurements(pred_dir: Path) -> dict[str, dict[str, str]]:
    """``{filename: row}`` from ``pred_dir/measurements.csv``."""
    path = pred_dir / MEASUREMENTS_CSV
    if not path.is_file():
        raise EvaluationInputError(f"{path}: not found; point --pred at the output folder of `fetometry predict`")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"filename", "hc_mm"} - set(reader.fieldnames or [])
        if missing:
            raise EvaluationInputError(f"{path}: missing columns {sorted(missing)}; is it a `fetometry predict` CSV?")
        return {row["filename"].strip(): row for row in reader if row.get("filename", "").strip()}


def load_truth(truth_dir: Path) -> list[Sample]:
    """Annotated samples of a data-set folder of any registered layout (``fetometry.data.load``)."""
    samples = load(truth_dir)
    annotated = [s for s in samples if s.mask_path is not None]
    if len(annotated) < len(samples):
        log.warning("%d truth images have no annotation and are not evaluated", len(samples) - len(annotated))
    if not annotated:
        raise EvaluationInputError(f"{truth_dir}: no annotated images (masks) to evaluate against")
    return annotated


def _pred_mask(pred_dir: Path, filename: str, shape: tuple[int, int]) -> np.ndarray | None:
    path = pred_dir / MASK_DIR / f"{Path(filename).stem}{MASK_SUFFIX}"
    if not path.is_file():
        return None
    mask = read_mask(path)
    if mask.shape != shape:
        raise EvaluationInputError(
            f"{path}: predicted mask is {mask.shape[1]}x{mask.shape[0]} px but the truth is "
            f"{shape[1]}x{shape[0]} px; masks must be saved at the original image size"
        )
    return mask


def _truth_pixel_size(sample: Sample, row: dict[str, str] | None) -> float | None:
    pixel_size = sample.pixel_size_mm
    predicted = _optional_float(row.get("pixel_size_mm")) if row else None
    if pixel_size is not None and predicted is not None and not math.isclose(pixel_size, predicted, rel_tol=1e-6):
        log.warning("%s: prediction used %.6g mm/px, truth says %.6g mm/px", sample.name, predicted, pixel_size)
    return pixel_size


def _case_status(row: dict[str, str] | None, mask: np.ndarray | None) -> str:
    if row is None and mask is None:
        return "missing: no prediction"
    if mask is None:
        return "missing: no mask file"
    if not mask.any():
        return "no head predicted"
    return "ok"


def _evaluate_case(metrics: SegmentationMetrics, sample: Sample, row: dict[str, str] | None, pred_dir: Path) -> None:
    truth = sample.load_mask()
    mask = _pred_mask(pred_dir, sample.name, truth.shape)
    case = metrics.add(
        sample.name,
        mask,
        truth,
        pixel_size_mm=_truth_pixel_size(sample, row),
        pred_hc_mm=_optional_float(row.get("hc_mm")) if row else None,
        ref_hc_mm=sample.hc_mm,
        score=_optional_float(row.get("confidence")) if row else None,
    )
    case["status"] = _case_status(row, mask)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_COLUMNS})


def evaluate_dirs(pred_dir: str | Path, truth_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Compare predictions with truth; write ``summary.json`` + ``metrics.csv``; return the summary dict."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    out_dir = pred_dir if out_dir is None else Path(out_dir)
    predictions = read_measurements(pred_dir)
    samples = load_truth(truth_dir)
    truth_names = {sample.name for sample in samples}
    extra = sorted(set(predictions) - truth_names)
    if extra:
        log.warning("%d predictions have no truth and are ignored: %s", len(extra), ", ".join(extra[:5]))
    metrics = SegmentationMetrics()
    for sample in samples:
        _evaluate_case(metrics, sample, predictions.get(sample.name), pred_dir)
    rows, stats = metrics.rows(), metrics.summary()
    summary = {
        "metadata": {
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fetometry_version": fetometry.__version__,
            "pred_dir": str(pred_dir),
            "truth_dir": str(truth_dir),
            "n_cases": stats["count"],
            "n_missed": stats["n_missed"],
            "n_no_prediction": sum(1 for row in rows if row["status"].startswith("missing")),
            "n_ignored_predictions": len(extra),
            "map_definition": MAP_DEFINITION,
            "conventions": (
                "Dice/IoU/recall/precision: 1.0 when both masks are empty, 0.0 when exactly one is; "
                "Hausdorff on 4-connected boundary pixels in mm with the truth's pixel size "
                "(null = undefined, e.g. a missed head); hc_difference_mm = predicted - reference; "
                "summary sd is the sample SD (ddof=1) over finite values"
            ),
        },
        "map": stats["map"],
        "mean": {name: stats["metrics"][name]["mean"] for name in METRIC_NAMES},
        "summary": stats["metrics"],
        "per_case": rows,
    }
    summary = json_safe(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    _write_csv(out_dir / "metrics.csv", rows)
    log.info("evaluated %d cases: mean Dice %s, mAP %s", stats["count"], summary["mean"]["dice"], summary["map"])
    return summary
