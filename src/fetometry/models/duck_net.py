"""DUCK-Net (Dumitru, Peteleaza & Craciun, "Using DUCK-Net for polyp image segmentation",
Scientific Reports 13, 9803, 2023; official Keras code: github.com/RazvanDu/DUCK-Net), 2D.

Architecture (f = ``filters``; every 3x3/1x1/1x6/6x1 conv below is conv -> ReLU -> BN,
as in the official code, where each ``Conv2D(activation="relu")`` is followed by a BN):

- Residual-downsampling path: five 2x2 stride-2 convs applied straight to the input,
  chained (in -> 2f -> 4f -> 8f -> 16f -> 32f channels), linear (no activation, no BN).
- Encoder: a DUCK block at each of the five resolutions (f, 2f, 4f, 8f, 16f). After a
  level's DUCK block, a 2x2 stride-2 conv (linear) doubles the channels and halves the
  grid; the residual path's output at that depth is ADDED to it.
- Bottleneck (1/32 of the input): two residual blocks at 32f, then two at 16f.
- Decoder (five levels): nearest x2 upsampling, the encoder skip ADDED, a DUCK block
  that halves the channels (16f -> 8f -> 4f -> 2f -> f -> f).
- Head: a 1x1 conv to ``out_channels`` logits.

DUCK block (``duckv2`` in the official code): BN -> six parallel branches -> SUM -> BN.
Branches: (1) wide-scope, three 3x3 convs with dilation 1, 2, 3; (2) mid-scope, two 3x3
convs with dilation 1, 2; (3)-(5) one, two and three chained residual blocks;
(6) separated, a 1x6 conv then a 6x1 conv. Residual block: a 1x1 conv shortcut (ReLU,
no BN) plus two 3x3 conv-ReLU-BN, added, then BN.

Variants (size_divisor 32, five downsamplings):
- ``paper``: f = 17, the paper's smaller configuration (the paper also trains f = 34).
  38.87M trainable parameters (38.92M counting BN running statistics, as Keras's
  "Total params" does); 48.0 GFLOPs at 256x256 (FlopCounterMode, convs only,
  1 multiply-add = 2 FLOPs, i.e. 24.0 GMACs), 72.1 GFLOPs at 256x384.
- ``compact``: f = 4 for CPU training: 2.17M parameters, 2.7 GFLOPs at 256x256 and
  4.0 GFLOPs at the 256x384 training canvas (cost grows with f**2). FLOPs understate
  the CPU cost: DUCK-Net keeps a six-branch block (15 conv-ReLU-BN layers) at FULL
  resolution at the first and last levels, so memory-bound BN/ReLU/add work dominates.
  Measured on the shared 2-core CPU (busy, so rough): one Adam step, batch 4 at
  256x384, took about 8-10 s at f = 4 (2.1 GB peak RSS) vs 5-8 s for the compact
  Attention U-Net (1.7 GB) and 18-34 s at f = 6 (3.0 GB); f = 4 is the widest that
  stays near the other compact models' step time.

Deviations from the paper / official Keras code:
- No final sigmoid: the official model ends in ``Conv2D(out_classes, 1,
  activation="sigmoid")``; here the head returns logits (the project's contract) and the
  trainer's Dice + BCE loss and the predictor apply the sigmoid.
- BatchNorm ``momentum=0.1`` (PyTorch's default) instead of Keras's 0.99 (0.01 in
  PyTorch terms), so the running statistics settle within the short CPU schedules used
  here. ``eps=1e-3`` is Keras's, kept.
- The ``compact`` width (f = 4) is not in the paper (it trains f = 17 and 34).
- Any H, W divisible by 32 is accepted (the Keras model is built for one fixed input
  size); other sizes raise a ValueError that says how to fix them.

Kept from the official code (PyTorch's defaults differ, so stated here):
- Even 6-tap kernels: Keras ``padding="same"`` pads 5 per axis, 2 before and 3 after
  (TensorFlow puts the extra pixel at the end). ``SameConv2d`` does exactly that with an
  explicit asymmetric ``F.pad`` (left 2, right 3 for the 1x6 conv; top 2, bottom 3 for
  the 6x1), so sizes are kept and the alignment matches the original.
- Every conv has a bias; the block convs use He-uniform initialisation, the 2x2
  downsampling convs and the head Glorot-uniform (Keras's default); biases start at 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models.base import SegmentationNetwork
from fetometry.models.registry import register_model

#: Keras BatchNormalization default epsilon (the official code keeps it).
BN_EPS = 1e-3
#: Five stride-2 downsamplings: H and W must be multiples of 2**5.
SIZE_DIVISOR = 32


# ----------------------------------------------------------------------------- helpers


def same_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) zero padding that keeps a stride-1 axis's length, TensorFlow style.

    The total is ``dilation * (kernel_size - 1)``; for an odd total (even kernel) the
    extra pixel goes AFTER (right/bottom), as Keras ``padding="same"`` does.
    """
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Stride-1 conv with Keras-style 'same' padding, also for even kernels.

    Symmetric padding is left to the conv itself; an even kernel (e.g. 1x6) gets an
    explicit asymmetric ``F.pad`` first. Maps (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], dilation: int = 1):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        (top, bottom), (left, right) = same_padding(kh, dilation), same_padding(kw, dilation)
        symmetric = top == bottom and left == right
        super().__init__(
            in_channels, out_channels, (kh, kw), dilation=dilation, padding=(top, left) if symmetric else 0
        )
        #: F.pad order (left, right, top, bottom); None when the conv pads by itself.
        self.explicit_padding = None if symmetric else (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_padding is not None:
            x = F.pad(x, self.explicit_padding)
        return super().forward(x)


def conv_relu_bn(
    in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3, dilation: int = 1
) -> nn.Sequential:
    """Keras ``Conv2D(activation="relu")`` + ``BatchNormalization``: (B, C_in, H, W) -> (B, C_out, H, W)."""
    conv = SameConv2d(in_channels, out_channels, kernel_size, dilation)
    _he_uniform(conv)
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.BatchNorm2d(out_channels, eps=BN_EPS))


