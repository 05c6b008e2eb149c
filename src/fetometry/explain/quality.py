"""Sanity and faithfulness of explanations, measured (not assumed).

- Localisation (the "energy-based pointing game" of Wang et al., Score-CAM, CVPR-W
  2020, with the head instead of a box): the share of a map's total mass inside the
  head region dilated by ``DILATION_FRACTION`` x its equivalent radius. Its chance
  level, what a uniform map scores, is the dilated region's share of the image's
  content; a map is informative only above it.
- Deletion and insertion (Petsiuk, Das & Saenko, RISE, BMVC 2018): canvas pixels are
  ranked by the map (ties broken at random, fixed seed); deletion sets the top share
  (k/steps)^2, k = 0..steps, to 0 (black), insertion starts from a blurred image (Gaussian, sigma
  ``BLUR_SIGMA_FRACTION`` x the content's shorter side) and puts the top share back.
  The score is the explained network's mean head probability inside the ORIGINAL
  predicted head; AUC by the trapezoid rule over the share 0..1. Deletion: lower is
  more faithful; insertion: higher. A random ranking gives the baseline of both. The
  shares are quadratic (0, 1%, 4%, 9%, ...) because a network loses the head after a
  few tens of percent of deleted pixels: uniform steps would put one point there.
- Model-parameter randomisation, cascading (Adebayo et al., "Sanity checks for
  saliency maps", NeurIPS 2018): the explained network's parametrised modules, in the
  order the forward pass calls them, are re-initialised from the output backwards
  (their own ``reset_parameters``; other parameters redrawn with their own standard
  deviation) in ``stages`` cumulative steps, and the map of each stage is compared with
  the trained model's by Spearman rank correlation over the content pixels. A map that
  does NOT change (rho near 1) does not depend on what the model learned. A constant
  map (no positive evidence left) has no ranking: rho is set to 0.

``evaluate_explanations`` runs all of it, plus the HC uncertainty of
``fetometry.explain.uncertainty``, over a list of samples with reference masks.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage, stats
from tqdm import tqdm

from fetometry.explain.cam import (
    CAM_METHODS,
    METHODS,
    Canvas,
    Explainer,
    ExplainError,
    equivalent_radius_px,
    to_original,
)

log = logging.getLogger(__name__)

#: Head dilation of the localisation score, as a share of its equivalent radius.
DILATION_FRACTION = 0.1
#: Insertion baseline blur, as a share of the content's shorter side (13 px on 256).
BLUR_SIGMA_FRACTION = 0.05
DEFAULT_STEPS = 10
DEFAULT_STAGES = 4
#: Nominal coverages of the HC interval reported by the calibration.
NOMINAL_COVERAGES = (0.5, 0.8, 0.9, 0.95)


# ----------------------------------------------------------------------------- localisation


def dilate_head(mask: np.ndarray, fraction: float = DILATION_FRACTION) -> np.ndarray:
    """(H, W) bool head -> the head grown by ``fraction`` x its equivalent radius."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ExplainError("the head mask is empty: localisation needs a head")
    distance = ndimage.distance_transform_edt(~mask)
    return distance <= fraction * equivalent_radius_px(mask)


def localisation_score(saliency: np.ndarray, head_mask: np.ndarray, *, fraction: float = DILATION_FRACTION) -> float:
    """Share of the map's mass inside the dilated head; NaN for an all-zero map."""
    saliency = np.clip(np.asarray(saliency, np.float64), 0.0, None)
    if saliency.shape != np.shape(head_mask):
        raise ExplainError(f"map {saliency.shape} and head mask {np.shape(head_mask)} differ in shape")
    total = saliency.sum()
    if total <= 0:
        return math.nan
    return float(saliency[dilate_head(head_mask, fraction)].sum() / total)


def chance_localisation(
    head_mask: np.ndarray, content: np.ndarray | None = None, *, fraction: float = DILATION_FRACTION
) -> float:
    """What a uniform map over ``content`` (default: the whole image) scores."""
    region = dilate_head(head_mask, fraction)
    content = np.ones_like(region) if content is None else np.asarray(content, bool)
    return float(np.count_nonzero(region & content) / max(np.count_nonzero(content), 1))


# ----------------------------------------------------------------------------- rank correlation


