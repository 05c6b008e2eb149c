"""UNeXt (Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
MICCAI 2022, arXiv:2203.04967), 2D.

Layout (widths are those of the authors' released code, ``UNext`` in
github.com/jeya-maria-jose/UNeXt-pytorch; the paper's text lists 32, 64, 128, 160, 256):

    encoder  conv 3x3 -> BN -> max-pool 2 -> ReLU        16 ch   1/2   (skip t1)
             conv 3x3 -> BN -> max-pool 2 -> ReLU        32 ch   1/4   (skip t2)
             conv 3x3 -> BN -> max-pool 2 -> ReLU       128 ch   1/8   (skip t3)
             tokenized-MLP stage (patch embed s2, block, LN)  160 ch  1/16 (skip t4)
             bottleneck tokenized-MLP stage                  256 ch  1/32
    decoder  conv 3x3 256->160 -> BN -> bilinear x2 -> ReLU, + t4, shifted block, LN
             conv 3x3 160->128 -> BN -> bilinear x2 -> ReLU, + t3, shifted block, LN
             conv 3x3 128->32  -> BN -> bilinear x2 -> ReLU, + t2
             conv 3x3  32->16  -> BN -> bilinear x2 -> ReLU, + t1
             conv 3x3  16->16        -> bilinear x2 -> ReLU   (no BN, as released)
    head     1x1 conv 16 -> out_channels (logits)

Skips are joined by ADDITION (paper Sec. 2), which is why each decoder conv maps to the
width of the skip it meets.

Tokenized-MLP stage (paper Fig. 2 and Sec. 2.2, order taken from the released code): an
overlapping patch embedding (3x3 conv, stride 2, then LayerNorm) makes tokens; one shifted
block applies, as a residual ``x + MLP(LN(x))``:
shift channel groups along H -> FC -> 3x3 depthwise conv -> GELU -> shift along W -> FC.
A LayerNorm closes the stage. The shift splits the channels into 5 groups and moves group
g by (g - 2) pixels with zero fill (``shift_channel_groups``). The paper's text describes
the width shift first; the released code (whose weights give the published numbers)
shifts along H first, and so does this file. The MLP hidden width equals the token width
(released ``mlp_ratio=1``).

Deviations from the released code:
- ``in_channels`` / ``out_channels`` are options (released: 3 in, ``num_classes`` out);
  with 1 input channel there are 288 fewer weights.
- Dropout and drop-path, both 0 in the released defaults, are left out.
- Bilinear upsampling uses ``align_corners=False`` explicitly (the released default).
- Released token-block initialisation is kept (trunc-normal 0.02 for FC, He fan-out
  normal for the convs inside token stages); the conv stages keep PyTorch's default.

Size: ``paper`` has about 1.47M parameters (1.47M published) and about 0.57 GMACs at
256x256 (what the paper calls 0.57 GFLOPs). ``compact`` is the same network: UNeXt is
already small and fast enough for CPU training, so nothing is cut.

The input's H and W must be multiples of 32 (three max-pools + two stride-2 embeddings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models.base import SegmentationNetwork
from fetometry.models.registry import register_model

#: Channel groups per shift; group g moves by g - SHIFT_GROUPS // 2 pixels (released value).
SHIFT_GROUPS = 5


# ---------------------------------------------------------------------------- helpers


def shift_channel_groups(x: torch.Tensor, dim: int, groups: int = SHIFT_GROUPS) -> torch.Tensor:
    """Split (B, C, H, W) into ``groups`` channel chunks (``torch.chunk`` sizes) and shift
    chunk g by ``g - groups // 2`` pixels along ``dim`` (2 = H, 3 = W), filling with zeros.

    This is the paper's "shift": it mixes neighbouring positions before the per-token FC,
    giving the MLP a local receptive field along one axis.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 (H) or 3 (W), got {dim}")
    half = groups // 2
    shifted = [_shift_zero_fill(chunk, g - half, dim) for g, chunk in enumerate(torch.chunk(x, groups, dim=1))]
    return torch.cat(shifted, dim=1)


