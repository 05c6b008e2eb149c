"""How much skull wall can be lost before the HC goes wrong? A sweep of the lost-wall style.

    .venv/bin/python benchmarks/wall_loss_sweep.py [--models unext-scanners,unext-gpu] [--out DIR]

The `lateral-wall-loss` style (``evaluation.cross_scanner``) takes the skull's side walls to
black within 60 degrees of horizontal, on a band 8% of the head's minor diameter wide. Here
the same loss (``cross_scanner.wall_loss``, full darkness) is swept: the half-angle
from 30 to 85 degrees at a band of 8%, and the band from 4% to 16% at 60 degrees. The
default's training augmentation reaches 70 degrees and 12%, so the settings past those ask
whether what it learnt carries beyond its own ranges.

Each model on its own validation split, through the one measurement path without the plane
check (the gate alone, as ``outside_scan.py`` scores it): per setting, the heads its gate
measures, and the HC MAE and bias over every fitted ellipse.
Writes DIR/wall_loss_sweep.json (+ .md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from fetometry.biometry.measures import measure_ellipse
from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.evaluation.cross_scanner import measured_in_style, wall_loss
from fetometry.inference.backend import build_predictor
from fetometry.pipeline import OK
from fetometry.resources import resolve_weights
from fetometry.training.trainer import git_commit, hardware_description

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_files import write_results  # noqa: E402

#: (half-angle in degrees, band as a share of the minor diameter); (60, 0.08) is the test style.
SETTINGS = ((30, 0.08), (45, 0.08), (60, 0.08), (70, 0.08), (75, 0.08), (85, 0.08), (60, 0.04), (60, 0.12), (60, 0.16))


def score(predictor, samples, half_angle_deg: float, band: float) -> dict:
    """Heads measured by the gate, and HC MAE / bias over every fitted ellipse, in mm."""
    errors, measured = [], 0
    for sample, _, _, pixel, result in measured_in_style(
        predictor, samples, wall_loss(half_angle_deg, band), desc=f"{half_angle_deg} deg, {band:.0%}"
    ):
        measured += result.status == OK
        if result.ellipse is not None:
            offset = predictor.boundary_offset_px(result.prediction)
            errors.append(measure_ellipse(result.ellipse, pixel, offset_px=offset).hc_mm - sample.hc_mm)
    return {
        "half_angle_deg": half_angle_deg,
        "band": band,
        "measured": measured,
        "fitted": len(errors),
        "hc_mae_mm": round(statistics.fmean(abs(e) for e in errors), 3),
        "hc_bias_mm": round(statistics.fmean(errors), 3),
    }


def markdown(report: dict) -> str:
    models = list(report["models"])
    lines = [
        "| half-angle, band | " + " | ".join(f"{m}: HC MAE / bias mm, measured" for m in models) + " |",
        "|---" * (len(models) + 1) + "|",
    ]
    for index, (angle, band) in enumerate(SETTINGS):
        cells = []
        for model in models:
            row = report["models"][model][index]
            cells.append(f"{row['hc_mae_mm']:.2f} / {row['hc_bias_mm']:+.2f}, {row['measured']}/{report['images']}")
        lines.append(f"| {angle} deg, {band:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="unext-scanners,unext-gpu")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--limit", type=int, default=0, help="first N validation images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    started = time.time()
    data = load_hc18(args.data)
    report = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware_description(), "git_commit": git_commit()}
    report["models"] = {}
    for model in args.models.split(","):
        predictor = build_predictor(model, "auto")
        samples = model_split([resolve_weights(predictor.config.weights_dir)], source="split.json").select(data)["val"]
        samples = samples[: args.limit] if args.limit else samples
        report["images"] = len(samples)
        report["models"][model] = [score(predictor, samples, angle, band) for angle, band in SETTINGS]
    report["seconds"] = round(time.time() - started, 1)
    write_results(args.out / "wall_loss_sweep.json", report, markdown=markdown(report), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