def rank_correlation(first: np.ndarray, second: np.ndarray, where: np.ndarray | None = None) -> float:
    """Spearman's rho of two maps over ``where``; 0 when either map is constant there."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if where is not None:
        a, b = a[where], b[where]
    a, b = a.ravel(), b.ravel()
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    rho = stats.spearmanr(a, b).statistic
    return float(rho) if np.isfinite(rho) else 0.0


# ----------------------------------------------------------------------------- deletion / insertion


class PerturbationCurves:
    """Deletion and insertion curves of one canvas; endpoints are computed once."""

    def __init__(self, explainer: Explainer, canvas: Canvas, *, steps: int = DEFAULT_STEPS, seed: int = 0):
        if steps < 2:
            raise ExplainError(f"steps={steps}: use at least 2 perturbation steps")
        self.explainer, self.canvas, self.steps = explainer, canvas, steps
        self.shares = np.linspace(0.0, 1.0, steps + 1) ** 2  # see the module docstring
        self.rng = np.random.default_rng(seed)
        self.image = canvas.x[0, 0].numpy()
        sigma = BLUR_SIGMA_FRACTION * min(canvas.box.content_hw)
        self.blurred = cv2.GaussianBlur(self.image, (0, 0), sigma) * canvas.content
        self.pixels = np.flatnonzero(canvas.content)
        self.original, self.deleted, self.baseline = self.score(
            np.stack([self.image, np.zeros_like(self.image), self.blurred])
        )

    def score(self, canvases: np.ndarray) -> np.ndarray:
        """(B, h, w) -> (B,) mean head probability inside the original predicted head."""
        prob = self.explainer.probability(self.explainer.model, canvases)
        return prob[:, self.canvas.region].mean(axis=1)

    def ranking(self, canvas_map: np.ndarray) -> np.ndarray:
        """Content pixel indices, most salient first; ties in random order."""
        shuffled = self.rng.permutation(self.pixels)
        values = np.asarray(canvas_map, np.float64).ravel()[shuffled]
        return shuffled[np.argsort(-values, kind="stable")]

    def __call__(self, canvas_map: np.ndarray) -> dict:
        order = self.ranking(canvas_map)
        counts = [round(share * len(order)) for share in self.shares[1:-1]]
        deleted, inserted = [], []
        for n in counts:
            chosen = order[:n]
            d = self.image.ravel().copy()
            d[chosen] = 0.0
            i = self.blurred.ravel().copy()
            i[chosen] = self.image.ravel()[chosen]
            deleted.append(d.reshape(self.image.shape))
            inserted.append(i.reshape(self.image.shape))
        middle = self.score(np.stack(deleted + inserted))
        deletion = np.concatenate([[self.original], middle[: len(counts)], [self.deleted]])
        insertion = np.concatenate([[self.baseline], middle[len(counts) :], [self.original]])
        return {
            "deletion_auc": float(np.trapezoid(deletion, x=self.shares)),
            "insertion_auc": float(np.trapezoid(insertion, x=self.shares)),
            "deletion_curve": [round(float(v), 4) for v in deletion],
            "insertion_curve": [round(float(v), 4) for v in insertion],
        }

    def random_baseline(self) -> dict:
        """The curves of a random ranking (what an uninformative map scores)."""
        return self(self.rng.random(self.image.shape))


# ----------------------------------------------------------------------------- randomisation


def forward_order(model: nn.Module, run: Callable[[], object], within: nn.Module | None = None) -> list[nn.Module]:
    """Modules that own parameters, in the order ``run()`` first calls them."""
    scope = within if within is not None else model
    candidates = [m for m in scope.modules() if any(True for _ in m.parameters(recurse=False))]
    order: list[nn.Module] = []
    seen: set[int] = set()

    def record(module, args):
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    handles = [m.register_forward_pre_hook(record) for m in candidates]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return order


def randomise_(module: nn.Module) -> None:
    """Re-initialise a module's own parameters (and buffers of norm layers), in place."""
    if hasattr(module, "reset_parameters") and type(module).__module__.startswith("torch.nn"):
        module.reset_parameters()  # PyTorch's own initialisation (BN: running stats too)
        return
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
            parameter.normal_(0.0, spread if spread > 0 else 0.02)


