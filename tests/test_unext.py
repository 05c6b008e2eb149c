"""UNeXt-specific checks: the channel-group shift, additive skips, published size.

The contract every model keeps (shapes, gradients, save/load) is tested by the shared
model test class; this file covers what only UNeXt has.
"""

from __future__ import annotations

import pytest
import torch

from fetometry.models import create_model
from fetometry.models.unext import SHIFT_GROUPS, ShiftedMLP, UNeXt, shift_channel_groups


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dim", [2, 3])
def test_shift_moves_each_channel_group_by_its_offset(dim):
    # One channel per group, a single 1 at (4, 4) in each: group g must land at 4 + g - 2.
    x = torch.zeros(1, SHIFT_GROUPS, 9, 9)
    x[:, :, 4, 4] = 1.0
    shifted = shift_channel_groups(x, dim=dim)
    for g in range(SHIFT_GROUPS):
        hot = torch.nonzero(shifted[0, g])
        expected = [4 + g - 2, 4] if dim == 2 else [4, 4 + g - 2]
        assert hot.tolist() == [expected], (g, hot.tolist())


def test_shift_fills_with_zeros_and_keeps_chunk_boundaries():
    # 10 channels -> chunks of 2; fill with ones: rows shifted in from outside must be 0.
    x = torch.ones(1, 10, 6, 4)
    shifted = shift_channel_groups(x, dim=2)
    assert torch.all(shifted[:, 0:2, -2:] == 0) and torch.all(shifted[:, 0:2, :-2] == 1)  # up by 2
    assert torch.all(shifted[:, 2:4, -1:] == 0) and torch.all(shifted[:, 2:4, :-1] == 1)  # up by 1
    assert torch.equal(shifted[:, 4:6], x[:, 4:6])  # the middle group stays
    assert torch.all(shifted[:, 8:10, :2] == 0) and torch.all(shifted[:, 8:10, 2:] == 1)  # down by 2


def test_shifted_mlp_reaches_three_pixels_each_way():
    # shift +-2 along H, 3x3 depthwise (+-1), shift +-2 along W: a token sees rows and
    # columns within +-3 (the shifts reach beyond the conv's +-1) and nothing further.
    torch.manual_seed(0)
    mlp = ShiftedMLP(10)
    h = w = 11
    tokens = torch.randn(1, h * w, 10, requires_grad=True)
    mlp(tokens, h, w)[0, 5 * w + 5].sum().backward()
    reach = tokens.grad[0].abs().sum(-1).reshape(h, w) > 0
    rows, cols = torch.nonzero(reach, as_tuple=True)
    assert rows.min().item() == 2 and rows.max().item() == 8
    assert cols.min().item() == 2 and cols.max().item() == 8


def test_skips_are_added_not_concatenated():
    torch.manual_seed(0)
    model = UNeXt().eval()
    seen = {}

    def keep(name):
        return lambda module, args, out: seen.__setitem__(name, (args, out))

    model.token_encoder[0].register_forward_hook(keep("t4"))
    model.token_up[0].register_forward_hook(keep("up"))
    model.token_decoder[0].register_forward_hook(keep("decoder"))
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 96))
    skip, up, decoder_input = seen["t4"][1], seen["up"][1], seen["decoder"][0][0]
    assert decoder_input.shape == skip.shape == (1, 160, 4, 6)
    torch.testing.assert_close(decoder_input, up + skip)


def test_stage_widths_and_resolutions():
    model = UNeXt().eval()
    x = torch.randn(1, 1, 64, 96)
    shapes = []
    with torch.no_grad():
        for stage in [*model.encoder, *model.token_encoder]:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 32, 48), (32, 16, 24), (128, 8, 12), (160, 4, 6), (256, 2, 3)]


def test_paper_parameter_count_matches_the_published_size():
    params = _count(create_model("unext", "paper"))
    assert abs(params - 1.47e6) / 1.47e6 < 0.10, params


def test_compact_is_the_paper_network():
    assert _count(create_model("unext", "compact")) == _count(create_model("unext", "paper"))


def test_multi_class_logits():
    model = create_model("unext", "compact", out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 64)).shape == (2, 3, 32, 64)


def test_input_not_divisible_by_32_says_how_to_fix_it():
    model = create_model("unext", "compact")
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 1, 48, 64))
