"""`measure` latency, `predict` throughput and start-up, per model and backend, side by side.

    .venv/bin/python benchmarks/measure_predict_speed.py [--configs attention-unet:torch,unext-scanners:onnx]
        [--images 200] [--repeats 3]

- measure: ``exam.measure_exam`` (what `fetometry measure IMAGE --pixel-size MM` runs: read,
  plane check, segment, fit, gate, mm, clinical summary) on the 10 bundled 800x540 HC18
  images, model loaded once; median ms per image over --repeats passes.
- predict: ``pipeline.predict_images`` + ``write_predictions`` (read, plane check, segment,
  fit, gate, CSV and mask PNGs) on --images HC18 images (../shared, else the bundled ones
  repeated); images/s, median of --repeats.
- start-up: wall seconds of a fresh `fetometry measure` process on one image, and of a
  fresh `fetometry stream --max-frames 4` on a short loop (ONNX cache warm), median of 3.

Configurations run interleaved (a, b, a, b, ...), so a change of load hits all alike.
Writes benchmarks/results/measure_predict_speed.json and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fetometry.data.hc18 import load_hc18
from fetometry.exam import measure_exam
from fetometry.inference.backend import build_predictor
from fetometry.machine import hardware_description
from fetometry.pipeline import ImageInput, plane_checker_for, predict_images, write_predictions
from fetometry.resources import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "hc18"


def measure_ms(predictor, samples) -> float:
    times = []
    for sample in samples:
        start = time.perf_counter()
        measure_exam(str(sample.image_path), predictor=predictor, pixel_size_mm=sample.pixel_size_mm)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def predict_rate(predictor, inputs, checker) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = predict_images(predictor, inputs, progress=False, plane_checker=checker)
        write_predictions(results, out)
        return len(inputs) / (time.perf_counter() - start)


def startup_s(args: list[str]) -> float:
    times = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "fetometry.cli", "-q", *[a.replace("OUT", out) for a in args]],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def short_loop(folder: Path, image: np.ndarray) -> Path:
    path = folder / "loop.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, image.shape[::-1], False)
    for _ in range(8):
        writer.write(np.round(image * 255).astype(np.uint8))
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="attention-unet:torch,unext-scanners:torch,unext-scanners:onnx")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "measure_predict_speed.json")
    args = parser.parse_args()

    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    bundled = load_hc18(SAMPLES_DIR)
    pool = load_hc18(SHARED) if (SHARED / "training_set").is_dir() else bundled
    inputs = [ImageInput.from_sample(pool[i % len(pool)]) for i in range(args.images)]
    checker = plane_checker_for("on")
    predictors = {c: build_predictor(c[0], c[1]) for c in configs}
    state = {"load_avg_before": os.getloadavg()}
    measured: dict[tuple, dict[str, list[float]]] = {c: {"measure_ms": [], "predict_img_s": []} for c in configs}
    for config in configs:  # warm-up: first calls allocate
        measure_ms(predictors[config], bundled[:2])
    for _ in range(args.repeats):
        for config in configs:
            measured[config]["measure_ms"].append(measure_ms(predictors[config], bundled))
            measured[config]["predict_img_s"].append(predict_rate(predictors[config], inputs, checker))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        loop = short_loop(Path(scratch), bundled[0].load_image())
        image = str(bundled[0].image_path)
        for model, backend in configs:
            rows.append(
                {
                    "model": model,
                    "backend": backend,
                    "measure_ms": round(statistics.median(measured[(model, backend)]["measure_ms"]), 1),
                    "predict_img_s": round(statistics.median(measured[(model, backend)]["predict_img_s"]), 1),
                    "measure_process_s": round(
                        startup_s(["measure", image, "--pixel-size", "0.1", "--model", model, "--backend", backend]), 2
                    ),
                    "stream_first_frames_process_s": round(
                        startup_s(
                            ["stream", str(loop), "--out", "OUT", "--max-frames", "4", "--model", model]
                            + ["--backend", backend, "--pixel-size", "0.1"]
                        ),
                        2,
                    ),
                    "runs": measured[(model, backend)],
                }
            )
    state["load_avg_after"] = os.getloadavg()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "predict_images": len(inputs),
        "machine": state,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        "| model | backend | measure ms/image | predict images/s | `measure` process s | `stream` to 4 frames, process s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['backend']} | {r['measure_ms']} | {r['predict_img_s']} | "
            f"{r['measure_process_s']} | {r['stream_first_frames_process_s']} |"
        )


if __name__ == "__main__":
    main()
