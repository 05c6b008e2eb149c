"""ONNX export and the onnxruntime backend: parity with PyTorch, the MedSegDiff-V2
sampler over two sessions, the export verb, and clear errors.

Exports use compact models at a 64x96 canvas (seconds); the parity test on real images
uses the shipped default model on bundled HC18 samples (validation images).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from fetometry.cli import export as export_verb
from fetometry.inference.export import (
    ExportError,
    export_model,
    export_onnx,
    medsegdiff_paths,
    phantom_batch,
    relative_difference,
)
from fetometry.inference.onnx_backend import (
    OnnxModelError,
    OnnxSegmenter,
    create_session,
    load_onnx_model,
    load_onnx_predictor,
    read_onnx_config,
)
from fetometry.models import create_model
from fetometry.models.weights import save_weights

CANVAS = [64, 96]
FEED_FORWARD = ["attention-unet", "unext", "transunet", "duck-net"]


def tiny_config(name: str) -> dict:
    return {"model": name, "variant": "compact", "canvas_hw": CANVAS, "threshold": 0.5, "hc_offset_px": 1.0}


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Untrained MedSegDiff-V2 zero-initialises its output layers (F = 0 whatever the
    input): perturb every weight so the parity tests compare something that varies."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


# --------------------------------------------------------------------------- real FFTs


@pytest.mark.parametrize("height,width", [(4, 6), (5, 7), (16, 24)])
def test_real_valued_fft_equals_torch_fft(height, width):
    from fetometry.models.medsegdiff_v2 import TorchFFT
    from fetometry.models.medsegdiff_v2_onnx import RealFFT

    z = torch.randn(2, 3, height, width, dtype=torch.float64).float()
    expected = torch.view_as_real(torch.fft.rfft2(z, norm="ortho"))
    spectrum = torch.randn_like(expected)
    inverse = torch.fft.irfft2(torch.view_as_complex(spectrum.contiguous()), s=(height, width), norm="ortho")
    for fft in (TorchFFT, RealFFT):
        torch.testing.assert_close(fft.rfft2(z), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fft.irfft2(spectrum, s=(height, width)), inverse, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fft.fftfreq(height, device=z.device), torch.fft.fftfreq(height))
        torch.testing.assert_close(fft.rfftfreq(width, device=z.device), torch.fft.rfftfreq(width))


def test_real_valued_fft_is_set_on_the_exported_model_only_and_removed_on_exit():
    import fetometry.models.medsegdiff_v2 as medsegdiff_v2
    from fetometry.models.medsegdiff_v2 import NeuralBandPassFilter, SpectralCrossAttention, TorchFFT
    from fetometry.models.medsegdiff_v2_onnx import RealFFT, real_valued_fft

    model, other = create_model("medsegdiff-v2", "compact"), create_model("medsegdiff-v2", "compact")
    spectral = (SpectralCrossAttention, NeuralBandPassFilter)

    def ffts(m):
        return {module.fft for module in m.modules() if isinstance(module, spectral)}

    with real_valued_fft(model):
        assert ffts(model) == {RealFFT} and ffts(other) == {TorchFFT}
        assert medsegdiff_v2.torch is torch  # nothing patched module-wide
    assert ffts(model) == {TorchFFT}


# --------------------------------------------------------------------------- feed-forward


@pytest.mark.parametrize("name", FEED_FORWARD)
def test_feed_forward_export_matches_pytorch_at_any_size_and_batch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, "compact").eval()
    # verify=False: this test is the check (the export's own check is tested below).
    [path] = export_model(model, tmp_path / f"{name}.onnx", config=tiny_config(name), verify=False)
    onnx_model = load_onnx_model(path, threads=1)
    assert isinstance(onnx_model, OnnxSegmenter)
    for hw, batch in ((tuple(CANVAS), 1), ((128, 64), 3)):
        images = phantom_batch(hw, batch, seed=7)
        with torch.no_grad():
            expected = model(images).numpy()
        got = onnx_model(images).numpy()
        assert got.shape == expected.shape
        # Untrained BatchNorm nets reach logits of 1e7: compare relative to the scale.
        assert relative_difference(expected, got) < 1e-5, (name, hw)


def test_export_check_catches_a_graph_that_disagrees(tmp_path):
    class DataDependent(nn.Module):
        """A Python branch on the input size: tracing freezes the side it saw."""

        def forward(self, images):
            return images * 2 if images.shape[-1] > 100 else images - 1

    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_model(DataDependent(), tmp_path / "bad.onnx", config=tiny_config("attention-unet"))


def test_export_needs_a_config_and_an_onnx_name(tmp_path):
    model = create_model("unext", "compact")
    with pytest.raises(ExportError, match="canvas_hw"):
        export_model(model, tmp_path / "m.onnx", config={"model": "unext", "variant": "compact"})
    with pytest.raises(ExportError, match=".onnx"):
        export_model(model, tmp_path / "m.pt", config=tiny_config("unext"))


# --------------------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "attention-unet.onnx"
    export_onnx("attention-unet", path)
    return path


def test_shipped_model_logits_match_on_real_ultrasound(default_export):
    """The parity the issue asks for: max |logit difference| on bundled HC18 images."""
    from fetometry.data.hc18 import load_hc18
    from fetometry.data.transforms import letterbox
    from fetometry.inference.predictor import Predictor
    from fetometry.resources import SAMPLES_DIR

    predictor = Predictor.from_weights("attention-unet")
    canvases = [letterbox(s.load_image(), predictor.canvas_hw)[0] for s in load_hc18(SAMPLES_DIR)[:3]]
    images = torch.from_numpy(np.stack(canvases))[:, None]
    with torch.no_grad():
        expected = predictor.model.float()(images).numpy()
    got = load_onnx_model(default_export, threads=1)(images).numpy()
    assert np.abs(expected).max() > 5  # real, confident logits, not a degenerate case
    assert np.abs(got - expected).max() < 1e-3


def test_onnx_predictor_measures_like_the_pytorch_one(default_export):
    from fetometry.biometry.ellipse import ellipse_from_probability
    from fetometry.data.hc18 import load_hc18
    from fetometry.inference.predictor import Predictor
    from fetometry.resources import SAMPLES_DIR

    onnx_predictor = load_onnx_predictor(default_export, threads=1)
    torch_predictor = Predictor.from_weights("attention-unet")
    assert onnx_predictor.hc_offset_px == torch_predictor.hc_offset_px
    assert onnx_predictor.canvas_hw == torch_predictor.canvas_hw
    image = load_hc18(SAMPLES_DIR)[0].load_image()
    got, expected = onnx_predictor.predict(image), torch_predictor.predict(image)
    # The PyTorch predictor runs in bf16 autocast, onnxruntime in float32.
    assert np.mean(got.mask == expected.mask) > 0.995
    a, b = ellipse_from_probability(got.probability), ellipse_from_probability(expected.probability)
    assert abs(a.semi_major_px - b.semi_major_px) < 1.0 and abs(a.semi_minor_px - b.semi_minor_px) < 1.0


# --------------------------------------------------------------------------- MedSegDiff-V2


@pytest.fixture(scope="module")
def diffusion_export(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(create_model("medsegdiff-v2", "compact", default_steps=3, default_ensemble=2))
    out = tmp_path_factory.mktemp("msd") / "msd.onnx"
    paths = export_model(model, out, config=tiny_config("medsegdiff-v2"))
    return model, out, paths


def test_medsegdiff_exports_two_named_files(diffusion_export):
    _, out, paths = diffusion_export
    assert paths == [out.with_name("msd_condition.onnx"), out.with_name("msd_denoiser.onnx")]
    assert all(p.is_file() for p in paths)
    assert medsegdiff_paths(out.parent / "folder") == (
        out.parent / "folder" / "condition.onnx",
        out.parent / "folder" / "denoiser.onnx",
    )


def test_medsegdiff_sampler_over_onnx_sessions_matches_pytorch(diffusion_export):
    model, out, paths = diffusion_export
    images = phantom_batch(tuple(CANVAS), 2, seed=3)
    expected, expected_spread = model.sample(images, generator=torch.Generator().manual_seed(0))
    for path in (out, *paths):  # the --out path and either file of the pair
        onnx_model = load_onnx_model(path, threads=1)
        got, spread = onnx_model.sample(images, generator=torch.Generator().manual_seed(0))
        assert float(expected.std()) > 0.01  # the perturbed model's samples vary
        assert float((got - expected).abs().max()) < 1e-4
        assert float((spread - expected_spread).abs().max()) < 1e-4
    # The sampler settings of the exported instance are kept (not the variant's defaults).
    assert (onnx_model.default_steps, onnx_model.default_ensemble) == (3, 2)
    torch.testing.assert_close(onnx_model(images), model(images), atol=1e-4, rtol=1e-4)


def test_medsegdiff_predictor_runs_the_sampler(diffusion_export):
    _, out, _ = diffusion_export
    predictor = load_onnx_predictor(out, threads=1)
    prediction = predictor.predict(np.random.default_rng(0).random((70, 100), dtype=np.float32))
    assert prediction.probability.shape == (70, 100)
    assert 0.0 <= prediction.probability.min() and prediction.probability.max() <= 1.0


# --------------------------------------------------------------------------- CLI, errors


def test_export_verb_writes_a_file_with_its_config(tmp_path, capsys):
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    save_weights(create_model("unext", "compact"), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(tiny_config("unext")))
    parser = argparse.ArgumentParser()
    export_verb.add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(
        ["export", "--model", str(folder), "--format", "onnx", "--out", str(tmp_path / "u.onnx"), "--no-verify"]
    )
    assert export_verb.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_onnx_config(tmp_path / "u.onnx")["canvas_hw"] == CANVAS
    with pytest.raises(SystemExit):  # only ONNX is offered
        parser.parse_args(["export", "--format", "tflite", "--out", "x"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_loading_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetometry export"):
        load_onnx_model(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Conv2d(1, 1, 1), (torch.rand(1, 1, 4, 4),), str(plain), dynamo=False)
    with pytest.raises(OnnxModelError, match="not a fetometry export"):
        load_onnx_model(plain)


def test_session_threads_and_size_check(tmp_path):
    [path] = export_model(
        create_model("unext", "compact"), tmp_path / "u.onnx", config=tiny_config("unext"), verify=False
    )
    session = create_session(path, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError, match="divisible by 32"):
        load_onnx_model(path)(torch.rand(1, 1, 64, 90))


# --------------------------------------------------------------------------- the NumPy predictor


def test_numpy_onnx_predictor_matches_the_session_wrapped_as_a_module():
    """build_predictor's OnnxPredictor (NumPy, no PyTorch) gives the maps of the same
    session run through the PyTorch Predictor, with and without flip TTA."""
    from fetometry.data.hc18 import load_hc18
    from fetometry.inference.backend import build_predictor, cached_onnx
    from fetometry.inference.onnx_session import OnnxPredictor
    from fetometry.inference.predictor import Predictor
    from fetometry.resources import SAMPLES_DIR

    fast = build_predictor("unext", "onnx")
    assert isinstance(fast, OnnxPredictor) and fast.config.backend == "onnxruntime"
    wrapped = Predictor(
        load_onnx_model(cached_onnx(fast.config.weights_dir), threads=1),
        canvas_hw=fast.canvas_hw,
        threshold=fast.threshold,
        config=fast.config,
    )
    images = [s.load_image() for s in load_hc18(SAMPLES_DIR)[:2]]
    for tta in (False, True):
        fast.tta = wrapped.tta = tta
        for got, expected in zip(fast.predict_batch(images), wrapped.predict_batch(images)):
            assert np.abs(got.probability - expected.probability).max() < 1e-5
            assert np.array_equal(got.mask, expected.mask)


def test_onnx_backend_refuses_a_sampled_model():
    from fetometry.inference.backend import build_predictor

    with pytest.raises(ValueError, match="samples"):
        build_predictor("medsegdiff-v2", "onnx")
