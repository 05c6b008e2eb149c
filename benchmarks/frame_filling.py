"""A centred head larger than the frame: when does the gate refuse it as `clipped`, and how
far off is the HC that the fit extrapolates past the image's edge?

    .venv/bin/python benchmarks/frame_filling.py [--model unext-scanners] [--fills 0.9,1.0,1.05,1.1,1.15,1.2]

Each validation head of the model's own subject split is magnified about its centre and
moved to the middle of the 800x540 frame until its reference box is FILL of the frame
(``fetometry.evaluation.cross_scanner.frame_filling``). Above 1 the skull runs off the
top and bottom of the frame (or its sides), as a late-pregnancy head at a shallow depth
does. The pixel size shrinks with the zoom, so the CSV's HC still holds. Every image goes
through the one measurement path (plane check and the model's quality gate, as `fetometry
measure` runs them).

Per fill: heads measured and refused by rule, HC MAE and bias over every fitted ellipse
and over the measured ones. Over all fills: the HC error binned by the fitted ellipse's
clipped fraction (the share of its outline outside the image, the `clipped` rule's
feature): whether the rule's limit sits where the extrapolated HC stops being trustworthy.
Writes benchmarks/results/frame_filling_<model>.json (+ .md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from fetometry.biometry.ellipse import Ellipse
from fetometry.biometry.measures import measure_ellipse
from fetometry.biometry.quality import clipped_fraction
from fetometry.data.loaders import load
from fetometry.evaluation.benchmark import model_validation_split
from fetometry.evaluation.cross_scanner import frame_filling, head_box, measured_in_style
from fetometry.inference.backend import build_predictor
from fetometry.machine import hardware_description
from fetometry.pipeline import OK, plane_checker_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_files import write_results  # noqa: E402

#: Bins of the fitted ellipse's clipped fraction; the gate's limit (0.10 for the default) is an edge.
CLIPPED_EDGES = (0.0, 1e-9, 0.05, 0.10, 0.15, 0.20, 0.30, 1.01)


def reference_in_frame(mask: np.ndarray, zoom: float, frame_hw: tuple[int, int]) -> Ellipse | None:
    """The ellipse fitted to the original reference mask, carried into the rendered frame
    by the style's map (the box centre to the frame centre, scaled by ``zoom``): the whole
    reference outline, including the part past the frame's edge."""
    contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    box_cx, box_cy, _, _ = head_box(mask)
    height, width = frame_hw
    return Ellipse.from_axes(
        width / 2 + zoom * (cx - box_cx),
        height / 2 + zoom * (cy - box_cy),
        zoom * d1 / 2,
        zoom * d2 / 2,
        np.radians(angle),
    )


def score_fill(predictor, checker, samples, fill: float, *, progress: bool) -> list[dict]:
    rows = []
    for sample, image, _, pixel, result in measured_in_style(
        predictor, samples, frame_filling(fill), plane_checker=checker, progress=progress, desc=f"fill {fill}"
    ):
        ellipse = result.ellipse
        reference = reference_in_frame(sample.load_mask(), sample.pixel_size_mm / pixel, image.shape)
        offset = predictor.boundary_offset_px(result.prediction)
        hc_any = measure_ellipse(ellipse, pixel, offset_px=offset).hc_mm if ellipse else None
        rows.append(
            {
                "name": sample.name,
                "fill": fill,
                "status": result.status,
                "rule": result.quality.rule if result.quality is not None else None,
                "detail": result.detail,
                "ref_hc_mm": sample.hc_mm,
                "hc_any_mm": hc_any,
                "hc_measured_mm": result.measurement.hc_mm if result.measurement else None,
                "clipped_fraction": clipped_fraction(ellipse, image.shape) if ellipse else None,
                "reference_clipped_fraction": clipped_fraction(reference, image.shape) if reference else None,
            }
            | axis_errors(ellipse, reference)
        )
    return rows


def axis_errors(ellipse: Ellipse | None, reference: Ellipse | None) -> dict:
    """The fitted ellipse's minor and major axes (BPD and OFD, before the boundary offset)
    against the reference ellipse's, in % of the reference's: a head rounded off at the
    frame's edge can keep its HC while its BPD grows and its OFD shrinks."""
    if ellipse is None or reference is None:
        return {"minor_axis_error_pct": None, "major_axis_error_pct": None}
    return {
        "minor_axis_error_pct": 100 * (ellipse.semi_minor_px / reference.semi_minor_px - 1),
        "major_axis_error_pct": 100 * (ellipse.semi_major_px / reference.semi_major_px - 1),
    }


