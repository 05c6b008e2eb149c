"""The inference-side diffusion sampler (``fetometry.inference.diffusion``) and the hooks
that keep diffusion and its ONNX graphs out of the generic code: the sampler is what the
model's ``predict_proba``, the Predictor and the explainers run; the schedule lives in
``models`` (models never import inference at load time); a model's own ONNX graphs are
reached through its class hooks, not by name."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from fetometry.inference.diffusion import DiffusionSampler
from fetometry.models import create_model
from fetometry.models.base import SegmentationNetwork, own_onnx_export

H, W = 32, 48


def perturbed_compact(**kwargs):
    """A compact MedSegDiff-V2 whose zero-initialised output layers are perturbed (F != 0)."""
    model = create_model("medsegdiff-v2", "compact", default_steps=3, default_ensemble=2, **kwargs)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_the_models_sampling_is_the_samplers():
    model = perturbed_compact()
    images = torch.rand(2, 1, H, W, generator=torch.Generator().manual_seed(1))
    sampler = DiffusionSampler(model)
    torch.testing.assert_close(sampler.predict_proba(images), model.predict_proba(images), rtol=0, atol=0)
    a = sampler.sample(images, steps=2, ensemble=3, eta=0.5, generator=torch.Generator().manual_seed(4))
    b = model.sample(images, steps=2, ensemble=3, eta=0.5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(a[0].std()) > 0.01  # the perturbed model's samples vary


def test_sampler_settings_default_to_the_models_at_call_time():
    model = perturbed_compact()
    images = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(2))
    sampler = DiffusionSampler(model)
    assert (sampler.default_steps, sampler.default_ensemble) == (3, 2)
    before = sampler.image_seed(images[0])
    model.noise_seed = 5  # as benchmarks/medsegdiff_seeds.py sets it on a built predictor
    assert sampler.image_seed(images[0]) != before
    assert sampler.image_seed(images[0]) == DiffusionSampler(model.eval(), noise_seed=5).image_seed(images[0])
    own = DiffusionSampler(model, steps=1, ensemble=4)
    assert (own.default_steps, own.default_ensemble) == (1, 4)
    probability, spread = own.sample(images, generator=torch.Generator().manual_seed(0))
    assert probability.shape == spread.shape == (1, 1, H, W)


def test_the_predictor_calls_the_sampler(monkeypatch):
    from fetometry.inference import diffusion
    from fetometry.inference import predictor as predictor_module

    calls = []
    original = diffusion.DiffusionSampler.predict_proba

    def spy(self, images):
        calls.append(images.shape)
        return original(self, images)

    monkeypatch.setattr(diffusion.DiffusionSampler, "predict_proba", spy)
    predictor = predictor_module.Predictor(perturbed_compact(), canvas_hw=(H, W))
    prediction = predictor.predict(np.random.default_rng(0).random((40, 50), dtype=np.float32))
    assert prediction.probability.shape == (40, 50) and calls == [(1, 1, H, W)]


def test_models_import_no_inference_code():
    code = (
        "import sys, fetometry.models.registry as r; r.available_models(); "
        "import fetometry.models.medsegdiff_v2, fetometry.models.diffusion_schedule; "
        "print(sorted(m for m in sys.modules if m.startswith('fetometry.inference')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_onnx_graphs_are_a_class_hook():
    model = create_model("medsegdiff-v2", "compact")
    assert own_onnx_export(model) and type(model).onnx_runtime is not None
    plain = create_model("unext", "compact")
    assert not own_onnx_export(plain) and type(plain).onnx_runtime is None
    assert SegmentationNetwork.export_onnx_graphs is None and not own_onnx_export(torch.nn.Conv2d(1, 1, 1))


def test_a_models_own_export_hook_is_what_export_model_runs(tmp_path):
    from fetometry.inference.export import export_model

    class Custom(SegmentationNetwork):
        def forward(self, images):
            return images

        def export_onnx_graphs(self, out_path, *, config, verify=True):
            return [tmp_path / "custom-graph.onnx"]

    config = {"model": "custom", "variant": "x", "canvas_hw": [32, 32]}
    assert export_model(Custom(), tmp_path / "out.onnx", config=config) == [tmp_path / "custom-graph.onnx"]
