"""The plane check beside the segmenter, or after it, and how to split the cores: paired.

    .venv/bin/python benchmarks/plane_beside.py [--images 40] [--repeats 3] [--predict-chunks 8]

**Latency** (what `measure` does to one decoded 800x540 image once the models are
loaded: segment, plane check, ellipse fit, quality gate, mm), on onnxruntime:

- ``after``: the segmenter, then the plane check, then the fit, one after the other
  (the measurement path before 2026-12-07's change);
- ``beside``: ``pipeline.measure_batch`` as it is now: the plane check in
  ``threads.beside_pool`` while the segmenter and the fit run.

Each with the segmenter's and the plane check's intra-op threads (``seg 2 / plane 1``);
the shipped split is every core for the segmenter, half for the plane check
(``threads.beside_threads``). **Throughput**: ``pipeline.predict_images`` (two batches in
flight, the plane check beside) on chunks of ``--predict-chunk`` HC18 images per split.

The machine's speed drifts by tens of percent within minutes, so the variants take turns
image by image (chunk by chunk for throughput), the order rotating, and the ratios are
medians of per-image (per-chunk) ratios against the first variant. Every variant's rows
must equal the first's (``ImageResult.to_dict``), or the script fails. Images: HC18
training images from ../shared when present (every k-th, so all head sizes), else the
bundled ones. Writes benchmarks/results/plane_beside.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from fetometry.data.hc18 import load_hc18
from fetometry.inference.backend import build_predictor, cached_onnx
from fetometry.inference.onnx_session import OnnxPlaneClassifier, OnnxPredictor, create_session
from fetometry.inference.plane import DEFAULT_PLANE_MODEL, PlaneChecker
from fetometry.machine import hardware_description
from fetometry.pipeline import ImageInput, measure_batch, predict_images, result_from_prediction
from fetometry.resources import SAMPLES_DIR, resolve_weights
from fetometry.threads import network_threads

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "hc18"


def with_threads(model: str, segmenter_threads: int, plane_threads: int) -> tuple[OnnxPredictor, PlaneChecker]:
    """The shipped predictor and plane checker on sessions with the given intra-op threads."""
    config = build_predictor(model, "onnx").config  # the shipped predictor's, graph and all
    session = create_session(config.onnx_path, threads=segmenter_threads)
    predictor = OnnxPredictor(session, canvas_hw=config.canvas_hw, threshold=config.threshold, config=config)
    checker = PlaneChecker.from_weights()
    graph = cached_onnx(resolve_weights(DEFAULT_PLANE_MODEL))
    checker.model = OnnxPlaneClassifier(create_session(graph, threads=plane_threads), source=str(graph))
    return predictor, checker


def after(predictor, checker, image, pixel_size_mm):
    """Segment, then check the plane, then fit: one after the other."""
    prediction = predictor.predict_batch([image])[0]
    plane = checker.check_batch([image])[0]
    return result_from_prediction(predictor, "image", prediction, pixel_size_mm, plane=plane)


def beside(predictor, checker, image, pixel_size_mm):
    return measure_batch(
        predictor, [image], filenames=["image"], pixel_sizes_mm=[pixel_size_mm], plane_checker=checker
    )[0]


def take_turns(names: list[str], items: list, run) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Each item through every variant, the order rotating item by item: seconds, outputs."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list] = {name: [] for name in names}
    for turn, item in enumerate(items):
        for offset in range(len(names)):
            name = names[(turn + offset) % len(names)]
            start = time.perf_counter()
            outputs[name].append(run(name, item))
            seconds[name].append(time.perf_counter() - start)
    return seconds, outputs


def paired_ratios(values: dict[str, list[float]]) -> dict[str, float]:
    first = next(iter(values))
    return {name: statistics.median(a / b for a, b in zip(v, values[first])) for name, v in values.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predict-chunk", type=int, default=24)
    parser.add_argument("--predict-chunks", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "plane_beside.json")
    args = parser.parse_args(argv)

    pool = load_hc18(SHARED) if (SHARED / "training_set").is_dir() else load_hc18(SAMPLES_DIR)
    step = max(1, len(pool) // args.images)
    samples = pool[::step][: args.images]
    images = [(sample.load_image(), sample.pixel_size_mm) for sample in samples]
    cores = network_threads()
    half = max(1, cores // 2)
    splits = {(cores, cores), (cores, half), (half, half)}
    built = {split: with_threads(args.model, *split) for split in splits}
    latency = {
        f"after, seg {cores} / plane {cores}": (after, (cores, cores)),
        f"beside, seg {cores} / plane {half} (shipped)": (beside, (cores, half)),
        f"after, seg {cores} / plane {half}": (after, (cores, half)),
        f"beside, seg {cores} / plane {cores}": (beside, (cores, cores)),
        f"beside, seg {half} / plane {half}": (beside, (half, half)),
    }
    names = list(latency)
    load_before = os.getloadavg()

    def measure_one(name, item):
        run, split = latency[name]
        return run(*built[split], *item).to_dict()

    for name in names:  # warm-up: first calls allocate
        measure_one(name, images[0])
    seconds, rows = take_turns(names, images * args.repeats, measure_one)
    differing = [name for name in names[1:] if rows[name] != rows[names[0]]]
    if differing:
        raise SystemExit(f"the variants' results differ: {differing}")
    latency_table = [
        {"variant": name, "ms_median": round(1000 * statistics.median(seconds[name]), 1), "ratio": round(ratio, 3)}
        for name, ratio in paired_ratios(seconds).items()
    ]

    throughput = {f"seg {s} / plane {p}" + (" (shipped)" if (s, p) == (cores, half) else ""): (s, p) for s, p in splits}
    inputs = [ImageInput.from_sample(pool[i % len(pool)]) for i in range(args.predict_chunk * args.predict_chunks)]
    chunks = [inputs[i : i + args.predict_chunk] for i in range(0, len(inputs), args.predict_chunk)]

    def predict_chunk(name, chunk):
        predictor, checker = built[throughput[name]]
        return [r.to_dict() for r in predict_images(predictor, chunk, progress=False, plane_checker=checker)]

    for name in throughput:
        predict_chunk(name, chunks[0][:4])
    chunk_seconds, chunk_rows = take_turns(list(throughput), chunks, predict_chunk)
    first = next(iter(throughput))
    if any(chunk_rows[name] != chunk_rows[first] for name in throughput):
        raise SystemExit("the splits' predict rows differ")
    rates = {name: [len(c) / s for c, s in zip(chunks, chunk_seconds[name])] for name in throughput}
    throughput_table = [
        {
            "split": name,
            "images_per_s_median": round(statistics.median(rates[name]), 1),
            "time_ratio": round(ratio, 3),
        }
        for name, ratio in paired_ratios(chunk_seconds).items()
    ]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "model": args.model,
        "cores": cores,
        "latency_images": [s.name for s in samples],
        "repeats": args.repeats,
        "predict_chunks": [len(c) for c in chunks],
        "results_identical": True,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "latency": latency_table,
        "throughput": throughput_table,
        "latency_ms": {name: [round(1000 * s, 2) for s in v] for name, v in seconds.items()},
        "predict_images_per_s": {name: [round(r, 2) for r in v] for name, v in rates.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("| variant | ms per image (median) | per-image time ratio to the first (median) |")
    print("|---|---|---|")
    for row in latency_table:
        print(f"| {row['variant']} | {row['ms_median']} | {row['ratio']} |")
    print("\n| split | predict images/s (median) | per-chunk time ratio to the first (median) |")
    print("|---|---|---|")
    for row in throughput_table:
        print(f"| {row['split']} | {row['images_per_s_median']} | {row['time_ratio']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
