"""DUCK-Net specifics: DUCK-block branches, even-kernel padding, residual-downsampling path,
decoder wiring and the paper size. Generic model contracts live in the shared model tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models import create_model, get_spec
from fetometry.models.duck_net import DUCKBlock, ResidualBlock, SameConv2d, same_padding


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's many tiny convs on one thread, then restore the setting.

    On the shared 2-core machine (busy training), two OpenMP threads wait on each other at
    every op: 18 s for this file instead of 2 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paper_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("duck-net", "paper").eval()


@pytest.fixture(scope="module")
def compact_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("duck-net", "compact").eval()


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _record(modules: dict[str, nn.Module], *, inputs: bool) -> tuple[dict[str, torch.Tensor], list]:
    """Hook each module; store its first input (inputs=True) or its output, by name."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():
        if inputs:
            hook = lambda _m, args, name=name: seen.__setitem__(name, args[0].detach().clone())  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
        else:
            hook = lambda _m, _args, out, name=name: seen.__setitem__(name, out.detach().clone())  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    return seen, handles


# ------------------------------------------------------------------------ registration


def test_both_variants_registered_with_size_divisor_32():
    assert get_spec("duck-net", "paper").size_divisor == 32
    assert get_spec("duck-net", "compact").size_divisor == 32


def test_paper_parameter_count_matches_the_published_size(paper_model):
    params = sum(p.numel() for p in paper_model.parameters())
    assert abs(params - 38.9e6) / 38.9e6 < 0.10, params


def test_paper_is_f17_and_compact_is_narrower(paper_model, compact_model):
    assert paper_model.filters == 17 and paper_model.head.in_channels == 17
    assert compact_model.filters < paper_model.filters
    assert sum(p.numel() for p in compact_model.parameters()) < 0.1 * 38.9e6


def test_paper_model_maps_to_logits_of_the_input_size(paper_model):
    with torch.no_grad():
        out = paper_model(torch.randn(1, 1, 32, 64))
    assert out.shape == (1, 1, 32, 64)


# ------------------------------------------------------------------- even-kernel padding


def test_same_padding_puts_the_extra_pixel_after():
    assert same_padding(6) == (2, 3)  # even kernel: TensorFlow/Keras 'same'
    assert same_padding(3, dilation=3) == (3, 3)
    assert same_padding(1) == (0, 0)


@pytest.mark.parametrize("size", [(7, 9), (8, 10)])
def test_even_kernel_conv_keeps_size_with_keras_alignment(size):
    torch.manual_seed(0)
    x = torch.randn(2, 2, *size)
    wide, tall = SameConv2d(2, 3, (1, 6)), SameConv2d(2, 3, (6, 1))
    assert wide(x).shape[-2:] == size and tall(x).shape[-2:] == size
    # Keras alignment: 2 zeros before, 3 after; the mirrored (3, 2) padding gives other values.
    torch.testing.assert_close(wide(x), F.conv2d(F.pad(x, (2, 3, 0, 0)), wide.weight, wide.bias))
    torch.testing.assert_close(tall(x), F.conv2d(F.pad(x, (0, 0, 2, 3)), tall.weight, tall.bias))
    assert not torch.allclose(wide(x), F.conv2d(F.pad(x, (3, 2, 0, 0)), wide.weight, wide.bias))


def test_duck_block_keeps_odd_and_even_sizes():
    block = DUCKBlock(2, 4)
    assert block(torch.randn(2, 2, 7, 10)).shape == (2, 4, 7, 10)


# ----------------------------------------------------------------------------- blocks


def test_duck_block_has_the_six_paper_branches():
    branches = DUCKBlock(3, 5).branches
    assert len(branches) == 6
    dilations = [[c.dilation[0] for c in _convs(b) if c.kernel_size == (3, 3)] for b in branches[:2]]
    assert dilations == [[1, 2, 3], [1, 2]]  # wide-scope, mid-scope
    assert [sum(isinstance(m, ResidualBlock) for m in b.modules()) for b in branches[2:5]] == [1, 2, 3]
    assert [c.kernel_size for c in _convs(branches[5])] == [(1, 6), (6, 1)]  # separated
    assert [c.explicit_padding for c in _convs(branches[5])] == [(2, 3, 0, 0), (0, 0, 2, 3)]


