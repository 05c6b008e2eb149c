"""Is a model's HC error set by its canvas? The error by pixel size, in mm and in pixels.

    .venv/bin/python benchmarks/hc_error_by_pixel_size.py [--model unext-scanners]

HC18 images are all 800x540, so every head reaches the network at the same image-to-canvas
scale while the pixel size runs from 0.05 to 0.39 mm. An error that is a fixed share of a
canvas pixel is then a fixed number of IMAGE pixels at every pixel size (and grows in mm
with it); an error set by the anatomy or the annotation would not be. This scores the model
(foundation protocol: full resolution, every image, no gate) on its training and its
validation split and groups the absolute HC error by pixel size, in mm, in image pixels
of perimeter and as a share of the HC, and by head size (the reference HC: whether the
error or its sign changes with the trimester). Writes benchmarks/results/hc_error_by_pixel_size_MODEL.json.
Needs ../shared/data/hc18.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fetometry.data.loaders import load
from fetometry.data.splits import model_split
from fetometry.inference.backend import build_predictor
from fetometry.machine import hardware_description
from fetometry.pipeline import result_from_prediction

REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"
BINS_MM = (0.0, 0.1, 0.13, 0.16, 0.2, 1.0)
#: Reference HC (mm): about the first trimester, mid-pregnancy, late second and the third.
BINS_HC_MM = (0.0, 100.0, 175.0, 250.0, 1000.0)


def errors(predictor, samples, part: str) -> list[dict]:
    rows = []
    for sample in tqdm(samples, desc=part, mininterval=10):
        prediction = predictor.predict_batch([sample.load_image()])[0]
        result = result_from_prediction(predictor, sample.name, prediction, sample.pixel_size_mm, gate=False)
        if result.measurement is not None:
            error = result.measurement.hc_mm - sample.hc_mm
            rows.append(
                {"name": sample.name, "pixel_size_mm": sample.pixel_size_mm, "hc_mm": sample.hc_mm, "error_mm": error}
            )
    return rows


def binned(values: np.ndarray, edges: tuple[float, ...], name: str, stats) -> list[dict]:
    """One row per non-empty bin [low, high) of ``values``: ``{name: [low, high], "n": ...}``
    and what ``stats(inside)`` (a bool mask of the rows in the bin) adds."""
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (values >= low) & (values < high)
        if inside.any():
            out.append({name: [low, high], "n": int(inside.sum()), **stats(inside)})
    return out


def by_pixel_size(rows: list[dict]) -> list[dict]:
    pixel = np.array([r["pixel_size_mm"] for r in rows])
    error = np.abs([r["error_mm"] for r in rows])
    hc = np.array([r["hc_mm"] for r in rows])
    return binned(
        pixel,
        BINS_MM,
        "pixel_size_mm",
        lambda inside: {
            "hc_mae_mm": round(float(error[inside].mean()), 3),
            "hc_mae_image_px": round(float((error[inside] / pixel[inside]).mean()), 2),
            "hc_mae_percent": round(float((100 * error[inside] / hc[inside]).mean()), 3),
        },
    )


def by_head_size(rows: list[dict]) -> list[dict]:
    """The error by the reference HC: does the model fall short (or overshoot) on large heads?"""
    hc = np.array([r["hc_mm"] for r in rows])
    error = np.array([r["error_mm"] for r in rows])
    return binned(
        hc,
        BINS_HC_MM,
        "hc_mm",
        lambda inside: {
            "hc_mae_mm": round(float(np.abs(error[inside]).mean()), 3),
            "hc_bias_mm": round(float(error[inside].mean()), 3),
            "hc_bias_percent": round(float((100 * error[inside] / hc[inside]).mean()), 3),
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unext-scanners")
    args = parser.parse_args(argv)
    predictor = build_predictor(args.model, "auto")
    parts = model_split(predictor.config).select(load(HC18, require_masks=True))
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "hardware": hardware_description(), "model": args.model}
    for part, samples in parts.items():
        rows = errors(predictor, samples, part)
        worst_first = sorted(rows, key=lambda r: -abs(r["error_mm"]))
        report[part] = {
            "measured": len(rows),
            "hc_mae_mm": round(float(np.mean(np.abs([r["error_mm"] for r in rows]))), 3),
            "hc_mae_mm_without_10_worst": round(float(np.mean(np.abs([r["error_mm"] for r in worst_first[10:]]))), 3),
            "worst_10": [{"name": r["name"], "error_mm": round(r["error_mm"], 2)} for r in worst_first[:10]],
            "by_pixel_size": by_pixel_size(rows),
            "by_head_size": by_head_size(rows),
        }
    out = REPO / "benchmarks" / "results" / f"hc_error_by_pixel_size_{Path(args.model).name}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