def downsample_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Linear 2x2 stride-2 conv: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2)
    _glorot_uniform(conv)
    return conv


def _he_uniform(conv: nn.Conv2d) -> None:
    # Keras "he_uniform": U(+-sqrt(6 / fan_in)), the official block convs' initialiser.
    nn.init.kaiming_uniform_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


def _glorot_uniform(conv: nn.Conv2d) -> None:
    # Keras's default initialiser, used where the official code names none.
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)


# ------------------------------------------------------------------------------ blocks


class ResidualBlock(nn.Module):
    """1x1 conv-ReLU shortcut + (3x3 conv-ReLU-BN x2), added, then BN.

    (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.shortcut = nn.Sequential(SameConv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))
        _he_uniform(self.shortcut[0])
        self.body = nn.Sequential(conv_relu_bn(in_channels, out_channels), conv_relu_bn(out_channels, out_channels))
        self.norm = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(x) + self.shortcut(x))


def residual_stack(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    """``depth`` chained residual blocks (the first one changes the channel count)."""
    return nn.Sequential(*(ResidualBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(depth)))


def dilated_stack(in_channels: int, out_channels: int, dilations: tuple[int, ...]) -> nn.Sequential:
    """Chained 3x3 conv-ReLU-BN layers with the given dilations (wide/mid-scope branches)."""
    return nn.Sequential(
        *(conv_relu_bn(in_channels if i == 0 else out_channels, out_channels, 3, d) for i, d in enumerate(dilations))
    )


def separated_branch(in_channels: int, out_channels: int, size: int = 6) -> nn.Sequential:
    """A 1 x size then size x 1 conv-ReLU-BN pair: a large receptive field cheaply."""
    return nn.Sequential(
        conv_relu_bn(in_channels, out_channels, (1, size)), conv_relu_bn(out_channels, out_channels, (size, 1))
    )


class DUCKBlock(nn.Module):
    """BN -> six parallel branches -> sum -> BN: (B, C_in, H, W) -> (B, C_out, H, W).

    Branch order: wide-scope (dilation 1, 2, 3), mid-scope (dilation 1, 2), one, two and
    three residual blocks, separated (1x6 then 6x1).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm_in = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.branches = nn.ModuleList(
            [
                dilated_stack(in_channels, out_channels, (1, 2, 3)),
                dilated_stack(in_channels, out_channels, (1, 2)),
                residual_stack(in_channels, out_channels, 1),
                residual_stack(in_channels, out_channels, 2),
                residual_stack(in_channels, out_channels, 3),
                separated_branch(in_channels, out_channels, 6),
            ]
        )
        self.norm_out = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(x)
        total = self.branches[0](x)
        for branch in self.branches[1:]:
            total = total + branch(x)  # running sum: one branch output alive at a time
        return self.norm_out(total)


