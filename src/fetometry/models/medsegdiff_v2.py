"""MedSegDiff-V2 (Wu et al., "MedSegDiff-V2: Diffusion-Based Medical Image Segmentation
with Transformer", AAAI 2024, arXiv:2301.11798), 2D, written for fetometry.

Segmentation as conditional denoising diffusion. Two networks:

- a CONDITION U-Net segments the raw image on its own (its logits are supervised by the
  anchor loss, Dice + cross-entropy) and hands over its decoded features and its deepest
  embedding;
- a DIFFUSION U-Net takes the noisy mask ``x_t`` (concatenated with the image, as the
  paper's Fig. 1) and the timestep ``t`` and predicts the noise ``eps``.

Two conditions join them (paper, "Method"):

- Anchor condition: a decoded feature ``f_c`` of the condition U-Net is fused into the
  diffusion encoder's first level ``f_d`` by Uncertain Spatial Attention (U-SA):
  ``f_anc = max(f_c, f_c * k_gauss)`` with a Gaussian kernel of learnable mean and
  spread (it widens the anchor where the condition model is unsure), then
  ``f_d' = f_d + sigmoid(f_anc . conv(f_d))``.
- Semantic condition: the Spectrum-Space Transformer (SS-Former) cross-attends the
  diffusion bottleneck (queries) to the condition model's deepest embedding (keys and
  values) in the Fourier domain. Each block filters the spectra with a Neural Band-pass
  Filter (NBP-Filter): a learnable, timestep-adaptive, non-negative gain over radial
  frequency bands, so the two embeddings are compared, and the values passed on, only in
  the bands the filter lets through. The official code has no SS-Former; this one follows
  the paper's description (our reading of it, see the deviations).

``MedSegDiffV2`` holds the two networks, the noise predictor over them and the
training loss, on the shared 1000-step linear beta schedule
(``fetometry.models.diffusion_schedule``). The reverse process (a few-step DDIM that
draws an ensemble of masks and fuses them) is inference code:
``fetometry.inference.diffusion.DiffusionSampler(model)``, as MONAI's
``DiffusionInferer`` or lucidrains' ``GaussianDiffusion(model)``. Masks live in [-1, 1]
in diffusion space.

A SAMPLED segmenter (``fetometry.models.base.SegmentationNetwork``, ``sampled = True``):
it defines ``training_loss(images, masks) -> scalar`` and ``predict_proba(images) ->
(B, C, H, W)`` (the sampler with this model's defaults). ``forward(images)`` returns the
CONDITION network's logits, so that ``model(images)`` and the Grad-CAM tooling work; it
is NOT the diffusion prediction (use ``predict_proba`` / the sampler for that). Its ONNX
export (two graphs, real-valued FFTs) is ``fetometry.models.medsegdiff_v2_onnx``, reached
through the class hooks ``export_onnx_graphs`` and ``onnx_runtime``.

Variants:
- ``paper``: the official scale (README "MedSegDiff-B" settings, ``--num_channels 128
  --num_res_blocks 2 --attention_resolutions 16``, channel_mult (1, 1, 2, 2, 4, 4) at
  256 px) for the diffusion U-Net; the condition U-Net is the official nnU-Net-style
  network with 32 base features and 5 poolings (widths 32..480). Attention at 1/16 and
  in the bottleneck, a 2-block SS-Former, DDIM 50 steps, ensemble 5.
- ``compact``: for the CPU. The diffusion U-Net works on 4x4 patches of the mask
  (space-to-depth, widths 16, 32, 64 at 1/4..1/16 of the image) and finishes with a
  per-pixel head at full resolution; condition U-Net widths 8..128; one SS-Former block;
  DDIM 10 steps, ensemble 5.

Deviations from the paper (and the official code), on purpose:
1. Sampler: a few-step DDIM (Song et al. 2021) instead of 1000-step DDPM or DPM-Solver
   (``fetometry.inference.diffusion``, which lists its deviations).
2. Fusion: the MEAN of the ensemble's x_0 maps, not STAPLE (the same module).
3. Noise prediction: by default (``noise_skip=True``) the noise is predicted as
   eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) F(x_t, I, t), F the diffusion U-Net's output
   (a fixed skip from x_t: the v-parameterisation of Salimans & Ho 2022). The loss is
   still the MSE on the noise. Why: with F = eps (the paper) the U-Net must copy the
   noise at high t and its x_0 there stays poor, and few-step DDIM starts from those
   steps; on 64 phantoms (64x96, 1500 steps, one seed) the plain version's 10-step
   samples collapsed (Dice 0.09) while the skip version's held 0.83 on unseen phantoms.
   ``noise_skip=False`` gives the paper's plain noise predictor.
4. SS-Former: the paper describes a frequency-domain cross-attention chain with a
   timestep-adaptive band-pass filter (no code exists); here the attention is over
   CHANNELS (transposed attention, XCiT style) with the filtered spectra as the tokens,
   and the filter is a piecewise-linear gain over ``bands`` radial frequency bands, per
   channel, shifted per band by the timestep embedding (resolution-independent). Every
   block queries with the diffusion stream and attends to the same condition embedding.
5. U-SA: the ``conv`` on the diffusion feature is a 1x1 convolution; the anchor is first
   projected to the diffusion width by a 1x1 convolution. The anchor and the embedding
   are detached from the diffusion loss (as the official code does): the condition
   network learns from the anchor loss only.
6. Losses: diffusion MSE on the noise + ``anchor_weight`` (default 1.0) x anchor loss
   (soft Dice + BCE for one class, soft Dice + CE for several) on the condition logits
   at EVERY step (the paper applies the anchor loss at intervals of alpha steps; the
   official code adds 10 x MSE(sigmoid) instead). No learned variance (official
   ``--learn_sigma True``), no EMA (the trainer's business).
7. Blocks: ResBlocks are GroupNorm-SiLU-conv3x3 twice with an additive time embedding
   (guided-diffusion style, also in the condition U-Net, without time); upsampling is a
   3x3 conv at the coarse grid followed by nearest x2 (cheaper than conv after); the
   last layer is a per-pixel MLP, FiLM-ed by the timestep, on the decoder features,
   x_t and the image (instead of one 3x3 conv).
8. ``compact`` only: the diffusion U-Net sees the mask and image as 4x4 patches
   (space-to-depth) and the per-pixel head works on the pixel-shuffled decoder features;
   the anchor is therefore the condition decoder's 1/4-scale feature (the paper fuses
   the last, full-resolution one, as ``paper`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fetometry.models.base import SegmentationNetwork
from fetometry.models.diffusion_schedule import (  # noqa: F401 (ddim_timesteps, linear_beta_schedule: re-exported)
    TIMESTEPS,
    ddim_timesteps,
    linear_beta_schedule,
    per_sample,
    q_sample,
    randn,
    register_schedule,
)
from fetometry.models.registry import register_model

# --------------------------------------------------------------------------- helpers


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (1 group for tiny widths)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (residual branches start as the identity)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps: t (B,) -> (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def anchor_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """The paper's anchor loss, soft Dice + cross-entropy, on logits (B, C, H, W).

    One class: sigmoid Dice + BCE. Several: softmax Dice + CE on one-hot or soft targets.
    (Kept here rather than imported from ``fetometry.training``: models never import
    training code.)
    """
    logits, target = logits.float(), target.float()
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits)
        cross_entropy = F.binary_cross_entropy_with_logits(logits, target)
    else:
        prob = torch.softmax(logits, dim=1)
        cross_entropy = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    overlap = (prob * target).flatten(2).sum(-1)
    total = prob.flatten(2).sum(-1) + target.flatten(2).sum(-1)
    dice = 1 - (2 * overlap + eps) / (total + eps)
    return dice.mean() + cross_entropy


# --------------------------------------------------------------------------- blocks


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, plus an additive time embedding when given.

    x (B, in, H, W), time (B, time_dim) or None -> (B, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None = None):
        super().__init__()
        self.block1 = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels)) if time_dim else None
        self.block2 = nn.Sequential(
            group_norm(out_channels), nn.SiLU(), zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.time is not None:
            h = h + self.time(time)[:, :, None, None].to(h.dtype)
        return self.skip(x) + self.block2(h)


class Downsample(nn.Sequential):
    """3x3 stride-2 conv: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1))


