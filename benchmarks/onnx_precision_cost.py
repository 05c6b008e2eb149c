"""The networks on onnxruntime float32 against PyTorch: what the precision changes, and what it costs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/onnx_precision_cost.py [--data ../shared/data/hc18]

1. Plane check, bf16 vs float32: SonoNet-16's OOD distance and most probable label on
   the same inputs, through the PyTorch bf16 path the plane check used until 2026-12-07
   (autocast, channels_last) and through the shipped onnxruntime float32 graph: 40 HC18
   heads (or the bundled ones), 20 of them also destroyed five ways and re-rendered as a
   screen capture (``data.out_of_domain``), 20 non-ultrasound images, SonoNet's example
   frames. Reports the largest and median |distance difference| and the verdicts
   (distance above the limit) and labels that differ.
2. Cost, ms per image (batch 8, median of 5): SonoNet-16 on onnxruntime float32, PyTorch
   bf16 (channels_last) and PyTorch float32, on 1 and 2 threads; and the default
   segmenter's graph on onnxruntime at its canvas (batch 4), on 1 and 2 threads.
Writes benchmarks/results/onnx_precision_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from fetometry.data import out_of_domain as ood
from fetometry.data.hc18 import load_hc18
from fetometry.inference.backend import cached_onnx
from fetometry.inference.onnx_session import create_session
from fetometry.inference.plane import PlaneChecker, preprocess
from fetometry.io.images import read_image
from fetometry.machine import hardware_description
from fetometry.models import create_model
from fetometry.models.weights import load_weights
from fetometry.resources import SAMPLES_DIR, resolve_weights
from fetometry.weights_config import WeightsConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def inputs(data: Path) -> list[tuple[str, np.ndarray]]:
    samples = load_hc18(data) if (data / "training_set").is_dir() else load_hc18(SAMPLES_DIR)
    heads = [s.load_image() for s in samples[100:140]] or [s.load_image() for s in samples]
    items = [("head", image) for image in heads]
    for i, head in enumerate(heads[:20]):
        for damage in (ood.drowned_in_noise, ood.blurred_away, ood.inverted, ood.blacked_out, ood.corner_strip):
            items.append((damage.__name__, damage(head, i)))
        items.append(("screen_capture", ood.screen_capture(head, i)[0]))
    items += list(ood.synthetic_set(4))
    frames = SHARED / "sononet" / "example_frames"
    items += [(f"sononet:{p.stem}", read_image(p)) for p in sorted(frames.glob("*.png"))]
    return items


def bf16_scores(network, checker: PlaneChecker, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The plane check's scores as its PyTorch bf16 path computed them before 2026-12-07."""
    batch = np.stack([preprocess(image, network.input_hw) for image in images])
    x = torch.from_numpy(batch)[:, None].contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, embedding = network.classify(x)
    return torch.softmax(logits.float(), dim=1).numpy(), embedding.float().numpy()


def precision(items: list[tuple[str, np.ndarray]]) -> dict:
    checker = PlaneChecker.from_weights()  # onnxruntime float32, as shipped
    folder = resolve_weights("sononet-16")
    network = create_model("sononet", "16")
    load_weights(network, folder / "model.safetensors")
    network = network.eval().to(memory_format=torch.channels_last)
    limit = checker.rule.max_ood_distance
    rows = []
    for name, image in items:
        p32, e32 = checker.scores([image])
        p16, e16 = bf16_scores(network, checker, [image])
        d32, d16 = float(checker.ood_distance(e32)[0]), float(checker.ood_distance(e16)[0])
        rows.append(
            dict(
                input=name,
                distance_fp32=d32,
                distance_bf16=d16,
                label_fp32=int(p32.argmax()),
                label_bf16=int(p16.argmax()),
            )
        )
    differences = [abs(r["distance_fp32"] - r["distance_bf16"]) for r in rows]
    return {
        "inputs": len(rows),
        "max_ood_distance": limit,
        "distance_abs_difference_max": round(max(differences), 4),
        "distance_abs_difference_median": round(statistics.median(differences), 4),
        "verdicts_differ": sum((r["distance_fp32"] > limit) != (r["distance_bf16"] > limit) for r in rows),
        "labels_differ": sum(r["label_fp32"] != r["label_bf16"] for r in rows),
        "rows": rows,
    }


def _ms_per_image(run, batch: int, repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times) / batch, 2)


def cost() -> dict:
    folder = resolve_weights("sononet-16")
    network = create_model("sononet", "16")
    load_weights(network, folder / "model.safetensors")
    network.eval()
    x = (np.random.default_rng(0).standard_normal((8, 1, *network.input_hw)) * 255).astype(np.float32)
    default = resolve_weights(None)
    canvas = WeightsConfig.read(default).canvas_hw
    canvases = np.random.default_rng(1).random((4, 1, *canvas), dtype=np.float32)
    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        plane = create_session(cached_onnx(folder), threads=threads)
        segmenter = create_session(cached_onnx(default), threads=threads)
        last = network.to(memory_format=torch.channels_last)
        x_last = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def bf16():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                last.classify(x_last)

        def fp32():
            with torch.no_grad():
                network.classify(torch.from_numpy(x))

        rows[f"{threads}_threads"] = {
            "sononet_onnx_fp32_ms": _ms_per_image(lambda: plane.run(None, {"images": x}), 8),
            "sononet_torch_bf16_ms": _ms_per_image(bf16, 8),
            "sononet_torch_fp32_ms": _ms_per_image(fp32, 8),
            "default_segmenter_onnx_ms": _ms_per_image(lambda: segmenter.run(None, {"images": canvases}), 4),
        }
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "hc18")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "onnx_precision_cost.json")
    args = parser.parse_args(argv)
    report = {
        "date": date.today().isoformat(),
        "hardware": hardware_description(),
        "precision": precision(inputs(args.data)),
        "cost_ms_per_image": cost(),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    summary = {k: v for k, v in report["precision"].items() if k != "rows"}
    print(json.dumps({"precision": summary, "cost_ms_per_image": report["cost_ms_per_image"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
