"""Training augmentation for ultrasound, applied jointly to an image and its mask.

Geometry (flips, rotation, scale, translation) moves image and mask together in one
warp; intensity changes (brightness / contrast, gamma, multiplicative speckle-like
noise, blur, an acoustic shadow wedge) touch the image only. Pixels that are exactly
black before the intensity changes (outside the scanner's fan, letterbox padding, the
warp's border) stay black, as they would on a real scanner.

numpy + OpenCV only; about 1-3 ms for a 256 x 384 image on one CPU core.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


class AugmentError(ValueError):
    """The image / mask pair or the augmentation settings cannot be used."""


class Augmenter:
    """Random ultrasound augmentation; ``strength`` scales every probability and range.

    strength=0 returns the inputs unchanged (as float32 copies); 1 gives the default
    ranges: rotation +-20 deg, scale 0.85-1.15, translation +-8% of the side,
    brightness +-0.08, contrast 0.75-1.25, gamma 0.7-1.4, speckle sd 0.15, blur sigma up
    to 1.2 px, a shadow wedge darkened by 30-70%.

    Call with ``(image, mask, rng)``: image (H, W) float in [0, 1], mask (H, W) bool or
    float in [0, 1]; returns (image, mask), both (H, W) float32 in [0, 1]. The mask is
    only resampled (bilinear), so it stays binary except for a one-pixel soft edge.
    """

    P_HFLIP = 0.5
    P_VFLIP = 0.25
    P_AFFINE = 0.8
    P_INTENSITY = 0.8
    P_GAMMA = 0.5
    P_SPECKLE = 0.5
    P_BLUR = 0.25
    P_SHADOW = 0.3

    def __init__(self, *, strength: float = 1.0, seed: int | None = None):
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 <= strength <= 3.0):
            raise AugmentError(f"strength={strength!r}: use a number from 0 (off) to 3 (1 is the default)")
        self.strength = float(strength)
        self._rng = np.random.default_rng(seed)
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"Augmenter(strength={self.strength})"

    def _p(self, base: float) -> float:
        return min(1.0, base * self.strength)

    def _grid(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Cached pixel coordinates x (1, W) and y (H, 1), float32."""
        if shape not in self._grids:
            self._grids[shape] = (
                np.arange(shape[1], dtype=np.float32)[None, :],
                np.arange(shape[0], dtype=np.float32)[:, None],
            )
        return self._grids[shape]

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair; see the class docstring for shapes and ranges."""
        image, mask = _check_pair(image, mask)
        if self.strength == 0.0:
            return image, mask
        rng = self._rng if rng is None else rng
        s = self.strength
        height, width = image.shape

        # ---- geometry: flips and affine folded into one 2x3 matrix, one warp each.
        hflip = rng.uniform() < self._p(self.P_HFLIP)
        vflip = rng.uniform() < self._p(self.P_VFLIP)
        affine = rng.uniform() < self._p(self.P_AFFINE)
        if affine:
            matrix = _affine_matrix(
                height,
                width,
                hflip=hflip,
                vflip=vflip,
                angle_rad=math.radians(rng.uniform(-20.0, 20.0) * s),
                scale=1.0 + rng.uniform(-0.15, 0.15) * s,
                shift_px=(rng.uniform(-0.08, 0.08) * s * width, rng.uniform(-0.08, 0.08) * s * height),
            )
            flags = cv2.INTER_LINEAR
            image = cv2.warpAffine(
                image, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
            mask = cv2.warpAffine(
                mask, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        elif hflip or vflip:
            axes = tuple(axis for axis, flip in ((0, vflip), (1, hflip)) if flip)
            image = np.ascontiguousarray(np.flip(image, axis=axes))
            mask = np.ascontiguousarray(np.flip(mask, axis=axes))
        black = image <= 0.0

        # ---- intensity (image only).
        if rng.uniform() < self._p(self.P_INTENSITY):
            contrast = 1.0 + rng.uniform(-0.25, 0.25) * s
            brightness = rng.uniform(-0.08, 0.08) * s
            mean = float(image.mean())
            image = (image - np.float32(mean)) * np.float32(contrast) + np.float32(mean + brightness)
        if rng.uniform() < self._p(self.P_GAMMA):
            gamma = math.exp(rng.uniform(-0.35, 0.35) * s)
            image = cv2.pow(np.maximum(image, 0.0, dtype=np.float32), gamma)
        if rng.uniform() < self._p(self.P_SPECKLE):
            sd = np.float32(rng.uniform(0.03, 0.15) * s)
            field = rng.standard_normal((height, width), dtype=np.float32)
            field = cv2.GaussianBlur(field, (0, 0), 0.7) * np.float32(1.9)  # correlated grains, sd ~1
            image = image * np.maximum(np.float32(1.0) + sd * field, 0.0)
        if rng.uniform() < self._p(self.P_BLUR):
            image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 1.2) * max(s, 0.25))
        if rng.uniform() < self._p(self.P_SHADOW):
            image = image * self._shadow(rng, (height, width))

        image = np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
        image[black] = 0.0
        return image, np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)

    def _shadow(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) float32 gain: a wedge from a probe above the image, dark beyond a depth."""
        height, width = shape
        x, y = self._grid(shape)
        apex_x = np.float32(rng.uniform(0.3, 0.7) * width)
        apex_y = np.float32(-rng.uniform(0.05, 0.3) * height)
        direction = rng.uniform(-0.6, 0.6)  # beam angle from straight down, rad
        half_width = rng.uniform(math.radians(2.0), math.radians(8.0))
        start_px = np.float32(rng.uniform(0.2, 0.7) * height - apex_y)
        darkness = np.float32(rng.uniform(0.3, 0.7) * min(1.0, self.strength))
        dx, dy = x - apex_x, y - apex_y
        # Signed distances (px) to the wedge's two edges: positive inside.
        left, right = direction - half_width, direction + half_width
        inside_left = dx * np.float32(math.cos(left)) - dy * np.float32(math.sin(left))
        inside_right = dy * np.float32(math.sin(right)) - dx * np.float32(math.cos(right))
        along = dx * np.float32(math.sin(direction)) + dy * np.float32(math.cos(direction))
        soft = np.float32(0.25)  # edges about 4 px wide
        weight = np.clip(np.minimum(np.minimum(inside_left, inside_right), along - start_px) * soft, 0.0, 1.0)
        return np.float32(1.0) - darkness * weight


