"""Plane recognition: the SonoNet-16 port, the plane rule, and the plane check on every surface."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fetometry.cli import main
from fetometry.data import out_of_domain as ood
from fetometry.data.hc18 import load_hc18
from fetometry.inference.plane import (
    HEAD_PLANE,
    NOT_A_HEAD_PLANE,
    OUT_OF_DISTRIBUTION,
    PlaneChecker,
    PlaneResult,
    PlaneRule,
    convert_sononet_npz,
    flat_fraction,
    preprocess,
)
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.models import available_models, create_model
from fetometry.models.sononet import SONONET_LABELS
from fetometry.pipeline import CSV_COLUMNS, OK, measure, measure_batch, result_from_prediction
from fetometry.resources import SAMPLES_DIR, resolve_weights
from fetometry.weights_config import WeightsConfig

SONONET_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sononet"
needs_sononet = pytest.mark.skipif(not (SONONET_DIR / "SonoNet16.npz").is_file(), reason="needs ../shared/data/sononet")


@pytest.fixture(scope="module")
def checker() -> PlaneChecker:
    return PlaneChecker.from_weights()


@pytest.fixture(scope="module")
def default_predictor() -> Predictor:
    return Predictor.from_weights()


def scores(
    *, label="Brain (Tv.)", probability=0.9, head=0.9, other_label="4CH", other=0.05, distance=3.0, rule=PlaneRule()
) -> PlaneResult:
    return PlaneResult(label, probability, head, other_label, other, distance, "sononet-16", rule)


# ------------------------------------------------------------------------ the network


def test_sononet16_shapes_and_registry():
    model = create_model("sononet", "16")
    logits, embedding = model.classify(torch.zeros(2, 1, 224, 288))
    assert logits.shape == (2, 14) and embedding.shape == (2, 64)
    assert model.kind == "plane-classifier" and len(model.labels) == 14
    assert sum(p.numel() for p in model.parameters()) == 930_796  # the 75 released arrays, BN statistics aside
    assert "sononet" not in {s.name for s in available_models()}  # not one of the compared segmenters
    assert [s.name for s in available_models(kind="plane-classifier")] == ["sononet"]
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.zeros(1, 1, 100, 288))
    with pytest.raises(ValueError, match="grayscale"):
        model(torch.zeros(1, 3, 224, 288))


def test_preprocess_is_the_authors_convention():
    image = np.random.default_rng(0).random((540, 800), dtype=np.float32)
    x = preprocess(image, (224, 288))
    assert x.shape == (224, 288)
    assert abs(x.mean()) < 1e-2 and x.std() == pytest.approx(255.0, rel=1e-3)  # standardised, times 255
    assert not preprocess(np.full((64, 64), 0.3, np.float32), (224, 288)).any()  # constant: all zero, no NaN


@needs_sononet
def test_shipped_weights_are_the_released_arrays():
    model = create_model("sononet", "16")
    converted = convert_sononet_npz(SONONET_DIR / "SonoNet16.npz", model)
    shipped = load_file(str(resolve_weights("sononet-16") / "model.safetensors"))
    assert set(converted) == set(shipped)
    for key, tensor in converted.items():
        torch.testing.assert_close(shipped[key], tensor, rtol=0, atol=0)


@needs_sononet
def test_the_13_example_frames_get_their_labels(checker):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from convert_sononet import classify_examples

    rows = classify_examples(checker, SONONET_DIR / "example_frames")
    assert [r["frame"] for r in rows if not r["correct"]] == []
    assert len(rows) == 13


def test_a_flipped_filter_port_would_be_caught(checker):
    # The port keeps the filters as stored (flip_filters=False). Flipping them changes the
    # outputs: the parity test above can fail.
    image = load_hc18(SAMPLES_DIR)[0].load_image()
    before = checker.scores([image])[0]
    shipped = load_file(str(resolve_weights("sononet-16") / "model.safetensors"))
    flipped = create_model("sononet", "16")
    flipped.load_state_dict({k: (torch.flip(v, dims=[-2, -1]) if v.ndim == 4 else v) for k, v in shipped.items()})
    after = PlaneChecker(flipped, rule=checker.rule).scores([image])[0]
    assert np.abs(before - after).max() > 0.05


def test_the_onnx_checker_scores_as_the_pytorch_port(checker):
    """The shipped check runs on onnxruntime without PyTorch; the port in float32 gives
    the same probabilities and distances, and the same verdicts."""
    from fetometry.data import out_of_domain as ood
    from fetometry.inference.onnx_session import OnnxPlaneClassifier

    assert isinstance(checker.model, OnnxPlaneClassifier)
    reference = PlaneChecker.from_weights(backend="torch")
    images = [s.load_image() for s in load_hc18(SAMPLES_DIR)[:4]] + [image for _, image in ood.synthetic_set(1)]
    (p_onnx, e_onnx), (p_torch, e_torch) = checker.scores(images), reference.scores(images)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    np.testing.assert_allclose(checker.ood_distance(e_onnx), reference.ood_distance(e_torch), atol=1e-2)
    assert [r.status for r in checker.check_batch(images)] == [r.status for r in reference.check_batch(images)]
    with pytest.raises(ValueError, match="onnx or torch"):
        PlaneChecker.from_weights(backend="tensorflow")


def test_checking_a_plane_imports_no_pytorch(tmp_path):
    """A fresh process: the plane check and the predictor on onnxruntime (their graphs
    cached by the fixtures above) measure an image without importing PyTorch."""
    import os
    import subprocess
    import sys

    from fetometry.inference.backend import build_predictor, cache_root, cached_onnx
    from fetometry.resources import resolve_weights

    cached_onnx(resolve_weights(None))  # the default segmenter's graph, as a first run exports it
    code = (
        "import sys\n"
        "from fetometry.inference.backend import build_predictor\n"
        "from fetometry.pipeline import measure, plane_checker_for\n"
        "from fetometry.data.hc18 import load_hc18\n"
        "from fetometry.resources import SAMPLES_DIR\n"
        "sample = load_hc18(SAMPLES_DIR)[0]\n"
        "result = measure(build_predictor(None, 'auto'), sample.load_image(), pixel_size_mm=sample.pixel_size_mm,\n"
        "                 plane_checker=plane_checker_for('on'))\n"
        "print(result.status, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "FETOMETRY_CACHE": str(cache_root())}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["ok", "False"]
    assert build_predictor(None, "auto").config.backend == "onnxruntime"


# --------------------------------------------------------------------------- the rule


def test_a_named_non_head_plane_is_refused_with_its_name():
    verdict = scores(label="4CH", probability=0.95, head=0.01, other=0.95).decide(head_size_mm=230.0)
    assert verdict.status == NOT_A_HEAD_PLANE and not verdict.head_plane
    assert "4CH" in verdict.detail and "nothing is measured" in verdict.detail


def test_a_small_first_trimester_head_is_not_refused_by_a_named_call():
    # SonoNet was trained at 18-22 weeks; it calls many heads under 100 mm "Lips".
    verdict = scores(label="Lips", probability=0.97, head=0.01, other_label="Lips", other=0.97).decide(
        head_size_mm=70.0
    )
    assert verdict.status == HEAD_PLANE and "not trusted" in verdict.detail
    assert (
        scores(label="Lips", probability=0.97, head=0.01, other_label="Lips", other=0.97).decide(None).status
        == NOT_A_HEAD_PLANE
    )


def test_background_alone_never_refuses_and_head_evidence_wins():
    assert scores(label="Background", probability=0.9, head=0.05, other=0.05).decide(150.0).status == HEAD_PLANE
    assert scores(label="Brain (Tv.)", probability=0.55, head=0.55, other=0.45).decide(150.0).status == HEAD_PLANE


def test_out_of_distribution_beats_everything():
    rule = PlaneRule(max_ood_distance=10.0)
    verdict = scores(distance=12.5, rule=rule).decide(150.0)
    assert verdict.status == OUT_OF_DISTRIBUTION and "unlike the fetal head planes" in verdict.detail
    assert "closest plane Brain (Tv.)" in verdict.detail  # the classifier's label is still named
    assert scores(distance=math.nan, rule=rule).decide(150.0).status == HEAD_PLANE  # no statistics: no OOD verdict


def test_a_flat_image_is_out_of_distribution_whatever_the_classifier_says():
    rule = PlaneRule(max_flat_fraction=0.9)
    verdict = replace(scores(rule=rule), flat_fraction=0.97).decide(150.0)
    assert verdict.status == OUT_OF_DISTRIBUTION and "speckle" in verdict.detail
    assert replace(scores(rule=rule), flat_fraction=0.6).decide(150.0).status == HEAD_PLANE


def test_flat_fraction_is_its_definition():
    """The share of 7x7 windows (the border mirrored, OpenCV's default) lying wholly in the
    content (> 0.02) whose SD is under 2 grey levels, counted window by window."""
    rng = np.random.default_rng(4)
    image = np.zeros((60, 80), np.float32)  # black outside a "fan"
    image[5:, 10:70] = 0.4  # flat inside it...
    image[20:45, 25:60] += rng.normal(0, 0.1, (25, 35)).astype(np.float32)  # ...but for a textured patch
    image = np.clip(image, 0, 1)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(image.astype(np.float64), 3, mode="reflect"), (7, 7))
    content = (windows > 0.02).all(axis=(2, 3))
    flat = windows.std(axis=(2, 3)) < 2.0 / 255
    assert 0.2 < flat[content].mean() < 0.95  # both kinds are there
    assert flat_fraction(image) == pytest.approx(flat[content].mean(), abs=1e-12)


def test_flat_fraction_tells_scans_from_drawings():
    sample = load_hc18(SAMPLES_DIR)[0]
    assert flat_fraction(sample.load_image()) < 0.7
    for kind in ("shapes", "gradient", "checkerboard", "constant"):
        assert flat_fraction(ood.SYNTHETIC[kind](3)) > 0.95, kind
    assert flat_fraction(np.zeros((64, 64), np.float32)) == 1.0  # nothing but black: nothing to measure


@pytest.mark.parametrize("seed", range(4))
def test_no_hc_for_rendered_shapes_however_round(seed, checker, default_predictor):
    """Filled discs on black look like heads to a segmenter (UNeXt segments them with
    confidence 0.97); the flat-image rule refuses them."""
    result = measure(default_predictor, ood.shapes(seed), pixel_size_mm=0.15, plane_checker=checker)
    assert result.measurement is None and result.status == OUT_OF_DISTRIBUTION, (result.status, result.detail)


def test_rule_validation():
    with pytest.raises(ValueError, match="max_flat_fraction"):
        PlaneRule(max_flat_fraction=0.0)
    with pytest.raises(ValueError, match="probability"):
        PlaneRule(min_other_plane_probability=1.5)
    with pytest.raises(ValueError, match="unknown plane_rule"):
        PlaneRule.from_config(WeightsConfig.from_dict({"plane_rule": {"typo": 1}}))


def test_shipped_rule_is_calibrated():
    config = WeightsConfig.read(resolve_weights("sononet-16"))
    rule = PlaneRule.from_config(config)
    assert config.kind == "plane-classifier" and math.isfinite(rule.max_ood_distance)
    assert rule.max_ood_distance >= config.extra["plane_calibration"]["largest_training_distance"]
    assert (resolve_weights("sononet-16") / "head_embedding.safetensors").is_file()
    assert "Apache" in (resolve_weights("sononet-16") / "LICENSE").read_text()
    card = (resolve_weights("sononet-16") / "MODEL_CARD.md").read_text()
    for needle in ("Baumgartner", "Apache-2.0", "18-22", "cannot"):
        assert needle in card


# -------------------------------------------------------------- the measurement path


def test_bundled_heads_are_head_planes_and_measured(checker, default_predictor):
    samples = load_hc18(SAMPLES_DIR)
    results = measure_batch(
        default_predictor,
        [s.load_image() for s in samples],
        filenames=[s.name for s in samples],
        pixel_sizes_mm=[s.pixel_size_mm for s in samples],
        plane_checker=checker,
    )
    assert all(r.plane is not None and r.plane.head_plane for r in results), [
        (r.filename, r.plane.detail) for r in results
    ]
    assert sum(r.status == OK for r in results) >= len(results) - 1


@pytest.mark.parametrize("kind", sorted(ood.SYNTHETIC))
def test_no_hc_for_a_non_ultrasound_image(kind, checker, default_predictor):
    image = ood.SYNTHETIC[kind](0)
    result = measure(default_predictor, image, filename=kind, pixel_size_mm=0.15, plane_checker=checker)
    assert result.measurement is None, (kind, result.status, result.plane.to_dict())
    assert result.to_dict()["hc_mm"] is None


@pytest.mark.parametrize("kind", sorted(ood.CORRUPTIONS))
def test_no_hc_for_a_destroyed_head(kind, checker, default_predictor):
    sample = load_hc18(SAMPLES_DIR)[1]
    image = ood.CORRUPTIONS[kind](sample.load_image(), 0)
    result = measure(default_predictor, image, filename=kind, pixel_size_mm=sample.pixel_size_mm, plane_checker=checker)
    assert result.measurement is None, (kind, result.status, result.plane.to_dict())


def test_a_screen_capture_of_a_head_is_still_measured(checker, default_predictor):
    sample = load_hc18(SAMPLES_DIR)[2]
    screen, scale = ood.screen_capture(sample.load_image(), 1)
    result = measure(
        default_predictor, screen, filename="screen", pixel_size_mm=sample.pixel_size_mm / scale, plane_checker=checker
    )
    assert result.plane.head_plane, result.plane.detail
    assert result.status == OK and result.measurement.hc_mm == pytest.approx(sample.hc_mm, rel=0.05)


def test_the_plane_check_runs_beside_the_segmenter(checker, default_predictor):
    """measure_batch's plane check and segmentation meet at a barrier: run one after the
    other, the first to arrive waits out the timeout and the barrier breaks. The results
    are those of the two run apart."""
    import threading

    meeting = threading.Barrier(2, timeout=10)

    class Meeting:
        def __init__(self, inner, method):
            self.inner, self.method = inner, method

        def __getattr__(self, name):
            attribute = getattr(self.inner, name)
            if name != self.method:
                return attribute

            def after_meeting(*args, **kwargs):
                meeting.wait()
                return attribute(*args, **kwargs)

            return after_meeting

    sample = load_hc18(SAMPLES_DIR)[0]
    image = sample.load_image()
    together = measure_batch(
        Meeting(default_predictor, "predict_batch"),
        [image],
        filenames=["a"],
        pixel_sizes_mm=[sample.pixel_size_mm],
        plane_checker=Meeting(checker, "check_batch"),
    )[0]
    apart = result_from_prediction(
        default_predictor, "a", default_predictor.predict(image), sample.pixel_size_mm, plane=checker.check(image)
    )
    assert together.status == apart.status == OK
    assert together.to_dict() == apart.to_dict()


def test_the_plane_check_has_half_the_cores(checker, monkeypatch):
    import fetometry.threads as threads

    for cores, half in ((1, 1), (2, 1), (4, 2), (7, 3)):
        monkeypatch.setattr(threads, "network_threads", lambda cores=cores: cores)
        assert threads.beside_threads() == half
    monkeypatch.undo()
    options = checker.model.session.get_session_options()
    assert options.intra_op_num_threads == max(1, threads.network_threads() // 2)


def test_a_head_fitted_beforehand_gives_the_same_result(default_predictor):
    from fetometry.pipeline import NO_HEAD, fit_head

    sample = load_hc18(SAMPLES_DIR)[3]
    prediction = default_predictor.predict(sample.load_image())
    fitted = fit_head(prediction)
    assert fitted.status == OK and fitted.ellipse is not None
    given = result_from_prediction(default_predictor, "a", prediction, sample.pixel_size_mm, head=fitted)
    own = result_from_prediction(default_predictor, "a", prediction, sample.pixel_size_mm)
    assert given.to_dict() == own.to_dict()
    empty = Prediction(np.zeros((60, 80), np.float32), np.zeros((60, 80), bool), 0.0)
    nothing = fit_head(empty)
    assert nothing.ellipse is None and nothing.status == NO_HEAD and nothing.detail.startswith("no head found")


def test_a_refused_plane_gets_no_mm_value_and_its_columns():
    class StandIn:
        name, hc_offset_px, config = "stand-in", 0.0, WeightsConfig()

        def boundary_offset_px(self, prediction) -> float:
            return self.hc_offset_px

    mask = np.zeros((200, 300), bool)
    yy, xx = np.ogrid[:200, :300]
    mask[((yy - 100) / 60.0) ** 2 + ((xx - 150) / 80.0) ** 2 <= 1] = True
    prediction = Prediction(mask.astype(np.float32), mask, 0.99)
    plane = scores(label="Abdominal", probability=0.9, head=0.02, other_label="Abdominal", other=0.9)
    refused = result_from_prediction(StandIn(), "abdomen.png", prediction, 0.5, plane=plane)
    assert refused.status == NOT_A_HEAD_PLANE and refused.measurement is None and "Abdominal" in refused.detail
    row = refused.to_dict()
    assert row["hc_mm"] is None and row["plane_label"] == "Abdominal" and row["head_plane"] is False
    assert {"plane_label", "plane_probability", "head_plane", "ood_distance"} <= set(CSV_COLUMNS)
    accepted = result_from_prediction(StandIn(), "head.png", prediction, 0.5, plane=scores())
    assert accepted.status == OK and accepted.to_dict()["head_plane"] is True


# ------------------------------------------------------------------------- surfaces


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_refuses_noise_and_plane_check_off_scores_everything(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "shapes.png"), (ood.shapes(3) * 255).astype(np.uint8))
    on = _rows_after(["predict", str(folder), "--out", str(tmp_path / "on"), "--pixel-size", "0.15"], tmp_path / "on")
    off = _rows_after(
        ["predict", str(folder), "--out", str(tmp_path / "off"), "--pixel-size", "0.15", "--plane-check", "off"],
        tmp_path / "off",
    )
    assert on[0]["hc_mm"] == "" and on[0]["plane_label"] != ""
    assert off[0]["plane_label"] == "" and off[0]["head_plane"] == ""


def _rows_after(argv: list[str], out: Path) -> list[dict]:
    assert main(["-q", *argv]) == 0
    return _rows(out / "measurements.csv")


def test_measure_json_carries_the_plane(tmp_path, capsys):
    sample = load_hc18(SAMPLES_DIR)[0]
    assert main(["-q", "measure", str(sample.image_path), "--pixel-size", str(sample.pixel_size_mm), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["head_plane"] is True and row["plane_label"] in SONONET_LABELS and row["ood_distance"] is not None
