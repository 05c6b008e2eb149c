"""MedSegDiff-V2 for onnxruntime: its two export graphs, their runtime, real-valued FFTs.

Reached through the model's class hooks (``MedSegDiffV2.export_onnx_graphs`` and
``MedSegDiffV2.onnx_runtime``, see ``fetometry.models.base``), never by name: the generic
``fetometry.inference.export`` and ``fetometry.inference.onnx_backend`` know nothing of
diffusion.

The DDIM sampler is a Python loop, so the model becomes TWO graphs and the sampler
(``fetometry.inference.diffusion.DiffusionSampler``) runs over their sessions:

- condition (``<out stem>_condition.onnx``): ``images`` -> ``logits`` (the condition
  network's), the U-SA-relaxed anchors ``anchor_0 ..`` and the semantic ``embedding``
  (run once per image);
- denoiser (``<out stem>_denoiser.onnx``): ``x_t``, ``images``, ``t`` (int64), the
  anchors and the embedding -> ``output``, the diffusion U-Net's raw output F (run at
  every step).

The spectral attention uses complex FFTs, which ONNX cannot express (no complex tensors).
During the denoiser's export only, the model's spectral modules get ``RealFFT`` as their
``fft``: exact real-valued DFTs (matrix products with cosine and sine tables built from
the traced sizes), tested against ``torch.fft``.

This module imports the generic export helpers (``fetometry.inference.export``) at call
time: it is loaded only by the hooks, which run inside that export and its backend.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry.models.medsegdiff_v2 import (
    MedSegDiffV2,
    NeuralBandPassFilter,
    PreparedCondition,
    SpectralCrossAttention,
)

#: The sampler settings an export stores (``fetometry_model`` metadata) and its runtime restores.
SAMPLER_SETTINGS = ("default_steps", "default_ensemble", "eta", "noise_skip")


# --------------------------------------------------------------------------- graphs


class ConditionGraph(nn.Module):
    """images -> (condition logits, anchor_0 .. anchor_k, embedding): the condition
    network plus the U-SA relaxation, exactly ``diffusion.prepare(condition(images))``."""

    def __init__(self, model: MedSegDiffV2):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model.condition(images)
        prepared = self.model.diffusion.prepare(output, first_anchor_level=self.model.first_anchor_level)
        return (output.logits, *prepared.anchors, prepared.embedding)


class DenoiserGraph(nn.Module):
    """(x_t, images, t, anchors.., embedding) -> the diffusion U-Net's raw output F."""

    def __init__(self, model: MedSegDiffV2):
        super().__init__()
        self.model = model

    def forward(
        self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor, *condition: torch.Tensor
    ) -> torch.Tensor:
        return self.model.diffusion(x_t, images, t, PreparedCondition(list(condition[:-1]), condition[-1]))