def cascade_randomisation(
    explainer: Explainer,
    canvas: Canvas,
    trained: dict[str, np.ndarray],
    *,
    stages: int = DEFAULT_STAGES,
    occlusion: bool = False,
    seed: int = 0,
    keep_maps: bool = False,
) -> list[dict]:
    """Adebayo's cascading randomisation: [{stage, share, layers, rho: {method: rho}}].

    ``trained``: {method: canvas map of the trained model}; CAM methods are compared at
    every stage, occlusion (when ``occlusion`` and in ``trained``) at the last stage only
    (it costs one forward pass per patch). ``keep_maps`` adds each stage's maps.
    """
    model = copy.deepcopy(explainer.model).eval()
    scope = model.diffusion if explainer.network == "denoiser" else None
    order = forward_order(model, lambda: explainer.output(model, canvas.x), scope)[::-1]  # output side first
    if not order:
        raise ExplainError("the explained network has no parameters to randomise")
    cams = [m for m in trained if m in CAM_METHODS]
    results, done = [], 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for stage in range(1, stages + 1):
            upto = math.ceil(stage / stages * len(order))
            for module in order[done:upto]:
                randomise_(module)
            done = upto
            maps = explainer.cam_maps(canvas, cams, model=model) if cams else {}
            if occlusion and "occlusion" in trained and stage == stages:
                maps["occlusion"] = explainer.occlusion_map(canvas, model=model)
            rho = {m: rank_correlation(trained[m], maps[m], canvas.content) for m in maps}
            results.append({"stage": stage, "share": round(upto / len(order), 4), "layers": upto, "rho": rho})
            if keep_maps:
                results[-1]["maps"] = maps
    return results


# ----------------------------------------------------------------------------- evaluation


def evaluate_explanations(
    predictor,
    samples: Sequence,
    *,
    methods: Sequence[str] = METHODS,
    network: str | None = None,
    layer: str | None = None,
    steps: int = DEFAULT_STEPS,
    stages: int = DEFAULT_STAGES,
    occlusion_images: int | None = None,
    uncertainty: bool = True,
    progress: bool = True,
) -> dict:
    """Every check over ``samples`` (with reference masks): {"rows": [...], "summary": {...}}.

    Per image and method: localisation (against the REFERENCE head) and its chance level,
    deletion / insertion AUC (and a random ranking's), the randomisation cascade's rho,
    seconds per map; per image: the HC uncertainty (value, SD, error vs the reference).
    Occlusion costs one forward pass per patch (77 on a 256 x 384 canvas), twice with its
    randomisation check: ``occlusion_images`` limits it to the first N images (None: all).
    """
    from fetometry.explain.uncertainty import hc_uncertainty

    explainer = Explainer(predictor, layer=layer, network=network)
    rows = []
    for index, sample in enumerate(tqdm(samples, desc="explain", unit="img", disable=not progress)):
        image, reference = sample.load_image(), sample.load_mask()
        row = {"filename": sample.name, "pixel_size_mm": sample.pixel_size_mm, "reference_hc_mm": sample.hc_mm}
        chosen = [m for m in methods if m != "occlusion" or occlusion_images is None or index < occlusion_images]
        prediction = predictor.predict(image)
        try:
            row.update(_evaluate_one(explainer, image, prediction, reference, chosen, steps, stages))
        except ExplainError as error:
            row["error"] = str(error)
            log.warning("%s: %s", sample.name, error)
        if uncertainty:
            result = hc_uncertainty(predictor, image, sample.pixel_size_mm, prediction=prediction)
            row["uncertainty"] = _uncertainty_row(result, sample.hc_mm)
        rows.append(row)
    summary = summarise(rows, methods)
    summary.update(
        layer=explainer.layer, network=explainer.network, target=explainer.target, steps=steps, stages=stages
    )
    return {"rows": rows, "summary": summary}


def _evaluate_one(
    explainer: Explainer, image: np.ndarray, prediction, reference: np.ndarray, methods, steps: int, stages: int
) -> dict:
    canvas = explainer.canvas(image, prediction)
    maps = explainer.canvas_maps(canvas, methods)
    curves = PerturbationCurves(explainer, canvas, steps=steps)
    out = {
        "chance_localisation": chance_localisation(reference),
        "random_curves": _short(curves.random_baseline()),
        "methods": {},
    }
    for method, (canvas_map, seconds, cpu_seconds) in maps.items():
        saliency = to_original(canvas_map, canvas.box)
        out["methods"][method] = {
            "localisation": localisation_score(saliency, reference),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            **_short(curves(canvas_map)),
        }
    trained = {m: maps[m][0] for m in maps}
    cascade = cascade_randomisation(explainer, canvas, trained, stages=stages, occlusion="occlusion" in maps)
    for method in out["methods"]:
        out["methods"][method]["randomisation_rho"] = [stage["rho"].get(method) for stage in cascade]
    return out


