"""Several segmenters as one network: the mean of their foreground probabilities."""

from __future__ import annotations

import torch
import torch.nn as nn

from fetometry.models.base import SegmentationNetwork, foreground_probability


class ProbabilityEnsemble(SegmentationNetwork):
    """Members' foreground probabilities, averaged (``predict_proba``); ``forward``
    returns the logit of that average so that ``model(x)`` tools still work. Not sampled
    and with no default CAM layer (its members have different layers)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([foreground_probability(member, x) for member in self.members]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.predict_proba(x), eps=1e-6)
