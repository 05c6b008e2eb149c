"""The noise schedule of a denoising-diffusion segmenter, shared by training and sampling.

Training (the model's ``training_loss``, ``q_sample``) and sampling
(``fetometry.inference.diffusion.DiffusionSampler``) read the same schedule; it lives in
``models`` so that models never import inference code. A 1000-step linear beta schedule
(the official MedSegDiff ``--diffusion_steps 1000 --noise_schedule linear``); masks live
in [-1, 1] in diffusion space.
"""

from __future__ import annotations

import torch
import torch.nn as nn

#: Training timesteps and the official linear schedule (beta 1e-4 .. 0.02 at T=1000).
TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def linear_beta_schedule(timesteps: int) -> torch.Tensor:
    """(T,) float64 betas, linear; the official scaling keeps 1e-4..0.02 at T = 1000."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * BETA_START, scale * BETA_END, timesteps, dtype=torch.float64)


def ddim_timesteps(steps: int, timesteps: int = TIMESTEPS) -> list[int]:
    """``steps`` distinct timesteps from T-1 down to 0 (one step: just T-1)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps={steps}: use between 1 and {timesteps} sampling steps")
    if steps == 1:
        return [timesteps - 1]
    grid = torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(grid))


def register_schedule(module: nn.Module, timesteps: int) -> None:
    """Give ``module`` the buffers ``alphas_cumprod``, ``sqrt_alphas_cumprod`` and
    ``sqrt_one_minus_alphas_cumprod`` (T,) float32, computed in float64.

    They are not persistent: the schedule is a function of ``timesteps``, so the state
    dict (and the shipped weights) hold none of it; as buffers they follow ``.to(device)``.
    """
    alphas_cumprod = torch.cumprod(1.0 - linear_beta_schedule(timesteps), dim=0)
    module.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
    module.register_buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt().float(), persistent=False)
    module.register_buffer("sqrt_one_minus_alphas_cumprod", (1 - alphas_cumprod).sqrt().float(), persistent=False)


def per_sample(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values (T,) indexed by t (B,) -> (B, 1, 1, 1) for broadcasting over images."""
    return values[t].float().view(-1, 1, 1, 1)


def q_sample(module: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process on ``module``'s schedule: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
    return per_sample(module.sqrt_alphas_cumprod, t) * x0 + per_sample(module.sqrt_one_minus_alphas_cumprod, t) * noise


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise from ``generator`` (on its own device) or the global RNG."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)