def _shift_zero_fill(x: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    """Move x by ``offset`` pixels along ``dim`` (positive = towards higher index), zero-filled."""
    size = x.shape[dim]
    if offset == 0:
        return x
    if abs(offset) >= size:
        return torch.zeros_like(x)
    kept = x.narrow(dim, 0, size - offset) if offset > 0 else x.narrow(dim, -offset, size + offset)
    pad_shape = list(x.shape)
    pad_shape[dim] = abs(offset)
    zeros = x.new_zeros(pad_shape)
    return torch.cat([zeros, kept] if offset > 0 else [kept, zeros], dim=dim)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def _grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def _init_token_weights(module: nn.Module) -> None:
    """Released UNeXt initialisation for the token stages."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------- blocks


class ShiftedMLP(nn.Module):
    """shift along H -> FC -> depthwise 3x3 -> GELU -> shift along W -> FC, on a token grid."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """tokens (B, h*w, dim) -> (B, h*w, dim)."""
        x = shift_channel_groups(_grid(tokens, h, w), dim=2)
        x = self.fc1(_tokens(x))
        x = self.act(self.dwconv(_grid(x, h, w)))
        x = shift_channel_groups(x, dim=3)
        return self.fc2(_tokens(x))


class ShiftedBlock(nn.Module):
    """Residual tokenized MLP: ``x + ShiftedMLP(LayerNorm(x))`` on (B, h*w, dim) tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens), h, w)


class TokenizedStage(nn.Module):
    """Encoder token stage: overlapping patch embedding (3x3 conv stride 2 + LN), a shifted
    block, LayerNorm. (B, C_in, H, W) -> (B, dim, H/2, W/2)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(dim)
        self.block = ShiftedBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h, w = x.shape[-2:]
        tokens = self.block(self.embed_norm(_tokens(x)), h, w)
        return _grid(self.norm(tokens), h, w)


class ConvDown(nn.Sequential):
    """Encoder conv stage: 3x3 conv -> BN -> max-pool 2 -> ReLU. (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )


class ConvUp(nn.Module):
    """Decoder step: 3x3 conv (-> BN) -> bilinear x2 -> ReLU. (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int, *, batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.norm(self.conv(x)), scale_factor=2, mode="bilinear", align_corners=False)
        return F.relu(x)


class TokenizedDecoderStage(nn.Module):
    """Decoder token stage: a shifted block then LayerNorm on (B, dim, H, W), shape kept."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = ShiftedBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return _grid(self.norm(self.block(_tokens(x), h, w)), h, w)


# ---------------------------------------------------------------------------- model


class UNeXt(SegmentationNetwork):
    """(B, in_channels, H, W) -> logits (B, out_channels, H, W); H and W divisible by 32.

    ``channels``: the five widths (three conv stages, two token stages), e.g. the released
    (16, 32, 128, 160, 256).
    """

    #: Default Grad-CAM layer (fetometry.explain): the decoder conv stage to 1/4 of the input.
    cam_target_layer: ClassVar[str] = "conv_up.0"
    #: Three max-pools and two stride-2 patch embeddings.
    size_divisor: ClassVar[int] = 32

    def __init__(
        self, *, in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (16, 32, 128, 160, 256)
    ):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"UNeXt needs 5 widths (3 conv + 2 token stages), got {list(channels)}")
        c1, c2, c3, c4, c5 = channels
        self.in_channels = in_channels
        self.encoder = nn.ModuleList([ConvDown(in_channels, c1), ConvDown(c1, c2), ConvDown(c2, c3)])
        self.token_encoder = nn.ModuleList([TokenizedStage(c3, c4), TokenizedStage(c4, c5)])
        # Each decoder conv maps to the width of the skip it is added to.
        self.token_up = nn.ModuleList([ConvUp(c5, c4), ConvUp(c4, c3)])
        self.token_decoder = nn.ModuleList([TokenizedDecoderStage(c4), TokenizedDecoderStage(c3)])
        self.conv_up = nn.ModuleList([ConvUp(c3, c2), ConvUp(c2, c1), ConvUp(c1, c1, batch_norm=False)])
        self.head = nn.Conv2d(c1, out_channels, kernel_size=1)
        self.token_encoder.apply(_init_token_weights)
        self.token_decoder.apply(_init_token_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(x)
        skips = []
        for stage in [*self.encoder, *self.token_encoder]:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for up, stage in zip(self.token_up, self.token_decoder):
            x = stage(up(x) + skips.pop())
        for up in self.conv_up:
            x = up(x)
            if skips:  # the last upsampling (to full size) has no skip
                x = x + skips.pop()
        return self.head(x)


@register_model("unext", "paper", size_divisor=32)
def unext_paper(**kwargs) -> UNeXt:
    """UNeXt with the released widths 16, 32, 128, 160, 256 (about 1.47M parameters)."""
    return UNeXt(channels=(16, 32, 128, 160, 256), **kwargs)


@register_model("unext", "compact", size_divisor=32)
def unext_compact(**kwargs) -> UNeXt:
    """UNeXt, same as paper (already CPU-sized: about 1.47M parameters)."""
    return UNeXt(channels=(16, 32, 128, 160, 256), **kwargs)
