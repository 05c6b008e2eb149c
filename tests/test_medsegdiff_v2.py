"""MedSegDiff-V2: registry contract, training, DDIM ensemble sampling (through the model's
``sample`` / ``predict_proba``, which run ``fetometry.inference.diffusion.DiffusionSampler``),
NBP-Filter, U-SA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fetometry.data.synthetic import make_phantom
from fetometry.models import available_models, create_model, get_spec
from fetometry.models.diffusion_schedule import ddim_timesteps
from fetometry.models.medsegdiff_v2 import (
    MedSegDiffV2,
    NeuralBandPassFilter,
    SpectralCrossAttention,
    UncertainSpatialAttention,
)

H, W = 64, 96


def phantoms(seeds, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 64, 96) images in [0, 1] and (N, 1, 64, 96) float masks in {0, 1}."""
    drawn = [make_phantom(height=H, width=W, rng_or_seed=int(s), **kwargs) for s in seeds]
    images = torch.from_numpy(np.stack([p.image for p in drawn]))[:, None]
    masks = torch.from_numpy(np.stack([p.mask for p in drawn]))[:, None].float()
    return images, masks


def train(
    model: MedSegDiffV2, images, masks, *, steps: int, lr: float = 2e-3, batch: int = 8, seed: int = 0
) -> MedSegDiffV2:
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        index = torch.randperm(len(images), generator=order)[:batch]
        loss = model.training_loss(images[index], masks[index], generator=order)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def fixed_terms(model, images, masks) -> dict[str, float]:
    """Loss terms at a fixed draw of timesteps and noise (comparable across training)."""
    with torch.no_grad():
        terms = model.loss_terms(images, masks, generator=torch.Generator().manual_seed(123))
    return {k: v.item() for k, v in terms.items()}


@pytest.fixture(scope="module")
def trained():
    """A compact model trained for 60 steps on 8 phantoms (about 10 s), with its losses."""
    torch.manual_seed(0)
    images, masks = phantoms(range(8))
    model = create_model("medsegdiff-v2", "compact")
    before = fixed_terms(model, images, masks)
    train(model, images, masks, steps=60)
    return model, images, masks, before, fixed_terms(model, images, masks)


# --------------------------------------------------------------------------- registry


def test_both_variants_are_registered_with_their_true_size_divisor():
    names = {(s.name, s.variant) for s in available_models()}
    assert {("medsegdiff-v2", "paper"), ("medsegdiff-v2", "compact")} <= names
    for variant in ("paper", "compact"):
        model = create_model("medsegdiff-v2", variant)
        assert get_spec("medsegdiff-v2", variant).size_divisor == model.size_divisor
        assert model.sampled and model.training_loss is not None  # the sampled-segmenter contract (models.base)


def test_compact_is_small_and_paper_is_at_official_scale():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("medsegdiff-v2", "compact")) < 2e6
    assert count(create_model("medsegdiff-v2", "paper")) > 50e6


def test_paper_variant_trains_and_samples_one_step():
    torch.manual_seed(0)
    model = create_model("medsegdiff-v2", "paper")
    images, masks = phantoms([0])
    loss = model.training_loss(images[..., :64], masks[..., :64])
    assert torch.isfinite(loss)
    prob, spread = model.sample(images[..., :64], steps=1, ensemble=2)
    assert prob.shape == spread.shape == (1, 1, 64, 64)


def test_schedule_is_the_official_linear_one_and_not_saved():
    model = create_model("medsegdiff-v2", "compact")
    betas = 1 - model.alphas_cumprod[1:] / model.alphas_cumprod[:-1]
    assert model.timesteps == 1000
    assert math.isclose(1 - model.alphas_cumprod[0].item(), 1e-4, rel_tol=1e-3)
    assert math.isclose(betas[-1].item(), 0.02, rel_tol=1e-3)
    assert torch.allclose(betas[1:] - betas[:-1], betas[1] - betas[0], atol=1e-6)  # linear
    assert not any("alphas_cumprod" in key for key in model.state_dict())


def test_noise_prediction_with_and_without_the_input_skip():
    torch.manual_seed(0)
    images, masks = phantoms([0, 1])
    t = torch.tensor([10, 900])
    x_t = torch.randn(2, 1, H, W)
    for skip in (True, False):
        model = create_model("medsegdiff-v2", "compact", noise_skip=skip)
        torch.nn.init.normal_(model.diffusion.pixel_out.weight)  # a non-zero U-Net output F
        with torch.no_grad():
            condition = model.diffusion.prepare(model.condition(images), first_anchor_level=model.first_anchor_level)
            f = model.diffusion(x_t, images, t, condition)
            eps = model.predict_noise(x_t, images, t, condition)
        a = model.alphas_cumprod[t].view(-1, 1, 1, 1)
        expected = (1 - a).sqrt() * x_t + a.sqrt() * f if skip else f
        torch.testing.assert_close(eps, expected)


