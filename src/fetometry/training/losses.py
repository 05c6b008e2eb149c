"""Segmentation losses on logits (B, 1, H, W) and soft targets in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch (Milletari et al. 2016, V-Net)."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    overlap = (prob * target).sum(1)
    total = prob.sum(1) + target.sum(1)
    return (1 - (2 * overlap + eps) / (total + eps)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, *, bce_weight: float = 0.5) -> torch.Tensor:
    """Dice + weighted binary cross-entropy (UNeXt's 0.5*BCE + Dice)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return soft_dice_loss(logits, target) + bce_weight * bce