def axis_summary(rows: list[dict]) -> dict:
    out = {}
    for axis in ("minor", "major"):
        errors = [r[f"{axis}_axis_error_pct"] for r in rows if r[f"{axis}_axis_error_pct"] is not None]
        out[axis] = {
            "median_pct": round(statistics.median(errors), 2) if errors else None,
            "beyond_5pct": sum(abs(e) > 5 for e in errors),
        }
    return out


def error_summary(rows: list[dict], key: str) -> dict:
    errors = [r[key] - r["ref_hc_mm"] for r in rows if r[key] is not None]
    if not errors:
        return {"n": 0}
    return {
        "n": len(errors),
        "mae_mm": round(statistics.fmean(abs(e) for e in errors), 3),
        "bias_mm": round(statistics.fmean(errors), 3),
        "median_abs_pct": round(
            100 * statistics.median(abs(r[key] - r["ref_hc_mm"]) / r["ref_hc_mm"] for r in rows if r[key] is not None),
            2,
        ),
        "worst_abs_mm": round(max(abs(e) for e in errors), 2),
    }


def per_fill(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "measured": sum(r["status"] == OK for r in rows),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "refused_by_rule": dict(Counter(r["rule"] for r in rows if r["rule"])),
        "fitted": error_summary(rows, "hc_any_mm"),
        "measured_hc": error_summary(rows, "hc_measured_mm"),
        "axes_fitted": axis_summary(rows),
        "axes_measured": axis_summary([r for r in rows if r["status"] == OK]),
        "reference_clipped_fraction_median": round(
            statistics.median(
                r["reference_clipped_fraction"] for r in rows if r["reference_clipped_fraction"] is not None
            ),
            4,
        ),
        "clipped_fraction_median": round(
            statistics.median(r["clipped_fraction"] for r in rows if r["clipped_fraction"] is not None), 4
        ),
    }


def by_clipped_fraction(rows: list[dict]) -> list[dict]:
    fitted = [r for r in rows if r["clipped_fraction"] is not None]
    bins = []
    for low, high in zip(CLIPPED_EDGES, CLIPPED_EDGES[1:]):
        inside = [r for r in fitted if low <= r["clipped_fraction"] < high]
        bins.append(
            {
                "clipped_from": low,
                "clipped_to": high,
                "refused_clipped": sum(r["rule"] == "clipped" for r in inside),
                "measured": sum(r["status"] == OK for r in inside),
            }
            | error_summary(inside, "hc_any_mm")
        )
    return bins


def markdown(report: dict) -> str:
    lines = [
        "| fill | reference outline outside (median) | measured | not measured (rule or status: n) | HC MAE / bias mm, fitted | "
        "HC MAE / bias mm, measured | fitted outline outside (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fill, row in report["fills"].items():
        others = {k: v for k, v in row["statuses"].items() if k not in (OK, "refused")}  # the plane check, the fit
        rules = ", ".join(f"{k}: {v}" for k, v in sorted({**row["refused_by_rule"], **others}.items())) or "-"
        fitted, measured = row["fitted"], row["measured_hc"]
        lines.append(
            f"| {fill} | {row['reference_clipped_fraction_median']} | {row['measured']}/{row['n']} | {rules} | {fitted.get('mae_mm')} / {fitted.get('bias_mm')} | "
            f"{measured.get('mae_mm')} / {measured.get('bias_mm')} | {row['clipped_fraction_median']} |"
        )
    lines += [
        "",
        "| clipped fraction | fitted | refused as clipped | HC MAE mm | bias mm | median abs. error % | worst mm |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for b in report["by_clipped_fraction"]:
        if b["n"]:
            lines.append(
                f"| {b['clipped_from']:.2f}-{min(b['clipped_to'], 1.0):.2f} | {b['n']} | {b['refused_clipped']} | "
                f"{b['mae_mm']} | {b['bias_mm']} | {b['median_abs_pct']} | {b['worst_abs_mm']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--fills", default="0.9,1.0,1.05,1.1,1.15,1.2")
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--limit", type=int, default=0, help="first N validation images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    predictor = build_predictor(args.model)
    samples = model_validation_split(load(args.data), predictor)
    samples = samples[: args.limit] if args.limit else samples
    checker = plane_checker_for("on")
    started = time.perf_counter()
    rows = [
        row
        for fill in args.fills.split(",")
        for row in score_fill(predictor, checker, samples, float(fill), progress=True)
    ]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "model": args.model,
        "backend": predictor.config.backend,
        "validation_images": len(samples),
        "clipped_limit": predictor.config.thresholds.max_clipped_fraction,
        "fills": {fill: per_fill([r for r in rows if r["fill"] == float(fill)]) for fill in args.fills.split(",")},
        "by_clipped_fraction": by_clipped_fraction(rows),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    write_results(args.out / f"frame_filling_{Path(args.model).name}.json", report, markdown=markdown(report))


if __name__ == "__main__":
    main()
