"""Layers shared by several architectures (only the truly shared ones live here)."""

from __future__ import annotations

import torch.nn as nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
