"""Does the HC depend on the pixel grid the head was saved on? The same heads resampled,
measured with the boundary offset in the input's pixels and with it following the pass
that drew the head.

    .venv/bin/python benchmarks/resolution.py [--model unext-scanners] [--factors 0.35,0.5,0.75,1,1.5]
        [--image-px-offset 1.144]

Each validation head of the model's own subject split is rendered on another pixel grid
(``fetometry.evaluation.cross_scanner``): the whole 800x540 frame resampled by each FACTOR
(``resampled``; the pixel size grows by 1 / FACTOR, so the CSV's HC holds), and the vendor
screen of the ``capture`` style at its own size and saved 900 and 640 pixels wide. Every
image goes through the one measurement path (plane check and the model's gate, as
`fetometry measure`). The fitted ellipse does not depend on the offset, so each head is
scored two ways from one fit:

- ``image px``: the offset subtracted as a fixed number of the input's pixels (the rule
  before 2026-12-07; ``--image-px-offset`` is the value the model shipped with then,
  default its current ``hc_offset_px``);
- ``follows the pass``: ``Predictor.boundary_offset_px``, the offset in canvas pixels of the
  network pass that drew the head (the rule now).

Per grid: Dice, heads measured, HC MAE and bias over every fitted ellipse both ways, and
the median offset that would match each head's reference HC, in canvas pixels of the pass
that drew it (what the second rule takes to be constant).
Writes benchmarks/results/resolution_<model>.json (+ .md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from fetometry.biometry.measures import measure_ellipse, offset_for_reference_px
from fetometry.data.loaders import load
from fetometry.evaluation.benchmark import model_validation_split
from fetometry.evaluation.cross_scanner import capture, measured_in_style, resampled
from fetometry.evaluation.metrics import dice
from fetometry.inference.backend import build_predictor
from fetometry.machine import hardware_description
from fetometry.pipeline import OK, plane_checker_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results_files import write_results  # noqa: E402

CAPTURE_WIDTHS = (900, 640)


def grids(factors: list[float]) -> dict:
    """name -> style(image, mask, pixel) on another pixel grid."""
    out = {f"frame x{factor:g}": resampled(factor) for factor in factors}
    out["capture"] = capture
    for width in CAPTURE_WIDTHS:

        def saved_small(image, mask, pixel, width=width):
            frame, moved, size = capture(image, mask, pixel)
            return resampled(width / frame.shape[1])(frame, moved, size)

        out[f"capture at {width} px"] = saved_small
    return out


def score_grid(predictor, checker, samples, name: str, style, image_px_offset: float) -> list[dict]:
    rows = []
    for sample, image, mask, pixel, result in measured_in_style(
        predictor, samples, style, plane_checker=checker, progress=True, desc=name
    ):
        row = {
            "name": sample.name,
            "status": result.status,
            "shape": list(image.shape),
            "pixel_size_mm": pixel,
            "ref_hc_mm": sample.hc_mm,
            "dice": dice(result.prediction.mask, mask) if result.prediction is not None else 0.0,
        }
        if result.ellipse is not None:
            follows = predictor.boundary_offset_px(result.prediction)
            row |= {
                "canvas_scale": result.prediction.canvas_scale,
                "offset_follows_px": follows,
                "matching_offset_canvas_px": matching_offset_canvas_px(result, pixel, sample.hc_mm),
                "hc_image_px_mm": measure_ellipse(result.ellipse, pixel, offset_px=image_px_offset).hc_mm,
                "hc_follows_mm": measure_ellipse(result.ellipse, pixel, offset_px=follows).hc_mm,
            }
        rows.append(row)
    return rows


def matching_offset_canvas_px(result, pixel_size_mm: float, reference_hc_mm: float) -> float | None:
    """The offset that would make this head's HC the reference's, in canvas pixels of the
    pass that drew it: the quantity ``Predictor.boundary_offset_px`` takes to be constant."""
    try:
        offset_px = offset_for_reference_px(result.ellipse, pixel_size_mm, reference_hc_mm)
    except ValueError:
        return None
    return offset_px * result.prediction.canvas_scale


def summary(rows: list[dict]) -> dict:
    matching = [r["matching_offset_canvas_px"] for r in rows if r.get("matching_offset_canvas_px") is not None]
    out = {
        "n": len(rows),
        "measured": sum(r["status"] == OK for r in rows),
        "dice": round(statistics.fmean(r["dice"] for r in rows), 4),
        "shape": rows[0]["shape"],
        "matching_offset_canvas_px_median": round(statistics.median(matching), 3) if matching else None,
    }
    for rule in ("image_px", "follows"):
        errors = [r[f"hc_{rule}_mm"] - r["ref_hc_mm"] for r in rows if f"hc_{rule}_mm" in r]
        out[rule] = {
            "fitted": len(errors),
            "hc_mae_mm": round(statistics.fmean(abs(e) for e in errors), 3),
            "hc_bias_mm": round(statistics.fmean(errors), 3),
        }
    return out


def markdown(report: dict) -> str:
    lines = [
        "| grid | frame (h x w) | measured | Dice | HC MAE / bias mm, offset in image px | HC MAE / bias mm, offset follows the pass "
        "| matching offset, canvas px (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["grids"].items():
        before, after = row["image_px"], row["follows"]
        lines.append(
            f"| {name} | {row['shape'][0]} x {row['shape'][1]} | {row['measured']}/{row['n']} | {row['dice']:.4f} | "
            f"{before['hc_mae_mm']:.2f} / {before['hc_bias_mm']:+.2f} | {after['hc_mae_mm']:.2f} / {after['hc_bias_mm']:+.2f} | "
            f"{row['matching_offset_canvas_px_median']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--factors", default="0.35,0.5,0.75,1,1.5")
    parser.add_argument(
        "--image-px-offset", type=float, help="the fixed offset of the old rule (default: hc_offset_px)"
    )
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--limit", type=int, default=0, help="first N validation images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    predictor = build_predictor(args.model)
    image_px_offset = predictor.hc_offset_px if args.image_px_offset is None else args.image_px_offset
    samples = model_validation_split(load(args.data), predictor)
    samples = samples[: args.limit] if args.limit else samples
    checker = plane_checker_for("on")
    started = time.perf_counter()
    factors = [float(f) for f in args.factors.split(",")]
    all_rows = {
        name: score_grid(predictor, checker, samples, name, style, image_px_offset)
        for name, style in grids(factors).items()
    }
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "model": args.model,
        "backend": predictor.config.backend,
        "validation_images": len(samples),
        "hc_offset_px": predictor.hc_offset_px,
        "image_px_offset": image_px_offset,
        "offset_reference_scale": predictor.offset_reference_scale,
        "grids": {name: summary(rows) for name, rows in all_rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": all_rows,
    }
    write_results(args.out / f"resolution_{Path(args.model).name}.json", report, markdown=markdown(report))


if __name__ == "__main__":
    main()
