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


def _registered() -> set[tuple[str, str, str]]:
    from fetometry.models.base import MODEL_KINDS

    return {
        (s.name, s.variant, s.kind) for kind in MODEL_KINDS for s in available_models(include_reference=True, kind=kind)
    }


def test_models_json_lists_every_registered_model_within_seconds():
    """`fetometry models --json` reads the registry: nothing is built or timed (profiling
    every variant took over 10 minutes). A fresh interpreter, as a user runs it."""
    import json
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fetometry.cli", "models", "--json"], capture_output=True, text=True, timeout=60
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {(r["name"], r["variant"], r["kind"]) for r in rows} == _registered()
    assert ("sononet", "16", "plane-classifier") in {(r["name"], r["variant"], r["kind"]) for r in rows}
    for row in rows:
        assert set(row) == {"name", "variant", "kind", "reference", "size_divisor", "description"}
        assert "params" not in row and "cpu_ms" not in row
    assert seconds < 15, f"{seconds:.1f} s (interpreter and torch start included)"


def test_models_listing_builds_nothing(capsys, monkeypatch):
    import time

    import fetometry.evaluation.complexity as complexity
    from fetometry.cli import build_parser, main

    monkeypatch.setattr(complexity, "profile_models", lambda *a, **k: pytest.fail("the listing must not profile"))
    build_parser()  # the verbs' imports, paid once per process (the subprocess test times a cold start)
    started = time.perf_counter()
    assert main(["models"]) == 0
    assert time.perf_counter() - started < 2.0
    table = capsys.readouterr().out
    assert "| sononet | 16 | plane-classifier |" in table and "segmenter (reference)" in table
    assert main(["models", "--repeats", "1"]) == 1  # a measuring flag without --profile
    assert "--profile" in capsys.readouterr().err


def test_models_profile_json_measures_every_variant_with_the_contract_keys(capsys):
    import json

    from fetometry.cli import main

    assert main(["models", "--profile", "--json", "--name", "unext", "--repeats", "1"]) == 0
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


def test_the_base_contract_defaults_and_the_sampled_check():
    from fetometry.models.base import SegmentationNetwork, default_cam_layer, foreground_probability, is_sampled

    class Logits(SegmentationNetwork):
        def forward(self, images):
            return images * 4 - 2

    x = torch.rand(1, 1, 4, 4)
    model = Logits()
    assert model.training_loss is None and not is_sampled(model) and default_cam_layer(model) is None
    torch.testing.assert_close(model.predict_proba(x), torch.sigmoid(x * 4 - 2))
    plain = torch.nn.Identity()  # any module returning logits is a feed-forward segmenter
    torch.testing.assert_close(foreground_probability(plain, x), torch.sigmoid(x))
    assert not is_sampled(plain) and default_cam_layer(plain) is None
    assert is_sampled(create_model("medsegdiff-v2", "compact"))
    with pytest.raises(TypeError, match="training_loss and predict_proba"):

        class Unfinished(SegmentationNetwork):  # noqa: F841 - defining it is the test
            sampled = True
