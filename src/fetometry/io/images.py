"""Image files -> 2D grayscale arrays.

Ultrasound exports come as PNG, JPEG, BMP or TIFF, 8- or 16-bit, sometimes RGB(A) with
burnt-in annotations. Everything leaves this module as a 2D float32 array scaled to
[0, 1] (``read_image``) or a boolean mask (``read_mask``), in the file's own pixel grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Smallest side we accept: below this no head can be measured meaningfully.
MIN_SIDE_PX = 16
#: Largest side we accept; protects memory against absurd headers.
MAX_SIDE_PX = 8192


class ImageReadError(ValueError):
    """The file is not an image we can measure (unreadable, truncated, empty, tiny)."""


def _decode(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    raw = np.fromfile(str(path), dtype=np.uint8)
    # IMREAD_UNCHANGED keeps 16-bit depth and lets us handle RGB(A) ourselves.
    pixels = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(
            f"{path}: not a readable image (supported: {', '.join(IMAGE_SUFFIXES)}); "
            "the file may be truncated or of another type"
        )
    return pixels


def _to_gray(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        if channels == 4:
            pixels = pixels[:, :, :3]  # drop alpha: ultrasound has no transparency
        elif channels != 3:
            raise ImageReadError(f"{path}: unsupported channel count {channels}")
        # OpenCV decodes as BGR; ITU-R BT.601 luma weights.
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    if pixels.ndim != 2:
        raise ImageReadError(f"{path}: unsupported image layout {pixels.shape}")
    return pixels


def _check_size(pixels: np.ndarray, path: Path) -> None:
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        raise ImageReadError(f"{path}: image is {w}x{h} px, too small (min side {MIN_SIDE_PX} px)")
    if max(h, w) > MAX_SIDE_PX:
        raise ImageReadError(f"{path}: image is {w}x{h} px, too large (max side {MAX_SIDE_PX} px)")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as grayscale float32 in [0, 1], shape (H, W).

    8-bit files are divided by 255, 16-bit files by 65535, float files clipped to [0, 1].
    Raises ImageReadError with a message naming the file and the problem.
    """
    path = Path(path)
    pixels = _to_gray(_decode(path), path)
    _check_size(pixels, path)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    if np.issubdtype(pixels.dtype, np.floating):
        return np.clip(np.nan_to_num(pixels.astype(np.float32)), 0.0, 1.0)
    raise ImageReadError(f"{path}: unsupported pixel type {pixels.dtype}")


def read_mask(path: str | Path) -> np.ndarray:
    """Read an annotation or predicted mask as a boolean (H, W) array (nonzero = head)."""
    path = Path(path)
    pixels = _to_gray(_decode(path), path)
    _check_size(pixels, path)
    return pixels > 0


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a boolean mask as an 8-bit PNG with values 0/255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.where(mask, 255, 0).astype(np.uint8)):
        raise OSError(f"could not write {path}")
