"""The stream's tracked frames on a smaller canvas: what it costs in accuracy, what it saves.

    .venv/bin/python benchmarks/tracked_canvas.py [--model unext-scanners] [--canvases 256x384,192x288]

A tracked frame of ``fetometry stream`` is segmented once, in the head window carried from
the frame before (``Predictor.predict_in_window``). This script asks whether that one pass
can run on a smaller canvas than the model's. On the model's HC18 validation images (the
subject split it never trained on), for every image whose head takes the second look (the
only ones a stream tracks; a head that fills the frame is segmented in one full-frame pass
on the model's canvas either way):

- ``still``: the image as ``fetometry predict`` measures it (first look, second look);
- ``window WxH``: the second look alone, in the window the still image's prediction gives
  (``Predictor.next_window``, what the stream carries to the next frame), on that canvas;
- ``window WxH, moved``: the same with the window moved by ``--shift`` px right and down
  (clipped to the frame), a head that moved between frames.

and, on every validation image, ``whole WxH``: the still image's two passes both on that
canvas (could every frame of a stream run on a smaller canvas?).

Every variant is measured with the quality gate off (HC18 protocol: every image scored)
and compared with the sonographer's HC (CSV), the reference mask (Dice) and the still
image's own HC. The network's time per frame on each canvas (batch 4, 1 and 2 threads) is
measured in the same run. Needs ../shared/data/hc18.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fetometry.data.loaders import load
from fetometry.data.splits import model_split
from fetometry.evaluation.metrics import dice
from fetometry.inference.backend import build_predictor, cached_onnx_path
from fetometry.inference.onnx_session import create_session
from fetometry.machine import hardware_description
from fetometry.pipeline import result_from_prediction
from fetometry.resources import resolve_weights
from fetometry.weights_config import WeightsConfig

REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"


def moved(window: tuple[slice, slice], shift: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    rows, cols = window
    dy = min(shift, shape[0] - rows.stop)
    dx = min(shift, shape[1] - cols.stop)
    return slice(rows.start + dy, rows.stop + dy), slice(cols.start + dx, cols.stop + dx)


@contextmanager
def model_canvas(predictor, canvas_hw: tuple[int, int]):
    """The predictor running its network on ``canvas_hw`` instead of the model's canvas
    (a window chosen before keeps the model canvas's aspect; only the resolution changes)."""
    shipped = predictor.canvas_hw
    predictor.canvas_hw = canvas_hw
    try:
        yield predictor
    finally:
        predictor.canvas_hw = shipped


def score(predictor, sample, image, prediction, still_hc) -> dict:
    row = {"name": sample.name, "status": "not_inside_window", "hc_mm": None, "dice": 0.0}
    if prediction is None:
        return row
    result = result_from_prediction(predictor, sample.name, prediction, sample.pixel_size_mm, gate=False)
    row["status"] = result.status
    row["dice"] = dice(prediction.mask, sample.load_mask() > 0)
    if result.measurement is not None:
        row["hc_mm"] = result.measurement.hc_mm
        row["hc_error_mm"] = result.measurement.hc_mm - sample.hc_mm
        if still_hc is not None:
            row["hc_vs_still_mm"] = result.measurement.hc_mm - still_hc
    return row


def summarise(rows: list[dict]) -> dict:
    errors = [abs(r["hc_error_mm"]) for r in rows if "hc_error_mm" in r]
    vs_still = [abs(r["hc_vs_still_mm"]) for r in rows if "hc_vs_still_mm" in r]
    return {
        "n": len(rows),
        "measured": len(errors),
        "not_inside_window": sum(r["status"] == "not_inside_window" for r in rows),
        "dice_mean": round(float(np.mean([r["dice"] for r in rows])), 5),
        "hc_mae_mm": round(float(np.mean(errors)), 4) if errors else None,
        "hc_vs_still_abs_median_mm": round(statistics.median(vs_still), 4) if vs_still else None,
        "hc_vs_still_abs_max_mm": round(max(vs_still), 4) if vs_still else None,
    }


def network_ms(model: str, canvases: list[tuple[int, int]], threads: int, repeats: int = 30) -> dict:
    """Median ms per frame of the ONNX graph alone, batch 4, on each canvas."""
    folder = resolve_weights(model)
    session = create_session(cached_onnx_path(folder, WeightsConfig.read(folder)), threads=threads)
    name = session.get_inputs()[0].name
    out = {}
    for h, w in canvases:
        batch = np.random.default_rng(0).random((4, 1, h, w), dtype=np.float32)
        session.run(None, {name: batch})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {name: batch})
            times.append((time.perf_counter() - started) * 1000 / 4)
        out[f"{h}x{w}"] = round(statistics.median(times), 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--canvases", default="256x384,192x288")
    parser.add_argument("--shift", type=int, default=8, help="px the window moves for the 'moved' variants")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tracked_canvas.json")
    args = parser.parse_args(argv)
    canvases = [tuple(int(v) for v in c.split("x")) for c in args.canvases.split(",")]
    predictor = build_predictor(args.model, "auto")
    samples = model_split(predictor.config).validation(load(HC18, require_masks=True))
    variants: dict[str, list[dict]] = {"still": []}
    whole: dict[str, list[dict]] = {}
    untracked = 0
    for sample in tqdm(samples, desc="validation", mininterval=10):
        image = sample.load_image()
        for h, w in canvases:
            with model_canvas(predictor, (h, w)):
                prediction = predictor.predict_batch([image])[0]
            whole.setdefault(f"whole {h}x{w}", []).append(score(predictor, sample, image, prediction, None))
        still = predictor.predict_batch([image])[0]
        window = predictor.next_window(still)
        if window is None:
            untracked += 1  # a head filling the frame: the stream runs it as a still image
            continue
        still_row = score(predictor, sample, image, still, None)
        variants["still"].append(still_row)
        for h, w in canvases:
            for label, win in (
                (f"window {h}x{w}", window),
                (f"window {h}x{w}, moved", moved(window, args.shift, image.shape)),
            ):
                with model_canvas(predictor, (h, w)):
                    prediction = predictor.predict_in_window([image], win)[0]
                variants.setdefault(label, []).append(score(predictor, sample, image, prediction, still_row["hc_mm"]))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "model": args.model,
        "model_canvas": list(predictor.canvas_hw),
        "validation_images": len(samples),
        "not_tracked_head_fills_frame": untracked,
        "shift_px": args.shift,
        "variants": {label: summarise(rows) for label, rows in variants.items()},
        "whole_frame": {label: summarise(rows) for label, rows in whole.items()},
        "network_ms_per_frame": {
            "1_thread": network_ms(args.model, canvases, 1),
            "2_threads": network_ms(args.model, canvases, 2),
        },
        "rows": {**variants, **whole},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
