"""Class-activation maps and occlusion for segmentation networks (own hooks, no captum).

What is explained
-----------------
A segmentation network has no single class score, so a scalar TARGET is built from its
output map Y (logits), as in Seg-Grad-CAM (Vinogradova, Dibrov & Myers, AAAI 2020,
arXiv:2002.11434): ``S = sum_p w_p * Y_p`` over the canvas pixels p, with

- target ``region`` (default): w = 1 on the predicted head, 0 elsewhere: "why is this
  the head?";
- target ``boundary``: w = +1 on head pixels and -1 on background pixels inside a band
  of half-width ``BOUNDARY_BAND_FRACTION`` x the head's equivalent radius around the
  predicted outline: "why does the outline, where the calipers go, lie here?" (raising
  S means a crisper outline at the same place).

Methods (A_k: activation of channel k at the target layer, G_k = dS/dA_k)
-------------------------------------------------------------------------
- ``gradcam`` (Selvaraju et al., ICCV 2017): ReLU(sum_k mean_ij(G_k) A_k).
- ``gradcampp`` (Chattopadhay et al., WACV 2018, eq. 19 with the exponential score's
  closed form as in their code): weights sum_ij alpha_ij ReLU(G_ij) with
  alpha = G^2 / (2 G^2 + sum_ab(A_ab) G^3) (0 where G = 0).
- ``hirescam`` (Draelos & Carin, arXiv:2011.08891, 2020): ReLU(sum_k G_k * A_k),
  element-wise, so the map shows where the layer's features raised S.
- ``occlusion`` (Zeiler & Fergus, ECCV 2014), gradient-free: a square patch (side
  ``OCCLUSION_PATCH_FRACTION`` of the content's shorter side, stride half a patch) is
  set to 0 (black: anechoic, what a scanner shows where there is no echo) and the drop
  of S is spread over the patch; the map is the mean drop per pixel, negatives clipped.

All three CAM maps come from ONE forward + backward pass. Everything runs on the
network's canvas (the predictor's letterbox) in float32 without autocast; a map is
upsampled bilinearly to the canvas, mapped back to the ORIGINAL image grid and scaled
to 0..1 by its maximum (an all-zero map stays zero: no positive evidence at all).

Target layers
-------------
Each architecture class names a default in its ``cam_target_layer`` attribute (a
dotted module path; integers index ModuleLists, negative ones from the end); the user
may name any other. A layer late in the decoder at 1/4 of the canvas is the default:
deep enough to carry the head's semantics, fine enough to follow the skull.

MedSegDiff-V2
-------------
``network="condition"`` explains the condition U-Net (its logits are what
``model(images)`` returns); ``network="denoiser"`` explains the diffusion U-Net at the
LAST DDIM step: the sampler runs (one member, fixed seed) up to that step, the step is
re-run with gradients and S is taken on its unclamped estimate of the clean mask,
x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), in diffusion space ([-1, 1]).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from fetometry.data.transforms import Letterbox, letterbox, unletterbox
from fetometry.explain.methods import CAM_METHODS, MAP_METHODS
from fetometry.inference.diffusion import DiffusionSampler
from fetometry.models.base import default_cam_layer, is_sampled

log = logging.getLogger(__name__)

METHODS = MAP_METHODS
TARGETS = ("region", "boundary")
NETWORKS = ("condition", "denoiser")
#: Default layer of the MedSegDiff-V2 denoiser: the last block of its finest decoder level.
DENOISER_TARGET_LAYER = "diffusion.decoder.-1.-1"
#: Half-width of the boundary band, as a share of the head's equivalent radius.
BOUNDARY_BAND_FRACTION = 0.06
#: Occlusion patch side as a share of the content's shorter side (64 px on 256 x 384).
OCCLUSION_PATCH_FRACTION = 0.25
#: Canvases per forward pass in occlusion and perturbation curves (larger batches are
#: slower per image on a one-thread CPU: memory-bound).
BATCH = 4
#: Seed of the diffusion sampler when the denoiser is explained (same noise each run,
#: so that perturbed inputs are compared with the same sampling path).
SAMPLER_SEED = 0


class ExplainError(ValueError):
    """An explanation cannot be made (unknown method or layer, no head predicted, ...)."""


# ----------------------------------------------------------------------------- layers


def is_diffusion(model: nn.Module) -> bool:
    """True for models that segment by sampling (``SegmentationNetwork.sampled``)."""
    return is_sampled(model)


def cam_target_layer(model: nn.Module, network: str = "condition") -> str:
    """The default target layer of ``model`` (its class's ``cam_target_layer``)."""
    if network == "denoiser":
        return DENOISER_TARGET_LAYER
    path = default_cam_layer(model)
    if not path:
        raise ExplainError(
            f"{type(model).__name__} names no default CAM target layer; give one with --layer "
            "(a dotted module path, e.g. 'decoders.1')"
        )
    return path


def resolve_layer(model: nn.Module, path: str) -> nn.Module:
    """Dotted path -> submodule; integer parts index containers (negative from the end)."""
    module = model
    for part in path.split("."):
        try:
            if part.lstrip("-").isdigit():
                module = module[int(part)]
            else:
                module = getattr(module, part)
        except (AttributeError, IndexError, TypeError, KeyError):
            children = ", ".join(name for name, _ in module.named_children()) or "none"
            raise ExplainError(
                f"layer {path!r}: {type(module).__name__} has no part {part!r} (its children: {children})"
            ) from None
    if not isinstance(module, nn.Module):
        raise ExplainError(f"layer {path!r} is not a module")
    return module


class ActivationHook:
    """Keeps the output of ``layer`` from its LAST call (a context manager)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.output: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> "ActivationHook":
        self._handle = self.layer.register_forward_hook(self._keep)
        return self

    def _keep(self, module, inputs, output) -> None:
        if not isinstance(output, torch.Tensor):
            raise ExplainError(
                f"the target layer {type(module).__name__} returns {type(output).__name__}, not a tensor"
            )
        self.output = output

    def __exit__(self, *exc) -> None:
        self._handle.remove()


# ----------------------------------------------------------------------------- targets


@dataclass
class Canvas:
    """One image on the network's canvas: x (1, 1, h, w) float32, its Letterbox, the
    content area (h, w) bool (the rest is padding) and the predicted head (h, w) bool."""

    x: torch.Tensor
    box: Letterbox
    content: np.ndarray
    region: np.ndarray
    region_full: np.ndarray = field(repr=False)


def equivalent_radius_px(mask: np.ndarray) -> float:
    """Radius of the disc with the mask's area."""
    return math.sqrt(max(int(np.count_nonzero(mask)), 1) / math.pi)


def target_weights(region: np.ndarray, content: np.ndarray, target: str) -> np.ndarray:
    """(h, w) float32 weights w of the target S = sum(w * Y) (module docstring)."""
    if target not in TARGETS:
        raise ExplainError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    if target == "region":
        return region.astype(np.float32)
    band = max(2.0, BOUNDARY_BAND_FRACTION * equivalent_radius_px(region))
    inside = ndimage.distance_transform_edt(region) <= band
    outside = ndimage.distance_transform_edt(~region) <= band
    weights = np.zeros(region.shape, np.float32)
    weights[region & inside] = 1.0
    weights[~region & outside & content] = -1.0
    return weights


def to_original(canvas_map: np.ndarray, box: Letterbox) -> np.ndarray:
    """(h, w) canvas map -> (H, W) float32 on the original grid, scaled to 0..1."""
    full = np.clip(unletterbox(np.asarray(canvas_map, np.float32), box), 0.0, None)
    return normalise(full)


def normalise(values: np.ndarray) -> np.ndarray:
    """Non-negative map / its max (all-zero stays zero), float32."""
    values = np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


# ----------------------------------------------------------------------------- CAM maths


def cam_from_gradients(activation: torch.Tensor, gradient: torch.Tensor, method: str) -> torch.Tensor:
    """activation, gradient (1, K, h, w) -> (h, w) non-negative map (module docstring)."""
    a, g = activation.detach().float()[0], gradient.detach().float()[0]
    if method == "gradcam":
        weights = g.mean(dim=(1, 2))
        return F.relu((weights[:, None, None] * a).sum(0))
    if method == "gradcampp":
        g2, g3 = g**2, g**3
        denominator = 2 * g2 + a.sum(dim=(1, 2), keepdim=True) * g3
        alpha = torch.where(
            g != 0, g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator)), torch.zeros_like(g)
        )
        weights = (alpha * F.relu(g)).sum(dim=(1, 2))
        return F.relu((weights[:, None, None] * a).sum(0))
    if method == "hirescam":
        return F.relu((g * a).sum(0))
    raise ExplainError(f"unknown CAM method {method!r}; use one of {', '.join(CAM_METHODS)}")


