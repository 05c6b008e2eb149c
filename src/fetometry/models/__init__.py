"""Segmentation architectures behind one registry; every network returns logits."""

from fetometry.models.registry import available_models, create_model, get_spec, register_model

__all__ = ["available_models", "create_model", "get_spec", "register_model"]
