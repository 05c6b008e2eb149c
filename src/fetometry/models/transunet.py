"""TransUNet (Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image
Segmentation", 2021, arXiv:2102.04306), the R50-ViT-B/16 hybrid, 2D.

Layout (paper Fig. 1 and Sec. 3; details as in the authors' released code,
github.com/Beckschen/TransUNet, which the published 105.3M parameters count):

    CNN      root: 7x7 conv stride 2 (64) -> GN -> ReLU          1/2   (skip, 64 ch)
             3x3 max-pool stride 2
             block1: 3 bottleneck units -> 256 ch               1/4   (skip, 256 ch)
             block2: 4 units (first strides 2) -> 512 ch         1/8   (skip, 512 ch)
             block3: 9 units (first strides 2) -> 1024 ch        1/16
    tokens   1x1 conv 1024 -> 768 ("patch" size 1 on the 1/16 grid), + learned position
             embeddings, dropout 0.1
    ViT-B    12 pre-norm layers: x + MSA(LN(x)), x + MLP(LN(x)); 12 heads, MLP 3072 (GELU),
             final LayerNorm
    decoder  3x3 conv-BN-ReLU 768 -> 512, then 4 blocks of
             (bilinear x2, concat skip, 2x [3x3 conv-BN-ReLU]) with 256, 128, 64, 16 ch;
             skips at 1/8, 1/4, 1/2; the last block (to full size) has none
    head     3x3 conv 16 -> out_channels (logits)

The CNN is ResNet-50-v2 in BiT style: every conv is weight-standardised
(``StdConv2d``: each output channel's kernel has zero mean and unit variance) and
normalised by GroupNorm (32 groups; the projection shortcut's GN has one group per
channel, as released). The bottleneck units are, as in the released code, conv -> GN ->
ReLU with the stride on the 3x3 conv and ReLU after the residual sum.

Position embeddings are learned for the token grid of ``img_size`` (the size given at
construction); an input whose grid differs gets them resized bilinearly, so any input
whose sides are multiples of 16 works (e.g. 256x384 on a model built for 224x224).

Deviations from the paper / released code:
- NO PRETRAINED WEIGHTS: the original starts from ImageNet-21k R50+ViT-B/16 weights,
  which cannot be downloaded here; everything is trained from scratch. Hence the
  initialisation: position embeddings trunc-normal(0.02) (released: zeros, overwritten by
  the checkpoint), Linear layers Xavier-uniform with zero bias (as released).
- ``in_channels`` is an option (released: a grey image is repeated to 3 channels); the
  head's ``out_channels`` is the number of classes.
- The max-pool after the root uses padding 1, so every feature map is exactly 1/2^k of
  the input; the released code pads it with 0 and zero-fills the skips to size instead.
- Position embeddings are interpolated for other grids (released: fixed to img_size).
- Query/key/value are one fused Linear (same parameter count as three) and attention
  uses ``F.scaled_dot_product_attention``.

Variants:
- ``paper``: as above, built for 224x224 (the paper's training size): about 105.3M
  parameters with 1 input channel and 1 class (published 105.3M) and 38.3 GMACs at
  256x256 (published 38.5 "GFLOPs", i.e. multiply-accumulates).
- ``compact`` (for a 2-core CPU at 256x384: about 5.4M parameters, 4.3 GMACs there,
  less than the compact Attention U-Net's 6.3): ResNet width 32
  instead of 64 (so 128/256/512 channels at 1/4, 1/8, 1/16), units (2, 2, 4) instead of
  (3, 4, 9), GroupNorm 16 groups instead of 32 (so each group still pools 2+ channels);
  ViT 4 layers, 256-d, 4 heads, MLP 1024 (instead of 12, 768, 12, 3072); decoder
  3x3 conv to 128 then blocks 64, 32, 16, 16 (instead of 512; 256, 128, 64, 16). Built
  for 256x384.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models.base import SegmentationNetwork
from fetometry.models.blocks import conv_bn_relu
from fetometry.models.registry import register_model


@dataclass(frozen=True)
class TransUNetConfig:
    """Every width and depth of the network (the variants differ only here)."""

    resnet_width: int = 64
    resnet_units: tuple[int, int, int] = (3, 4, 9)
    gn_groups: int = 32
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    head_channels: int = 512
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 16)
    img_size: tuple[int, int] = (224, 224)


PAPER = TransUNetConfig()
COMPACT = TransUNetConfig(
    resnet_width=32,
    resnet_units=(2, 2, 4),
    gn_groups=16,
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    mlp_dim=1024,
    head_channels=128,
    decoder_channels=(64, 32, 16, 16),
    img_size=(256, 384),
)

#: Total downsampling of the hybrid encoder (root stride 2, pool, two strided blocks).
SIZE_DIVISOR = 16


# ---------------------------------------------------------------------------- CNN (BiT ResNet)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (Qiao et al. 2019; BiT): each output channel's
    kernel is shifted to zero mean and scaled to unit variance before the convolution."""

    def standardized_weight(self) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (self.weight - mean) / torch.sqrt(var + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _std_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> StdConv2d:
    return StdConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


class Bottleneck(nn.Module):
    """BiT bottleneck unit as released: 1x1 -> 3x3 (stride) -> 1x1, each StdConv + GN,
    ReLU between and after the residual sum. (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, *, stride: int = 1, groups: int = 32):
        super().__init__()
        self.conv1 = _std_conv(in_channels, mid_channels, 1)
        self.gn1 = nn.GroupNorm(groups, mid_channels, eps=1e-6)
        self.conv2 = _std_conv(mid_channels, mid_channels, 3, stride)
        self.gn2 = nn.GroupNorm(groups, mid_channels, eps=1e-6)
        self.conv3 = _std_conv(mid_channels, out_channels, 1)
        self.gn3 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                _std_conv(in_channels, out_channels, 1, stride), nn.GroupNorm(out_channels, out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(self.shortcut(x) + y)


def _resnet_block(in_channels: int, width: int, units: int, *, stride: int, groups: int) -> nn.Sequential:
    """``units`` bottlenecks of mid width ``width`` and output 4*width; the first strides."""
    out_channels = 4 * width
    layers = [Bottleneck(in_channels, out_channels, width, stride=stride, groups=groups)]
    layers += [Bottleneck(out_channels, out_channels, width, groups=groups) for _ in range(units - 1)]
    return nn.Sequential(*layers)


class HybridCNN(nn.Module):
    """ResNet-50-v2 (BiT) up to block3. (B, C, H, W) -> (B, 16*width, H/16, W/16) and the
    skips [(B, 8*width, H/8, W/8), (B, 4*width, H/4, W/4), (B, width, H/2, W/2)]."""

    def __init__(self, in_channels: int, width: int, units: Sequence[int], groups: int):
        super().__init__()
        self.root = nn.Sequential(
            StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.GroupNorm(groups, width, eps=1e-6),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block1 = _resnet_block(width, width, units[0], stride=1, groups=groups)
        self.block2 = _resnet_block(4 * width, 2 * width, units[1], stride=2, groups=groups)
        self.block3 = _resnet_block(8 * width, 4 * width, units[2], stride=2, groups=groups)
        self.out_channels = 16 * width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        half = self.root(x)
        quarter = self.block1(self.pool(half))
        eighth = self.block2(quarter)
        return self.block3(eighth), [eighth, quarter, half]


# ---------------------------------------------------------------------------- ViT


class SelfAttention(nn.Module):
    """Multi-head self-attention on (B, N, D) tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> 3 x (B, heads, N, D/heads)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Pre-norm ViT layer: x + MSA(LN(x)), then x + MLP(LN(x)). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TokenEncoder(nn.Module):
    """1x1 patch embedding + learned position embeddings + ViT.
    (B, C, h, w) -> (B, D, h, w) with D the hidden size."""

    def __init__(self, in_channels: int, config: TransUNetConfig):
        super().__init__()
        self.grid = (config.img_size[0] // SIZE_DIVISOR, config.img_size[1] // SIZE_DIVISOR)
        dim = config.hidden_size
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(dim, config.num_heads, config.mlp_dim, config.dropout) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embeddings(self, h: int, w: int) -> torch.Tensor:
        """(1, h*w, D): the learned embeddings, resized bilinearly when (h, w) is not the
        construction grid (a 2D map keeps neighbours neighbours, unlike a 1D resize)."""
        if (h, w) == self.grid:
            return self.position
        grid = self.position.transpose(1, 2).reshape(1, -1, *self.grid)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        tokens = self.dropout(x.flatten(2).transpose(1, 2) + self.position_embeddings(h, w))
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, h, w)


# ---------------------------------------------------------------------------- decoder


class UpBlock(nn.Module):
    """Bilinear x2, concatenate the skip (if any), two conv-BN-ReLU.
    (B, C_in, h, w) [+ skip (B, C_skip, 2h, 2w)] -> (B, C_out, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        # align_corners=True as the released nn.UpsamplingBilinear2d.
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


# ---------------------------------------------------------------------------- model


class TransUNet(SegmentationNetwork):
    """(B, in_channels, H, W) -> logits (B, out_channels, H, W); H and W divisible by 16."""

    #: Default Grad-CAM layer (fetometry.explain): the decoder block at 1/4 of the input.
    cam_target_layer: ClassVar[str] = "decoder.1"
    size_divisor: ClassVar[int] = SIZE_DIVISOR

    def __init__(self, *, in_channels: int = 1, out_channels: int = 1, config: TransUNetConfig = PAPER):
        super().__init__()
        if any(side % SIZE_DIVISOR for side in config.img_size):
            raise ValueError(f"img_size {config.img_size} must have sides divisible by {SIZE_DIVISOR}")
        width = config.resnet_width
        self.in_channels = in_channels
        self.cnn = HybridCNN(in_channels, width, config.resnet_units, config.gn_groups)
        self.transformer = TokenEncoder(self.cnn.out_channels, config)
        self.conv_more = conv_bn_relu(config.hidden_size, config.head_channels)
        skip_channels = (8 * width, 4 * width, width, 0)  # 1/8, 1/4, 1/2, none at full size
        in_channels_per_block = (config.head_channels, *config.decoder_channels[:-1])
        self.decoder = nn.ModuleList(
            UpBlock(c_in, c_skip, c_out)
            for c_in, c_skip, c_out in zip(in_channels_per_block, skip_channels, config.decoder_channels)
        )
        self.head = nn.Conv2d(config.decoder_channels[-1], out_channels, 3, padding=1)
        self._init_transformer()

    def _init_transformer(self) -> None:
        for module in self.transformer.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.transformer.position, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(x)
        features, skips = self.cnn(x)
        x = self.conv_more(self.transformer(features))
        for block, skip in zip(self.decoder, [*skips, None]):
            x = block(x, skip)
        return self.head(x)


def _config(base: TransUNetConfig, img_size: Sequence[int] | None) -> TransUNetConfig:
    if img_size is None:
        return base
    return replace(base, img_size=(int(img_size[0]), int(img_size[1])))


@register_model("transunet", "paper", size_divisor=SIZE_DIVISOR)
def transunet_paper(*, img_size: Sequence[int] | None = None, **kwargs) -> TransUNet:
    """TransUNet R50-ViT-B/16 as published (about 105.3M parameters), from scratch."""
    return TransUNet(config=_config(PAPER, img_size), **kwargs)


@register_model("transunet", "compact", size_divisor=SIZE_DIVISOR)
def transunet_compact(*, img_size: Sequence[int] | None = None, **kwargs) -> TransUNet:
    """TransUNet reduced for CPU training (ResNet width 32, 4-layer 256-d ViT), from scratch."""
    return TransUNet(config=_config(COMPACT, img_size), **kwargs)
