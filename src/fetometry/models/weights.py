"""Weights on disk: safetensors only (no pickle), plus a JSON config beside them.

A weights folder holds ``model.safetensors``, ``config.json`` (architecture, variant,
canvas size, calibration) and ``MODEL_CARD.md``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


def save_weights(model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None) -> None:
    """Save a state dict as safetensors. channels_last tensors are made contiguous;
    ``dtype`` (e.g. torch.float16) shrinks floating-point tensors for shipping."""
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().contiguous()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``model`` (cast to the model's dtypes), strict."""
    state = load_file(str(path))
    reference = model.state_dict()
    missing = set(reference) - set(state)
    unexpected = set(state) - set(reference)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the architecture "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model