def test_ddim_timesteps_descend_to_zero():
    assert ddim_timesteps(1) == [999]
    steps = ddim_timesteps(10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match="sampling steps"):
        ddim_timesteps(0)


# --------------------------------------------------------------------------- contract


def test_forward_returns_the_condition_logits():
    model = create_model("medsegdiff-v2", "compact").eval()
    images = torch.rand(2, 1, H, W)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, 1, H, W)
        torch.testing.assert_close(logits, model.condition(images).logits)


def test_several_classes():
    model = create_model("medsegdiff-v2", "compact", out_channels=3)
    images = torch.rand(2, 1, H, W)
    masks = torch.nn.functional.one_hot(torch.randint(0, 3, (2, H, W)), 3).permute(0, 3, 1, 2).float()
    assert torch.isfinite(model.training_loss(images, masks))
    prob, spread = model.sample(images, steps=2, ensemble=2)
    assert prob.shape == spread.shape == (2, 3, H, W)
    assert model(images).shape == (2, 3, H, W)


@pytest.mark.parametrize("shape", [(1, 1, 50, 96), (1, 1, 64, 100)])
def test_indivisible_input_says_how_to_fix_it(shape):
    model = create_model("medsegdiff-v2", "compact")
    for call in (model, model.predict_proba, lambda x: model.sample(x, steps=1, ensemble=1)):
        with pytest.raises(ValueError, match="divisible by 16"):
            call(torch.rand(shape))


