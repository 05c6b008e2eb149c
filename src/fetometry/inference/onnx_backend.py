"""onnxruntime behind the nn.Module interface, so the one Predictor runs ONNX models.

    model = load_onnx_model("attention-unet.onnx", threads=1)      # an nn.Module
    predictor = Predictor(model, canvas_hw=(256, 384))             # unchanged Predictor
    predictor = load_onnx_predictor("attention-unet.onnx")         # same, config from the file

A feed-forward export (``export.py``) becomes an ``OnnxSegmenter``: ``forward(images)``
returns the logits from onnxruntime. A MedSegDiff-V2 export (two files) becomes the
model's OWN ``MedSegDiffV2`` object whose two networks are replaced by onnxruntime
sessions (``OnnxCondition``, ``OnnxDenoiser``): ``predict_proba`` and ``sample`` are the
model's DDIM sampler, unchanged, calling the sessions. The sessions return numpy; the
wrappers turn it into float32 tensors, so bf16 autocast around them does nothing.

Threads: ``threads`` (intra-op) defaults to ``torch.get_num_threads()``, so onnxruntime
and PyTorch use the same number of cores (OMP_NUM_THREADS governs both).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry.inference.export import (
    CONDITION,
    CONFIG_KEY,
    DENOISER,
    MODEL_INFO_KEY,
    ROLE_KEY,
    SEGMENTER,
    medsegdiff_paths,
)

log = logging.getLogger(__name__)


class OnnxModelError(ValueError):
    """The file is not a fetometry ONNX export (or its partner file is missing)."""


# --------------------------------------------------------------------------- sessions


def create_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session with ``threads`` intra-op threads (default: PyTorch's)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such ONNX file; create one with `fetometry export --format onnx --out {path}`"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def read_metadata(session_or_path) -> dict[str, str]:
    """The file's fetometry metadata (role, config JSON, model info JSON)."""
    if isinstance(session_or_path, (str, Path)):
        import onnx

        proto = onnx.load(str(session_or_path), load_external_data=False)
        return {entry.key: entry.value for entry in proto.metadata_props}
    return dict(session_or_path.get_modelmeta().custom_metadata_map)


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


@dataclass
class OnnxConditionOutput:
    """What ``OnnxCondition`` returns: the condition logits and the prepared condition
    (``diffusion.prepare`` is part of the condition graph)."""

    logits: torch.Tensor
    prepared: object  # medsegdiff_v2.PreparedCondition


class OnnxCondition(nn.Module):
    """Stands in for ``MedSegDiffV2.condition``: images -> OnnxConditionOutput."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, images: torch.Tensor) -> OnnxConditionOutput:
        from fetometry.models.medsegdiff_v2 import PreparedCondition

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

    Feed-forward: ``OnnxSegmenter`` (forward -> logits). MedSegDiff-V2: a ``MedSegDiffV2``
    whose networks are onnxruntime sessions (``predict_proba`` = its own sampler).
    """
    main, denoiser_path = _resolve(Path(path))
    session = create_session(main, threads=threads)
    metadata = read_metadata(session)
    role = metadata.get(ROLE_KEY)
    config = json.loads(metadata.get(CONFIG_KEY, "{}"))
    if role == SEGMENTER:
        from fetometry.models import get_spec

        divisor = get_spec(config["model"], config["variant"]).size_divisor if "model" in config else 1
        return OnnxSegmenter(session, size_divisor=divisor).eval()
    if role == CONDITION:
        if denoiser_path is None or not denoiser_path.is_file():
            raise OnnxModelError(f"{main}: its denoiser graph {denoiser_path} is missing; export both files again")
        denoiser = create_session(denoiser_path, threads=threads)
        if read_metadata(denoiser).get(ROLE_KEY) != DENOISER:
            raise OnnxModelError(f"{denoiser_path}: not a MedSegDiff-V2 denoiser export")
        return _medsegdiff_over_sessions(session, denoiser, config, json.loads(metadata[MODEL_INFO_KEY]))
    raise OnnxModelError(f"{main}: not a fetometry export (role {role!r}); create it with `fetometry export`")


def _medsegdiff_over_sessions(condition, denoiser, config: dict, info: dict) -> nn.Module:
    """The model's own MedSegDiffV2 (its schedule and sampler), networks swapped for the
    sessions. Building it initialises throwaway PyTorch networks (well under a second
    for ``compact``); they are dropped at once."""
    from fetometry.models import create_model

    model = create_model(config["model"], config["variant"], **config.get("model_kwargs", {}))
    if model.timesteps != info["timesteps"]:
        raise OnnxModelError(
            f"the export used {info['timesteps']} diffusion steps but the config builds {model.timesteps}"
        )
    model.condition = OnnxCondition(condition)
    model.diffusion = OnnxDenoiser(denoiser)
    for key in ("default_steps", "default_ensemble", "eta", "noise_skip"):
        setattr(model, key, info[key])  # the exported instance's sampler settings
    return model.eval()


def load_onnx_predictor(path: str | Path, *, threads: int | None = None, **predictor_kwargs):
    """A Predictor over ``load_onnx_model(path)``, configured from the file's metadata
    (canvas_hw, threshold, hc_offset_px, model name)."""
    from fetometry.inference.predictor import Predictor

    config = read_onnx_config(path)
    if "canvas_hw" not in config:
        raise OnnxModelError(f"{path}: its metadata has no canvas_hw; export it with `fetometry export`")
    predictor_kwargs.setdefault("threshold", config.get("threshold", 0.5))
    config = {**config, "backend": "onnxruntime", "onnx_path": str(path)}
    return Predictor(
        load_onnx_model(path, threads=threads), canvas_hw=tuple(config["canvas_hw"]), config=config, **predictor_kwargs
    )
