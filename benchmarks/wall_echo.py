"""Can the gate see a skull wall with no echo under the outline? A rule measured, not built.

    .venv/bin/python benchmarks/wall_echo.py [--data ../shared/data/hc18] [--model unext-scanners]

The `lateral-wall-loss` style (``evaluation.cross_scanner``) takes the skull's side walls
to black, and every shipped model measures those heads short at unchanged confidence
(6.6-8.0 mm; the default, trained with lost walls, 2.6 mm). A gate rule could refuse a head whose outline runs where the image shows no
skull echo. This script measures whether such a rule can tell those heads from HC18's own.

Per head, along the model's fitted ellipse (360 points, as ``fetometry measure`` fits it):
the image sampled across the outline, 15% of the semi-minor axis either side; the profile
averaged over 7 neighbouring points along the outline (so a continuous bone echo counts and
isolated speckle does not); its peak. The echo contrast of a point is (peak - the median of
the head's interior inside 0.7 of the ellipse) / (the 90th percentile of the peaks - that
median): about 1 where the skull is bright, about 0 where the outline runs through tissue
as dark as the brain. Per head:

- ``lateral_contrast`` / ``polar_contrast``: the median contrast of the points within 20
  degrees of horizontal / vertical, seen from the centre (the beam runs down the image, so
  the lateral walls are the ones it meets at a grazing angle);
- ``unseen_fraction``: the fraction of the outline's length with contrast below 0.3.

The candidate rule's limit is chosen as ``outside_scan``'s is (``benchmarks/quality_gate.py``):
the largest ``unseen_fraction`` of the CORRECT training heads (|HC error| <= 5%), widened
by 25%; and, more strictly, their 99th percentile. Per set: what each limit would refuse.

Writes benchmarks/results/wall_echo.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from fetometry.biometry.ellipse import Ellipse
from fetometry.biometry.measures import measure_ellipse
from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.evaluation.cross_scanner import measured_in_style
from fetometry.inference.backend import build_predictor
from fetometry.resources import DEFAULT_MODEL, resolve_weights
from fetometry.training.trainer import git_commit, hardware_description

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from quality_gate import CORRECT_RELATIVE_ERROR, RANGE_MARGIN  # noqa: E402
from results_files import write_results  # noqa: E402

POINTS = 360
REACH = 0.15  # of the semi-minor axis, either side of the outline
STEPS = 31
ALONG = 7  # points averaged along the outline
UNSEEN_CONTRAST = 0.3
SECTOR_DEG = 20.0
SETS = {
    "train": "hc18",
    "validation": "hc18",
    "lateral-wall-loss": "lateral-wall-loss",
    "lateral-shadow": "lateral-shadow",
}


def echo_contrast(image: np.ndarray, ellipse: Ellipse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contrast, arc length, polar angle in degrees from horizontal) of each outline point
    (points whose profile leaves the image are NaN)."""
    t = np.linspace(0.0, 2.0 * np.pi, POINTS, endpoint=False)
    cos_a, sin_a = math.cos(ellipse.angle_rad), math.sin(ellipse.angle_rad)
    a, b = ellipse.semi_major_px, ellipse.semi_minor_px
    u, v = a * np.cos(t), b * np.sin(t)
    x = ellipse.center_x_px + u * cos_a - v * sin_a
    y = ellipse.center_y_px + u * sin_a + v * cos_a
    # The outward normal is the gradient of (u/a)^2 + (v/b)^2, turned into image axes.
    nu, nv = np.cos(t) / a, np.sin(t) / b
    nx, ny = nu * cos_a - nv * sin_a, nu * sin_a + nv * cos_a
    length = np.hypot(nx, ny)
    offsets = np.linspace(-REACH * b, REACH * b, STEPS)
    map_x = (x[:, None] + offsets * (nx / length)[:, None]).astype(np.float32)
    map_y = (y[:, None] + offsets * (ny / length)[:, None]).astype(np.float32)
    height, width = image.shape
    profiles = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    leaves = ((map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)).any(axis=1)
    padded = np.concatenate([profiles[-(ALONG // 2) :], profiles, profiles[: ALONG // 2]])
    along = cv2.blur(padded, (1, ALONG))[ALONG // 2 : ALONG // 2 + POINTS]
    peaks = np.where(leaves, np.nan, along.max(axis=1))
    rows, cols = np.mgrid[0:height, 0:width]
    interior = float(np.median(image[ellipse.normalised_radius(cols.astype(float), rows.astype(float)) < 0.7]))
    bright = float(np.nanpercentile(peaks, 90))
    contrast = (peaks - interior) / max(bright - interior, 1e-6)
    arc = np.hypot(np.diff(np.r_[x, x[:1]]), np.diff(np.r_[y, y[:1]]))
    angle = np.degrees(np.arctan2(np.abs(y - ellipse.center_y_px), np.abs(x - ellipse.center_x_px)))
    return contrast, arc, angle


def head_row(predictor, sample, image: np.ndarray, _mask, pixel_size_mm: float, result) -> dict | None:
    """The echo statistics and the HC error of one measured head (None without an ellipse)."""
    ellipse = result.ellipse
    if ellipse is None:
        return None
    contrast, arc, angle = echo_contrast(image, ellipse)
    seen = np.isfinite(contrast)
    hc = measure_ellipse(ellipse, pixel_size_mm, offset_px=predictor.boundary_offset_px(result.prediction)).hc_mm
    return {
        "name": sample.name,
        "status": result.status,
        "hc_error_mm": round(hc - sample.hc_mm, 3),
        "reference_hc_mm": sample.hc_mm,
        "lateral_contrast": sector_median(contrast, angle <= SECTOR_DEG),
        "polar_contrast": sector_median(contrast, angle >= 90.0 - SECTOR_DEG),
        "unseen_fraction": round(float(arc[seen & (contrast < UNSEEN_CONTRAST)].sum() / arc[seen].sum()), 3),
    }


def quantiles(values: list[float | None]) -> dict:
    """Quantiles of the heads that have the value (a head near the image's edge may have no
    outline point in a sector whose profile stays in the image)."""
    known = [v for v in values if v is not None]
    return {str(q): round(float(np.quantile(known, q)), 3) for q in (0.1, 0.5, 0.9, 0.99, 1.0)}


def faintest_tenth(rows: list[dict]) -> dict:
    """The tenth of the heads with the faintest lateral walls: how well they are measured."""
    known = sorted((r for r in rows if r["lateral_contrast"] is not None), key=lambda r: r["lateral_contrast"])
    tenth = known[: max(1, len(known) // 10)]
    return {
        "heads": len(tenth),
        "lateral_contrast_at_most": tenth[-1]["lateral_contrast"],
        "hc_mae_mm": round(statistics.fmean(abs(r["hc_error_mm"]) for r in tenth), 2),
        "within_5_percent": sum(abs(r["hc_error_mm"]) <= CORRECT_RELATIVE_ERROR * r["reference_hc_mm"] for r in tenth),
    }


def sector_median(contrast: np.ndarray, in_sector: np.ndarray) -> float | None:
    values = contrast[in_sector & np.isfinite(contrast)]
    return round(float(np.median(values)), 3) if values.size else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "wall_echo.json"))
    args = parser.parse_args(argv)
    started = time.time()
    predictor = build_predictor(args.model, "auto")
    split = model_split([resolve_weights(predictor.config.weights_dir)], source="split.json").select(
        load_hc18(args.data)
    )
    rows = {}
    for set_name, style in SETS.items():
        samples = split["train"] if set_name == "train" else split["val"]
        measured = measured_in_style(predictor, samples, style, progress=True, desc=set_name)
        rows[set_name] = [r for r in (head_row(predictor, *m) for m in measured) if r is not None]
    correct = [
        r["unseen_fraction"]
        for r in rows["train"]
        if abs(r["hc_error_mm"]) <= CORRECT_RELATIVE_ERROR * r["reference_hc_mm"]
    ]
    limits = {
        "largest_x1.25": math.ceil(max(correct) * (1 + RANGE_MARGIN) * 100) / 100,
        "p99": round(float(np.quantile(correct, 0.99)), 3),
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "git_commit": git_commit(),
        "model": args.model,
        "correct_train_heads": len(correct),
        "limits": limits,
        "sets": {},
    }
    for set_name, set_rows in rows.items():
        errors = [r["hc_error_mm"] for r in set_rows]
        report["sets"][set_name] = {
            "heads": len(set_rows),
            "hc_bias_mm": round(statistics.fmean(errors), 2),
            "lateral_contrast": quantiles([r["lateral_contrast"] for r in set_rows]),
            "polar_contrast": quantiles([r["polar_contrast"] for r in set_rows]),
            "unseen_fraction": quantiles([r["unseen_fraction"] for r in set_rows]),
            "refused": {name: sum(r["unseen_fraction"] > limit for r in set_rows) for name, limit in limits.items()},
            "faintest_tenth": faintest_tenth(set_rows),
            "rows": set_rows,
        }
        print(set_name, json.dumps({k: v for k, v in report["sets"][set_name].items() if k != "rows"}), flush=True)
    report["seconds"] = round(time.time() - started, 1)
    print(f"limits {limits}")
    write_results(args.out, report, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
