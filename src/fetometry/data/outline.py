"""Fill a thin ellipse outline (the official HC18 annotation form) into a head mask."""

from __future__ import annotations

import cv2
import numpy as np

from fetometry.masks import fill_holes


def looks_like_outline(mask: np.ndarray) -> bool:
    """True when the mask is a thin closed curve rather than a filled region.

    A filled ellipse covers most of the area inside its boundary; a drawn outline of
    width w covers only about w * perimeter pixels.
    """
    mask = mask.astype(bool)
    if not mask.any():
        return False
    filled = fill_holes(mask)
    return mask.sum() < 0.5 * filled.sum()


def fill_outline(mask: np.ndarray) -> np.ndarray:
    """Fill the interior of a drawn outline, keeping the outline pixels themselves.

    Filled masks are returned unchanged. A curve with a small gap is closed first
    (morphological closing) so that the fill cannot leak.
    """
    mask = mask.astype(bool)
    if not looks_like_outline(mask):
        return mask
    filled = fill_holes(mask)
    if filled.sum() < 2 * mask.sum():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
        filled = fill_holes(closed)
    return filled
