"""The diffusion sampler: a denoiser network in, segmentation probabilities out.

    sampler = DiffusionSampler(model)                     # MedSegDiffV2, or its ONNX twin
    probability = sampler.predict_proba(images)           # what the Predictor calls
    probability, spread = sampler.sample(images, steps=10, ensemble=5, generator=g)

As MONAI's ``DiffusionInferer`` or lucidrains' ``GaussianDiffusion(model)``: the network
(``fetometry.models``) predicts the noise; the reverse process lives here, on the
inference side: a few-step DDIM (Song et al. 2021), an ensemble of samples per image and
their fusion. The schedule is the one the network trained with
(``fetometry.models.diffusion_schedule``).

What the sampler needs from the network (a ``sampled`` ``SegmentationNetwork``):
``prepare_condition(images)`` (the condition, computed once per image, with
``.repeat(n)``), ``predict_noise(x_t, images, t, condition)``, ``alphas_cumprod``,
``timesteps``, ``out_channels``, ``check_input`` and the defaults ``default_steps``,
``default_ensemble``, ``eta`` and ``noise_seed`` (read at call time, so that changing
``model.noise_seed`` takes effect at once).

Deviations from the paper (MedSegDiff-V2), on purpose:
1. Sampler: a few-step DDIM instead of 1000-step DDPM or DPM-Solver. Default eta = 0
   (deterministic given the initial noise: ensemble members differ only in their
   initial noise); ``eta > 0`` makes every step stochastic. The predicted x_0 is clipped
   to [-1, 1] at every step (as the official ``clip_denoised=True``).
2. Fusion: the ensemble is fused by the MEAN of the members' x_0 maps (mapped to [0, 1]),
   not by STAPLE; the per-pixel standard deviation of the members is returned as the
   spread (uncertainty map).
"""

from __future__ import annotations

import logging
import zlib

import torch
import torch.nn as nn

from fetometry.models.diffusion_schedule import ddim_timesteps, randn

log = logging.getLogger(__name__)


class DiffusionSampler:
    """DDIM over ``network``; ``steps`` / ``ensemble`` / ``eta`` / ``noise_seed`` left None
    take the network's defaults when called."""

    def __init__(
        self,
        network: nn.Module,
        *,
        steps: int | None = None,
        ensemble: int | None = None,
        eta: float | None = None,
        noise_seed: int | None = None,
    ):
        self.network = network
        self.steps = steps
        self.ensemble = ensemble
        self.eta = eta
        self.noise_seed = noise_seed

    # ---- settings ------------------------------------------------------------------
    @property
    def default_steps(self) -> int:
        return self.network.default_steps if self.steps is None else self.steps

    @property
    def default_ensemble(self) -> int:
        return self.network.default_ensemble if self.ensemble is None else self.ensemble

    def _seed(self) -> int:
        return self.network.noise_seed if self.noise_seed is None else self.noise_seed

    # ---- sampling ------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        images: torch.Tensor,
        *,
        steps: int | None = None,
        ensemble: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM-sample ``ensemble`` masks per image in ``steps`` steps and fuse them.

        Returns (probability, spread), both (B, out_channels, H, W) float32: the mean of
        the members' x_0 mapped to [0, 1], and their per-pixel standard deviation (0 for
        an ensemble of one). The condition network runs once per image; members differ
        in their initial noise (and, with eta > 0, in the noise of every step). Noise
        comes from ``generator`` when given: same generator state, same result.
        ``initial_noise`` (B * ensemble, out_channels, H, W), image-major, replaces the
        first draw. With several classes each channel is its own mask in [0, 1] (not
        normalised to sum 1).
        """
        network = self.network
        network.check_input(images)
        steps = self.default_steps if steps is None else steps
        ensemble = self.default_ensemble if ensemble is None else ensemble
        eta = (network.eta if self.eta is None else self.eta) if eta is None else eta
        if ensemble < 1:
            raise ValueError(f"ensemble={ensemble}: draw at least one sample")
        if eta < 0:
            raise ValueError(f"eta={eta}: use eta >= 0 (0 = deterministic DDIM)")
        b, _, h, w = images.shape
        device = images.device
        condition = network.prepare_condition(images).repeat(ensemble)
        images = images.repeat_interleave(ensemble, 0)
        shape = (b * ensemble, network.out_channels, h, w)
        if initial_noise is not None and tuple(initial_noise.shape) != shape:
            raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}; expected {shape}")
        x = initial_noise.to(device) if initial_noise is not None else randn(shape, generator, device)
        schedule = ddim_timesteps(steps, network.timesteps)
        alphas_cumprod = network.alphas_cumprod
        log.debug("DDIM: %d images x %d members, timesteps %s, eta %.2f", b, ensemble, schedule, eta)
        for i, t in enumerate(schedule):
            a = alphas_cumprod[t]
            a_prev = alphas_cumprod[schedule[i + 1]] if i + 1 < len(schedule) else torch.ones_like(a)
            eps = network.predict_noise(
                x, images, torch.full((x.shape[0],), t, device=device, dtype=torch.long), condition
            )
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and i + 1 < len(schedule):
                x = x + sigma * randn(shape, generator, device)
        members = ((x + 1) / 2).clamp(0, 1).view(b, ensemble, network.out_channels, h, w)
        return members.mean(1), members.std(1, unbiased=False)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W) probabilities: ``sample`` with the default steps and
        ensemble, reproducibly. Each image's starting noise is seeded by ``noise_seed``
        and the image's own pixels, so an image gets the same mask and HC alone or in any
        batch, run after run (a measurement must not change when it is repeated), while
        different images draw independent noise (one shared draw would shift every image
        the same way: with it, three seeds gave HC MAEs from 3.6 to 4.9 mm on HC18).
        DDIM with eta = 0, the default, draws no further noise; with eta > 0 the later
        draws come from a generator seeded with ``noise_seed``."""
        _, _, h, w = images.shape
        ensemble, steps = self.default_ensemble, self.default_steps
        noise = torch.cat(
            [
                torch.randn(
                    (ensemble, self.network.out_channels, h, w),
                    generator=torch.Generator().manual_seed(self.image_seed(image)),
                )
                for image in images
            ]
        )  # image-major: image i takes rows i*ensemble .. +ensemble
        generator = torch.Generator().manual_seed(self._seed())
        return self.sample(images, steps=steps, ensemble=ensemble, generator=generator, initial_noise=noise)[0]

    def image_seed(self, image: torch.Tensor) -> int:
        """A seed from ``noise_seed`` and the image's float32 pixels (CRC-32)."""
        pixels = image.detach().float().cpu().contiguous().numpy().tobytes()
        return zlib.crc32(pixels, self._seed() & 0xFFFFFFFF)
