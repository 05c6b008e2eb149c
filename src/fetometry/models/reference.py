"""The benchmark's reference row: MONAI's stock ``AttentionUnet``, not one of the five.

What a user gets without this project: ``monai.networks.nets.AttentionUnet`` with
channels 16..256 and strides 2 (four downsamplings), trained with a plain recipe
(configs/reference-monai-attention-unet.toml: Dice + cross-entropy, AdamW at a constant
rate, flips only, 20 epochs on a 224x320 canvas). `fetometry benchmark` scores it beside
the five, so every gain of theirs is a measured ratio.

MONAI is an optional dependency (``pip install monai``); it is imported only when this
model is built.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from fetometry.models.base import SegmentationNetwork
from fetometry.models.registry import register_model

REFERENCE_CHANNELS = (16, 32, 64, 128, 256)

#: The plain recipe of the reference row (configs/reference-monai-attention-unet.toml holds
#: the same; a test keeps them equal). `fetometry benchmark --train-reference` trains it.
REFERENCE_RECIPE = {
    "model": "monai-attention-unet",
    "variant": "reference",
    "canvas_h": 224,
    "canvas_w": 320,
    "epochs": 20,
    "batch_size": 8,
    "lr": 1e-3,
    "min_lr": 1e-3,  # constant: no warm-up, no cosine decay
    "weight_decay": 1e-2,  # torch's AdamW default
    "warmup_epochs": 0.0,
    "bce_weight": 1.0,  # Dice + cross-entropy with equal weights, as MONAI's DiceCELoss
    "augmentation": "flips",
    "val_fraction": 0.2,
    "split_seed": 0,
    "seed": 0,
    "bf16": True,
    "channels_last": True,
}


class MonaiAttentionUNet(SegmentationNetwork):
    """MONAI's AttentionUnet as shipped (2D, channels 16..256, strides 2), unchanged.

    images (B, in_channels, H, W) -> logits (B, out_channels, H, W); H and W divisible by
    2 ** (len(channels) - 1), 16 for the reference channels."""

    #: Default Grad-CAM layer (fetometry.explain): MONAI's attention-gated up level at 1/4
    #: of the input (net.model = [full-size conv block, level-1 AttentionLayer, head]; each
    #: level's ``submodule[1]`` is the next level's AttentionLayer), as for our five.
    cam_target_layer: ClassVar[str] = "net.model.1.submodule.1.submodule.1"
    #: For the reference channels; an instance holds 2 ** (number of strides) of its own.
    size_divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels=REFERENCE_CHANNELS):
        super().__init__()
        try:
            from monai.networks.nets import AttentionUnet
        except ImportError as error:  # the reference row is optional
            raise ImportError("the reference model needs MONAI: pip install monai") from error
        self.in_channels = in_channels
        self.size_divisor = 2 ** (len(channels) - 1)
        self.net = AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        self.check_input(images)
        return self.net(images)


@register_model("monai-attention-unet", "reference", size_divisor=16, reference=True)
def monai_attention_unet_reference(**kwargs) -> MonaiAttentionUNet:
    """MONAI AttentionUnet 16..256, stock (the benchmark's reference row)."""
    return MonaiAttentionUNet(**kwargs)