def _short(curves: dict) -> dict:
    return {k: curves[k] for k in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve")}


def _uncertainty_row(result: dict, reference_hc_mm: float | None) -> dict:
    row = {
        k: result[k]
        for k in ("hc_mm", "hc_sd_mm", "hc_px", "hc_sd_px", "confidence", "members", "valid_members", "sources")
    }
    if result["hc_mm"] is not None and reference_hc_mm is not None:
        row["error_mm"] = result["hc_mm"] - reference_hc_mm
    return row


# ----------------------------------------------------------------------------- summary


def _stats(values: Sequence[float | None]) -> dict:
    clean = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if clean.size == 0:
        return {"n": 0, "mean": None, "median": None, "sd": None}
    return {
        "n": int(clean.size),
        "mean": float(clean.mean()),
        "median": float(np.median(clean)),
        "sd": float(clean.std(ddof=1)) if clean.size > 1 else 0.0,
    }


def summarise(rows: Sequence[dict], methods: Sequence[str]) -> dict:
    """Means / medians per method, the random baselines and the HC calibration."""
    ok = [r for r in rows if "methods" in r]
    summary = {
        "images": len(rows),
        "explained_images": len(ok),
        "chance_localisation": _stats([r["chance_localisation"] for r in ok]),
        "random_deletion_auc": _stats([r["random_curves"]["deletion_auc"] for r in ok]),
        "random_insertion_auc": _stats([r["random_curves"]["insertion_auc"] for r in ok]),
        "methods": {},
    }
    for method in methods:
        with_method = [r for r in ok if method in r["methods"]]
        entries = [r["methods"][method] for r in with_method]
        rho = [e["randomisation_rho"] for e in entries if e.get("randomisation_rho")]
        final = [r[-1] for r in rho]
        summary["methods"][method] = {
            # The baselines over the SAME images as this method (occlusion runs on fewer).
            "chance_localisation": _stats([r["chance_localisation"] for r in with_method]),
            "random_deletion_auc": _stats([r["random_curves"]["deletion_auc"] for r in with_method]),
            "random_insertion_auc": _stats([r["random_curves"]["insertion_auc"] for r in with_method]),
            "localisation": _stats([e["localisation"] for e in entries]),
            "deletion_auc": _stats([e["deletion_auc"] for e in entries]),
            "insertion_auc": _stats([e["insertion_auc"] for e in entries]),
            "seconds": _stats([e["seconds"] for e in entries]),
            "cpu_seconds": _stats([e["cpu_seconds"] for e in entries]),
            # rho of the fully randomised model (last stage), and per stage.
            "randomisation_rho_final": _stats(final),
            "randomisation_rho_by_stage": [
                _stats([r[i] for r in rho if len(r) > i and r[i] is not None])
                for i in range(max((len(r) for r in rho), default=0))
            ],
        }
    summary["uncertainty"] = calibration([r["uncertainty"] for r in rows if "uncertainty" in r])
    return summary


def calibration(
    rows: Sequence[dict], nominal: Sequence[float] = NOMINAL_COVERAGES, *, residual_fraction: float = 0.0
) -> dict:
    """Nominal vs observed coverage of hc_mm +/- z * sqrt(hc_sd_mm^2 + (r hc_mm)^2)
    against the reference HC (r = ``residual_fraction``; 0: the member spread alone).

    z is the two-sided standard normal quantile of the nominal level. Also: how the
    spread and the confidence rank the absolute errors (Spearman), and the error of the
    images above and below a confidence of 0.9.
    """
    usable = [r for r in rows if r.get("error_mm") is not None and r.get("hc_sd_mm") is not None]
    out = {"images": len(rows), "with_reference": len(usable), "residual_fraction": residual_fraction, "coverage": []}
    if not usable:
        return out
    errors = np.abs([r["error_mm"] for r in usable])
    sds = np.array([r["hc_sd_mm"] for r in usable])
    interval_sds = np.hypot(sds, residual_fraction * np.array([r["hc_mm"] for r in usable]))
    confidence = np.array([r["confidence"] for r in usable])
    for level in nominal:
        z = float(stats.norm.ppf(0.5 + level / 2))
        out["coverage"].append(
            {"nominal": level, "z": round(z, 4), "observed": float(np.mean(errors <= z * interval_sds))}
        )
    out["hc_abs_error_mm"] = _stats(list(errors))
    out["hc_sd_mm"] = _stats(list(sds))
    out["confidence"] = _stats(list(confidence))
    out["spearman_sd_vs_abs_error"] = rank_correlation(sds, errors)
    out["spearman_confidence_vs_abs_error"] = rank_correlation(confidence, errors)
    # The factor the SDs would need for the 95% interval to cover 95% (in-sample: a
    # diagnostic of under-dispersion, not a calibration to apply to these images).
    ratio = errors / np.maximum(interval_sds, 1e-9)
    out["sd_scale_for_95"] = float(np.quantile(ratio, 0.95) / stats.norm.ppf(0.975))
    high = confidence >= 0.9
    out["abs_error_confident_mm"] = _stats(list(errors[high]))
    out["abs_error_unconfident_mm"] = _stats(list(errors[~high]))
    return out
