"""onnxruntime behind the nn.Module interface, for the tools that hand a PyTorch module around.

    model = load_onnx_model("attention-unet.onnx", threads=1)      # an nn.Module
    predictor = Predictor(model, canvas_hw=(256, 384))             # unchanged Predictor
    predictor = load_onnx_predictor("attention-unet.onnx")         # config from the file

``load_onnx_predictor`` gives a feed-forward export to ``onnx_session.OnnxPredictor``
(NumPy only, no PyTorch) and a two-graph export to the PyTorch Predictor over the
model's own runtime.

A feed-forward export (``export.py``) becomes an ``OnnxSegmenter``: ``forward(images)``
returns the logits from onnxruntime. A model's own graphs (a two-file export,
MedSegDiff-V2's) become what its class hook ``onnx_runtime`` builds from the sessions:
for MedSegDiff-V2 its own model object with the networks run by onnxruntime
(``fetometry.models.medsegdiff_v2_onnx``), sampled by the unchanged
``fetometry.inference.diffusion.DiffusionSampler``. Sessions return numpy; the wrappers
turn it into float32 tensors, so bf16 autocast around them does nothing.

Threads: ``threads`` (intra-op) defaults to ``threads.network_threads()``: PyTorch's setting,
so onnxruntime and PyTorch use the same number of cores (OMP_NUM_THREADS governs both).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry.inference.export import medsegdiff_paths
from fetometry.inference.onnx_session import (
    CONDITION,
    CONFIG_KEY,
    DENOISER,
    MODEL_INFO_KEY,
    ROLE_KEY,
    SEGMENTER,
    OnnxModelError,
    OnnxPredictor,
    create_session,
    read_metadata,
)
from fetometry.models.base import SegmentationNetwork
from fetometry.weights_config import WeightsConfig

log = logging.getLogger(__name__)


def read_onnx_config(path: str | Path) -> dict:
    """The weights config stored in an exported file (canvas_hw, threshold, hc_offset_px, ...)."""
    metadata = read_metadata(_resolve(Path(path))[0])
    if CONFIG_KEY not in metadata:
        raise OnnxModelError(f"{path}: no fetometry config in its metadata; export it with `fetometry export`")
    return json.loads(metadata[CONFIG_KEY])


def _numpy(tensor: torch.Tensor, dtype=np.float32) -> np.ndarray:
    """A C-contiguous numpy copy of ``tensor`` for onnxruntime (channels_last included)."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


# --------------------------------------------------------------------------- modules


class OnnxSegmenter(nn.Module):
    """images (B, 1, H, W) -> logits (B, 1, H, W) float32, by onnxruntime."""

    def __init__(self, session, *, size_divisor: int = 1):
        super().__init__()
        self.session = session
        self.size_divisor = size_divisor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if images.ndim != 4 or height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"input {tuple(images.shape)} must be (B, C, H, W) with H and W divisible by "
                f"{self.size_divisor}; resize or pad it (the Predictor does this for you)"
            )
        return torch.from_numpy(self.session.run(None, {"images": _numpy(images.float())})[0])


# --------------------------------------------------------------------------- loading


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(main file, denoiser file or None). Accepts a segmenter file, either file of a
    MedSegDiff-V2 pair, the ``--out`` path of its export (FILE.onnx or a folder)."""
    if path.is_dir() or not path.exists():
        condition, denoiser = medsegdiff_paths(path)
        if condition.is_file():
            return condition, denoiser
        if path.is_dir():
            raise OnnxModelError(f"{path}: no condition.onnx in this folder; give an exported .onnx file")
        raise FileNotFoundError(
            f"{path}: no such ONNX file; create one with `fetometry export --format onnx --out {path}`"
        )
    name = path.name
    for suffix in ("_condition.onnx", "_denoiser.onnx"):
        if name.endswith(suffix):
            stem = path.with_name(name[: -len(suffix)])
            return Path(f"{stem}_condition.onnx"), Path(f"{stem}_denoiser.onnx")
    if name in ("condition.onnx", "denoiser.onnx"):
        return path.with_name("condition.onnx"), path.with_name("denoiser.onnx")
    return path, None


def load_onnx_model(path: str | Path, *, threads: int | None = None) -> nn.Module:
    """An exported file (or MedSegDiff-V2 pair) -> an nn.Module running onnxruntime.

    Feed-forward: ``OnnxSegmenter`` (forward -> logits). A two-graph export: the model's
    ``onnx_runtime`` hook over both sessions (MedSegDiff-V2: its ``MedSegDiffV2`` whose
    networks are the sessions; ``predict_proba`` = the diffusion sampler).
    """
    main, denoiser_path = _resolve(Path(path))
    session = create_session(main, threads=threads)
    metadata = read_metadata(session)
    role = metadata.get(ROLE_KEY)
    config = WeightsConfig.from_dict(json.loads(metadata.get(CONFIG_KEY, "{}")), source=f"{main} metadata")
    if role == SEGMENTER:
        from fetometry.models import get_spec

        divisor = get_spec(config.model, config.variant).size_divisor if config.model else 1
        return OnnxSegmenter(session, size_divisor=divisor).eval()
    if role == CONDITION:
        if denoiser_path is None or not denoiser_path.is_file():
            raise OnnxModelError(f"{main}: its denoiser graph {denoiser_path} is missing; export both files again")
        denoiser = create_session(denoiser_path, threads=threads)
        if read_metadata(denoiser).get(ROLE_KEY) != DENOISER:
            raise OnnxModelError(f"{denoiser_path}: not a denoiser export")
        return _over_sessions(main, session, denoiser, config, json.loads(metadata[MODEL_INFO_KEY]))
    raise OnnxModelError(f"{main}: not a fetometry export (role {role!r}); create it with `fetometry export`")


def _over_sessions(main: Path, condition, denoiser, config: WeightsConfig, info: dict) -> nn.Module:
    """The config's model built afresh (its schedule and settings), handed the sessions
    by its ``onnx_runtime`` hook."""
    from fetometry.models import create_model

    model = create_model(config.model, config.variant, **config.model_kwargs)
    if not isinstance(model, SegmentationNetwork) or type(model).onnx_runtime is None:
        raise OnnxModelError(f"{main}: {config.model} has no runtime for a two-graph export")
    return model.onnx_runtime(condition, denoiser, info)


def load_onnx_predictor(path: str | Path, *, threads: int | None = None, **predictor_kwargs):
    """A predictor over an export, configured from the file's metadata (canvas_hw,
    threshold, hc_offset_px, model name): ``OnnxPredictor`` for one feed-forward graph,
    else a Predictor over ``load_onnx_model(path)``."""
    from fetometry.inference.predictor import Predictor

    main, _ = _resolve(Path(path))
    if read_metadata(main).get(ROLE_KEY) == SEGMENTER:
        return OnnxPredictor.from_file(main, threads=threads, **predictor_kwargs)
    config = WeightsConfig.from_dict(read_onnx_config(path), source=f"{path} metadata")
    if config.canvas_hw is None:
        raise OnnxModelError(f"{path}: its metadata has no canvas_hw; export it with `fetometry export`")
    predictor_kwargs.setdefault("threshold", config.threshold)
    config = config.replace(backend="onnxruntime", onnx_path=str(path))
    return Predictor(
        load_onnx_model(path, threads=threads), canvas_hw=config.canvas_hw, config=config, **predictor_kwargs
    )
