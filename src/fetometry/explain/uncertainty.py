"""Segmentation uncertainty carried to the head circumference.

Members (each one a probability map on the ORIGINAL grid)
---------------------------------------------------------
- ``tta`` (every model): the image under flips and small affine warps inside the
  training augmentation's range (``fetometry.data.augment``: flips, rotation +-20 deg,
  scale 0.85-1.15, black borders): identity, horizontal, vertical and both flips,
  rotation +-10 deg, zoom-out 0.9 and 0.8. A rotated image is placed on a canvas that
  holds all of it (nothing is cut); each prediction is warped back exactly.
- ``mc_dropout`` (models with dropout, e.g. TransUNet's ViT): ``MC_SAMPLES`` passes with
  the dropout layers active and everything else in eval mode (Gal & Ghahramani,
  "Dropout as a Bayesian approximation", ICML 2016).
- ``diffusion`` (MedSegDiff-V2): ``MC_SAMPLES`` sampler runs that differ in their
  initial noise (the sample spread of Wu et al. 2024).

From members to the measurement
-------------------------------
Each member's map gets an ellipse (the pipeline's fit) and an HC in px (Ramanujan II on
the axes minus the model's calibrated offset, as ``biometry.measures``); a member with
no head or no ellipse counts as failed. The VALUE is the HC of the predictor's own
prediction (what ``fetometry measure`` reports); the SPREAD (``hc_sd_mm``) is the
standard deviation of the members' HCs. Millimetres only with a pixel size: without
one, only the px values exist.

The interval is value +/- z * sqrt(spread^2 + (r * value)^2), z = 1.96 for the default
95%. The members only see how unstable THIS segmentation is; they cannot see the
model's systematic error or the sonographer's own variability, and on HC18 the spread
alone covers the reference far less often than nominal (docs/EXPLAINABILITY.md). ``r``,
the model's residual relative error, closes that gap: ``calibrate_residual`` fits it on
held-out annotated images (method of moments: r^2 = mean(relative error^2) -
mean(relative spread^2)), and it is read from the weights' ``config.json`` key
``hc_residual_fraction`` (0, i.e. spread only, when absent).

Per-image confidence (0..1; the quality gate and the report use it):
``confidence = valid_share * erf(TOLERANCE_FRACTION / (sqrt(2) * cv))``, cv = spread /
value (relative, so it needs no pixel size). Read it as the probability, under a normal
spread of the members, that the HC lies within +-2% of the value (about +-3.5 mm at
175 mm, the HC18 mean), discounted by the share of members that found a head. No head
in the prediction: confidence 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
from scipy import stats

from fetometry.biometry.ellipse import EllipseFitError, NoHeadError, ellipse_from_probability
from fetometry.biometry.measures import ramanujan_perimeter
from fetometry.data.transforms import letterbox, unletterbox
from fetometry.inference.diffusion import DiffusionSampler
from fetometry.io.pixel_size import validate_pixel_size
from fetometry.models.base import is_sampled

log = logging.getLogger(__name__)

SOURCES = ("tta", "mc_dropout", "diffusion")
#: Members drawn for MC dropout and for diffusion samples.
MC_SAMPLES = 8
#: Relative HC tolerance behind the confidence (2% of the value).
TOLERANCE_FRACTION = 0.02
DEFAULT_COVERAGE = 0.95


@dataclass(frozen=True)
class Warp:
    """A test-time transform: flips, then rotation (deg, counter-clockwise on screen)
    and isotropic scale about the image centre."""

    name: str
    hflip: bool = False
    vflip: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0


TTA_WARPS = (
    Warp("identity"),
    Warp("hflip", hflip=True),
    Warp("vflip", vflip=True),
    Warp("hvflip", hflip=True, vflip=True),
    Warp("rot+10", angle_deg=10.0),
    Warp("rot-10", angle_deg=-10.0),
    Warp("zoom0.9", scale=0.9),
    Warp("zoom0.8", scale=0.8),
)


class UncertaintyError(ValueError):
    """Unknown member source or a bad setting."""


# ----------------------------------------------------------------------------- warps


def warp_matrix(shape: tuple[int, int], warp: Warp) -> tuple[np.ndarray, tuple[int, int]]:
    """(2, 3) forward matrix and the output (width, height) that holds the whole image.

    The output keeps the image's size when the warped image fits in it (flips,
    zoom-out), else it grows to the warped image's bounding box (rotations).
    """
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    flip = np.array([[-1.0 if warp.hflip else 1.0, 0.0, 0.0], [0.0, -1.0 if warp.vflip else 1.0, 0.0], [0.0, 0.0, 1.0]])
    flip[0, 2] = (w - 1) if warp.hflip else 0.0
    flip[1, 2] = (h - 1) if warp.vflip else 0.0
    rotate = np.vstack([cv2.getRotationMatrix2D((cx, cy), warp.angle_deg, warp.scale), [0.0, 0.0, 1.0]])
    matrix = rotate @ flip
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float) @ matrix[:2].T
    low, high = corners.min(axis=0), corners.max(axis=0)
    if low.min() >= -0.5 and high[0] <= w - 0.5 and high[1] <= h - 0.5:
        return matrix[:2], (w, h)
    matrix[:2, 2] -= low  # shift the bounding box to the origin
    size = (int(math.ceil(high[0] - low[0])) + 1, int(math.ceil(high[1] - low[1])) + 1)
    return matrix[:2], size


def apply_warp(image: np.ndarray, warp: Warp) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) image -> (warped image, forward matrix); borders black (as in training)."""
    matrix, size = warp_matrix(image.shape, warp)
    warped = cv2.warpAffine(image.astype(np.float32), matrix, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    return warped, matrix


def unwarp(prob: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map on the warped grid -> the original (H, W) grid."""
    back = cv2.warpAffine(
        prob.astype(np.float32),
        matrix,
        (shape[1], shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderValue=0.0,
    )
    return np.clip(back, 0.0, 1.0)


# ----------------------------------------------------------------------------- members


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def default_sources(model: nn.Module) -> tuple[str, ...]:
    """TTA always; MC dropout where the model has dropout; samples for diffusion models."""
    sources = ["tta"]
    if has_dropout(model):
        sources.append("mc_dropout")
    if is_sampled(model):
        sources.append("diffusion")
    return tuple(sources)


def tta_members(predictor, image: np.ndarray, warps=TTA_WARPS) -> list[np.ndarray]:
    """One probability map per warp, warped back onto the image's grid."""
    warped, matrices = zip(*(apply_warp(image, w) for w in warps))
    predictions = predictor.predict_batch(list(warped))
    return [unwarp(p.probability, m, image.shape) for p, m in zip(predictions, matrices)]


def mc_dropout_members(predictor, image: np.ndarray, samples: int = MC_SAMPLES) -> list[np.ndarray]:
    """``samples`` maps with dropout active (each batch element draws its own masks)."""
    dropouts = [m for m in predictor.model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not dropouts:
        raise UncertaintyError("this model has no dropout layers: MC dropout does not apply")
    try:
        for module in dropouts:
            module.train()
        return [p.probability for p in predictor.predict_batch([image] * samples)]
    finally:
        for module in dropouts:
            module.eval()


def diffusion_members(predictor, image: np.ndarray, samples: int = MC_SAMPLES, seed: int = 0) -> list[np.ndarray]:
    """``samples`` sampler runs of a diffusion model, one initial noise each."""
    model = predictor.model
    if not is_sampled(model):
        raise UncertaintyError("this model does not sample: diffusion members need MedSegDiff-V2")
    canvas, box = letterbox(image, predictor.canvas_hw)
    x = torch.from_numpy(canvas)[None, None].repeat(samples, 1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        prob, _ = DiffusionSampler(model).sample(x, ensemble=1, generator=generator)
    return [np.clip(unletterbox(p[0].float().numpy(), box), 0.0, 1.0) for p in prob]


MEMBER_FUNCTIONS = {"tta": tta_members, "mc_dropout": mc_dropout_members, "diffusion": diffusion_members}


# ----------------------------------------------------------------------------- HC


def hc_px(prob: np.ndarray, offset_px: float, threshold: float = 0.5) -> float | None:
    """HC in px of a probability map (None when no head or no ellipse is found)."""
    try:
        ellipse = ellipse_from_probability(prob, threshold=threshold)
    except (NoHeadError, EllipseFitError):
        return None
    a, b = ellipse.semi_major_px - offset_px, ellipse.semi_minor_px - offset_px
    if b <= 0:
        return None
    return float(ramanujan_perimeter(a, b))  # Ramanujan II (1914), as biometry.measures


def confidence_from(value_px: float | None, spread_px: float | None, valid_share: float) -> float:
    """The per-image confidence of the module docstring, in [0, 1]."""
    if value_px is None or value_px <= 0 or spread_px is None:
        return 0.0
    if spread_px <= 0:
        return float(valid_share)
    cv = spread_px / value_px
    return float(valid_share * math.erf(TOLERANCE_FRACTION / (math.sqrt(2.0) * cv)))


def hc_uncertainty(
    predictor,
    image: np.ndarray,
    pixel_size_mm: float | None,
    *,
    sources: tuple[str, ...] | None = None,
    coverage: float = DEFAULT_COVERAGE,
    residual_fraction: float | None = None,
    prediction=None,
) -> dict:
    """HC value +/- spread and a confidence for one image (see the module docstring).

    Returns ``hc_mm``, ``hc_sd_mm`` (member spread), ``interval_mm`` (None without a
    pixel size), ``hc_px``, ``hc_sd_px``, ``interval_px``, ``interval_sd_px`` (the SD
    behind the interval), ``residual_fraction``, ``confidence`` (0..1), ``spread_map``
    ((H, W) float32, per-pixel SD of the members' probabilities, 0..0.5),
    ``member_hc_px``, ``members``, ``valid_members``, ``sources``, ``coverage``.
    ``residual_fraction``: default the predictor config's ``hc_residual_fraction``.
    """
    if image.ndim != 2:
        raise UncertaintyError(f"expected a 2D grayscale image, got shape {image.shape}")
    if not 0.0 < coverage < 1.0:
        raise UncertaintyError(f"coverage={coverage}: give a share between 0 and 1, e.g. 0.95")
    pixel_size_mm = None if pixel_size_mm is None else validate_pixel_size(pixel_size_mm)
    sources = tuple(sources) if sources is not None else default_sources(predictor.model)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise UncertaintyError(f"unknown uncertainty source(s) {unknown}; use some of {', '.join(SOURCES)}")
    members = [m for source in sources for m in MEMBER_FUNCTIONS[source](predictor, image)]
    prediction = prediction if prediction is not None else predictor.predict(image)
    offset = predictor.boundary_offset_px(prediction)
    member_hc = [hc_px(m, offset, predictor.threshold) for m in members]
    valid = [v for v in member_hc if v is not None]
    value = hc_px(prediction.probability, offset, predictor.threshold)
    spread = float(np.std(valid, ddof=1)) if len(valid) >= 2 else None
    if residual_fraction is None:
        residual_fraction = predictor.config.hc_residual_fraction
    if not (math.isfinite(residual_fraction) and residual_fraction >= 0):
        raise UncertaintyError(f"residual_fraction={residual_fraction}: give a relative SD >= 0, e.g. 0.02")
    z = float(stats.norm.ppf(0.5 + coverage / 2.0))
    interval_sd = math.hypot(spread, residual_fraction * value) if value is not None and spread is not None else None
    interval_px = (value - z * interval_sd, value + z * interval_sd) if interval_sd is not None else None
    to_mm = (lambda v: None if v is None else v * pixel_size_mm) if pixel_size_mm is not None else (lambda v: None)
    return {
        "hc_mm": to_mm(value),
        "hc_sd_mm": to_mm(spread),
        "interval_mm": None
        if interval_px is None or pixel_size_mm is None
        else tuple(v * pixel_size_mm for v in interval_px),
        "hc_px": value,
        "hc_sd_px": spread,
        "interval_px": interval_px,
        "interval_sd_px": interval_sd,
        "residual_fraction": residual_fraction,
        "confidence": confidence_from(value, spread, len(valid) / len(members)),
        "spread_map": np.std(np.stack(members), axis=0).astype(np.float32),
        "member_hc_px": member_hc,
        "members": len(members),
        "valid_members": len(valid),
        "sources": list(sources),
        "coverage": coverage,
    }


def calibrate_residual(predictor, samples, *, progress: bool = True) -> dict:
    """Fit the residual relative error r (module docstring) on annotated samples that
    neither trained the model nor enter the reported evaluation.

    Returns {"residual_fraction", "images", "rms_relative_error", "rms_relative_spread",
    "mean_relative_error"}; images without a pixel size, a reference HC or a spread are
    skipped. Put ``residual_fraction`` into the weights' config.json as
    ``hc_residual_fraction``.
    """
    from tqdm import tqdm

    errors, spreads = [], []
    for sample in tqdm(samples, desc="calibrate", unit="img", disable=not progress):
        if sample.pixel_size_mm is None or sample.hc_mm is None:
            continue
        result = hc_uncertainty(predictor, sample.load_image(), sample.pixel_size_mm, residual_fraction=0.0)
        if result["hc_mm"] is None or result["hc_sd_mm"] is None:
            continue
        errors.append((result["hc_mm"] - sample.hc_mm) / result["hc_mm"])
        spreads.append(result["hc_sd_mm"] / result["hc_mm"])
    if len(errors) < 10:
        raise UncertaintyError(f"only {len(errors)} usable images: calibrating the residual needs at least 10")
    errors, spreads = np.array(errors), np.array(spreads)
    residual = math.sqrt(max(0.0, float(np.mean(errors**2) - np.mean(spreads**2))))
    return {
        "residual_fraction": residual,
        "images": len(errors),
        "rms_relative_error": float(np.sqrt(np.mean(errors**2))),
        "rms_relative_spread": float(np.sqrt(np.mean(spreads**2))),
        "mean_relative_error": float(np.mean(errors)),
    }
