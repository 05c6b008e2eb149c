"""One registry for every network: the segmentation architectures and the plane classifier.

An architecture registers a builder per variant with ``@register_model(name, variant)``;
``create_model(name, variant, **kw)`` builds it. Unknown names raise an error that lists
the valid ones, so no list of models is ever kept by hand: every module of this package
is imported once, which runs its decorators.

The contract a registered model keeps is written down once, in ``fetometry.models.base``
(the trainer and predictor have one path each, and nobody probes with ``hasattr``):
- A segmenter is a ``SegmentationNetwork``: ``forward(images (B, C_in, H, W)) -> logits
  (B, C_out, H, W)``; the trainer applies its loss (Dice + BCE) and the predictor the
  base ``predict_proba``, a sigmoid.
- A model whose training and inference are not one forward pass (MedSegDiff-V2) is
  ``sampled``: it defines ``training_loss(images, masks) -> scalar`` and overrides
  ``predict_proba(images) -> (B, C_out, H, W)`` probabilities in [0, 1].
- A plane classifier (``kind="plane-classifier"``, ``fetometry.models.base``) maps images
  to plane logits (B, n_labels); ``fetometry.inference.plane.PlaneChecker`` wraps it.
  Listings of segmentation architectures (training, the benchmark) leave it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from fetometry.models.base import MODEL_KINDS, SEGMENTER


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    builder: Callable[..., nn.Module]
    description: str
    #: The input side length must be a multiple of this (number of downsamplings).
    size_divisor: int
    #: A baseline that is not one of the compared architectures (the benchmark's stock
    #: reference row); listed only when asked for.
    reference: bool = False
    #: "segmenter" or "plane-classifier" (fetometry.models.base).
    kind: str = SEGMENTER

    def summary(self) -> dict:
        """What `fetometry models` lists: the registration, nothing built or measured."""
        return {
            "name": self.name,
            "variant": self.variant,
            "kind": self.kind,
            "reference": self.reference,
            "size_divisor": self.size_divisor,
            "description": self.description,
        }


_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register_model(
    name: str,
    variant: str,
    *,
    size_divisor: int = 16,
    description: str = "",
    reference: bool = False,
    kind: str = SEGMENTER,
):
    """Decorator registering ``builder(**kw) -> nn.Module`` as ``name``/``variant``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {', '.join(MODEL_KINDS)}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = (name, variant)
        if key in _REGISTRY:
            raise ValueError(f"model {name}/{variant} is registered twice")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[key] = ModelSpec(name, variant, builder, doc, size_divisor, reference, kind)
        return builder

    return wrap


_LOADED = False


def _ensure_loaded() -> None:
    """Import every module of fetometry.models once: that runs their decorators. Once per
    process, so that a long run never picks up a module added to the source tree after it
    started (a half-written module would fail its export)."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import fetometry.models as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _LOADED = True


def available_models(*, include_reference: bool = False, kind: str = SEGMENTER) -> list[ModelSpec]:
    """The registered (name, variant) specs of one kind (default: the compared
    segmentation architectures), sorted; with ``include_reference`` also the reference
    baselines."""
    _ensure_loaded()
    specs = (_REGISTRY[k] for k in sorted(_REGISTRY))
    return [s for s in specs if s.kind == kind and (include_reference or not s.reference)]


def get_spec(name: str, variant: str = "compact") -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[(name, variant)]
    except KeyError:
        valid = ", ".join(f"{n}/{v}" for n, v in sorted(_REGISTRY))
        raise ValueError(f"unknown model {name!r} variant {variant!r}; valid: {valid}") from None


def create_model(name: str, variant: str = "compact", **kwargs) -> nn.Module:
    """Build a registered model. Every model maps (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
    return get_spec(name, variant).builder(**kwargs)