class FlipAugmenter:
    """Flips only: left-right and up-down, each with probability 0.5. The "plain recipe"
    of the benchmark's reference row (what a stock MONAI pipeline with RandFlipd gives),
    against which the ultrasound augmentation of :class:`Augmenter` is measured."""

    P_FLIP = 0.5

    def __init__(self, *, seed: int | None = None):
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return "FlipAugmenter()"

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        image, mask = _check_pair(image, mask)
        rng = self._rng if rng is None else rng
        axes = tuple(axis for axis in (0, 1) if rng.uniform() < self.P_FLIP)
        if axes:
            image = np.ascontiguousarray(np.flip(image, axis=axes))
            mask = np.ascontiguousarray(np.flip(mask, axis=axes))
        return image, mask


def _check_pair(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise AugmentError(f"image must be 2D (H, W) grayscale, got shape {image.shape}; squeeze channel axes first")
    if mask.shape != image.shape:
        raise AugmentError(f"mask shape {mask.shape} differs from image shape {image.shape}; pass the matching mask")
    return image.astype(np.float32, copy=True), mask.astype(np.float32, copy=True)


def _affine_matrix(
    height: int,
    width: int,
    *,
    hflip: bool,
    vflip: bool,
    angle_rad: float,
    scale: float,
    shift_px: tuple[float, float],
) -> np.ndarray:
    """2x3 float32 matrix mapping source (x, y) to destination: flip, rotate and scale
    about the image centre, then shift."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    flip = np.diag([-1.0 if hflip else 1.0, -1.0 if vflip else 1.0])
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    linear = scale * np.array([[cos, -sin], [sin, cos]]) @ flip
    centre = np.array([cx, cy])
    offset = centre + np.asarray(shift_px) - linear @ centre
    return np.hstack([linear, offset[:, None]]).astype(np.float32)
