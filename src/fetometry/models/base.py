"""The contract every network of fetometry honours, written down once.

Two kinds of model share it:

- a **segmenter** maps images (B, 1, H, W) to head logits (B, 1, H, W); the one
  ``fetometry.inference.Predictor`` turns them into a probability map on the image grid;
- a **plane classifier** maps images (B, 1, H, W) to plane logits (B, n_labels); the one
  ``fetometry.inference.plane.PlaneChecker`` turns them into a plane label, its
  probability and the head-plane decision.

Networks return logits and nothing else: resizing, intensity conventions, sigmoid or
softmax, test-time augmentation and thresholds wrap the network on the inference side.
What a tool needs to know about a network is a CLASS attribute (read from the type, the
same for every instance), so no tool probes an instance with ``hasattr``:

``kind``              "segmenter" | "plane-classifier"
``cam_target_layer``  the dotted name of the module Grad-CAM hooks by default
``size_divisor``      H and W must be multiples of it (the number of 2x downsamplings);
                      where it follows the constructor's widths the instance holds the
                      true value and the class the default widths' one
``sampled``           (segmenters) True when the network segments by SAMPLING (diffusion)

What the trainer and the predictor call, with the base classes' defaults (one code path
each, no probing):

``predict_proba(images)``         (B, C, H, W) probabilities in [0, 1]; the base: the
                                  sigmoid of ``forward``; a sampled model: its sampler
``training_loss(images, masks)``  a scalar loss, or None (the base) for a feed-forward
                                  net: the trainer then applies its Dice + BCE to the logits
``export_onnx_graphs(out, ...)``  None (the base): the generic one-file ONNX export of
                                  ``forward``; else the model's own graphs (a list of files)
``onnx_runtime(sessions.., info)`` None (the base); else the model over the onnxruntime
                                  sessions of its own graphs (``inference.onnx_backend``)

``foreground_probability``, ``is_sampled`` and ``default_cam_layer`` apply the contract to
any module a tool may be handed (a plain ``nn.Module`` returning logits, e.g. an ONNX
session's wrapper, is a feed-forward segmenter with no default CAM layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn as nn

SEGMENTER = "segmenter"
PLANE_CLASSIFIER = "plane-classifier"
MODEL_KINDS = (SEGMENTER, PLANE_CLASSIFIER)


class Network(nn.Module):
    """Base of every fetometry network: class-level facts plus one input check."""

    kind: ClassVar[str] = SEGMENTER
    cam_target_layer: ClassVar[str | None] = None
    size_divisor: ClassVar[int] = 1
    in_channels: int = 1

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ValueError (saying how to fix it) unless images is (B, in_channels, H, W)
        with H and W multiples of ``size_divisor``."""
        name = type(self).__name__
        if images.ndim != 4:
            hint = ": add the channel axis with images[:, None]" if images.ndim == 3 else ""
            raise ValueError(
                f"{name} expects (B, {self.in_channels}, H, W) images, got shape {tuple(images.shape)}{hint}"
            )
        channels, height, width = images.shape[1:]
        if channels != self.in_channels:
            hint = ": convert to grayscale" if self.in_channels == 1 else ""
            raise ValueError(f"{name} expects {self.in_channels} channel(s), got {channels}{hint}")
        divisor = self.size_divisor
        if height % divisor or width % divisor:
            raise ValueError(
                f"{name} needs H and W divisible by {divisor}, got {height}x{width}: resize or pad to e.g. "
                f"{-(-height // divisor) * divisor}x{-(-width // divisor) * divisor} (fetometry's Predictor and PlaneChecker do this for you)"
            )


class SegmentationNetwork(Network):
    """images (B, in_channels, H, W) -> head logits (B, out_channels, H, W).

    A feed-forward net defines ``forward`` and nothing else: the trainer applies its
    Dice + BCE to the logits, the predictor the sigmoid of ``predict_proba`` below.

    A SAMPLED model (``sampled = True``, MedSegDiff-V2) trains and segments by diffusion.
    It defines ``training_loss(images, masks) -> scalar`` and overrides ``predict_proba``
    (the inference-side sampler, ``fetometry.inference.diffusion.DiffusionSampler``, with
    the model's default steps and ensemble, reproducibly). What the sampler calls on it:
    ``prepare_condition``, ``predict_noise``, ``alphas_cumprod`` (the shared schedule,
    ``fetometry.models.diffusion_schedule``), ``timesteps``, ``out_channels``,
    ``default_steps``, ``default_ensemble``, ``eta`` and ``noise_seed``; explanations of
    its denoiser also hook ``diffusion`` (the denoising network). Its ``forward`` still
    returns logits (of its condition network) so that ``model(images)`` and Grad-CAM
    work; it is not its segmentation.
    """

    kind: ClassVar[str] = SEGMENTER
    sampled: ClassVar[bool] = False
    #: The model's own loss ``(images, masks (B, C, H, W) in [0, 1]) -> scalar``; None: the
    #: trainer's Dice + BCE on the logits. A sampled model overrides it with a method.
    training_loss: ClassVar[Callable[..., torch.Tensor] | None] = None
    #: The model's own ONNX export ``(out_path, *, config, verify) -> [files]``; None: the
    #: generic export of ``forward`` (fetometry.inference.export). A model that is not one
    #: forward pass overrides it with a method, and ``onnx_runtime`` with it.
    export_onnx_graphs: ClassVar[Callable[..., list] | None] = None
    #: ``(main session, partner session, model info) -> nn.Module``: the model run over
    #: the onnxruntime sessions of its own graphs; None: no such graphs.
    onnx_runtime: ClassVar[Callable[..., nn.Module] | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.sampled and (cls.training_loss is None or cls.predict_proba is SegmentationNetwork.predict_proba):
            raise TypeError(f"{cls.__name__} is sampled: it must define training_loss and predict_proba")

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> probabilities (B, out_channels, H, W) float32."""
        return torch.sigmoid(self(images).float())


def foreground_probability(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32 probabilities of any segmenting module: a
    ``SegmentationNetwork``'s ``predict_proba``, else the sigmoid of the module's logits."""
    if isinstance(model, SegmentationNetwork):
        return model.predict_proba(images).float()
    return torch.sigmoid(model(images).float())


def is_sampled(model: nn.Module) -> bool:
    """True for a segmenter that segments by sampling (``SegmentationNetwork.sampled``)."""
    return isinstance(model, SegmentationNetwork) and type(model).sampled


def own_onnx_export(model: nn.Module) -> bool:
    """True for a segmenter that exports its own ONNX graphs (``export_onnx_graphs``)."""
    return isinstance(model, SegmentationNetwork) and type(model).export_onnx_graphs is not None


def default_cam_layer(model: nn.Module) -> str | None:
    """The class-level ``cam_target_layer`` of a fetometry network; None for other modules."""
    return type(model).cam_target_layer if isinstance(model, Network) else None


class PlaneClassifierNetwork(Network):
    """images (B, 1, H, W) -> plane logits (B, len(labels)).

    ``labels`` names the outputs in order; ``head_labels`` are the planes on which a head
    is measured; ``background_label`` is the "no standard plane" output (or None);
    ``input_hw`` is the (H, W) the released weights were trained at. ``classify`` returns
    the logits together with an embedding (B, D) for out-of-distribution scores."""

    kind: ClassVar[str] = PLANE_CLASSIFIER
    labels: ClassVar[tuple[str, ...]] = ()
    head_labels: ClassVar[tuple[str, ...]] = ()
    background_label: ClassVar[str | None] = None
    input_hw: ClassVar[tuple[int, int]] = (224, 288)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
