"""ONNX vs PyTorch on this CPU: logit parity and speed, per model, in one process.

    .venv/bin/python benchmarks/onnx_speed.py [--threads 1] [--repeats 20] [--out benchmarks/results]

For each of the five architectures at the 256x384 canvas (batch 1):
- parity: max |logit difference| between onnxruntime and PyTorch float32 on bundled HC18
  images (letterboxed as the Predictor does) for the shipped models, on ultrasound-like
  phantoms for the untrained compact DUCK-Net and MedSegDiff-V2 (also relative to the
  largest logit: untrained BatchNorm networks reach huge logits);
- speed: the network's forward (MedSegDiff-V2: ``predict_proba``, its default DDIM
  sampler and ensemble) in PyTorch eager float32, PyTorch eager with bf16 autocast (what
  the Predictor uses) and onnxruntime float32; median of --repeats after 2 warm-ups.
Then `measure` end to end for the default model (read PNG, letterbox, network,
probability map on the image grid, ellipse fit, mm, quality gate) per bundled image,
with the Predictor on each backend (model loading excluded; reported apart).
Every timing has two clocks: wall time, and the CPU time of this process. With one
thread the CPU time is what the wall time is on an idle core; it is the number to read
when other jobs share the machine (the load average is recorded: the 2-core machine ran
training jobs during the published runs). Ratios are "time / PyTorch eager float32" of
the same run, on CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry.biometry.ellipse import EllipseFitError, NoHeadError, ellipse_from_probability
from fetometry.biometry.measures import measure_ellipse
from fetometry.biometry.quality import assess_quality
from fetometry.data.hc18 import load_hc18
from fetometry.data.transforms import letterbox
from fetometry.inference.export import export_model, export_onnx, phantom_batch, relative_difference
from fetometry.inference.onnx_backend import load_onnx_model, load_onnx_predictor
from fetometry.inference.predictor import Predictor
from fetometry.io.images import read_image
from fetometry.models import create_model
from fetometry.models.base import is_sampled
from fetometry.resources import SAMPLES_DIR, shipped_models
from fetometry.training.trainer import hardware_description

REPO = Path(__file__).resolve().parents[1]
CANVAS = (256, 384)
ARCHITECTURES = ("attention-unet", "unext", "transunet", "duck-net", "medsegdiff-v2")
SHIPPED = tuple(name for name in ARCHITECTURES if name in shipped_models())  # trained weights in weights/
UNTRAINED = tuple(name for name in ARCHITECTURES if name not in SHIPPED)  # timed as untrained compact models


def median_ms(run, repeats: int, warmup: int = 2) -> dict:
    """{"wall": median wall-clock ms, "cpu": median CPU ms of this process}.

    With one thread (PyTorch and onnxruntime both compute on the calling thread), the
    CPU time is what the wall time would be on an idle core: it stays meaningful when
    other jobs share the machine, the wall time does not.
    """
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"wall": 1000 * statistics.median(wall), "cpu": 1000 * statistics.median(cpu)}


class Float32Eager(nn.Module):
    """The model with autocast switched off: plain PyTorch eager float32 inside a
    Predictor (which opens a bf16 autocast region around the network)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        with torch.autocast("cpu", enabled=False):
            return self.model(images.float())


def real_canvases(n: int = 3) -> torch.Tensor:
    samples = load_hc18(SAMPLES_DIR)[:n]
    return torch.from_numpy(np.stack([letterbox(s.load_image(), CANVAS)[0] for s in samples]))[:, None]


def build(name: str, work: Path) -> tuple[nn.Module, nn.Module, torch.Tensor, dict]:
    """(torch model, onnx model, parity input, info) for one architecture."""
    if name in SHIPPED:
        model = Predictor.from_weights(name).model.float().eval()
        paths = export_onnx(name, work / f"{name}.onnx")
        inputs, kind = real_canvases(), "bundled HC18 images"
    else:
        torch.manual_seed(0)
        model = create_model(name, "compact").eval()
        if name == "medsegdiff-v2":
            with torch.no_grad():  # untrained output layers are zero: make F vary (timing is unaffected)
                for parameter in model.parameters():
                    parameter.add_(0.05 * torch.randn_like(parameter))
        config = {"model": name, "variant": "compact", "canvas_hw": list(CANVAS)}
        paths = export_model(model, work / f"{name}.onnx", config=config)
        inputs, kind = phantom_batch(CANVAS, 3), "phantoms (untrained model)"
    info = {"parity_inputs": kind, "onnx_mb": round(sum(p.stat().st_size for p in paths) / 1e6, 2)}
    return model, load_onnx_model(paths[0]), inputs, info


def parity(model: nn.Module, onnx_model: nn.Module, inputs: torch.Tensor) -> dict:
    with torch.no_grad():
        expected = model(inputs).numpy()
    got = onnx_model(inputs).numpy()
    out = {
        "max_abs_logit_diff": float(np.abs(got - expected).max()),
        "relative_diff": relative_difference(expected, got),
        "max_abs_logit": float(np.abs(expected).max()),
    }
    if is_sampled(model):
        reference = model.sample(inputs[:1], generator=torch.Generator().manual_seed(0))[0]
        sampled = onnx_model.sample(inputs[:1], generator=torch.Generator().manual_seed(0))[0]
        out["sampler_max_abs_prob_diff"] = float((reference - sampled).abs().max())
    return out


