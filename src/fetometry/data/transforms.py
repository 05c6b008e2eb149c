"""Geometry shared by training and inference: letterboxing into the network's grid.

The network sees a fixed (H, W) canvas. An image is scaled to fit it without changing
its aspect ratio (so a round head stays round) and padded with zeros at the bottom and
right; ``unletterbox`` maps a network-grid map back onto the ORIGINAL pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How an (orig_h, orig_w) image sits in a (canvas_h, canvas_w) canvas."""

    orig_h: int
    orig_w: int
    canvas_h: int
    canvas_w: int

    @property
    def scale(self) -> float:
        return min(self.canvas_h / self.orig_h, self.canvas_w / self.orig_w)

    @property
    def content_hw(self) -> tuple[int, int]:
        return (
            min(self.canvas_h, max(1, round(self.orig_h * self.scale))),
            min(self.canvas_w, max(1, round(self.orig_w * self.scale))),
        )


def letterbox(
    array: np.ndarray, canvas_hw: tuple[int, int], *, interpolation: int = cv2.INTER_AREA
) -> tuple[np.ndarray, Letterbox]:
    """(H, W) float array -> (canvas_h, canvas_w) float32 canvas and its Letterbox."""
    box = Letterbox(array.shape[0], array.shape[1], canvas_hw[0], canvas_hw[1])
    h, w = box.content_hw
    resized = cv2.resize(array.astype(np.float32), (w, h), interpolation=interpolation)
    canvas = np.zeros(canvas_hw, dtype=np.float32)
    canvas[:h, :w] = resized
    return canvas, box


def unletterbox(canvas: np.ndarray, box: Letterbox) -> np.ndarray:
    """(canvas_h, canvas_w) map -> (orig_h, orig_w) float32 map (bilinear)."""
    h, w = box.content_hw
    content = canvas[:h, :w].astype(np.float32)
    return cv2.resize(content, (box.orig_w, box.orig_h), interpolation=cv2.INTER_LINEAR)
