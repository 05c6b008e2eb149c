"""The gate's ``outside_scan`` rule: its limit, and what it refuses on heads the scan sector cuts.

    .venv/bin/python benchmarks/outside_scan.py [--data ../shared/data/hc18] [--model unext-scanners]

A head that the scan sector's straight side cuts through (the head half under the fan's
edge, or a probe moved off it) has no visible outline there. HC18 holds no such frame, so
they are made from the model's own validation heads (``scanner_styles.cut_beyond_line``):
every pixel beyond a straight line is set to black (blurred by 0.8 px, as a scanner's
sector edge), the line placed at k times the reference head's extent in a random
direction from its centre (seeded per image):

- ``side-1.00``: the line touches the reference head; the whole head is in view, and
  only the skull's outer echo beyond its outline is lost. It should be measured.
- ``side-0.85``, ``side-0.70``: 15% and 30% of the head's extent in that direction lie
  beyond the sector. The head is partly unseen, and the frame should be refused.

The limit is chosen as the clipped fraction's is (``benchmarks/quality_gate.py``): on the
CORRECT frames of the TRAINING split (|HC error| <= 5%), the largest value widened by 25%,
rounded up to 0.01. Then, per set of frames (training, validation, the three cuts, and the
capture, large-head and combined styles of ``evaluation.cross_scanner``), the gate as
`fetometry measure` runs it without the plane check (research scoring isolates the gate),
with and without the rule: heads measured, HC error of the measured ones, refusals; and
the rule's own cost per image (`rule_cost`, 40 validation images).

Writes benchmarks/results/outside_scan.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fetometry.biometry.ellipse import ellipse_from_probability
from fetometry.biometry.field_of_view import outside_scan_fraction, scanned_area
from fetometry.biometry.measures import measure_ellipse
from fetometry.biometry.quality import refusing_rule
from fetometry.data.hc18 import load_hc18
from fetometry.data.scanner_styles import cut_beyond_line
from fetometry.data.splits import model_split
from fetometry.evaluation.cross_scanner import render
from fetometry.inference.backend import build_predictor
from fetometry.pipeline import OK, REFUSED, measure_batch
from fetometry.resources import DEFAULT_MODEL, resolve_weights
from fetometry.training.trainer import git_commit, hardware_description

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
# The gate's calibration rule, shared with the other thresholds: correct = |HC error| <= 5%, widened by 25%.
from quality_gate import CORRECT_RELATIVE_ERROR, RANGE_MARGIN  # noqa: E402
from results_files import write_results  # noqa: E402

CUTS = {"side-1.00": 1.0, "side-0.85": 0.85, "side-0.70": 0.7}
STYLES = ("capture", "large-head", "combined")
BATCH = 8


def frames_of(set_name: str, sample, index: int) -> tuple[np.ndarray, float]:
    """(image, pixel size) of one HC18 sample in ``set_name``."""
    image = sample.load_image().astype(np.float32)
    if set_name in CUTS:
        direction = float(np.random.default_rng(index).uniform(0.0, 2.0 * math.pi))
        return cut_beyond_line(image, sample.load_mask(), CUTS[set_name], direction), sample.pixel_size_mm
    if set_name in STYLES:
        styled, _, pixel_size_mm = render(set_name, image, sample.load_mask(), sample.pixel_size_mm)
        return styled, pixel_size_mm
    return image, sample.pixel_size_mm


def row_of(predictor, result, sample, pixel_size_mm: float) -> dict:
    """One frame: the rule's value, the verdicts with and without it, the HC error."""
    checks = result.quality.checks if result.quality is not None else None
    without = None
    if checks is not None:
        others = {name: check for name, check in checks.items() if name != "outside_scan"}
        others["outside_scan"] = {"passed": None}
        without = refusing_rule(others)
    hc = None
    if result.ellipse is not None and result.status in (OK, REFUSED):
        hc = measure_ellipse(
            result.ellipse, pixel_size_mm, offset_px=predictor.boundary_offset_px(result.prediction)
        ).hc_mm
    return {
        "name": sample.name,
        "status": result.status,
        "rule": result.quality.rule if result.quality is not None else None,
        "outside_scan_fraction": None if checks is None else checks["outside_scan"]["value"],
        "passed_with_rule": result.status == OK,
        "passed_without_rule": checks is not None and without is None,
        "hc_error_mm": None if hc is None else hc - sample.hc_mm,
        "reference_hc_mm": sample.hc_mm,
    }


