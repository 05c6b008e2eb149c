"""Registry and Attention U-Net contracts."""

from __future__ import annotations

import pytest
import torch

from fetometry.models import available_models, create_model


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="attention-unet/compact"):
        create_model("no-such-net")


def test_registry_lists_attention_unet_variants():
    names = {(s.name, s.variant) for s in available_models()}
    assert {("attention-unet", "paper"), ("attention-unet", "compact")} <= names


def test_paper_variant_parameter_count_matches_the_published_size():
    model = create_model("attention-unet", "paper")
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 34.9e6) / 34.9e6 < 0.10, params


@pytest.mark.parametrize("shape", [(2, 1, 64, 96), (1, 1, 96, 64), (1, 1, 48, 160)])
def test_logits_keep_the_input_size(shape):
    model = create_model("attention-unet", "compact").eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 1, shape[2], shape[3])


def test_out_channels_configurable():
    model = create_model("attention-unet", "compact", out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_indivisible_input_says_how_to_fix_it():
    model = create_model("attention-unet", "compact")
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.randn(1, 1, 50, 64))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = create_model("attention-unet", "compact")
    model(torch.randn(2, 1, 32, 48)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_fixed_seed_gives_the_same_model():
    torch.manual_seed(1)
    a = create_model("attention-unet", "compact").eval()
    torch.manual_seed(1)
    b = create_model("attention-unet", "compact").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_models_json_lists_every_variant_with_the_contract_keys(capsys):
    import json

    from fetometry.cli import main

    assert main(["models", "--json", "--name", "unext", "--repeats", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["variant"] for r in rows} == {"paper", "compact"}
    for row in rows:
        assert {"name", "variant", "params", "gflops", "cpu_ms"} <= set(row)
        assert abs(row["params"] - 1.47e6) / 1.47e6 < 0.10
        assert 0.4 < row["gflops"] < 0.8 and row["cpu_ms"] > 0


def test_diffusion_profile_counts_the_whole_sampler():
    from fetometry.evaluation.complexity import Inference, count_gmacs

    model = create_model("medsegdiff-v2", "compact")
    one = count_gmacs(Inference(model, steps=1, ensemble=1), (64, 64))
    two_by_two = count_gmacs(Inference(model, steps=2, ensemble=2), (64, 64))
    four_by_one = count_gmacs(Inference(model, steps=4, ensemble=1), (64, 64))
    assert Inference(model).description == f"sampler {model.default_steps} steps x {model.default_ensemble} samples"
    # The condition network runs once; the denoiser once per step and ensemble member.
    assert two_by_two > 1.3 * one
    assert two_by_two == pytest.approx(four_by_one, rel=0.02)