def _upsample(layer_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(layer_map[None, None], size=size, mode="bilinear", align_corners=False)
    return up[0, 0].numpy().astype(np.float32)


# ----------------------------------------------------------------------------- explainer


@dataclass
class Explanation:
    """One map: ``saliency`` (H, W) float32 0..1 on the original grid, ``canvas_map``
    (h, w) float32 0..1 on the network's canvas (what the faithfulness metrics use);
    wall-clock and process CPU seconds to make it (CAM methods share one pass)."""

    method: str
    saliency: np.ndarray
    canvas_map: np.ndarray
    seconds: float
    cpu_seconds: float
    layer: str | None
    target: str
    network: str


class Explainer:
    """Explains one predictor's segmentations.

    ``layer``: dotted path of the target layer (default: the architecture's);
    ``target``: "region" or "boundary"; ``network``: for MedSegDiff-V2 "condition"
    (default) or "denoiser", ignored for feed-forward models.
    """

    def __init__(self, predictor, *, layer: str | None = None, target: str = "region", network: str | None = None):
        if target not in TARGETS:
            raise ExplainError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
        self.predictor = predictor
        self.model = predictor.model
        self.diffusion = is_diffusion(self.model)
        network = network or "condition"
        if network not in NETWORKS:
            raise ExplainError(f"unknown network {network!r}; use one of {', '.join(NETWORKS)}")
        if network == "denoiser" and not self.diffusion:
            raise ExplainError("network 'denoiser' exists only for diffusion models (MedSegDiff-V2)")
        self.network = network
        self.target = target
        # Occlusion needs no layer (any black-box model, e.g. an ONNX one, can have it);
        # CAM methods fail in cam_maps when there is none. A given path is checked now.
        self.layer = layer or default_cam_layer(self.model)
        if network == "denoiser" and not layer:
            self.layer = DENOISER_TARGET_LAYER
        if self.layer:
            resolve_layer(self.model, self.layer)

    # ---- inputs ------------------------------------------------------------------
    def canvas(self, image: np.ndarray, prediction=None) -> Canvas:
        """The image on the canvas with the predicted head (from ``predictor.predict``)."""
        if image.ndim != 2:
            raise ExplainError(f"expected a 2D grayscale image, got shape {image.shape}")
        prediction = prediction if prediction is not None else self.predictor.predict(image)
        x, box = letterbox(image, self.predictor.canvas_hw)
        prob, _ = letterbox(prediction.probability, self.predictor.canvas_hw, interpolation=cv2.INTER_LINEAR)
        content = np.zeros(self.predictor.canvas_hw, bool)
        content[: box.content_hw[0], : box.content_hw[1]] = True
        region = (prob >= self.predictor.threshold) & content
        if not region.any():
            raise ExplainError("no head was predicted in this image: there is no segmentation to explain")
        tensor = torch.from_numpy(x)[None, None].float()
        return Canvas(tensor, box, content, region, np.asarray(prediction.mask, bool))

    def weights(self, canvas: Canvas) -> torch.Tensor:
        """(1, 1, h, w) target weights for this canvas."""
        return torch.from_numpy(target_weights(canvas.region, canvas.content, self.target))[None, None]

    # ---- the explained output -----------------------------------------------------
    def output(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) map the target is taken on: logits, or x0_hat of the denoiser.

        With gradients (CAM): float32. Without (occlusion, perturbation curves): as the
        predictor runs, bfloat16 autocast on channels_last; measured on TransUNet, the
        occlusion map's rank correlation with float32 is 0.993 at 2.6x the speed.
        """
        fast = not torch.is_grad_enabled()
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=fast):
            if self.network == "denoiser":
                return self._denoiser_x0(model, x).float()
            return model(x).float()

    def probability(self, model: nn.Module, canvases: np.ndarray) -> np.ndarray:
        """(B, h, w) canvases -> (B, h, w) head probability of the explained network."""
        out = []
        with torch.no_grad():
            for start in range(0, len(canvases), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(canvases[start : start + BATCH]))[:, None].float()
                y = self.output(model, x)
                prob = ((y + 1) / 2).clamp(0, 1) if self.network == "denoiser" else torch.sigmoid(y)
                out.append(prob[:, 0].numpy())
        return np.concatenate(out)

    def score(self, model: nn.Module, canvases: np.ndarray, weights: torch.Tensor) -> np.ndarray:
        """(B, h, w) canvases -> (B,) target scores S, without gradients."""
        scores = []
        with torch.no_grad():
            for start in range(0, len(canvases), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(canvases[start : start + BATCH]))[:, None].float()
                scores.append((self.output(model, x) * weights).sum(dim=(1, 2, 3)).numpy())
        return np.concatenate(scores)

    def _denoiser_x0(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run the sampler to its last step (no gradients), re-run that step with them."""
        calls: list[tuple] = []
        handle = model.diffusion.register_forward_pre_hook(lambda module, args: calls.append(args) or None)
        try:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(SAMPLER_SEED)
                DiffusionSampler(model).sample(x, ensemble=1, generator=generator)
        finally:
            handle.remove()
        x_t, images, t, condition = calls[-1]
        eps = model.predict_noise(x_t, images, t, condition)
        a = model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    # ---- maps ---------------------------------------------------------------------
    def cam_maps(
        self, canvas: Canvas, methods: Sequence[str] = CAM_METHODS, *, model: nn.Module | None = None
    ) -> dict[str, np.ndarray]:
        """One forward + backward -> {method: (h, w) canvas map 0..1} for CAM methods."""
        model = model if model is not None else self.model
        layer = resolve_layer(model, self.layer or cam_target_layer(model, self.network))
        x = canvas.x.clone().requires_grad_(True)  # a graph even if weights are frozen
        with torch.enable_grad(), ActivationHook(layer) as hook:
            s = (self.output(model, x) * self.weights(canvas)).sum()
            if hook.output is None:
                raise ExplainError(f"the target layer {self.layer!r} was not used by the forward pass")
            (gradient,) = torch.autograd.grad(s, hook.output)
        size = tuple(canvas.x.shape[-2:])
        maps = {}
        for method in methods:
            layer_map = cam_from_gradients(hook.output, gradient, method)
            maps[method] = normalise(_upsample(layer_map, size) * canvas.content)
        return maps

    def occlusion_map(self, canvas: Canvas, *, model: nn.Module | None = None) -> np.ndarray:
        """(h, w) canvas map 0..1: mean drop of S when a covering patch is blacked out."""
        model = model if model is not None else self.model
        weights = self.weights(canvas)
        image = canvas.x[0, 0].numpy()
        boxes = occlusion_patches(canvas.box.content_hw)
        base = self.score(model, image[None], weights)[0]
        occluded = np.repeat(image[None], len(boxes), axis=0)
        for i, (r0, r1, c0, c1) in enumerate(boxes):
            occluded[i, r0:r1, c0:c1] = 0.0
        drops = base - self.score(model, occluded, weights)
        total = np.zeros(image.shape, np.float64)
        count = np.zeros(image.shape, np.float64)
        for drop, (r0, r1, c0, c1) in zip(drops, boxes):
            total[r0:r1, c0:c1] += drop
            count[r0:r1, c0:c1] += 1
        mean_drop = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return normalise(np.clip(mean_drop, 0.0, None) * canvas.content)

    def canvas_maps(
        self, canvas: Canvas, methods: Sequence[str], *, model: nn.Module | None = None
    ) -> dict[str, tuple[np.ndarray, float, float]]:
        """{method: (canvas map, wall seconds, CPU seconds to make it alone)}.

        The CAM methods share one forward + backward pass: each is charged all of it
        (what it costs made alone). CPU seconds (``time.process_time``) stay honest on
        a shared machine, where wall time also counts the waiting.
        """
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ExplainError(f"unknown method(s) {unknown}; use {', '.join(METHODS)}")
        out: dict[str, tuple[np.ndarray, float, float]] = {}
        cams = [m for m in methods if m in CAM_METHODS]
        if cams:
            wall, cpu = time.perf_counter(), time.process_time()
            maps = self.cam_maps(canvas, cams, model=model)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out.update({m: (maps[m], wall, cpu) for m in cams})
        if "occlusion" in methods:
            wall, cpu = time.perf_counter(), time.process_time()
            occlusion = self.occlusion_map(canvas, model=model)
            out["occlusion"] = (occlusion, time.perf_counter() - wall, time.process_time() - cpu)
        return {m: out[m] for m in methods}

    def explain(
        self, image: np.ndarray, methods: Sequence[str] = METHODS, *, prediction=None
    ) -> dict[str, Explanation]:
        """{method: Explanation} for one image (original grid maps and canvas maps)."""
        canvas = self.canvas(image, prediction)
        return {
            method: Explanation(
                method,
                to_original(canvas_map, canvas.box),
                canvas_map,
                wall,
                cpu,
                self.layer if method in CAM_METHODS else None,
                self.target,
                self.network,
            )
            for method, (canvas_map, wall, cpu) in self.canvas_maps(canvas, methods).items()
        }


def occlusion_patches(content_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) patches tiling the content with half-patch stride."""
    h, w = content_hw
    patch = max(4, round(OCCLUSION_PATCH_FRACTION * min(h, w)))
    stride = max(1, patch // 2)

    def starts(length: int) -> list[int]:
        if length <= patch:
            return [0]
        points = list(range(0, length - patch + 1, stride))
        if points[-1] != length - patch:
            points.append(length - patch)  # the last patch touches the far edge
        return points

    return [(r, min(r + patch, h), c, min(c + patch, w)) for r in starts(h) for c in starts(w)]


def explain_image(
    predictor,
    image: np.ndarray,
    method: str,
    *,
    target: str = "region",
    layer: str | None = None,
    network: str | None = None,
    prediction=None,
) -> np.ndarray:
    """(H, W) image -> (H, W) float32 map 0..1 on the ORIGINAL grid.

    ``method``: gradcam, gradcampp, hirescam or occlusion (``METHODS``). Raises
    ExplainError (a ValueError) for an unknown method or layer, or when no head is found.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    explainer = Explainer(predictor, layer=layer, target=target, network=network)
    return explainer.explain(image, [method], prediction=prediction)[method].saliency
