"""Model size and cost: parameters, GMACs and CPU latency, for `fetometry models`.

GMACs follow the convention of the papers' "GFLOPs" (thop / ptflops): one
multiply-accumulate counts once. They are counted with torch's FlopCounterMode
(convolutions, matrix products, attention; not norms or activations) and divided by 2.
For a sampled (diffusion) model (``SegmentationNetwork.sampled``) the cost and latency are those of
the whole sampler: its default steps and ensemble, or the ones given; every row says in
``inference`` what was timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from fetometry.formatting import fmt, markdown_table
from fetometry.inference.diffusion import DiffusionSampler
from fetometry.models import available_models, create_model
from fetometry.models.base import is_sampled
from fetometry.models.registry import ModelSpec


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Inference:
    """One inference call as the predictor makes it; diffusion sampler settings optional."""

    def __init__(self, model: torch.nn.Module, *, steps: int | None = None, ensemble: int | None = None):
        self.model = model.eval()
        self.sampler = is_sampled(model)
        self.steps = (steps or model.default_steps) if self.sampler else None
        self.ensemble = (ensemble or model.default_ensemble) if self.sampler else None

    @property
    def description(self) -> str:
        return f"sampler {self.steps} steps x {self.ensemble} samples" if self.sampler else "forward"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sampler:
            return DiffusionSampler(self.model).sample(x, steps=self.steps, ensemble=self.ensemble)[0]
        return self.model(x)


@torch.no_grad()
def count_gmacs(inference: Inference, input_hw: tuple[int, int] = (256, 256)) -> float:
    """Multiply-accumulates (1e9) of one inference on a (1, 1, H, W) image."""
    counter = FlopCounterMode(display=False)
    with counter:
        inference(torch.zeros(1, 1, *input_hw))
    return counter.get_total_flops() / 2 / 1e9


@torch.no_grad()
def cpu_latency_ms(
    inference: Inference, input_hw: tuple[int, int] = (256, 256), *, repeats: int = 5, bf16: bool = True
) -> float:
    """Median wall time (ms) of one inference on one image, as the predictor runs it
    (eval mode, channels_last, bf16 autocast on the CPU), after one warm-up run."""
    inference.model.to(memory_format=torch.channels_last)
    x = torch.rand(1, 1, *input_hw).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            inference(x)
        if i:  # the first run pays one-off allocation and kernel selection
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def profile_models(
    specs: Sequence[ModelSpec] | None = None,
    *,
    input_hw: tuple[int, int] = (256, 256),
    repeats: int = 5,
    sampler_steps: int | None = None,
    sampler_ensemble: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per registered model variant: name, variant, params, gflops (GMACs), cpu_ms,
    inference (what was timed), threads."""
    rows = []
    for spec in tqdm(specs or available_models(), desc="profiling models", disable=not progress):
        torch.manual_seed(0)
        model = create_model(spec.name, spec.variant)
        inference = Inference(model, steps=sampler_steps, ensemble=sampler_ensemble)
        rows.append(
            {
                "name": spec.name,
                "variant": spec.variant,
                "params": count_parameters(model),
                "gflops": round(count_gmacs(inference, input_hw), 3),
                "cpu_ms": round(cpu_latency_ms(inference, input_hw, repeats=repeats), 1),
                "inference": inference.description,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def profile_table(rows: Sequence[dict]) -> str:
    """``fetometry models --profile`` as a Markdown table."""
    return markdown_table(
        ["name", "variant", "parameters", "GMACs @256x256", "CPU ms (median)", "timed"],
        [
            [
                r["name"],
                r["variant"],
                f"{r['params'] / 1e6:.2f}M",
                fmt(r["gflops"], 2),
                fmt(r["cpu_ms"], 1),
                r["inference"],
            ]
            for r in rows
        ],
    )