def run_set(predictor, set_name: str, samples) -> list[dict]:
    rows = []
    for start in tqdm(range(0, len(samples), BATCH), desc=set_name, unit="batch"):
        chunk = samples[start : start + BATCH]
        frames = [frames_of(set_name, s, start + i) for i, s in enumerate(chunk)]
        results = measure_batch(
            predictor,
            [f[0] for f in frames],
            filenames=[s.name for s in chunk],
            pixel_sizes_mm=[f[1] for f in frames],
            plane_checker=None,
        )
        rows += [row_of(predictor, r, s, f[1]) for r, s, f in zip(results, chunk, frames)]
    return rows


def rule_cost_ms(samples, repeats: int = 5) -> dict:
    """Wall ms per image of the rule's own work (``scanned_area`` and
    ``outside_scan_fraction``, on the reference head's ellipse): median over the images of
    each image's fastest of ``repeats`` runs."""
    times = []
    for sample in samples:
        image = sample.load_image().astype(np.float32)
        ellipse = ellipse_from_probability(sample.load_mask().astype(np.float32))
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            outside_scan_fraction(ellipse, scanned_area(image))
            runs.append(time.perf_counter() - started)
        times.append(min(runs) * 1000)
    return {"images": len(times), "median_ms": round(statistics.median(times), 3), "shape": list(image.shape)}


def choose_limit(train_rows: list[dict]) -> tuple[float, int]:
    """(limit, correct frames): the largest value on correct training frames x 1.25, up to 0.01."""
    correct = [
        r
        for r in train_rows
        if r["outside_scan_fraction"] is not None
        and r["hc_error_mm"] is not None
        and abs(r["hc_error_mm"]) <= CORRECT_RELATIVE_ERROR * r["reference_hc_mm"]
    ]
    largest = max(r["outside_scan_fraction"] for r in correct)
    return math.ceil(largest * (1 + RANGE_MARGIN) * 100) / 100, len(correct)


def summary(rows: list[dict]) -> dict:
    def measured(key: str) -> dict:
        kept = [r for r in rows if r[key]]
        errors = [abs(r["hc_error_mm"]) for r in kept if r["hc_error_mm"] is not None]
        return {
            "measured": len(kept),
            "hc_mae_mm": round(statistics.fmean(errors), 3) if errors else None,
            "hc_abs_error_max_mm": round(max(errors), 2) if errors else None,
            "over_5_mm": sum(e > 5 for e in errors),
        }

    values = sorted(r["outside_scan_fraction"] for r in rows if r["outside_scan_fraction"] is not None)
    return {
        "images": len(rows),
        "without_rule": measured("passed_without_rule"),
        "with_rule": measured("passed_with_rule"),
        "refused_by_outside_scan": sum(r["rule"] == "outside_scan" for r in rows),
        "outside_scan_fraction_quantiles": {q: round(float(np.quantile(values, q)), 3) for q in (0.5, 0.9, 0.99, 1.0)}
        if values
        else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="a shipped name or a weights folder, or a,b,c: their ensemble"
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "outside_scan.json"))
    parser.add_argument(
        "--sets",
        default=",".join(("train", "validation", *CUTS, *STYLES)),
        help="comma-separated: train (the limit the rule would choose for this model), validation, "
        + ", ".join((*CUTS, *STYLES)),
    )
    args = parser.parse_args(argv)
    sets = args.sets.split(",")
    unknown = set(sets) - {"train", "validation", *CUTS, *STYLES}
    if unknown:
        parser.error(f"unknown sets {sorted(unknown)}")
    started = time.time()
    predictor = build_predictor(args.model, "auto")
    # The model's own split.json; an ensemble's members' (fetometry.data.model_split).
    members = predictor.config.members or [predictor.config.weights_dir]
    split = model_split([resolve_weights(m) for m in members], source="split.json").select(load_hc18(args.data))
    train, validation = split["train"], split["val"]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "git_commit": git_commit(),
        "model": args.model,
        "limit_in_use": predictor.config.thresholds.max_outside_scan_fraction,
        "plane_check": "off (the gate alone)",
        "sets": {},
    }
    limit = None
    if "train" in sets:
        train_rows = run_set(predictor, "train", train)
        limit, correct = choose_limit(train_rows)
        report["chosen_on_train"] = {
            "max_outside_scan_fraction": limit,
            "correct_train_images": correct,
            "rule": "largest value on correct TRAINING frames (|HC error| <= 5%) x 1.25, rounded up to 0.01",
        }
        report["sets"]["train"] = summary(train_rows)
    for set_name in (name for name in sets if name != "train"):
        rows = run_set(predictor, set_name, validation)
        report["sets"][set_name] = {**summary(rows), "rows": rows}
        print(set_name, json.dumps({k: v for k, v in report["sets"][set_name].items() if k != "rows"}), flush=True)
    report["rule_cost"] = rule_cost_ms(validation[:40])
    report["seconds"] = round(time.time() - started, 1)
    print(f"limit chosen on train: {limit} (in use: {report['limit_in_use']})")
    write_results(args.out, report, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