class Upsample(nn.Sequential):
    """3x3 conv on the coarse grid, then nearest x2: (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.Upsample(scale_factor=2, mode="nearest")
        )


class SelfAttention(nn.Module):
    """Multi-head spatial self-attention with a residual (guided-diffusion's AttentionBlock).

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.to_out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (
            self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.to_out(out.transpose(-1, -2).reshape(b, c, h, w))


class UncertainSpatialAttention(nn.Module):
    """U-SA: fuses an anchor feature of the condition model into a diffusion feature.

    ``relax(anchor)``: a = 1x1 conv(anchor), f_anc = max(a, a * k_gauss), k_gauss a
    per-channel Gaussian with learnable centre offset and spread (depthwise ``kernel_size``
    conv, normalised to sum 1). ``forward(f_d, f_anc)``: f_d + sigmoid(f_anc * conv1x1(f_d)).
    anchor (B, A, H, W) -> f_anc (B, C, H, W); f_d (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, anchor_channels: int, channels: int, *, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}: use an odd Gaussian kernel size")
        self.kernel_size = kernel_size
        self.to_anchor = nn.Conv2d(anchor_channels, channels, 1)
        self.log_sigma = nn.Parameter(torch.zeros(channels))  # spread, px (exp(0) = 1 px)
        self.offset = nn.Parameter(torch.zeros(channels, 2))  # centre (dy, dx), px
        self.conv = nn.Conv2d(channels, channels, 1)

    def gaussian_kernel(self) -> torch.Tensor:
        """(C, 1, k, k) non-negative kernels, each summing to 1."""
        r = self.kernel_size // 2
        grid = torch.arange(-r, r + 1, dtype=torch.float32, device=self.offset.device)
        dy = grid[None, :, None] - self.offset[:, 0, None, None]
        dx = grid[None, None, :] - self.offset[:, 1, None, None]
        sigma = self.log_sigma.exp()[:, None, None]
        kernel = torch.exp(-(dy**2 + dx**2) / (2 * sigma**2))
        return (kernel / kernel.sum((1, 2), keepdim=True))[:, None]

    def relax(self, anchor: torch.Tensor) -> torch.Tensor:
        a = self.to_anchor(anchor)
        kernel = self.gaussian_kernel().to(a.dtype)
        smoothed = F.conv2d(a, kernel, padding=self.kernel_size // 2, groups=a.shape[1])
        return torch.maximum(a, smoothed)

    def forward(self, f_d: torch.Tensor, f_anc: torch.Tensor) -> torch.Tensor:
        return f_d + torch.sigmoid(f_anc * self.conv(f_d))


class TorchFFT:
    """The spectral operations of the SS-Former, on ``torch.fft``; spectra are real
    (..., 2) pairs (real, imaginary). ONNX has no complex tensors: the export swaps in an
    exact real-valued DFT with the same interface (``medsegdiff_v2_onnx.RealFFT``)
    through the ``fft`` attribute of the modules below, for the export only."""

    @staticmethod
    def rfft2(z: torch.Tensor) -> torch.Tensor:
        """(..., H, W) real -> (..., H, W//2+1, 2), orthonormal."""
        return torch.view_as_real(torch.fft.rfft2(z, norm="ortho"))

    @staticmethod
    def irfft2(spectrum: torch.Tensor, s: tuple) -> torch.Tensor:
        """(..., H, W//2+1, 2) -> (..., H, W) real, orthonormal."""
        return torch.fft.irfft2(torch.view_as_complex(spectrum.contiguous()), s=s, norm="ortho")

    @staticmethod
    def fftfreq(n, *, device=None) -> torch.Tensor:
        return torch.fft.fftfreq(n, device=device)

    @staticmethod
    def rfftfreq(n, *, device=None) -> torch.Tensor:
        return torch.fft.rfftfreq(n, device=device)


class NeuralBandPassFilter(nn.Module):
    """NBP-Filter: a learnable, timestep-adaptive, non-negative gain on the 2D spectrum.

    The gain of channel c at radial frequency rho (0 at DC, 1 at the corner (1/2, 1/2)
    cycles/px) is the piecewise-linear interpolation of ``bands`` values
    ReLU(base[c, k] + shift_k(time)) at rho_k = k / (bands - 1). ``base`` starts at 1
    (all-pass); ``shift`` is a linear map of the timestep embedding, zero at start.
    time (B, time_dim), grid (H, W) of the real signal -> gain (B, C, H, W//2 + 1).
    """

    #: The spectral operations (``TorchFFT``; the ONNX export sets a real-valued DFT).
    fft: ClassVar[type] = TorchFFT

    def __init__(self, channels: int, time_dim: int, *, bands: int = 8):
        super().__init__()
        if bands < 2:
            raise ValueError(f"bands={bands}: use at least 2 frequency bands")
        self.bands = bands
        self.base = nn.Parameter(torch.ones(channels, bands))
        self.shift = zero_init(nn.Linear(time_dim, bands))

    def band_gains(self, time: torch.Tensor) -> torch.Tensor:
        """(B, C, bands) gains >= 0."""
        return F.relu(self.base[None] + self.shift(F.silu(time.float()))[:, None, :])

    def radial_frequency(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(H, W//2 + 1) radial frequency of the rfft2 bins, scaled to [0, 1]."""
        fy = self.fft.fftfreq(height, device=device)[:, None]
        fx = self.fft.rfftfreq(width, device=device)[None, :]
        return torch.sqrt(fy**2 + fx**2) / math.sqrt(0.5)

    def forward(self, time: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        gains = self.band_gains(time)
        position = self.radial_frequency(*grid, device=gains.device) * (self.bands - 1)
        low = position.floor().long().clamp(max=self.bands - 2)
        weight = position - low
        return gains[:, :, low] * (1 - weight) + gains[:, :, low + 1] * weight


class SpectralCrossAttention(nn.Module):
    """Cross-attention in the Fourier domain with an NBP-Filter (one SS-Former attention).

    q = Wq x, k = Wk c, v = Wv c (1x1 convs); Q, K, V = rfft2 (orthonormal); with the
    filter gain A: affinity M = softmax(tau * cos(A.Q_i, A.K_j)) between the channels i, j
    of a head (the filtered spectra, real and imaginary parts, are the tokens), output
    spectrum O_i = sum_j M_ij A.V_j, attended = irfft2(O). A filter that blocks a band
    removes it from the output; a filter that blocks everything gives zeros.
    x (B, C, H, W), context (B, Cc, H, W), time (B, time_dim) -> (B, C, H, W).
    """

    #: The spectral operations (``TorchFFT``; the ONNX export sets a real-valued DFT).
    fft: ClassVar[type] = TorchFFT

    def __init__(self, channels: int, context_channels: int, time_dim: int, *, heads: int = 4, bands: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels={channels} must be divisible by heads={heads}")
        self.heads = heads
        self.to_q = nn.Conv2d(channels, channels, 1, bias=False)
        self.to_k = nn.Conv2d(context_channels, channels, 1, bias=False)
        self.to_v = nn.Conv2d(context_channels, channels, 1, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.band_pass = NeuralBandPassFilter(channels, time_dim, bands=bands)
        self.to_out = nn.Conv2d(channels, channels, 1)

    def attend(self, x: torch.Tensor, context: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The attended features before the output projection, (B, C, H, W) float32."""
        b, c, h, w = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        with torch.autocast(device_type=x.device.type, enabled=False):  # FFTs in float32
            gain = self.band_pass(time, (h, w))[..., None]  # (B, C, H, W//2+1, 1)

            def spectrum(z: torch.Tensor) -> torch.Tensor:
                """(B, C, H, W) -> filtered (B, heads, C/heads, 2 * H * (W//2+1)) real."""
                z = self.fft.rfft2(z.float()) * gain
                return z.reshape(b, self.heads, c // self.heads, -1)

            q_f, k_f, v_f = spectrum(q), spectrum(k), spectrum(v)
            affinity = F.normalize(q_f, dim=-1) @ F.normalize(k_f, dim=-1).transpose(-1, -2)
            attention = torch.softmax(self.temperature * affinity, dim=-1)
            out = (attention @ v_f).reshape(b, c, h, w // 2 + 1, 2)
            return self.fft.irfft2(out, s=(h, w))

    def forward(self, x: torch.Tensor, context: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.to_out(self.attend(x, context, time).to(x.dtype))


class SSFormerBlock(nn.Module):
    """Pre-norm spectral cross-attention + feed-forward, both residual. (B, C, H, W) -> same."""

    def __init__(self, channels: int, context_channels: int, time_dim: int, *, heads: int, bands: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.norm_context = nn.GroupNorm(1, context_channels)
        self.attention = SpectralCrossAttention(channels, context_channels, time_dim, heads=heads, bands=bands)
        self.feed_forward = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.Conv2d(channels, 2 * channels, 1),
            nn.GELU(),
            zero_init(nn.Conv2d(2 * channels, channels, 1)),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm(x), self.norm_context(context), time).to(x.dtype)
        return x + self.feed_forward(x)


class SSFormer(nn.Module):
    """Spectrum-Space Transformer: a chain of ``depth`` SS-Former blocks.

    x: diffusion embedding (B, C, h, w); context: condition embedding (B, Cc, h', w'),
    resampled to (h, w) if it differs; time (B, time_dim) -> (B, C, h, w).
    """

    def __init__(self, channels: int, context_channels: int, time_dim: int, *, depth: int, heads: int, bands: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            SSFormerBlock(channels, context_channels, time_dim, heads=heads, bands=bands) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        if context.shape[-2:] != x.shape[-2:]:
            context = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        # Channels-first on purpose: in torch 2.13 (CPU) the backward of GroupNorm on a
        # channels_last input that needs no gradient (the detached condition embedding)
        # crashes the process; the tensor is tiny, the copy costs nothing.
        context = context.contiguous()
        for block in self.blocks:
            x = block(x, context, time)
        return x


# --------------------------------------------------------------------------- networks


@dataclass
class ConditionOutput:
    """What the condition U-Net hands over.

    logits: (B, C_out, H, W); features[i]: decoded feature at scale 1/2**i, (B, ch_i,
    H/2**i, W/2**i), the last one being the deepest embedding; embedding: features[-1].
    """

    logits: torch.Tensor
    features: list[torch.Tensor]

    @property
    def embedding(self) -> torch.Tensor:
        return self.features[-1]


class ConditionUNet(nn.Module):
    """U-Net that segments the raw image: (B, in, H, W) -> ConditionOutput (logits + features)."""

    def __init__(self, *, in_channels: int, out_channels: int, channels: Sequence[int], num_res_blocks: int = 1):
        super().__init__()
        channels = list(channels)
        self.channels = channels
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = channels[0]
        for i, width in enumerate(channels):
            self.encoder.append(
                nn.ModuleList(ResBlock(previous if j == 0 else width, width) for j in range(num_res_blocks))
            )
            previous = width
            if i < len(channels) - 1:
                self.downs.append(Downsample(width, width))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(Upsample(channels[i + 1], channels[i]))
            self.decoder.append(
                nn.ModuleList(
                    ResBlock(2 * channels[i] if j == 0 else channels[i], channels[i]) for j in range(num_res_blocks)
                )
            )
        self.head = nn.Sequential(group_norm(channels[0]), nn.SiLU(), nn.Conv2d(channels[0], out_channels, 1))

    def forward(self, images: torch.Tensor) -> ConditionOutput:
        h = self.stem(images)
        skips = []
        for i, blocks in enumerate(self.encoder):
            for block in blocks:
                h = block(h)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        features = [h]
        for up, blocks in zip(self.ups, self.decoder):
            h = torch.cat([up(h), skips.pop()], dim=1)
            for block in blocks:
                h = block(h)
            features.append(h)
        return ConditionOutput(self.head(h), features[::-1])


@dataclass
class PreparedCondition:
    """The condition, ready for the diffusion U-Net (computed once per image, reused at
    every sampling step): anchors[i] = f_anc for diffusion level i, (B, ch_i, h_i, w_i),
    and the semantic embedding (B, Cc, hc, wc)."""

    anchors: list[torch.Tensor]
    embedding: torch.Tensor

    def repeat(self, times: int) -> "PreparedCondition":
        """Repeat each image's condition ``times`` times along the batch (ensembles)."""
        return PreparedCondition(
            [a.repeat_interleave(times, 0) for a in self.anchors], self.embedding.repeat_interleave(times, 0)
        )


class DiffusionUNet(nn.Module):
    """Noise predictor eps(x_t, image, t | condition).

    x_t (B, C_mask, H, W) in diffusion space, images (B, C_img, H, W), t (B,) integer
    timesteps, condition from ``prepare`` -> eps (B, C_mask, H, W).

    The mask and image enter as ``patch_size`` x ``patch_size`` patches (space-to-depth;
    1 = per pixel), U-SA fuses an anchor into each of the first ``len(anchor_channels)``
    encoder levels (the paper: the first one only), the SS-Former the semantic embedding
    in the bottleneck, and a per-pixel MLP (FiLM-ed by the timestep) on the
    pixel-shuffled decoder features, x_t and the image gives the noise.
    """

    def __init__(
        self,
        *,
        mask_channels: int,
        image_channels: int,
        channels: Sequence[int],
        anchor_channels: Sequence[int],
        context_channels: int,
        num_res_blocks: int = 1,
        patch_size: int = 1,
        attention_levels: Sequence[int] = (),
        heads: int = 4,
        bands: int = 8,
        ss_depth: int = 1,
        head_channels: int = 8,
    ):
        super().__init__()
        channels = list(channels)
        self.channels = channels
        self.patch_size = patch_size
        self.base = channels[0]
        time_dim = 4 * channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        p2 = patch_size * patch_size
        self.stem = nn.Conv2d(p2 * (mask_channels + image_channels), channels[0], 3, padding=1)
        if not 1 <= len(anchor_channels) <= len(channels) - 1:
            raise ValueError(f"anchor at 1 to {len(channels) - 1} levels, got {len(anchor_channels)}")
        self.anchor_attention = nn.ModuleList(
            UncertainSpatialAttention(a, width) for a, width in zip(anchor_channels, channels)
        )

        def attention(level: int, width: int) -> nn.Module:
            return SelfAttention(width, heads) if level in attention_levels else nn.Identity()

        self.encoder = nn.ModuleList()
        self.encoder_attention = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = channels[0]
        for i, width in enumerate(channels):
            self.encoder.append(
                nn.ModuleList(ResBlock(previous if j == 0 else width, width, time_dim) for j in range(num_res_blocks))
            )
            self.encoder_attention.append(attention(i, width))
            previous = width
            if i < len(channels) - 1:
                self.downs.append(Downsample(width, width))
        deepest = channels[-1]
        self.mid1 = ResBlock(deepest, deepest, time_dim)
        self.mid_attention = SelfAttention(deepest, heads) if attention_levels else nn.Identity()
        self.ss_former = SSFormer(deepest, context_channels, time_dim, depth=ss_depth, heads=heads, bands=bands)
        self.mid2 = ResBlock(deepest, deepest, time_dim)
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.decoder_attention = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(Upsample(channels[i + 1], channels[i]))
            self.decoder.append(
                nn.ModuleList(
                    ResBlock(2 * channels[i] if j == 0 else channels[i], channels[i], time_dim)
                    for j in range(num_res_blocks)
                )
            )
            self.decoder_attention.append(attention(i, channels[i]))
        # Per-pixel head: decoder features pixel-shuffled to ``head_channels`` per pixel,
        # plus a 1x1 conv of (x_t, image), FiLM by the timestep, SiLU, 1x1 conv -> eps.
        self.to_pixels = nn.Sequential(
            group_norm(channels[0]),
            nn.SiLU(),
            nn.Conv2d(channels[0], p2 * head_channels, 1),
            nn.PixelShuffle(patch_size),
        )
        self.pixel_skip = nn.Conv2d(mask_channels + image_channels, head_channels, 1)
        self.pixel_film = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * head_channels))
        self.pixel_out = zero_init(nn.Conv2d(head_channels, mask_channels, 1))

    def prepare(self, condition: ConditionOutput, *, first_anchor_level: int, detach: bool = True) -> PreparedCondition:
        """Relax the anchors (U-SA) and pick the embedding; detached by default.

        Diffusion level i takes the condition feature of level ``first_anchor_level + i``
        (the one on the same grid).
        """
        features = condition.features
        if detach:
            features = [f.detach() for f in features]
        anchors = [usa.relax(features[first_anchor_level + i]) for i, usa in enumerate(self.anchor_attention)]
        return PreparedCondition(anchors, features[-1])

    def forward(
        self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor, condition: PreparedCondition
    ) -> torch.Tensor:
        time = self.time_mlp(timestep_embedding(t, self.base).to(x_t.device))
        h = self.stem(F.pixel_unshuffle(torch.cat([x_t, images.to(x_t.dtype)], dim=1), self.patch_size))
        skips = []
        for i, (blocks, attention) in enumerate(zip(self.encoder, self.encoder_attention)):
            for block in blocks:
                h = block(h, time)
            h = attention(h)
            if i < len(self.anchor_attention):
                h = self.anchor_attention[i](h, condition.anchors[i].to(h.dtype))
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        h = self.mid2(self.ss_former(self.mid_attention(self.mid1(h, time)), condition.embedding, time), time)
        for up, blocks, attention in zip(self.ups, self.decoder, self.decoder_attention):
            h = torch.cat([up(h), skips.pop()], dim=1)
            for block in blocks:
                h = block(h, time)
            h = attention(h)
        hidden = self.to_pixels(h)
        hidden = hidden + self.pixel_skip(torch.cat([x_t, images.to(x_t.dtype)], dim=1)).to(hidden.dtype)
        scale, shift = self.pixel_film(time)[:, :, None, None].to(hidden.dtype).chunk(2, dim=1)
        return self.pixel_out(F.silu(hidden * (1 + scale) + shift))


# --------------------------------------------------------------------------- diffusion


class MedSegDiffV2(SegmentationNetwork):
    """MedSegDiff-V2: a condition and a diffusion U-Net, their noise predictor and loss.

    images (B, in_channels, H, W) in [0, 1]; masks (B, out_channels, H, W) in [0, 1]
    (mapped to [-1, 1] in diffusion space); H and W divisible by ``size_divisor``.

    Keyword-only options: ``in_channels``, ``out_channels`` (classes, one mask channel
    each), ``default_steps`` / ``default_ensemble`` (what ``predict_proba`` uses),
    ``eta`` (DDIM stochasticity, 0 = deterministic): the defaults of
    ``fetometry.inference.diffusion.DiffusionSampler``; ``anchor_weight`` (weight of the
    anchor loss), ``noise_skip`` (see ``predict_noise``), ``anchor_levels`` (diffusion
    levels that get a U-SA anchor, the paper: 1), ``patch_size`` (space-to-depth of the
    diffusion U-Net's input), the widths of the two U-Nets and the SS-Former settings
    (``heads``, ``bands``, ``ss_depth``).
    """

    #: Segments by sampling: ``training_loss`` and ``predict_proba`` are its own
    #: (fetometry.models.base.SegmentationNetwork).
    sampled: ClassVar[bool] = True
    #: Default Grad-CAM layer (fetometry.explain): the condition U-Net's last block at 1/4
    #: of the input (the denoiser's default is fetometry.explain.cam.DENOISER_TARGET_LAYER).
    cam_target_layer: ClassVar[str] = "condition.decoder.-3.-1"
    #: For the default (paper) widths; an instance holds the value of its own widths and
    #: patch size (``compact``: 16).
    size_divisor = 32

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        condition_channels: Sequence[int] = (32, 64, 128, 256, 480, 480),
        diffusion_channels: Sequence[int] = (128, 128, 256, 256, 512, 512),
        num_res_blocks: int = 2,
        patch_size: int = 1,
        anchor_levels: int = 1,
        attention_levels: Sequence[int] = (4,),
        heads: int = 4,
        bands: int = 8,
        ss_depth: int = 2,
        head_channels: int = 32,
        timesteps: int = TIMESTEPS,
        anchor_weight: float = 1.0,
        default_steps: int = 50,
        default_ensemble: int = 5,
        eta: float = 0.0,
        noise_skip: bool = True,
    ):
        super().__init__()
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size={patch_size}: use a power of two (1 = no patches)")
        # Anchors are decoded condition features on the grids of the first diffusion levels.
        self.first_anchor_level = int(math.log2(patch_size))
        if self.first_anchor_level + anchor_levels > len(condition_channels) - 1:
            raise ValueError(
                f"patch_size={patch_size} with anchor_levels={anchor_levels} needs a condition U-Net with at least "
                f"{self.first_anchor_level + anchor_levels + 1} levels (it has {len(condition_channels)})"
            )
        if default_steps < 1 or default_ensemble < 1:
            raise ValueError("default_steps and default_ensemble must be >= 1")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.timesteps = timesteps
        self.anchor_weight = anchor_weight
        self.default_steps = default_steps
        self.default_ensemble = default_ensemble
        self.eta = eta
        self.noise_skip = noise_skip
        self.size_divisor = max(2 ** (len(condition_channels) - 1), patch_size * 2 ** (len(diffusion_channels) - 1))
        self.condition = ConditionUNet(
            in_channels=in_channels,
            out_channels=out_channels,
            channels=condition_channels,
            num_res_blocks=num_res_blocks,
        )
        self.diffusion = DiffusionUNet(
            mask_channels=out_channels,
            image_channels=in_channels,
            channels=diffusion_channels,
            anchor_channels=condition_channels[self.first_anchor_level : self.first_anchor_level + anchor_levels],
            context_channels=condition_channels[-1],
            num_res_blocks=num_res_blocks,
            patch_size=patch_size,
            attention_levels=attention_levels,
            heads=heads,
            bands=bands,
            ss_depth=ss_depth,
            head_channels=head_channels,
        )
        register_schedule(self, timesteps)  # alphas_cumprod & co., not in the state dict

    # ---- checks (images: the base's check_input) -------------------------------------
    def _check_masks(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        expected = (images.shape[0], self.out_channels, *images.shape[-2:])
        if tuple(masks.shape) != expected:
            raise ValueError(f"masks must be {expected} to match the images, got {tuple(masks.shape)}")
        if masks.min() < 0 or masks.max() > 1:
            raise ValueError("masks must hold values in [0, 1] (they are mapped to [-1, 1] inside)")

    # ---- networks ------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The CONDITION network's logits (B, out_channels, H, W), not the diffusion output.

        Gives ``model(images)`` and Grad-CAM something to work on; segment with
        ``predict_proba`` or ``fetometry.inference.diffusion.DiffusionSampler``.
        """
        self.check_input(images)
        return self.condition(images).logits

    def prepare_condition(self, images: torch.Tensor) -> PreparedCondition:
        """The condition of each image, computed once and reused at every sampling step."""
        return self.diffusion.prepare(self.condition(images), first_anchor_level=self.first_anchor_level)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, (B, C, H, W)."""
        return q_sample(self, x0, t, noise)

    def predict_noise(
        self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor, condition: PreparedCondition
    ) -> torch.Tensor:
        """eps_theta(x_t, I, t) (B, C, H, W) float32, from the diffusion U-Net's output F.

        ``noise_skip`` (default): eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) F, a fixed skip
        from x_t (the v-parameterisation of Salimans & Ho 2022): at high noise the U-Net
        then only has to supply the mask (x_0 = sqrt(abar) x_t - sqrt(1 - abar) F) instead
        of copying the noise. Without it, eps = F (the paper's plain noise predictor).
        """
        out = self.diffusion(x_t, images, t, condition).float()
        if self.noise_skip:
            out = (
                per_sample(self.sqrt_one_minus_alphas_cumprod, t) * x_t + per_sample(self.sqrt_alphas_cumprod, t) * out
            )
        return out

    # ---- training ------------------------------------------------------------------
    def loss_terms(
        self, images: torch.Tensor, masks: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """{"diffusion": noise MSE, "anchor": Dice + CE of the condition logits, "loss": total}.

        t ~ U{0..T-1} and the noise are drawn from ``generator`` (or the global RNG).
        """
        self.check_input(images)
        self._check_masks(images, masks)
        b = images.shape[0]
        rng_device = generator.device if generator is not None else images.device
        t = torch.randint(0, self.timesteps, (b,), generator=generator, device=rng_device).to(images.device)
        x0 = masks.float() * 2 - 1
        noise = randn(x0.shape, generator, images.device)
        condition = self.condition(images)
        prepared = self.diffusion.prepare(condition, first_anchor_level=self.first_anchor_level)
        x_t = self.q_sample(x0, t, noise)
        predicted = self.predict_noise(x_t, images, t, prepared)
        diffusion = F.mse_loss(predicted.float(), noise)
        anchor = anchor_loss(condition.logits, masks)
        return {"diffusion": diffusion, "anchor": anchor, "loss": diffusion + self.anchor_weight * anchor}

    def training_loss(
        self, images: torch.Tensor, masks: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scalar: diffusion MSE on the noise + ``anchor_weight`` x anchor loss."""
        return self.loss_terms(images, masks, generator=generator)["loss"]

    # ---- sampling (the inference-side sampler) -----------------------------------
    #: Mixed with each image's content into the seed of the noise ``predict_proba`` starts it from.
    noise_seed: int = 0

    def sampler(self, **settings) -> "DiffusionSampler":  # noqa: F821 (imported at call time)
        """``fetometry.inference.diffusion.DiffusionSampler`` over this model; imported at
        call time, so that importing the model never imports inference code."""
        from fetometry.inference.diffusion import DiffusionSampler

        return DiffusionSampler(self, **settings)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W) probabilities: the sampler's ``predict_proba`` (the
        default steps and ensemble, each image's noise seeded by its pixels)."""
        return self.sampler().predict_proba(images)

    def sample(self, images: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability, spread): ``DiffusionSampler(self).sample(images, **options)``."""
        return self.sampler().sample(images, **options)

    def image_seed(self, image: torch.Tensor) -> int:
        """The seed of ``image``'s starting noise (``DiffusionSampler.image_seed``)."""
        return self.sampler().image_seed(image)

    # ---- ONNX (fetometry.models.medsegdiff_v2_onnx) --------------------------------
    def export_onnx_graphs(self, out_path: str | Path, *, config: dict, verify: bool = True) -> list[Path]:
        """The condition and denoiser graphs (the sampler stays in Python)."""
        from fetometry.models.medsegdiff_v2_onnx import export_graphs

        return export_graphs(self, out_path, config=config, verify=verify)

    def onnx_runtime(self, condition_session, denoiser_session, info: dict) -> "MedSegDiffV2":
        """This model with its two networks replaced by the onnxruntime sessions."""
        from fetometry.models.medsegdiff_v2_onnx import over_sessions

        return over_sessions(self, condition_session, denoiser_session, info)


# --------------------------------------------------------------------------- variants

PAPER = dict(
    condition_channels=(32, 64, 128, 256, 480, 480),
    diffusion_channels=(128, 128, 256, 256, 512, 512),
    num_res_blocks=2,
    patch_size=1,
    anchor_levels=1,
    attention_levels=(4,),
    heads=4,
    bands=8,
    ss_depth=2,
    head_channels=32,
    default_steps=50,
    default_ensemble=5,
)

COMPACT = dict(
    condition_channels=(8, 16, 32, 64, 128),
    diffusion_channels=(16, 32, 64),
    num_res_blocks=1,
    patch_size=4,
    anchor_levels=1,
    attention_levels=(),
    heads=4,
    bands=8,
    ss_depth=1,
    head_channels=8,
    default_steps=10,
    default_ensemble=5,
)


@register_model("medsegdiff-v2", "paper", size_divisor=32)
def medsegdiff_v2_paper(**kwargs) -> MedSegDiffV2:
    """MedSegDiff-V2 at the official scale (diffusion 128..512, condition 32..480), DDIM 50 x 5."""
    return MedSegDiffV2(**{**PAPER, **kwargs})


@register_model("medsegdiff-v2", "compact", size_divisor=16)
def medsegdiff_v2_compact(**kwargs) -> MedSegDiffV2:
    """MedSegDiff-V2 for the CPU (4x4 patches, widths 16..64 / 8..128), DDIM 10 x 5."""
    return MedSegDiffV2(**{**COMPACT, **kwargs})
