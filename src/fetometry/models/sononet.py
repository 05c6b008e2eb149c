"""SonoNet-16 (Baumgartner et al., "SonoNet: Real-Time Detection and Localisation of
Fetal Standard Scan Planes in Freehand Ultrasound", IEEE TMI 36(11), 2017,
arXiv:1612.05601): a standard-plane CLASSIFIER, the project's second model kind.

Layout (the authors' Lasagne definition, ``SonoNet16`` in their
``reference_lasagne_models.py``): five VGG-style stages of 3x3 conv + BN + ReLU with
16, 32, 64, 128, 128 channels (2, 2, 3, 3, 3 convolutions; 2x2 max-pooling between
stages, none after the fifth), then the adaptation layers: a 1x1 conv to 64 channels
+ BN + ReLU and a 1x1 conv to one channel per class + BN (no ReLU). The class maps
(B, 14, h, w) are averaged over space: those are the logits; a softmax gives the plane
probabilities. Every convolution is followed by batch norm, so none has a bias.

The released weights (Apache-2.0) convert without retraining:
``fetometry.inference.plane.convert_sononet_npz``. The network holds no preprocessing;
``fetometry.inference.plane.PlaneChecker`` owns resizing and the authors' intensity
convention.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from fetometry.models.base import PlaneClassifierNetwork
from fetometry.models.registry import register_model

#: The 14 outputs in the released order (the authors' example script).
SONONET_LABELS = (
    "3VV",
    "4CH",
    "Abdominal",
    "Background",
    "Brain (Cb.)",
    "Brain (Tv.)",
    "Femur",
    "Kidneys",
    "Lips",
    "LVOT",
    "Profile",
    "RVOT",
    "Spine (cor.)",
    "Spine (sag.)",
)
#: The two transventricular / transcerebellar brain planes: the head-biometry planes.
SONONET_HEAD_LABELS = ("Brain (Cb.)", "Brain (Tv.)")
#: The background class is "no standard plane", not a named other organ.
SONONET_BACKGROUND_LABEL = "Background"

#: Channels per stage and convolutions per stage of SonoNet-16 (paper Fig. 2, 16 base channels).
STAGES = ((16, 2), (32, 2), (64, 3), (128, 3), (128, 3))
ADAPTATION_CHANNELS = 64
#: Lasagne's batch-norm epsilon: the released inverse standard deviations include it.
LASAGNE_BN_EPSILON = 1e-4


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, *, relu: bool = True) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BN (Lasagne's epsilon) -> optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, eps=LASAGNE_BN_EPSILON),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SonoNet(PlaneClassifierNetwork):
    """images (B, 1, H, W) -> plane logits (B, n_labels). Any H, W divisible by 16."""

    labels: ClassVar[tuple[str, ...]] = SONONET_LABELS
    head_labels: ClassVar[tuple[str, ...]] = SONONET_HEAD_LABELS
    background_label: ClassVar[str] = SONONET_BACKGROUND_LABEL
    input_hw: ClassVar[tuple[int, int]] = (224, 288)
    size_divisor: ClassVar[int] = 16
    cam_target_layer: ClassVar[str] = "features"

    def __init__(self, *, in_channels: int = 1, stages=STAGES, adaptation_channels: int = ADAPTATION_CHANNELS):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, (width, convs) in enumerate(stages):
            if index > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs):
                layers.append(conv_bn(channels, width, 3))
                channels = width
        self.features = nn.Sequential(*layers)
        self.adaptation = conv_bn(channels, adaptation_channels, 1)
        self.class_maps = conv_bn(adaptation_channels, len(self.labels), 1, relu=False)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W) -> (logits (B, n_labels), embedding (B, 64)).

        The embedding is the adaptation layer's output averaged over space: the
        representation in which an out-of-distribution score measures distances."""
        self.check_input(images)
        adapted = self.adaptation(self.features(images))
        return self.class_maps(adapted).mean(dim=(2, 3)), adapted.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, H, W) -> logits (B, n_labels): class maps averaged over space."""
        return self.classify(images)[0]


@register_model("sononet", "16", kind="plane-classifier")
def sononet16(**kwargs) -> nn.Module:
    """SonoNet-16 standard-plane classifier (Baumgartner et al., IEEE TMI 2017)."""
    return SonoNet(**kwargs)