def test_bad_inputs_raise_value_errors():
    model = create_model("medsegdiff-v2", "compact")
    images, masks = torch.rand(2, 1, H, W), torch.ones(2, 1, H, W)
    with pytest.raises(ValueError, match="channel axis"):
        model(torch.rand(2, H, W))
    with pytest.raises(ValueError, match="match the images"):
        model.training_loss(images, masks[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.training_loss(images, masks * 255)
    with pytest.raises(ValueError, match="at least one"):
        model.sample(images, steps=2, ensemble=0)
    with pytest.raises(ValueError, match="eta"):
        model.sample(images, steps=2, ensemble=1, eta=-1)


# --------------------------------------------------------------------------- training


def test_training_loss_falls_on_phantoms(trained):
    _, _, _, before, after = trained
    # The untrained model already predicts eps = sqrt(1 - abar) x_t (noise_skip), so the
    # diffusion term starts near 0.26, not 1; the anchor term falls fastest.
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["diffusion"] < 0.85 * before["diffusion"], (before, after)
    assert after["anchor"] < 0.6 * before["anchor"], (before, after)


def test_training_under_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    model = create_model("medsegdiff-v2", "compact").to(memory_format=torch.channels_last)
    images, masks = phantoms([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.training_loss(images.to(memory_format=torch.channels_last), masks)
        prob, spread = model.sample(images, steps=2, ensemble=2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert prob.dtype == spread.dtype == torch.float32


# --------------------------------------------------------------------------- sampling


def test_sampling_returns_probabilities_and_a_spread(trained):
    model, images, _, _, _ = trained
    prob, spread = model.sample(images[:3], steps=4, ensemble=3, generator=torch.Generator().manual_seed(0))
    assert prob.shape == spread.shape == (3, 1, H, W)
    assert prob.min() >= 0 and prob.max() <= 1
    assert spread.min() >= 0 and spread.max() <= 0.5
    assert spread.max() > 0  # members start from different noise
    _, single = model.sample(images[:1], steps=4, ensemble=1)
    assert torch.count_nonzero(single) == 0


def test_spread_is_larger_where_the_fused_mask_is_wrong(trained):
    """The members disagree most on the pixels the ensemble gets wrong (error detection)."""
    model, images, masks, _, _ = trained
    prob, spread = model.sample(images, steps=10, ensemble=5, generator=torch.Generator().manual_seed(0))
    wrong = (prob >= 0.5) != (masks > 0.5)
    for i in range(len(images)):
        assert wrong[i].any() and (~wrong[i]).any()
        assert spread[i][wrong[i]].mean() > 1.3 * spread[i][~wrong[i]].mean()


def phantoms_at_noise_levels(seeds, levels) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``phantoms`` but each phantom gets its own additive-noise level (image units)."""
    drawn = [make_phantom(height=H, width=W, rng_or_seed=int(s), noise=float(n)) for s, n in zip(seeds, levels)]
    images = torch.from_numpy(np.stack([p.image for p in drawn]))[:, None]
    masks = torch.from_numpy(np.stack([p.mask for p in drawn]))[:, None].float()
    return images, masks


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="measured (H8, 600 steps, about 80 s of one core): trained on noise levels drawn in [0, 1], "
    "the mean spread on noise-1.0 test phantoms is LOWER than on their clean versions (eta 0: 0.083 vs "
    "0.093, 4 of 16 higher; eta 1: 0.062 vs 0.071, 7 of 16) while Dice drops 0.55 -> 0.40; seed 0 at "
    "300 steps: 0.238 vs 0.236, 8 of 16. The diffusion U-Net is far from converged in a test's budget, "
    "so its spread is left-over sampler noise, not the posterior",
)
def test_spread_is_larger_on_noisy_phantoms_than_on_clean_ones():
    """Heavily corrupted images should give a wider ensemble than clean ones.

    Why this setting: an ensemble's spread can only reflect p(mask | image) where the
    training data hold real ambiguity. At noise 0.3 the skull ring stays visible, so a
    fitted model is (rightly) sure either way. Here the training noise is drawn per image
    in [0, 1]; at 1.0 the head is nearly invisible (the label is genuinely uncertain), so
    the MSE-trained denoiser should learn a broad posterior there and leave the members
    apart, while on clean images it saturates them to 0 or 1. The same 16 unseen heads
    are sampled clean and at noise 1.0, 8 members each, with the default sampler (eta 0).
    Expected to fail until the diffusion U-Net is trained far longer (see the reason).
    """
    torch.manual_seed(1)
    levels = np.random.default_rng(1).uniform(0.0, 1.0, 64)  # corruption varies widely
    images, masks = phantoms_at_noise_levels(range(20000, 20064), levels)
    model = train(create_model("medsegdiff-v2", "compact"), images, masks, steps=600, seed=1)
    heads = range(25000, 25016)  # unseen phantoms
    clean, _ = phantoms_at_noise_levels(heads, [0.0] * 16)
    corrupted, _ = phantoms_at_noise_levels(heads, [1.0] * 16)  # same heads, head barely visible
    _, spread_clean = model.sample(clean, steps=10, ensemble=8, generator=torch.Generator().manual_seed(0))
    _, spread_corrupted = model.sample(corrupted, steps=10, ensemble=8, generator=torch.Generator().manual_seed(0))
    per_clean, per_corrupted = spread_clean.mean((1, 2, 3)), spread_corrupted.mean((1, 2, 3))
    assert per_corrupted.mean() > 1.1 * per_clean.mean()
    assert (per_corrupted > per_clean).sum() >= 12


def _mean_spread(predictor, images: torch.Tensor) -> torch.Tensor:
    """Per-image mean sample spread of the shipped model's default sampler (10 x 5), seeded."""
    with torch.no_grad():
        _, spread = predictor.model.eval().sample(
            images, steps=10, ensemble=5, generator=torch.Generator().manual_seed(0)
        )
    return spread.mean((1, 2, 3))


@pytest.mark.slow
def test_shipped_model_spread_is_larger_on_corrupted_images_than_on_clean_ones():
    """The shipped (CPU-trained) MedSegDiff-V2 on six bundled HC18 images, clean and with
    80% of each pixel replaced by uniform noise (the skull barely visible): the ensemble's
    spread is wider on at least five of the six corrupted images, and on average by more
    than 10%.

    This is the property the phantom test above asks of a model trained in a test's
    budget, which it cannot reach; the shipped weights trained for hours have it. The
    76-epoch weights were wider on all six; the 98-epoch weights shipped since 2026-12-07
    are wider on five (the second image: 0.0345 corrupted against 0.0361 clean) and 1.33x
    on average (docs/MODELS.md, "Known limits").
    """
    from fetometry.data.hc18 import load_hc18
    from fetometry.data.transforms import letterbox
    from fetometry.inference.predictor import Predictor
    from fetometry.resources import SAMPLES_DIR

    predictor = Predictor.from_weights("medsegdiff-v2")
    canvases = [letterbox(s.load_image(), predictor.config.canvas_hw)[0] for s in load_hc18(SAMPLES_DIR)[:6]]
    clean = torch.from_numpy(np.stack(canvases).astype(np.float32))[:, None]
    noise = torch.rand(clean.shape, generator=torch.Generator().manual_seed(0))
    corrupted = 0.2 * clean + 0.8 * noise
    per_clean, per_corrupted = (_mean_spread(predictor, images) for images in (clean, corrupted))
    assert (per_corrupted > per_clean).sum() >= 5, (per_clean, per_corrupted)
    assert per_corrupted.mean() > 1.1 * per_clean.mean()


@pytest.mark.slow
def test_shipped_model_spread_is_larger_on_noisy_phantoms_than_on_clean_ones():
    """The issue's phantom check, on the shipped HC18-trained weights: six unseen phantoms
    at the model's canvas size, clean and with noise 1.0 (the head nearly invisible)."""
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights("medsegdiff-v2")
    height, width = predictor.config.canvas_hw

    def drawn(noise: float) -> torch.Tensor:
        items = [make_phantom(height=height, width=width, rng_or_seed=25000 + i, noise=noise) for i in range(6)]
        return torch.from_numpy(np.stack([p.image for p in items]))[:, None]

    per_clean, per_noisy = (_mean_spread(predictor, images) for images in (drawn(0.0), drawn(1.0)))
    assert (per_noisy > per_clean).all(), (per_clean, per_noisy)
    assert per_noisy.mean() > 1.5 * per_clean.mean()


def test_sampling_is_reproducible_with_a_generator(trained):
    model, images, _, _, _ = trained
    for eta in (0.0, 1.0):
        a = model.sample(images[:2], steps=4, ensemble=3, eta=eta, generator=torch.Generator().manual_seed(7))
        b = model.sample(images[:2], steps=4, ensemble=3, eta=eta, generator=torch.Generator().manual_seed(7))
        c = model.sample(images[:2], steps=4, ensemble=3, eta=eta, generator=torch.Generator().manual_seed(8))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.equal(a[0], c[0])


def test_predict_proba_is_sample_with_the_defaults_from_each_images_seeded_noise(trained):
    model, images, _, _, _ = trained
    noise = torch.cat(
        [
            torch.randn(
                (model.default_ensemble, 1, *images.shape[-2:]),
                generator=torch.Generator().manual_seed(model.image_seed(image)),
            )
            for image in images[:2]
        ]
    )
    expected = model.sample(
        images[:2], steps=model.default_steps, ensemble=model.default_ensemble, initial_noise=noise
    )[0]
    torch.testing.assert_close(model.predict_proba(images[:2]), expected, rtol=0, atol=0)


def test_an_image_gets_the_same_probabilities_alone_in_a_batch_and_run_after_run(trained):
    """A repeated measurement must not change: no dependence on the global RNG or the batch."""
    model, images, _, _, _ = trained
    torch.manual_seed(1)
    batch = model.predict_proba(images[:3])
    torch.manual_seed(2)
    alone = model.predict_proba(images[1:2])
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-6)
    other_noise = model.sample(images[1:2], generator=torch.Generator().manual_seed(model.image_seed(images[1]) + 1))[0]
    assert not torch.equal(other_noise, alone)  # the seed is what fixes it


def test_different_images_and_noise_seeds_draw_different_noise(trained):
    model, images, _, _, _ = trained
    assert model.image_seed(images[0]) != model.image_seed(images[1])
    assert model.image_seed(images[0]) == model.image_seed(images[0].clone())
    before = model.image_seed(images[0])
    model.noise_seed = 1
    try:
        assert model.image_seed(images[0]) != before
    finally:
        model.noise_seed = 0


def test_initial_noise_of_the_wrong_shape_is_refused(trained):
    model, images, _, _, _ = trained
    with pytest.raises(ValueError, match="initial_noise has shape"):
        model.sample(images[:2], steps=1, ensemble=2, initial_noise=torch.zeros(3, 1, *images.shape[-2:]))


def test_predictor_runs_the_diffusion_sampler(trained):
    from fetometry.inference.predictor import Predictor

    model, _, _, _, _ = trained
    image = make_phantom(height=128, width=192, rng_or_seed=5).image
    prediction = Predictor(model, canvas_hw=(H, W)).predict(image)
    assert prediction.probability.shape == image.shape
    assert 0 <= prediction.probability.min() and prediction.probability.max() <= 1


def test_the_trainer_uses_the_hooks(phantom_hc18, tmp_path):
    """The project's trainer (bf16 autocast, channels_last) trains and validates it."""
    from conftest import TINY_RECIPE

    from fetometry.data.hc18 import load_hc18
    from fetometry.training.config import TrainConfig
    from fetometry.training.trainer import Trainer

    recipe = {**TINY_RECIPE, "model": "medsegdiff-v2", "epochs": 1, "max_steps": 2}
    result = Trainer(TrainConfig.from_dict(recipe), tmp_path, progress=False).fit(load_hc18(phantom_hc18))
    assert result.epochs_run == 1
    assert math.isfinite(result.history[0]["train_loss"]) and 0 <= result.best_val_dice <= 1


# --------------------------------------------------------------------------- NBP-Filter


def spectral_attention(seed: int = 0) -> tuple[SpectralCrossAttention, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    module = SpectralCrossAttention(16, 24, 32, heads=4, bands=8)
    return module, torch.randn(2, 16, 16, 24), torch.randn(2, 24, 16, 24), torch.randn(2, 32)


def test_band_pass_filter_is_learnable():
    module, x, context, time = spectral_attention()
    module(x, context, time).square().mean().backward()
    assert module.band_pass.base.grad is not None and module.band_pass.base.grad.abs().sum() > 0
    assert module.band_pass.shift.weight.grad.abs().sum() > 0  # the timestep adapts it


def test_band_pass_filter_gets_gradients_inside_the_trained_model(trained):
    model, images, masks, _, _ = trained
    model.zero_grad()
    model.training_loss(images, masks, generator=torch.Generator().manual_seed(0)).backward()
    band_pass = model.diffusion.ss_former.blocks[0].attention.band_pass
    assert band_pass.base.grad.abs().sum() > 0
    model.zero_grad()


def test_band_pass_filter_depends_on_the_timestep():
    torch.manual_seed(0)
    band_pass = NeuralBandPassFilter(4, 8, bands=6)
    torch.nn.init.normal_(band_pass.shift.weight)
    gains = band_pass.band_gains(torch.randn(2, 8))
    assert gains.min() >= 0
    assert not torch.allclose(gains[0], gains[1])


def test_a_filter_that_blocks_every_frequency_zeroes_the_attended_output():
    module, x, context, time = spectral_attention()
    with torch.no_grad():
        assert module.attend(x, context, time).abs().max() > 1e-3
        module.band_pass.base.zero_()  # shift is zero at init: every gain is ReLU(0) = 0
        assert torch.count_nonzero(module.attend(x, context, time)) == 0


def radial(h: int, w: int) -> torch.Tensor:
    return NeuralBandPassFilter(1, 1).radial_frequency(h, w, torch.device("cpu"))


def test_a_low_pass_filter_removes_the_high_frequencies_of_the_output():
    module, x, context, time = spectral_attention()
    with torch.no_grad():
        module.band_pass.base.copy_(torch.tensor([1.0, 1.0] + [0.0] * 6))  # passes rho < 2/7
        spectrum = torch.fft.rfft2(module.attend(x, context, time)).abs()
    high = radial(16, 24) >= 2 / 7
    assert high.any() and (~high).any()
    assert spectrum[..., high].max() < 1e-4 * spectrum[..., ~high].max()
    assert spectrum[..., ~high].max() > 1e-2


def test_a_high_pass_filter_removes_the_mean_of_the_output():
    module, x, context, time = spectral_attention()
    with torch.no_grad():
        module.band_pass.base.copy_(torch.tensor([0.0] * 4 + [1.0] * 4))  # blocks rho <= 3/7
        out = module.attend(x, context, time)
    assert out.mean(dim=(-2, -1)).abs().max() < 1e-5
    assert out.std() > 1e-3


# --------------------------------------------------------------------------- U-SA


def test_uncertain_spatial_attention_widens_the_anchor_and_learns_its_kernel():
    torch.manual_seed(0)
    usa = UncertainSpatialAttention(8, 4, kernel_size=5)
    kernel = usa.gaussian_kernel()
    assert kernel.shape == (4, 1, 5, 5) and kernel.min() >= 0
    torch.testing.assert_close(kernel.sum((1, 2, 3)), torch.ones(4))
    anchor = torch.randn(2, 8, 12, 12)
    relaxed = usa.relax(anchor)
    assert torch.all(relaxed >= usa.to_anchor(anchor) - 1e-6)  # max(a, a * k) >= a
    f_d = torch.randn(2, 4, 12, 12)
    usa(f_d, relaxed).sum().backward()
    assert usa.log_sigma.grad.abs().sum() > 0 and usa.offset.grad.abs().sum() > 0