# ------------------------------------------------------------------------------- model


class DUCKNet(SegmentationNetwork):
    """(B, in_channels, H, W) -> logits (B, out_channels, H, W); H and W divisible by 32.

    ``filters`` (f) is the width of the first level; level i has f * 2**i channels.
    """

    #: Default Grad-CAM layer (fetometry.explain): the decoder DUCK block at 1/4 of the input.
    cam_target_layer: ClassVar[str] = "decoder.2"
    size_divisor: ClassVar[int] = SIZE_DIVISOR

    def __init__(self, *, in_channels: int = 1, out_channels: int = 1, filters: int = 17):
        super().__init__()
        if filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters}")
        widths = [filters * 2**i for i in range(6)]  # f, 2f, 4f, 8f, 16f, 32f
        self.filters = filters
        self.in_channels = in_channels
        # Residual-downsampling path on the raw input: in -> 2f -> ... -> 32f.
        self.residual_path = nn.ModuleList(
            downsample_conv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[1:5], widths[1:])
        )
        # Level 0 sees the image; level i > 0 the 2x2 conv's output, already f * 2**i wide.
        self.encoder = nn.ModuleList(
            DUCKBlock(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[1:5], widths[:5])
        )
        self.downsample = nn.ModuleList(downsample_conv(widths[i], widths[i + 1]) for i in range(5))
        self.bottleneck = nn.Sequential(
            residual_stack(widths[5], widths[5], 2),
            residual_stack(widths[5], widths[4], 2),  # 32f, then 16f
        )
        # Decoder: 16f -> 8f -> 4f -> 2f -> f -> f (each input is upsampled + skip).
        self.decoder = nn.ModuleList(DUCKBlock(widths[i], widths[max(i - 1, 0)]) for i in (4, 3, 2, 1, 0))
        self.head = nn.Conv2d(filters, out_channels, kernel_size=1)
        _glorot_uniform(self.head)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C_in, H, W) -> (bottleneck input (B, 32f, H/32, W/32), skips at 1/1 .. 1/16)."""
        shortcut, h, skips = x, x, []
        for level, block in enumerate(self.encoder):
            h = block(h)
            skips.append(h)
            shortcut = self.residual_path[level](shortcut)
            h = self.downsample[level](h) + shortcut
        return h, skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> logits (B, out_channels, H, W) (no sigmoid)."""
        self.check_input(x)
        h, skips = self.encode(x)
        h = self.bottleneck(h)
        for block in self.decoder:
            h = block(F.interpolate(h, scale_factor=2.0, mode="nearest") + skips.pop())
        return self.head(h)


@register_model("duck-net", "paper", size_divisor=SIZE_DIVISOR)
def duck_net_paper(**kwargs) -> DUCKNet:
    """DUCK-Net with the paper's f = 17 (about 38.9M parameters)."""
    kwargs.setdefault("filters", 17)
    return DUCKNet(**kwargs)


@register_model("duck-net", "compact", size_divisor=SIZE_DIVISOR)
def duck_net_compact(**kwargs) -> DUCKNet:
    """DUCK-Net with f = 4 for CPU training (about 2.17M parameters)."""
    kwargs.setdefault("filters", 4)
    return DUCKNet(**kwargs)
