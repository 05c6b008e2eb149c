"""fetometry.explain: CAM maths on a toy model, maps for all five architectures, the
faithfulness and sanity checks, HC uncertainty and the `explain` verb.

The real-model tests use the shipped default model on a synthetic phantom that it
segments well (Dice 0.98), so they run on a fresh clone without ../shared.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from fetometry.cli import explain as explain_verb
from fetometry.data.synthetic import make_phantom
from fetometry.explain.cam import (
    CAM_METHODS,
    METHODS,
    Explainer,
    ExplainError,
    cam_target_layer,
    explain_image,
    occlusion_patches,
    resolve_layer,
    target_weights,
)
from fetometry.explain.jobs import validation_samples
from fetometry.explain.quality import (
    PerturbationCurves,
    calibration,
    cascade_randomisation,
    chance_localisation,
    evaluate_explanations,
    localisation_score,
    rank_correlation,
)
from fetometry.explain.uncertainty import (
    TTA_WARPS,
    apply_warp,
    confidence_from,
    default_sources,
    hc_uncertainty,
    unwarp,
)
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.models import create_model, get_spec
from fetometry.models.base import SEGMENTER, SegmentationNetwork
from fetometry.resources import resolve_weights, shipped_models
from fetometry.weights_config import WeightsConfig

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture(scope="module")
def phantom():
    """A 270 x 400 phantom the default model segments with Dice ~0.98."""
    return make_phantom(height=270, width=400, rng_or_seed=0)


@pytest.fixture(scope="module")
def prediction(predictor, phantom):
    return predictor.predict(phantom.image)


class BrightIsHead(SegmentationNetwork):
    """Toy segmenter: features = the image (an Identity layer), logits = 2 x - 1."""

    cam_target_layer = "features"

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.head.weight.fill_(2.0)
            self.head.bias.fill_(-1.0)

    def forward(self, x):
        return self.head(self.features(x))


def _toy_case(size=(32, 48)):
    """A toy predictor and an image with a bright disc (the 'head')."""
    rows, cols = np.ogrid[: size[0], : size[1]]
    disc = (rows - 16) ** 2 + (cols - 20) ** 2 <= 8**2
    image = np.where(disc, 0.9, 0.1).astype(np.float32) + np.linspace(0, 0.05, size[1], dtype=np.float32)[None]
    return Predictor(BrightIsHead(), canvas_hw=size), image, disc


# ----------------------------------------------------------------------------- CAM maths


def test_cam_formulas_on_a_linear_model():
    """For logits = 2 A - 1 the gradient is 2 w: HiResCAM = ReLU(2 w A), Grad-CAM and
    Grad-CAM++ = ReLU(c A) with c > 0, i.e. the image itself (normalised)."""
    toy, image, disc = _toy_case()
    explainer = Explainer(toy)
    canvas = explainer.canvas(image)
    maps = explainer.cam_maps(canvas, CAM_METHODS)
    np.testing.assert_allclose(maps["hirescam"], np.where(disc, image, 0) / image[disc].max(), atol=1e-6)
    np.testing.assert_allclose(maps["gradcam"], image / image.max(), atol=1e-6)
    np.testing.assert_allclose(maps["gradcampp"], image / image.max(), atol=1e-6)


def test_boundary_target_weighs_a_band_on_both_sides():
    region = np.zeros((64, 64), bool)
    region[16:48, 16:48] = True
    weights = target_weights(region, np.ones_like(region), "boundary")
    assert weights[32, 32] == 0 and weights[0, 0] == 0  # far inside, far outside
    assert weights[17, 32] == 1 and weights[14, 32] == -1  # just inside / outside the edge
    assert np.array_equal(target_weights(region, np.ones_like(region), "region"), region.astype(np.float32))


def test_layer_paths_and_clear_errors():
    model = create_model("attention-unet", "compact")
    assert resolve_layer(model, "decoders.-3") is model.decoders[1]
    with pytest.raises(ExplainError, match="children"):
        resolve_layer(model, "decoders.nope")
    toy, image, _ = _toy_case()
    with pytest.raises(ExplainError, match="unknown method"):
        explain_image(toy, image, "saliency")
    with pytest.raises(ExplainError, match="no head"):
        explain_image(toy, np.zeros_like(image), "gradcam")


@pytest.mark.parametrize("name", ["attention-unet", "unext", "duck-net", "transunet", "medsegdiff-v2"])
def test_every_architecture_names_a_layer_and_gives_finite_maps_of_the_image_size(name, phantom):
    torch.manual_seed(0)
    model = create_model(name, "compact")
    resolve_layer(model, cam_target_layer(model))
    small = Predictor(model, canvas_hw=(64, 96))
    image = cv2.resize(phantom.image, (150, 101))  # odd size: the map must follow it
    mask = cv2.resize(phantom.mask.astype(np.uint8), (150, 101), interpolation=cv2.INTER_NEAREST).astype(bool)
    given = Prediction(mask.astype(np.float32), mask, 1.0)  # an untrained net finds no head
    explanations = Explainer(small).explain(image, METHODS, prediction=given)
    for explanation in explanations.values():
        assert explanation.saliency.shape == image.shape and explanation.saliency.dtype == np.float32
        assert np.isfinite(explanation.saliency).all()
        assert 0.0 <= explanation.saliency.min() and explanation.saliency.max() <= 1.0


def _shipped_kind(name: str) -> str:
    config = WeightsConfig.read(resolve_weights(name))
    return get_spec(config.model, config.variant).kind


#: Every shipped weights folder of a segmenter (the plane classifier's folder is not one).
SHIPPED_SEGMENTERS = [name for name in shipped_models() if _shipped_kind(name) == SEGMENTER]


@pytest.mark.parametrize("name", SHIPPED_SEGMENTERS)
def test_gradcam_runs_on_every_shipped_segmenter_with_its_default_layer(name, phantom):
    """No --layer: the layer is the class's cam_target_layer (the reference model once set
    it on the instance, where the explainer, reading the type, did not find it)."""
    shipped = Predictor.from_weights(name)
    small = Predictor(shipped.model, canvas_hw=(64, 96))  # one small canvas: fast for all
    image = cv2.resize(phantom.image, (150, 101))
    mask = cv2.resize(phantom.mask.astype(np.uint8), (150, 101), interpolation=cv2.INTER_NEAREST).astype(bool)
    given = Prediction(mask.astype(np.float32), mask, 1.0)
    explainer = Explainer(small)
    assert explainer.layer == type(shipped.model).cam_target_layer
    explanation = explainer.explain(image, ["gradcam"], prediction=given)["gradcam"]
    assert explanation.layer == explainer.layer
    assert explanation.saliency.shape == image.shape and np.isfinite(explanation.saliency).all()
    assert 0.0 <= explanation.saliency.min() and explanation.saliency.max() <= 1.0


def test_the_shipped_segmenters_include_every_architecture_and_the_reference():
    models = {WeightsConfig.read(resolve_weights(name)).model for name in SHIPPED_SEGMENTERS}
    assert {"attention-unet", "unext", "duck-net", "transunet", "medsegdiff-v2", "monai-attention-unet"} <= models


def test_medsegdiff_denoiser_is_explained_at_the_last_sampling_step(phantom):
    torch.manual_seed(0)
    model = create_model("medsegdiff-v2", "compact", default_steps=3, default_ensemble=2)
    with torch.no_grad():  # the zero-initialised output layer would block every gradient
        model.diffusion.pixel_out.weight.normal_(0, 0.5)
    small = Predictor(model, canvas_hw=(64, 96))
    given = Prediction(phantom.mask.astype(np.float32), phantom.mask, 1.0)
    saliency = explain_image(small, phantom.image, "hirescam", network="denoiser", prediction=given)
    assert saliency.shape == phantom.image.shape and np.isfinite(saliency).all() and saliency.max() == 1.0
    with pytest.raises(ExplainError, match="diffusion"):
        Explainer(Predictor(BrightIsHead(), canvas_hw=(32, 48)), network="denoiser")


def test_occlusion_patches_cover_the_content_with_overlap():
    patches = occlusion_patches((256, 379))
    covered = np.zeros((256, 379), int)
    for r0, r1, c0, c1 in patches:
        assert r1 - r0 == 64 and c1 - c0 == 64
        covered[r0:r1, c0:c1] += 1
    assert covered.min() >= 1 and len(patches) == 7 * 11


# ----------------------------------------------------------------------------- faithfulness metrics


def test_localisation_score_and_its_chance_level():
    head = np.zeros((100, 100), bool)
    head[40:60, 40:60] = True
    assert localisation_score(head.astype(float), head) == 1.0
    uniform = np.ones((100, 100))
    assert localisation_score(uniform, head) == pytest.approx(chance_localisation(head))
    assert np.isnan(localisation_score(np.zeros((100, 100)), head))


def test_rank_correlation_of_equal_reversed_and_constant_maps():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0


def test_deletion_and_insertion_reward_the_true_evidence():
    """On the toy model the disc IS the evidence: the disc as a map deletes the head
    faster and inserts it faster than a random ranking or an inverted map."""
    toy, image, disc = _toy_case()
    explainer = Explainer(toy)
    canvas = explainer.canvas(image)
    curves = PerturbationCurves(explainer, canvas, steps=8)
    good, random, inverted = curves(disc.astype(float)), curves.random_baseline(), curves((~disc).astype(float))
    assert good["deletion_auc"] < random["deletion_auc"] < inverted["deletion_auc"]
    assert good["insertion_auc"] > random["insertion_auc"] > inverted["insertion_auc"]
    assert len(good["deletion_curve"]) == 9 and good["deletion_curve"][0] == pytest.approx(curves.original, abs=1e-4)


# ----------------------------------------------------------------------------- real model on a phantom


def test_map_energy_concentrates_near_the_head(predictor, phantom, prediction):
    chance = chance_localisation(phantom.mask)
    for method in ("gradcam", "hirescam"):
        saliency = explain_image(predictor, phantom.image, method, prediction=prediction)
        assert saliency.shape == phantom.image.shape and np.isfinite(saliency).all()
        score = localisation_score(saliency, phantom.mask)
        assert score > 0.8 and score > 3 * chance, (method, score, chance)


def test_randomising_the_weights_changes_the_gradcam_map(predictor, phantom, prediction):
    explainer = Explainer(predictor)
    canvas = explainer.canvas(phantom.image, prediction)
    trained = explainer.cam_maps(canvas, ["gradcam"])
    randomised = cascade_randomisation(explainer, canvas, trained, stages=1)  # every layer
    assert randomised[0]["rho"]["gradcam"] < 0.5, randomised
    # The trained model reproduces its own map (so the check can pass), and the
    # randomisation worked on a copy: the predictor's model is untouched.
    again = explainer.cam_maps(canvas, ["gradcam"], model=predictor.model)
    assert rank_correlation(trained["gradcam"], again["gradcam"], canvas.content) > 0.999


# ----------------------------------------------------------------------------- uncertainty


def test_warps_are_undone_exactly():
    mask = np.zeros((60, 90), np.float32)
    cv2.ellipse(mask, (40, 28), (20, 14), 30, 0, 360, 1.0, -1)
    for warp in TTA_WARPS:
        warped, matrix = apply_warp(mask, warp)
        back = unwarp(warped, matrix, mask.shape)
        assert np.mean((back > 0.5) != (mask > 0.5)) < 0.005, warp.name


def test_confidence_is_one_for_no_spread_and_falls_with_it():
    assert confidence_from(1000.0, 0.0, 1.0) == 1.0
    assert confidence_from(1000.0, 10.0, 1.0) > confidence_from(1000.0, 30.0, 1.0) > 0
    assert confidence_from(None, None, 0.0) == 0.0
    assert confidence_from(1000.0, 10.0, 0.5) == pytest.approx(0.5 * confidence_from(1000.0, 10.0, 1.0))


def test_uncertainty_sources_follow_the_architecture():
    assert default_sources(create_model("attention-unet", "compact")) == ("tta",)
    assert default_sources(create_model("transunet", "compact")) == ("tta", "mc_dropout")
    assert default_sources(create_model("medsegdiff-v2", "compact")) == ("tta", "diffusion")


def test_clean_phantom_is_less_uncertain_than_a_corrupted_one(predictor, phantom, prediction):
    clean = hc_uncertainty(predictor, phantom.image, phantom.pixel_size_mm, prediction=prediction)
    rng = np.random.default_rng(0)
    corrupted = cv2.GaussianBlur(
        np.clip(0.5 * phantom.image + rng.normal(0, 0.2, phantom.image.shape), 0, 1).astype(np.float32), (0, 0), 2
    )
    noisy = hc_uncertainty(predictor, corrupted, phantom.pixel_size_mm)
    assert clean["confidence"] > noisy["confidence"]
    assert noisy["hc_sd_mm"] is None or clean["hc_sd_mm"] < noisy["hc_sd_mm"]
    # The value is the plain measurement; the interval is value +/- 1.96 x the spread
    # combined with the model's residual (0 unless its config calibrates one), in mm.
    low, high = clean["interval_mm"]
    expected_sd = np.hypot(clean["hc_sd_mm"], clean["residual_fraction"] * clean["hc_mm"])
    assert low < clean["hc_mm"] < high and high - low == pytest.approx(2 * 1.959964 * expected_sd, rel=1e-4)
    assert abs(clean["hc_mm"] - phantom.hc_mm) < 0.05 * phantom.hc_mm
    assert clean["spread_map"].shape == phantom.image.shape
    without = hc_uncertainty(
        predictor, phantom.image, None, prediction=prediction, sources=("tta",), residual_fraction=0.02
    )
    assert without["hc_mm"] is None and without["interval_mm"] is None and without["hc_px"] > 0
    assert without["interval_sd_px"] == pytest.approx(np.hypot(without["hc_sd_px"], 0.02 * without["hc_px"]))


def test_calibration_counts_coverage():
    rows = [{"error_mm": e, "hc_sd_mm": 1.0, "hc_mm": 100.0, "confidence": 0.9} for e in (0.1, -0.5, 1.0, 1.5, -3.0)]
    coverage = {c["nominal"]: c["observed"] for c in calibration(rows)["coverage"]}
    assert coverage[0.5] == pytest.approx(0.4)  # |e| <= 0.674: 0.1, 0.5
    assert coverage[0.95] == pytest.approx(0.8)  # |e| <= 1.96: all but 3.0
    # A 2% residual on 100 mm adds 2 mm in quadrature: SD sqrt(5) = 2.24 mm, so the 50%
    # half-width is 1.51 mm (all but 3.0 inside) and the 95% one 4.38 mm (all inside).
    widened = {c["nominal"]: c["observed"] for c in calibration(rows, residual_fraction=0.02)["coverage"]}
    assert widened[0.5] == pytest.approx(0.8) and widened[0.95] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- API and CLI


def test_evaluate_explanations_on_phantoms(phantom_hc18):
    toy = Predictor(BrightIsHead(), canvas_hw=(64, 96))
    samples = validation_samples(phantom_hc18, toy, split="all", limit=2)
    report = evaluate_explanations(toy, samples, steps=4, stages=2, occlusion_images=1, progress=False)
    rows, summary = report["rows"], report["summary"]
    assert len(rows) == 2 and "occlusion" in rows[0]["methods"] and "occlusion" not in rows[1]["methods"]
    gradcam = summary["methods"]["gradcam"]
    assert gradcam["localisation"]["n"] == 2 and len(gradcam["randomisation_rho_by_stage"]) == 2
    assert 0 <= gradcam["deletion_auc"]["mean"] <= 1 and summary["uncertainty"]["images"] == 2


def test_explain_verb_writes_png_and_npy_at_the_image_size(tmp_path, phantom):
    image_path = tmp_path / "phantom.png"
    cv2.imwrite(str(image_path), np.round(phantom.image * 255).astype(np.uint8))
    parser = argparse.ArgumentParser(prog="fetometry")
    parser.add_argument("-q", "--quiet", action="store_true")
    explain_verb.add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(
        [
            "explain",
            str(image_path),
            "--method",
            "gradcam,uncertainty",
            "--out",
            str(tmp_path / "out"),
            "--pixel-size",
            f"{phantom.pixel_size_mm}",
        ]
    )
    assert explain_verb.run(args) == 0
    for method in ("gradcam", "uncertainty"):
        saliency = np.load(tmp_path / "out" / f"phantom_{method}.npy")
        assert saliency.shape == phantom.image.shape and saliency.dtype == np.float32
        assert np.isfinite(saliency).all() and 0 <= saliency.min() and saliency.max() <= 1
        assert (tmp_path / "out" / f"phantom_{method}.png").stat().st_size > 10_000
    bad = parser.parse_args(["explain", str(image_path), "--method", "lime", "--out", str(tmp_path)])
    with pytest.raises(ExplainError, match="unknown method"):
        explain_verb.run(bad)


def test_explanation_png_carries_the_disclaimer_footer_once(tmp_path, phantom, monkeypatch):
    """save_explanation_png ends through save_with_disclaimer like every saved figure:
    the footer is on the figure it writes, and only once (not also _figure's own)."""
    from matplotlib.figure import Figure

    from fetometry import DISCLAIMER
    from fetometry.explain import figures

    texts, helper_calls = [], []
    real_savefig, real_helper = Figure.savefig, figures.save_with_disclaimer

    def recording_savefig(fig, *args, **kwargs):
        texts.extend(t.get_text() for t in fig.texts)
        return real_savefig(fig, *args, **kwargs)

    def recording_helper(fig, path, **kwargs):
        helper_calls.append(path)
        return real_helper(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    monkeypatch.setattr(figures, "save_with_disclaimer", recording_helper)
    saliency = np.linspace(0, 1, phantom.image.size, dtype=np.float32).reshape(phantom.image.shape)
    path = figures.save_explanation_png(tmp_path / "figs" / "map.png", phantom.image, saliency, title="gradcam")
    assert path.stat().st_size > 10_000 and helper_calls == [path]
    assert texts.count(DISCLAIMER) == 1
