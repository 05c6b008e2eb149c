"""TransUNet-specific checks: position-embedding resizing, weight standardisation,
the hybrid encoder's skips, published size.

The contract every model keeps (shapes, gradients, save/load) is tested by the shared
model test class; this file covers what only TransUNet has.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fetometry.models import create_model
from fetometry.models.transunet import COMPACT, StdConv2d, TransUNet


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def paper_on_meta() -> TransUNet:
    """The paper model built once, on the meta device: full structure, no 420 MB of
    weights and no arithmetic (shapes and counts only)."""
    with torch.device("meta"):
        return create_model("transunet", "paper")


@pytest.fixture(scope="module")
def compact_224() -> TransUNet:
    torch.manual_seed(0)
    return create_model("transunet", "compact", img_size=(224, 224)).eval()


def test_paper_parameter_count_matches_the_published_size(paper_on_meta):
    params = _count(paper_on_meta)
    assert abs(params - 105.3e6) / 105.3e6 < 0.10, params


def test_paper_is_vit_b_on_a_1_16_grid(paper_on_meta):
    vit = paper_on_meta.transformer
    assert len(vit.layers) == 12 and vit.layers[0].attn.heads == 12
    assert vit.position.shape == (1, 14 * 14, 768)  # built for 224x224
    assert vit.layers[0].mlp[0].out_features == 3072


def test_paper_accepts_a_non_square_input_on_meta(paper_on_meta):
    with torch.device("meta"):
        out = paper_on_meta(torch.empty(1, 1, 256, 384))
    assert out.shape == (1, 1, 256, 384)


def test_compact_fits_a_cpu_budget():
    assert _count(create_model("transunet", "compact")) < 8e6


def test_position_embeddings_resize_bilinearly_in_row_major_order(compact_224):
    encoder = compact_224.transformer
    assert encoder.grid == (14, 14)
    rows, cols = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    # Embedding = row + 100 * col in every channel: bilinear resizing keeps it linear.
    value = (rows + 100 * cols).reshape(1, 196, 1).expand(1, 196, encoder.position.shape[-1])
    with torch.no_grad():
        encoder.position.copy_(value)
        resized = encoder.position_embeddings(4, 6)
    assert resized.shape == (1, 24, encoder.position.shape[-1])
    # align_corners=False: output index i samples source (i + 0.5) * 14 / n - 0.5.
    src_r = (torch.arange(4.0) + 0.5) * 14 / 4 - 0.5
    src_c = (torch.arange(6.0) + 0.5) * 14 / 6 - 0.5
    expected = (src_r[:, None] + 100 * src_c[None, :]).reshape(24)
    torch.testing.assert_close(resized[0, :, 0], expected)
    assert encoder.position_embeddings(14, 14) is encoder.position


def test_model_built_for_224_runs_at_64x96(compact_224):
    with torch.no_grad():
        out = compact_224(torch.randn(2, 1, 64, 96))
    assert out.shape == (2, 1, 64, 96)


def test_weight_standardised_conv_has_zero_mean_unit_variance_kernels():
    torch.manual_seed(0)
    conv = StdConv2d(3, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(torch.arange(8.0).reshape(8, 1, 1, 1))  # far from standard
    w = conv.standardized_weight()
    torch.testing.assert_close(w.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.var(dim=(1, 2, 3), unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    # Hence the output ignores a per-channel affine change of the raw kernel.
    x = torch.randn(1, 3, 8, 8)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.7)
    torch.testing.assert_close(conv(x), before, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(before, F.conv2d(x, conv.weight, padding=1))


def test_every_cnn_conv_is_weight_standardised(paper_on_meta):
    convs = [m for m in paper_on_meta.cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, StdConv2d) for m in convs)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in paper_on_meta.cnn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in paper_on_meta.cnn.modules())


def test_hybrid_encoder_skips_sit_at_1_8_1_4_1_2(compact_224):
    width = COMPACT.resnet_width
    with torch.no_grad():
        deepest, skips = compact_224.cnn(torch.randn(1, 1, 64, 96))
    assert deepest.shape == (1, 16 * width, 4, 6)
    assert [tuple(s.shape[1:]) for s in skips] == [(8 * width, 8, 12), (4 * width, 16, 24), (width, 32, 48)]


def test_last_decoder_block_has_no_skip(paper_on_meta):
    in_channels = [block.conv1[0].in_channels for block in paper_on_meta.decoder]
    # 512 + 512 (1/8), 256 + 256 (1/4), 128 + 64 (1/2), 64 + nothing
    assert in_channels == [1024, 512, 192, 64]


def test_multi_class_logits():
    model = TransUNet(out_channels=4, config=COMPACT).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 4, 32, 48)


def test_input_not_divisible_by_16_says_how_to_fix_it(compact_224):
    with pytest.raises(ValueError, match="divisible by 16"):
        compact_224(torch.randn(1, 1, 40, 64))
