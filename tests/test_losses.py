"""Training losses: Dice + BCE and the boundary loss (Kervadec et al. 2019)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetometry.training.config import TrainConfig
from fetometry.training.losses import boundary_loss, dice_bce_loss, segmentation_loss, signed_distance


def disc(h: int = 64, w: int = 80, *, cx: float = 40.0, cy: float = 32.0, r: float = 16.0) -> torch.Tensor:
    y, x = np.mgrid[:h, :w]
    return torch.from_numpy(((x - cx) ** 2 + (y - cy) ** 2 <= r**2).astype(np.float32))[None, None]


def logits_of(mask: torch.Tensor, sharpness: float = 8.0) -> torch.Tensor:
    return (mask * 2 - 1) * sharpness


def test_signed_distance_is_positive_outside_and_not_positive_inside():
    target = disc()
    phi = signed_distance(target)[0, 0].numpy()
    inside = target[0, 0].numpy() > 0.5
    assert (phi[~inside] > 0).all() and (phi[inside] <= 0).all()
    # Outside: the distance to the nearest head pixel; the centre lies r - 1 inside the edge.
    assert phi[32, 40 + 16 + 10] == pytest.approx(10.0, abs=0.01)
    assert phi[32, 40] == pytest.approx(-(np.hypot(16, 1) - 1), abs=0.01)  # the nearest background: (+-1, 16) away


def test_signed_distance_of_an_image_without_boundary_is_zero():
    assert not signed_distance(torch.zeros(2, 1, 8, 8)).any()
    assert not signed_distance(torch.ones(1, 1, 8, 8)).any()


def test_the_boundary_loss_is_least_at_the_target_and_weighs_a_leak_by_its_distance():
    target = disc()
    exact = boundary_loss(logits_of(target), target)
    assert exact < boundary_loss(logits_of(disc(cx=42.0)), target)  # 2 px off

    def leaked(x0: int) -> torch.Tensor:
        leak = target.clone()
        leak[..., 28:36, x0 : x0 + 4] = 1.0  # a 4x8 blob outside the outline, at x0 - 56 px
        return logits_of(leak)

    near, far = leaked(58), leaked(74)  # 2-6 px and 18-22 px outside
    region = [float(dice_bce_loss(x, target) - dice_bce_loss(logits_of(target), target)) for x in (near, far)]
    boundary = [float(boundary_loss(x, target) - exact) for x in (near, far)]
    assert region[1] == pytest.approx(region[0], rel=0.01)  # Dice + BCE: the same cost anywhere
    assert boundary[1] > 4 * boundary[0] > 0  # the boundary loss: by distance


def test_segmentation_loss_without_a_boundary_weight_is_dice_bce():
    target, logits = disc(), torch.randn(1, 1, 64, 80)
    assert torch.equal(segmentation_loss(logits, target), dice_bce_loss(logits, target))
    assert segmentation_loss(logits, target, boundary_weight=0.01) == pytest.approx(
        float(dice_bce_loss(logits, target) + 0.01 * boundary_loss(logits, target)), rel=1e-6
    )


def test_the_boundary_loss_has_a_gradient():
    target = disc()
    logits = torch.zeros(1, 1, 64, 80, requires_grad=True)
    boundary_loss(logits, target).backward()
    grad = logits.grad[0, 0].numpy()
    inside = target[0, 0].numpy() > 0.5
    # Descending pushes probability up inside (negative distance) and down outside.
    assert (grad[~inside] > 0).all() and (grad[inside][np.abs(grad[inside]) > 0] < 0).all()


def test_a_negative_boundary_weight_is_refused():
    with pytest.raises(ValueError, match="boundary_weight"):
        TrainConfig.from_dict({"boundary_weight": -0.1})