def export_graphs(model: MedSegDiffV2, out_path: str | Path, *, config: dict, verify: bool = True) -> list[Path]:
    """Write (and by default verify) the condition and denoiser graphs; returns their paths."""
    from fetometry.inference import export
    from fetometry.inference.onnx_session import CONDITION, DENOISER

    condition_path, denoiser_path = export.medsegdiff_paths(out_path)
    condition_graph, denoiser_graph = ConditionGraph(model).eval(), DenoiserGraph(model).eval()
    images = export.phantom_batch(export.trace_hw(config))
    with torch.no_grad():
        condition = condition_graph(images)
    anchor_names = [f"anchor_{i}" for i in range(len(condition) - 2)]
    image_axes = {0: "batch", 2: "height", 3: "width"}
    condition_axes = {
        name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in [*anchor_names, "embedding"]
    }
    export.torch_export(
        condition_graph,
        (images,),
        condition_path,
        ["images"],
        ["logits", *anchor_names, "embedding"],
        {"images": image_axes, "logits": image_axes, **condition_axes},
    )
    x_t = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((images.shape[0],), model.timesteps // 2, dtype=torch.long)
    with real_valued_fft(model):
        export.torch_export(
            denoiser_graph,
            (x_t, images, t, *condition[1:]),
            denoiser_path,
            ["x_t", "images", "t", *anchor_names, "embedding"],
            ["output"],
            {"x_t": image_axes, "images": image_axes, "t": {0: "batch"}, "output": image_axes, **condition_axes},
        )
    model_info = {"timesteps": model.timesteps, **{key: getattr(model, key) for key in SAMPLER_SETTINGS}}
    model_info["anchors"] = len(anchor_names)
    export.write_metadata(condition_path, CONDITION, config, model_info)
    export.write_metadata(denoiser_path, DENOISER, config, model_info)
    if verify:
        _verify(condition_graph, denoiser_graph, condition_path, denoiser_path, config, model.timesteps)
    return [condition_path, denoiser_path]


def _verify(
    condition_graph, denoiser_graph, condition_path: Path, denoiser_path: Path, config: dict, timesteps: int
) -> None:
    """onnxruntime must agree with PyTorch on phantoms at two sizes, or ExportError."""
    from fetometry.inference import export

    condition_session, denoiser_session = (
        export.verification_session(condition_path),
        export.verification_session(denoiser_path),
    )
    generator = torch.Generator().manual_seed(1)
    for index, hw in enumerate(export.check_hw(config)):
        images = export.phantom_batch(hw, batch=1 + index, seed=index)
        with torch.no_grad():
            reference = condition_graph(images)
        outputs = condition_session.run(None, {"images": images.numpy()})
        for name, expected, got in zip(["logits", "anchors/embedding"], reference, outputs):
            export.require_agreement(f"condition network ({name}) at {hw[0]}x{hw[1]}", expected, got)
        x_t = torch.randn(images.shape, generator=generator)
        t = torch.randint(0, timesteps, (images.shape[0],), generator=generator)
        with torch.no_grad():
            expected = denoiser_graph(x_t, images, t, *reference[1:])
        feeds = {"x_t": x_t.numpy(), "images": images.numpy(), "t": t.numpy()}
        feeds.update(
            {node.name: value.numpy() for node, value in zip(denoiser_session.get_inputs()[3:], reference[1:])}
        )
        export.require_agreement(f"denoiser at {hw[0]}x{hw[1]}", expected, denoiser_session.run(None, feeds)[0])


# --------------------------------------------------------------------------- real-valued FFTs


def _dft_tables(
    n: torch.Tensor | int, bins: torch.Tensor | int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, bins) cos and sin of 2 pi k m / n; the phase index k m is reduced mod n in
    integers first, so large sizes keep float32 precision."""
    m = torch.arange(n, device=device)[:, None]
    k = torch.arange(bins, device=device)[None, :]
    angle = (m * k).remainder(n).float() * (2 * math.pi / n)
    return torch.cos(angle), torch.sin(angle)


def _ortho_scale(height, width, device: torch.device) -> torch.Tensor:
    """1 / sqrt(H W) as a tensor op (sizes are traced tensors during export: Python's
    math would freeze them into constants)."""
    return torch.rsqrt(torch.ones((), device=device) * (height * width))


class RealFFT:
    """``medsegdiff_v2.TorchFFT`` as real matrix products (spectra as (real, imaginary) pairs)."""

    @staticmethod
    def rfft2(z: torch.Tensor) -> torch.Tensor:
        """(..., H, W) real -> (..., H, W//2+1, 2), as view_as_real(torch.fft.rfft2(z, norm="ortho"))."""
        height, width = z.shape[-2], z.shape[-1]
        cos_w, sin_w = _dft_tables(width, width // 2 + 1, z.device)
        cos_h, sin_h = _dft_tables(height, height, z.device)
        real, imag = z @ cos_w, -(z @ sin_w)  # real FFT along W (e^{-i theta})
        # Complex FFT along H: (C - iS)(A + iB) = (CA + SB) + i(CB - SA).
        out_real, out_imag = cos_h @ real + sin_h @ imag, cos_h @ imag - sin_h @ real
        return torch.stack([out_real, out_imag], dim=-1) * _ortho_scale(height, width, z.device)

    @staticmethod
    def irfft2(spectrum: torch.Tensor, s: tuple) -> torch.Tensor:
        """(..., H, W//2+1, 2) -> (..., H, W) real, as torch.fft.irfft2(complex, s=(H, W), norm="ortho")."""
        spectrum = spectrum.contiguous()
        height, width = s
        real, imag = spectrum[..., 0], spectrum[..., 1]
        bins = spectrum.shape[-2]
        cos_h, sin_h = _dft_tables(height, height, spectrum.device)
        # Inverse complex FFT along H: (C + iS)(P + iQ) = (CP - SQ) + i(CQ + SP).
        row_real, row_imag = cos_h @ real - sin_h @ imag, cos_h @ imag + sin_h @ real
        # Hermitian inverse along W: bins other than DC and Nyquist count twice; the
        # imaginary parts of DC and Nyquist meet sin = 0 and drop out, as in torch.
        k = torch.arange(bins, device=spectrum.device)
        weight = torch.where((k == 0) | (2 * k == width), torch.ones_like(k), 2 * torch.ones_like(k)).float()
        cos_w, sin_w = _dft_tables(width, bins, spectrum.device)
        out = (row_real * weight) @ cos_w.transpose(0, 1) - (row_imag * weight) @ sin_w.transpose(0, 1)
        return out * _ortho_scale(height, width, spectrum.device)

    @staticmethod
    def fftfreq(n, d: float = 1.0, *, device=None) -> torch.Tensor:
        k = torch.arange(n, device=device)
        return torch.where(k < (n + 1) // 2, k, k - n).float() / (n * d)

    @staticmethod
    def rfftfreq(n, d: float = 1.0, *, device=None) -> torch.Tensor:
        return torch.arange(n // 2 + 1, device=device).float() / (n * d)


@contextlib.contextmanager
def real_valued_fft(model: nn.Module):
    """Inside: ``model``'s spectral modules compute their FFTs with ``RealFFT`` (an
    instance attribute over the class default ``TorchFFT``, removed on exit)."""
    spectral = [m for m in model.modules() if isinstance(m, (SpectralCrossAttention, NeuralBandPassFilter))]
    for module in spectral:
        module.fft = RealFFT
    try:
        yield
    finally:
        for module in spectral:
            del module.fft


# --------------------------------------------------------------------------- runtime


def _numpy(tensor: torch.Tensor, dtype=np.float32) -> np.ndarray:
    """A C-contiguous numpy copy of ``tensor`` for onnxruntime (channels_last included)."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


@dataclass
class OnnxConditionOutput:
    """What ``OnnxCondition`` returns: the condition logits and the prepared condition
    (``diffusion.prepare`` is part of the condition graph)."""

    logits: torch.Tensor
    prepared: PreparedCondition


class OnnxCondition(nn.Module):
    """Stands in for ``MedSegDiffV2.condition``: images -> OnnxConditionOutput."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, images: torch.Tensor) -> OnnxConditionOutput:
        logits, *anchors, embedding = (
            torch.from_numpy(a) for a in self.session.run(None, {"images": _numpy(images.float())})
        )
        return OnnxConditionOutput(logits, PreparedCondition(anchors, embedding))


class OnnxDenoiser(nn.Module):
    """Stands in for ``MedSegDiffV2.diffusion``: ``prepare`` hands the condition graph's
    result through; ``forward(x_t, images, t, condition)`` runs the denoiser graph."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.anchor_names = [node.name for node in session.get_inputs()[3:-1]]

    def prepare(self, condition: OnnxConditionOutput, *, first_anchor_level: int = 0, detach: bool = True):
        return condition.prepared

    def forward(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor, condition) -> torch.Tensor:
        feeds = {"x_t": _numpy(x_t.float()), "images": _numpy(images.float()), "t": _numpy(t, np.int64)}
        feeds.update({name: _numpy(anchor.float()) for name, anchor in zip(self.anchor_names, condition.anchors)})
        feeds["embedding"] = _numpy(condition.embedding.float())
        return torch.from_numpy(self.session.run(None, feeds)[0])


def over_sessions(model: MedSegDiffV2, condition_session, denoiser_session, info: dict) -> MedSegDiffV2:
    """``model`` (its schedule, its sampler settings) with its networks swapped for the
    sessions. The model's own PyTorch networks are dropped (building them takes well
    under a second for ``compact``)."""
    from fetometry.inference.onnx_session import OnnxModelError

    if model.timesteps != info["timesteps"]:
        raise OnnxModelError(
            f"the export used {info['timesteps']} diffusion steps but the config builds {model.timesteps}"
        )
    model.condition = OnnxCondition(condition_session)
    model.diffusion = OnnxDenoiser(denoiser_session)
    for key in SAMPLER_SETTINGS:
        setattr(model, key, info[key])  # the exported instance's sampler settings
    return model.eval()
