"""Mask operations shared by the data sets (outline filling) and biometry (the head
component): NumPy and OpenCV only, so that measuring imports no SciPy."""

from __future__ import annotations

import cv2
import numpy as np


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool with every background region that does not reach the
    frame's edge through 4-connected background filled: ``scipy.ndimage.binary_fill_holes``
    with its default structure, as one OpenCV flood fill of the background from the edge."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    outside = np.ones((height + 2, width + 2), dtype=np.uint8)  # 1: background
    outside[1:-1, 1:-1][mask] = 0  # the added one-pixel frame joins every edge pixel
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return outside[1:-1, 1:-1] != 2