def test_duck_block_is_bn_then_branches_summed_then_bn():
    torch.manual_seed(0)
    block = DUCKBlock(3, 5).train()
    x = torch.randn(2, 3, 12, 12)
    named = {f"branch{i}": b for i, b in enumerate(block.branches)}
    outputs, out_handles = _record({**named, "norm_in": block.norm_in}, inputs=False)
    inputs, in_handles = _record({**named, "norm_out": block.norm_out}, inputs=True)
    y = block(x)
    for handle in out_handles + in_handles:
        handle.remove()
    shapes = {outputs[n].shape for n in named}
    assert shapes == {torch.Size([2, 5, 12, 12])}  # six branch outputs of one shape
    for name in named:  # every branch reads the normalised input
        torch.testing.assert_close(inputs[name], outputs["norm_in"])
    torch.testing.assert_close(inputs["norm_out"], sum(outputs[n] for n in named))
    assert y.shape == (2, 5, 12, 12)


def test_residual_block_is_1x1_shortcut_plus_two_3x3_conv_bn():
    block = ResidualBlock(3, 5)
    assert [c.kernel_size for c in _convs(block.shortcut)] == [(1, 1)]
    assert [c.kernel_size for c in _convs(block.body)] == [(3, 3), (3, 3)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.body.modules()) == 2
    assert isinstance(block.norm, nn.BatchNorm2d)


def test_bottleneck_is_two_residual_blocks_at_32f_then_two_at_16f(compact_model):
    f = compact_model.filters
    widths = [b.norm.num_features for b in compact_model.bottleneck.modules() if isinstance(b, ResidualBlock)]
    assert widths == [32 * f, 32 * f, 16 * f, 16 * f]


# ------------------------------------------------------------------------------ wiring


def test_residual_downsampling_path_starts_at_the_input_and_is_added_at_every_level(compact_model):
    model, x = compact_model, torch.randn(1, 1, 64, 96)
    f = model.filters
    assert [c.out_channels for c in model.residual_path] == [2 * f, 4 * f, 8 * f, 16 * f, 32 * f]
    assert all(c.kernel_size == (2, 2) and c.stride == (2, 2) for c in model.residual_path)
    paths = {f"path{i}": m for i, m in enumerate(model.residual_path)}
    downs = {f"down{i}": m for i, m in enumerate(model.downsample)}
    # Level i's sum feeds the next DUCK block (levels 1-4) or the bottleneck (level 5).
    consumers = {f"next{i}": m for i, m in enumerate([*model.encoder[1:], model.bottleneck])}
    outputs, out_handles = _record({**paths, **downs}, inputs=False)
    inputs, in_handles = _record({**consumers, **paths}, inputs=True)
    with torch.no_grad():
        model(x)
    for handle in out_handles + in_handles:
        handle.remove()
    torch.testing.assert_close(inputs["path0"], x)  # applied straight to the image
    for i in range(1, 5):  # chained: each conv reads the previous one's output
        torch.testing.assert_close(inputs[f"path{i}"], outputs[f"path{i - 1}"])
    for i in range(5):
        torch.testing.assert_close(inputs[f"next{i}"], outputs[f"down{i}"] + outputs[f"path{i}"])


def test_decoder_adds_the_skip_to_the_nearest_upsampled_features(compact_model):
    model, x = compact_model, torch.randn(1, 1, 64, 96)
    encoders = {f"enc{i}": m for i, m in enumerate(model.encoder)}
    decoders = {f"dec{i}": m for i, m in enumerate(model.decoder)}
    outputs, out_handles = _record({**encoders, **decoders, "bottleneck": model.bottleneck}, inputs=False)
    inputs, in_handles = _record(decoders, inputs=True)
    with torch.no_grad():
        model(x)
    for handle in out_handles + in_handles:
        handle.remove()
    previous = ["bottleneck", "dec0", "dec1", "dec2", "dec3"]
    for j in range(5):
        upsampled = outputs[previous[j]].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(inputs[f"dec{j}"], upsampled + outputs[f"enc{4 - j}"])


# ------------------------------------------------------------------------------- input


def test_input_channels_feed_both_the_first_duck_block_and_the_residual_path():
    model = create_model("duck-net", "compact", in_channels=3, out_channels=2)
    assert model.residual_path[0].in_channels == 3 and model.encoder[0].norm_in.num_features == 3
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 2, 32, 32)
    assert out.min() < 0  # logits: no final sigmoid (the official Keras model has one)


def test_size_not_divisible_by_32_says_how_to_fix_it(compact_model):
    with pytest.raises(ValueError, match=r"divisible by 32.*64x64"):
        compact_model(torch.randn(1, 1, 50, 64))
