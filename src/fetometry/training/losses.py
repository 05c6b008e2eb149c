"""Segmentation losses on logits (B, 1, H, W) and soft targets in [0, 1]."""

from __future__ import annotations

import cv2
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


def signed_distance(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) targets -> the signed Euclidean distance (px) of every pixel to the
    boundary of ``target >= 0.5``: positive outside, zero or negative inside, as Kervadec
    et al. define phi_G (their code: d(outside) on the outside, -(d(inside) - 1) inside).
    An image without head or without background gets zeros (no boundary to measure from)."""
    masks = (target.detach().float().cpu().numpy() >= 0.5).astype("uint8")
    distances = torch.zeros(masks.shape, dtype=torch.float32)
    for index, mask in enumerate(masks[:, 0]):
        if mask.all() or not mask.any():
            continue
        outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        distances[index, 0] = torch.from_numpy(outside * (1 - mask) - (inside - 1) * mask)
    return distances.to(target.device)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The boundary loss of Kervadec et al. (MIDL 2019; Medical Image Analysis 67, 2021):
    mean over pixels of the predicted probability times the target's signed distance
    (``signed_distance``, canvas px). Probability outside the head costs in proportion to
    its distance from the outline, so a leak into the fluid far from the skull costs more
    than a pixel's doubt at the edge; its minimum is the target itself."""
    prob = torch.sigmoid(logits.float())
    return (prob * signed_distance(target)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, *, bce_weight: float = 0.5, boundary_weight: float = 0.0
) -> torch.Tensor:
    """Dice + weighted BCE, plus ``boundary_weight`` x the boundary loss (0: none). The
    boundary term is a fixed weight, not Kervadec's rising schedule: it is for fine-tuning
    a network that the region losses already trained, where their schedule's reason (a
    boundary loss alone cannot start from a random network) does not arise."""
    loss = dice_bce_loss(logits, target, bce_weight=bce_weight)
    if boundary_weight:
        loss = loss + boundary_weight * boundary_loss(logits, target)
    return loss