def speed(model: nn.Module, onnx_model: nn.Module, repeats: int) -> dict:
    x = phantom_batch(CANVAS, 1, seed=11)
    x_channels_last = x.contiguous(memory_format=torch.channels_last)
    diffusion = is_sampled(model)
    call = (lambda m, t: m.predict_proba(t)) if diffusion else (lambda m, t: m(t))
    if diffusion:
        repeats = max(3, repeats // 4)

    def eager_fp32():
        with torch.no_grad():
            call(model, x)

    def eager_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            call(model, x_channels_last)

    rows = {"torch_fp32_ms": median_ms(eager_fp32, repeats), "torch_bf16_autocast_ms": median_ms(eager_bf16, repeats)}
    rows["onnxruntime_ms"] = median_ms(lambda: call(onnx_model, x), repeats)
    for clock in ("wall", "cpu"):
        fp32 = rows["torch_fp32_ms"][clock]
        rows[f"ratio_bf16_to_fp32_{clock}"] = rows["torch_bf16_autocast_ms"][clock] / fp32
        rows[f"ratio_onnx_to_fp32_{clock}"] = rows["onnxruntime_ms"][clock] / fp32
    rows["repeats"] = repeats
    if diffusion:
        rows["sampler"] = {"steps": model.default_steps, "ensemble": model.default_ensemble}
    return rows


def measure_once(predictor: Predictor, path: Path, pixel_size_mm: float) -> None:
    """What `fetometry measure IMAGE --pixel-size MM` computes, without printing."""
    image = read_image(path)
    prediction = predictor.predict(image)
    try:
        ellipse = ellipse_from_probability(prediction.probability)
    except (NoHeadError, EllipseFitError):
        ellipse = None
    if ellipse is not None:
        measure_ellipse(ellipse, pixel_size_mm, offset_px=predictor.boundary_offset_px(prediction))
    assess_quality(prediction, ellipse, pixel_size_mm=pixel_size_mm, image_shape=image.shape)


def end_to_end(work: Path, repeats: int) -> dict:
    samples = load_hc18(SAMPLES_DIR)
    started = time.perf_counter()
    bf16 = Predictor.from_weights("attention-unet")
    load_ms = 1000 * (time.perf_counter() - started)
    fp32 = Predictor(
        Float32Eager(Predictor.from_weights("attention-unet").model), canvas_hw=bf16.canvas_hw, config=bf16.config
    )
    started = time.perf_counter()
    onnx = load_onnx_predictor(work / "attention-unet.onnx")
    onnx_load_ms = 1000 * (time.perf_counter() - started)
    out = {
        "images": len(samples),
        "image_size": "540x800 (bundled HC18)",
        "torch_load_ms": load_ms,
        "onnx_load_ms": onnx_load_ms,
    }
    for label, predictor in (("torch_fp32", fp32), ("torch_bf16_autocast", bf16), ("onnxruntime", onnx)):
        per_image = [
            median_ms(
                lambda: measure_once(predictor, sample.image_path, sample.pixel_size_mm), max(1, repeats // 4), warmup=1
            )
            for sample in samples
        ]
        out[f"{label}_ms_per_image"] = {
            clock: statistics.median(t[clock] for t in per_image) for clock in ("wall", "cpu")
        }
    for label in ("torch_bf16_autocast", "onnxruntime"):
        for clock in ("wall", "cpu"):
            out[f"ratio_{label}_to_fp32_{clock}"] = (
                out[f"{label}_ms_per_image"][clock] / out["torch_fp32_ms_per_image"][clock]
            )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=[*SHIPPED, *UNTRAINED])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "canvas_hw": list(CANVAS),
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            model, onnx_model, inputs, info = build(name, work)
            report["models"][name] = {
                **info,
                "parity": parity(model, onnx_model, inputs),
                "speed": speed(model, onnx_model, args.repeats),
            }
            print(name, json.dumps(report["models"][name]), flush=True)
        if "attention-unet" in args.models:
            report["measure_default_model"] = end_to_end(work, args.repeats)
            print("measure", json.dumps(report["measure_default_model"]), flush=True)
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_speed.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """Rows for docs/BENCHMARKS.md: CPU ms (wall ms in brackets) and ratios to fp32 (CPU)."""
    lines = [
        "| model | parity inputs | max abs logit diff (rel.) | PyTorch fp32 ms | bf16 autocast ms (x fp32) | onnxruntime ms (x fp32) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        p, s = row["parity"], row["speed"]
        label = name + (f" (DDIM {s['sampler']['steps']} x {s['sampler']['ensemble']})" if "sampler" in s else "")
        lines.append(
            f"| {label} | {row['parity_inputs']} | {p['max_abs_logit_diff']:.1e} ({p['relative_diff']:.0e}) | {_ms(s['torch_fp32_ms'])} | "
            f"{_ms(s['torch_bf16_autocast_ms'])} ({s['ratio_bf16_to_fp32_cpu']:.2f}) | {_ms(s['onnxruntime_ms'])} ({s['ratio_onnx_to_fp32_cpu']:.2f}) |"
        )
    if "measure_default_model" in report:
        m = report["measure_default_model"]
        lines += [
            "",
            f"`measure` (default model, {m['images']} bundled images, median per image): PyTorch fp32 {_ms(m['torch_fp32_ms_per_image'])} ms, "
            f"bf16 autocast {_ms(m['torch_bf16_autocast_ms_per_image'])} ms ({m['ratio_torch_bf16_autocast_to_fp32_cpu']:.2f}x), "
            f"onnxruntime {_ms(m['onnxruntime_ms_per_image'])} ms ({m['ratio_onnxruntime_to_fp32_cpu']:.2f}x).",
        ]
    return "\n".join(lines)


def _ms(timing: dict) -> str:
    return f"{timing['cpu']:.0f} [{timing['wall']:.0f}]"


if __name__ == "__main__":
    sys.exit(main())
