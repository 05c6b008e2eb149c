"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the
Pancreas", MIDL 2018, arXiv:1804.03999), 2D.

A U-Net whose skip connections pass through additive attention gates. Gate (paper
Fig. 2): theta(x) = 2x2 stride-2 conv on the skip x (down to the gating grid),
phi(g) = 1x1 conv on the coarser gating signal g, q = psi(ReLU(theta + phi)) with psi a
1x1 conv to one channel, alpha = sigmoid(q) resampled (bilinear) to x's grid, output
alpha * x. Encoder blocks are two 3x3 conv-BN-ReLU; decoder upsamples with bilinear x2 +
3x3 conv-BN-ReLU (as the widely used 2D port), concatenates the gated skip and applies
two 3x3 conv-BN-ReLU. A 1x1 conv gives the logits.

Variants:
- ``paper``: widths 64, 128, 256, 512, 1024 (the published 2D configuration).
- ``compact``: widths 16, 32, 64, 128, 256 for CPU training (the only deviation: 1/4 of
  the widths, about 1/16 of the parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models.base import SegmentationNetwork
from fetometry.models.blocks import conv_bn_relu
from fetometry.models.registry import register_model


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay 2018, Eq. 1-2): returns the skip x scaled by alpha."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1, bias=True)
        self.out = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, Cx, H, W) skip; g: (B, Cg, H/2, W/2) gating. Returns (gated x, alpha (B,1,H,W))."""
        theta = self.theta(x)
        phi = F.interpolate(self.phi(g), size=theta.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        alpha = F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(x * alpha), alpha


class UpBlock(nn.Module):
    """Bilinear x2 + conv, attention-gated skip, concatenation, double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.gate = AttentionGate(skip_channels, in_channels, max(skip_channels // 2, 1))
        self.up = conv_bn_relu(in_channels, out_channels)
        self.fuse = DoubleConv(skip_channels + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gated, _ = self.gate(skip, x)
        up = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([gated, up], dim=1))


class AttentionUNet(SegmentationNetwork):
    """(B, in_channels, H, W) -> logits (B, out_channels, H, W); H and W divisible by
    2 ** (len(channels) - 1), 16 for the five registered widths."""

    #: Default Grad-CAM layer (fetometry.explain): the decoder block at 1/4 of the input.
    cam_target_layer: ClassVar[str] = "decoders.-3"
    #: For five widths; an instance holds 2 ** (number of max-pools) of its own widths.
    size_divisor = 16

    def __init__(
        self, *, in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (64, 128, 256, 512, 1024)
    ):
        super().__init__()
        channels = list(channels)
        self.in_channels = in_channels
        self.size_divisor = 2 ** (len(channels) - 1)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in channels:
            self.encoders.append(DoubleConv(previous, width))
            previous = width
        self.decoders = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i]) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return self.head(x)


@register_model("attention-unet", "paper", size_divisor=16)
def attention_unet_paper(**kwargs) -> AttentionUNet:
    """Attention U-Net with the published widths 64..1024."""
    return AttentionUNet(channels=(64, 128, 256, 512, 1024), **kwargs)


@register_model("attention-unet", "compact", size_divisor=16)
def attention_unet_compact(**kwargs) -> AttentionUNet:
    """Attention U-Net with widths 16..256 (1/4 of the paper's) for CPU training."""
    return AttentionUNet(channels=(16, 32, 64, 128, 256), **kwargs)
