"""Where a segmenter's network time goes on onnxruntime, by operator and by node.

    .venv/bin/python benchmarks/onnx_op_profile.py [--model unext-scanners] [--threads 1] [--runs 10]

Runs the model's cached ONNX graph (the one ``fetometry measure`` uses) on a batch of 4
canvases with onnxruntime's own profiler, and sums the kernel times per operator type and
per node. For each convolution it also gives the arithmetic rate (2 x multiply-adds per
second), which says how close the network's largest part runs to what the CPU can do.
Writes benchmarks/results/onnx_op_profile.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fetometry.inference.backend import cached_onnx_path
from fetometry.machine import hardware_description
from fetometry.resources import resolve_weights
from fetometry.weights_config import WeightsConfig

REPO = Path(__file__).resolve().parents[1]


def conv_flops(event: dict) -> float | None:
    """2 x multiply-adds of one Conv node, from its recorded input and output shapes."""
    inputs, outputs = event["args"].get("input_type_shape"), event["args"].get("output_type_shape")
    if not inputs or not outputs or len(inputs) < 2:
        return None
    weight = next(iter(inputs[1].values()))
    output = next(iter(outputs[0].values()))
    if len(weight) != 4 or len(output) != 4:
        return None
    out_channels, in_per_group, kh, kw = weight
    batch, _, height, width = output
    return 2.0 * batch * out_channels * height * width * in_per_group * kh * kw


def profile(path: Path, canvas_hw: tuple[int, int], threads: int, runs: int) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((4, 1, *canvas_hw), dtype=np.float32)}
        session.run(None, feed)  # warm-up, profiled too: dropped below by counting runs
        started = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        wall_ms = (time.perf_counter() - started) * 1000 / runs
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_op: dict[str, float] = collections.Counter()
    per_node: dict[str, float] = collections.Counter()
    flops: dict[str, float] = {}
    for event in nodes:
        per_op[event["args"]["op_name"]] += event["dur"]
        per_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
        if event["args"]["op_name"] == "Conv":
            flops[event["name"].removesuffix("_kernel_time")] = conv_flops(event) or math.nan
    passes = runs + 1
    total = sum(per_op.values())
    return {
        "wall_ms_per_batch_of_4": round(wall_ms, 2),
        "kernel_ms_per_batch_of_4": round(total / passes / 1000, 2),
        "by_operator": {
            op: {"ms": round(us / passes / 1000, 2), "share": round(us / total, 3)}
            for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])
        },
        "largest_nodes": [
            {
                "node": name,
                "ms": round(us / passes / 1000, 2),
                "gflop_per_s": round(flops[name] / (us / passes / 1e6) / 1e9, 1) if name in flops else None,
            }
            for name, us in per_node.most_common(12)
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "onnx_op_profile.json")
    args = parser.parse_args(argv)
    folder = resolve_weights(args.model)
    config = WeightsConfig.read(folder)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "model": args.model,
        "canvas_hw": list(config.canvas_hw),
        "threads": args.threads,
        **profile(cached_onnx_path(folder, config), tuple(config.canvas_hw), args.threads, args.runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
