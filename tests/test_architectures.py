"""One shared contract test for every registered architecture and variant.

A new model gets these tests by registering itself; architecture-specific checks live
in test_<model>.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetometry.data.synthetic import make_phantom
from fetometry.explain.cam import resolve_layer
from fetometry.models import available_models, create_model
from fetometry.models.base import SegmentationNetwork

SPECS = available_models()
IDS = [f"{s.name}/{s.variant}" for s in SPECS]
COMPACT = [s for s in SPECS if s.variant == "compact"]
#: The contract tests also cover the reference row (MONAI's AttentionUnet).
ALL_SPECS = available_models(include_reference=True)
ALL_IDS = [f"{s.name}/{s.variant}" for s in ALL_SPECS]


def _input_hw(spec, rows: int = 2, cols: int = 3) -> tuple[int, int]:
    """A small non-square input that the architecture accepts."""
    d = max(spec.size_divisor, 16)
    return rows * d, cols * d


def _build(spec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(spec.name, spec.variant)


@pytest.fixture(autouse=True)
def _one_thread():
    # Small ops on 2 threads mostly wait on each other; one thread is faster here.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_logits_have_the_input_size_for_non_square_inputs(spec):
    model = _build(spec).eval()
    h, w = _input_hw(spec)
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, 1, h, w)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_number_of_classes_is_configurable(spec):
    torch.manual_seed(0)
    model = create_model(spec.name, spec.variant, out_channels=3).eval()
    h, w = _input_hw(spec)
    with torch.no_grad():
        assert model(torch.randn(1, 1, h, w)).shape == (1, 3, h, w)


def _loss(model, images, masks):
    if model.training_loss is not None:  # a sampled model's own loss
        return model.training_loss(images, masks)
    return torch.nn.functional.binary_cross_entropy_with_logits(model(images), masks)


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_every_segmenter_keeps_the_written_contract(spec):
    """A SegmentationNetwork whose class names a real Grad-CAM layer and whose instance
    holds the registered size divisor; a sampled model has its own loss and sampler."""
    model = _build(spec)
    cls = type(model)
    assert isinstance(model, SegmentationNetwork) and cls.kind == "segmenter"
    assert isinstance(cls.cam_target_layer, str) and "cam_target_layer" not in vars(model)
    assert isinstance(resolve_layer(model, cls.cam_target_layer), torch.nn.Module)
    assert "size_divisor" in vars(cls) and model.size_divisor == spec.size_divisor
    if cls.sampled:
        assert model.training_loss is not None and cls.predict_proba is not SegmentationNetwork.predict_proba
    else:
        assert cls.training_loss is None and cls.predict_proba is SegmentationNetwork.predict_proba


@pytest.mark.parametrize("spec", ALL_SPECS, ids=ALL_IDS)
def test_a_wrong_input_raises_a_value_error_that_says_how_to_fix_it(spec):
    model = _build(spec).eval()
    d = model.size_divisor
    h, w = _input_hw(spec)
    with pytest.raises(ValueError, match=rf"divisible by {d}, got {h + 1}x{w}: resize or pad to e\.g\. {h + d}x{w}"):
        model.check_input(torch.zeros(1, 1, h + 1, w))
    with torch.no_grad(), pytest.raises(ValueError, match=rf"divisible by {d}"):
        model(torch.zeros(1, 1, h, w - 1))  # forward checks first
    with pytest.raises(ValueError, match=r"add the channel axis with images\[:, None\]"):
        model.check_input(torch.zeros(1, h, w))
    with pytest.raises(ValueError, match="1 channel.*got 3: convert to grayscale"):
        model.check_input(torch.zeros(1, 3, h, w))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gradients_reach_every_parameter_group(spec):
    model = _build(spec).train()
    h, w = _input_hw(spec)
    images = torch.randn(2, 1, h, w)
    masks = (torch.rand(2, 1, h, w) > 0.5).float()
    _loss(model, images, masks).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without, f"parameters without gradient: {without[:10]}"
    for child_name, child in model.named_children():
        grads = [p.grad for p in child.parameters() if p.grad is not None]
        if grads:
            assert any(torch.any(g != 0) for g in grads), f"{child_name} gets only zero gradients"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_a_fixed_seed_gives_the_same_output(spec):
    h, w = _input_hw(spec)
    x = torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(3))
    outputs = []
    for _ in range(2):
        model = _build(spec, seed=7).eval()
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1])


def _dice(prob: torch.Tensor, target: torch.Tensor) -> float:
    pred = prob >= 0.5
    truth = target > 0.5
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()).clamp(min=1))


@pytest.mark.slow
@pytest.mark.parametrize("spec", COMPACT, ids=[s.name for s in COMPACT])
def test_compact_variant_overfits_a_handful_of_phantoms(spec):
    """Capacity and wiring: 4 phantoms at a small size must be fitted to Dice > 0.9."""
    h, w = _input_hw(spec)
    phantoms = [make_phantom(height=h, width=w, rng_or_seed=i, speckle=0.5) for i in range(4)]
    images = torch.from_numpy(np.stack([p.image for p in phantoms]))[:, None]
    masks = torch.from_numpy(np.stack([p.mask for p in phantoms]).astype(np.float32))[:, None]
    model = _build(spec).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # A diffusion model learns a denoiser over all noise levels: it gets a larger budget.
    budget = 1200 if model.sampled else 300
    best = 0.0
    for step in range(budget):
        loss = _loss(model, images, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            with torch.no_grad():
                prob = model.predict_proba(images)
            model.train()
            best = max(best, _dice(prob, masks))
            if best > 0.9:
                break
    assert best > 0.9, f"{spec.name}: best Dice {best:.3f} after {step + 1} steps"
