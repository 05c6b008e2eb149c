"""The record every data set yields: one image, its optional mask and calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetometry.io.images import read_image, read_mask


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    ``mask_path`` is None for unannotated (test-set) images; ``mask_is_outline`` marks
    annotations drawn as a thin ellipse outline (official HC18) that must be filled.
    ``hc_mm`` is the reference head circumference (the sonographer's) when known.
    """

    name: str
    image_path: Path
    subject: str
    mask_path: Path | None = None
    mask_is_outline: bool = False
    pixel_size_mm: float | None = None
    hc_mm: float | None = None
    source: str = ""

    def load_image(self) -> np.ndarray:
        """(H, W) float32 in [0, 1]."""
        return read_image(self.image_path)

    def load_mask(self) -> np.ndarray:
        """(H, W) bool filled head mask; raises ValueError if the sample has none."""
        if self.mask_path is None:
            raise ValueError(f"{self.name}: this sample has no annotation")
        mask = read_mask(self.mask_path)
        if self.mask_is_outline:
            from fetometry.data.outline import fill_outline

            mask = fill_outline(mask)
        return mask
