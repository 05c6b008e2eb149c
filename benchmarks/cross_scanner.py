"""Heads from other scanners: each model on its own HC18 validation split, as HC18 gives
it and re-rendered in other centres' styles (fetometry.evaluation.cross_scanner), plus
SonoNet's example frames from a UK centre.

    .venv/bin/python benchmarks/cross_scanner.py --models attention-unet,unext-gpu [--limit N]

Per model and style: images measured (plane check and the model's quality gate, as
`fetometry measure` runs them), Dice against the moved reference mask, HC MAE and bias
against the CSV's HC over every fitted ellipse (research scoring) and over the measured
ones, mean confidence, and within-subject repeatability (the sonographer's on the same
pairs beside it). SonoNet frames: the two brain planes should be measured (no pixel size
is known, so in px), the eleven other planes refused. Writes
benchmarks/results/cross_scanner.json (+ .md) and overlays of the SonoNet frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from fetometry.biometry.measures import measure_ellipse
from fetometry.data.loaders import load
from fetometry.evaluation.benchmark import model_validation_split, within_subject_repeatability
from fetometry.evaluation.cross_scanner import STYLES, measured_in_style
from fetometry.evaluation.metrics import dice
from fetometry.inference.predictor import DEFAULT_SECOND_LOOK, Predictor
from fetometry.io.images import read_image
from fetometry.machine import hardware_description
from fetometry.pipeline import OK, measure_batch, plane_checker_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_files import write_results  # noqa: E402

SONONET_FRAMES = Path("../shared/data/sononet/example_frames")


def score_style(predictor, checker, samples, style: str, *, progress: bool) -> dict:
    rows = []
    for sample, _, mask, pixel, result in measured_in_style(
        predictor, samples, style, plane_checker=checker, progress=progress
    ):
        hc_any = (
            measure_ellipse(result.ellipse, pixel, offset_px=predictor.boundary_offset_px(result.prediction)).hc_mm
            if result.ellipse is not None
            else None
        )
        rows.append(
            {
                "name": sample.name,
                "subject": sample.subject,
                "status": result.status,
                "detail": result.detail[:80],
                "dice": dice(result.prediction.mask, mask) if result.prediction is not None else 0.0,
                "confidence": result.prediction.confidence if result.prediction is not None else None,
                "ref_hc_mm": sample.hc_mm,
                "hc_any_mm": hc_any,
                "hc_measured_mm": result.measurement.hc_mm if result.measurement else None,
            }
        )
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    def errors(key: str) -> list[float]:
        return [r[key] - r["ref_hc_mm"] for r in rows if r[key] is not None and r["ref_hc_mm"] is not None]

    any_err, measured_err = errors("hc_any_mm"), errors("hc_measured_mm")
    names = [r["name"] for r in rows]
    subjects = [r["subject"] for r in rows]
    worst = sorted(rows, key=lambda r: r["dice"])[:3]
    return {
        "n": len(rows),
        "measured": sum(r["status"] == OK for r in rows),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "hc_mae_mm": float(np.mean(np.abs(any_err))) if any_err else None,
        "hc_bias_mm": float(np.mean(any_err)) if any_err else None,
        "hc_fitted": len(any_err),
        "hc_mae_measured_mm": float(np.mean(np.abs(measured_err))) if measured_err else None,
        "confidence": float(np.mean([r["confidence"] for r in rows if r["confidence"] is not None])),
        "repeatability_model_mm": within_subject_repeatability(
            names, [r["hc_any_mm"] for r in rows], subjects=subjects
        )["mean_abs_difference_mm"],
        "repeatability_reference_mm": within_subject_repeatability(
            names, [r["ref_hc_mm"] for r in rows], subjects=subjects
        )["mean_abs_difference_mm"],
        "worst": [{k: r[k] for k in ("name", "dice", "status", "hc_any_mm", "ref_hc_mm")} for r in worst],
    }


def score_sononet(predictor, checker, out_dir: Path, label: str) -> list[dict]:
    rows = []
    for path in sorted(SONONET_FRAMES.glob("*.png")):
        image = read_image(path)
        result = measure_batch(predictor, [image], filenames=[path.name], pixel_sizes_mm=[None], plane_checker=checker)[
            0
        ]
        overlay = cv2.cvtColor((image * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        if result.ellipse is not None:
            e = result.ellipse
            centre, axes = (
                (round(e.center_x_px), round(e.center_y_px)),
                (round(e.semi_major_px), round(e.semi_minor_px)),
            )
            cv2.ellipse(overlay, centre, axes, float(np.degrees(e.angle_rad)), 0, 360, (0, 255, 0), 2)
        cv2.imwrite(str(out_dir / f"{label.replace('/', '_')}_{path.stem}.png"), overlay)
        rows.append(
            {
                "frame": path.stem,
                "status": result.status,
                "detail": result.detail[:100],
                "confidence": None if result.prediction is None else round(result.prediction.confidence, 4),
                "semi_axes_px": None
                if result.ellipse is None
                else [round(result.ellipse.semi_major_px, 1), round(result.ellipse.semi_minor_px, 1)],
            }
        )
    return rows


def markdown(report: dict) -> str:
    lines = [
        "| model | style | measured | Dice | HC MAE mm (fitted) | HC bias mm | HC MAE mm (measured) | confidence | repeat. model / sonographer mm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, styles in report["models"].items():
        for style, s in styles.items():
            f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
            lines.append(
                f"| {model} | {style} | {s['measured']}/{s['n']} | {s['dice']:.4f} | {f(s['hc_mae_mm'])} | "
                f"{f(s['hc_bias_mm'], 2)} | {f(s['hc_mae_measured_mm'])} | {s['confidence']:.3f} | "
                f"{f(s['repeatability_model_mm'])} / {f(s['repeatability_reference_mm'])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="attention-unet,unext-gpu", help="comma-separated weights names or folders")
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--limit", type=int, default=0, help="first N validation images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="cross_scanner", help="results file name")
    parser.add_argument(
        "--second-look",
        choices=("config", "on", "off"),
        default="config",
        help="the second look at small heads: as the model's config says, or forced on (default settings) or off",
    )
    args = parser.parse_args()

    all_samples = load(args.data)
    checker = plane_checker_for("on")
    overlays = args.out / f"{args.tag}_sononet"
    overlays.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware_description(), "models": {}, "sononet": {}}
    report["validation_images"] = {}
    started = time.perf_counter()
    for name in args.models.split(","):
        predictor = Predictor.from_weights(name)
        if args.second_look != "config":
            predictor.second_look = dict(DEFAULT_SECOND_LOOK) if args.second_look == "on" else None
        samples = model_validation_split(all_samples, predictor)
        samples = samples[: args.limit] if args.limit else samples
        report["validation_images"][name] = len(samples)
        report.setdefault("second_look", {})[name] = predictor.second_look
        report["models"][name] = {
            style: score_style(predictor, checker, samples, style, progress=True) for style in args.styles.split(",")
        }
        if SONONET_FRAMES.is_dir():
            report["sononet"][name] = score_sononet(predictor, checker, overlays, name)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out / f"{args.tag}.json", report, markdown=markdown(report))
    for model, rows in report["sononet"].items():
        verdicts = defaultdict(list)
        for row in rows:
            verdicts[row["status"]].append(row["frame"])
        print(model, "SonoNet frames:", dict(verdicts))


if __name__ == "__main__":
    main()
