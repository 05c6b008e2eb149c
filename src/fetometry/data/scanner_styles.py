"""Other scanners and capture styles, rendered from one centre's images.

HC18 is one centre (Radboud, Voluson E8/730), cropped to the fan at 800x540. Other
centres send full-screen captures: the fan smaller in a wider frame, vendor text,
rulers, grey and colour bars, other sector shapes and depths, other gain / TGC /
dynamic range, coarser speckle, and skull walls that fade where they run parallel to
the beam (the lateral walls). :class:`ScannerAugmenter` draws these at random during
training so that a model trained on one centre has seen them; the pieces are plain
functions so that ``benchmarks/cross_scanner.py`` can build fixed out-of-domain test
sets with other settings than training uses.

Every function takes and returns (H, W) float32 images in [0, 1]. Functions that move
pixels (:func:`place_in_frame`, :func:`zoom_on`) move the mask with the image; the
others touch the image only. numpy + OpenCV; a few ms per 256x384 canvas.
"""

from __future__ import annotations

import math
import string

import cv2
import numpy as np

from fetometry.data.augment import Augmenter

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX)
_TEXT_CHARS = string.ascii_uppercase + string.digits + " .:/-%"


def time_gain(image: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Depth-dependent gain (TGC): row gains interpolated from ``knots`` (top to bottom)."""
    rows = np.interp(np.linspace(0, 1, image.shape[0]), np.linspace(0, 1, len(knots)), knots)
    return np.clip(image * rows[:, None].astype(np.float32), 0, 1)


def compress(image: np.ndarray, dynamic_range: float) -> np.ndarray:
    """Log compression: ``dynamic_range`` > 0 brightens the low echoes (a narrower
    displayed dynamic range), < 0 darkens them (a wider one); 0 is the identity."""
    if abs(dynamic_range) < 1e-6:
        return image
    a = math.expm1(abs(dynamic_range) * 4.0)
    if dynamic_range > 0:
        out = np.log1p(a * image) / math.log1p(a)
    else:
        out = np.expm1(image * math.log1p(a)) / a
    return out.astype(np.float32)


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Down- and up-sample by ``factor`` < 1: a coarser scanner grid, larger speckle."""
    height, width = image.shape
    small = cv2.resize(
        image, (max(8, round(width * factor)), max(8, round(height * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def lateral_dropout(image: np.ndarray, mask: np.ndarray, darkness: float, band_px: float) -> np.ndarray:
    """Fade the skull echo where the head's outline runs along the beam (its left and
    right walls), as it does where the beam meets the bone at a grazing angle.

    Inside a band ``band_px`` either side of the mask's outline, pixels brighter than
    their neighbourhood's median are pulled towards it by ``darkness`` (0-1): the echo
    goes, the tissue texture stays. The weight is the horizontal share of the outline's
    normal, squared, so the top and bottom walls (hit head-on by the beam) keep their echo."""
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, band_px))
    gx = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3)
    strength = np.hypot(gx, gy)
    if strength.max() <= 0:
        return image
    lateral = (gx * gx) / np.maximum(gx * gx + gy * gy, 1e-12)
    weight = darkness * np.clip(strength / strength.max() * 2.0, 0, 1) * lateral * lateral
    kernel = 2 * max(2, round(band_px * 1.5)) + 1
    median = cv2.medianBlur(np.round(image * 255).astype(np.uint8), min(kernel, 255)).astype(np.float32) / 255.0
    return (image - weight * np.maximum(image - median, 0.0)).astype(np.float32)


def lateral_wall_loss(
    image: np.ndarray, mask: np.ndarray, half_angle_deg: float, band_fraction: float, darkness: float
) -> np.ndarray:
    """The skull's side walls lost: within ``half_angle_deg`` of horizontal, seen from the
    head's centre, a band ``band_fraction`` of the head's minor diameter wide, centred on
    its outline, is darkened towards black by ``darkness`` (0-1), echo and texture alike.

    Where the beam meets the bone at a grazing angle the wall returns almost no echo, and a
    thick late-pregnancy skull shadows what lies beyond it; a sonographer still draws the
    ellipse through the gap. ``lateral_dropout`` fades only the echo above the local
    median; this takes the band to black. The mask is left whole."""
    contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours or len(largest := max(contours, key=cv2.contourArea)) < 5:
        return image
    ellipse = cv2.fitEllipse(largest)
    (cx, cy), (d1, d2), _ = ellipse
    height, width = image.shape
    band_px = max(2, round(band_fraction * min(d1, d2)))
    outline = cv2.ellipse(np.zeros((height, width), np.uint8), ellipse, 255, band_px)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.degrees(np.arctan2(np.abs(y - cy), np.abs(x - cx)))
    band = ((outline > 0) & (angle <= half_angle_deg)).astype(np.float32)
    weight = darkness * cv2.GaussianBlur(band, (0, 0), 1.5)
    return (image * (1.0 - weight)).astype(np.float32)


def beam_blur(image: np.ndarray, top_sigma_px: float, bottom_sigma_px: float) -> np.ndarray:
    """A coarser lateral resolution: every row blurred horizontally (across the beam,
    which runs down the image) by a Gaussian whose sigma grows linearly with depth from
    ``top_sigma_px`` to ``bottom_sigma_px``, as a focused beam widens past its focus. The
    black outside the fan stays black."""
    height, _ = image.shape
    levels = np.linspace(top_sigma_px, bottom_sigma_px, 5)
    blurred = [cv2.GaussianBlur(image, (0, 0), sigmaX=float(s), sigmaY=1e-3) for s in levels]
    # Row r takes the two blurred copies whose sigmas bracket its own, linearly mixed.
    position = np.linspace(0.0, len(levels) - 1, height, dtype=np.float32)
    lower = np.minimum(position.astype(int), len(levels) - 2)
    weight = (position - lower)[:, None]
    stack, rows = np.stack(blurred), np.arange(height)
    out = stack[lower, rows] * (1 - weight) + stack[lower + 1, rows] * weight
    out[image <= 0] = 0
    return out.astype(np.float32)


def cut_beyond_line(image: np.ndarray, mask: np.ndarray, reach: float, direction: float) -> np.ndarray:
    """The image black beyond a straight line across the head: a scan sector's straight
    side cutting it. The line is perpendicular to ``direction`` (radians, image axes), at
    ``reach`` times the head's extent along it from the mask's centroid (1: touching the
    head; 0.7: 30% of that extent out of view), blurred by 0.8 px as a sector's edge."""
    rows, cols = np.nonzero(mask > 0.5)
    if rows.size == 0:
        return image.copy()
    along_x, along_y = np.cos(direction), np.sin(direction)
    centre_x, centre_y = cols.mean(), rows.mean()
    extent = float(((cols - centre_x) * along_x + (rows - centre_y) * along_y).max()) + 0.5
    height, width = image.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    keep = ((x - centre_x) * along_x + (y - centre_y) * along_y <= reach * extent).astype(np.float32)
    return (image * cv2.GaussianBlur(keep, (0, 0), 0.8)).astype(np.float32)


def sector(shape: tuple[int, int], apex_xy: tuple[float, float], half_angle: float, depth: float) -> np.ndarray:
    """(H, W) float32 fan: 1 inside a sector from ``apex_xy`` (px, possibly above the
    frame), ``half_angle`` radians either side of straight down, out to ``depth`` px."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = x - apex_xy[0], y - apex_xy[1]
    radius = np.hypot(dx, dy)
    angle = np.abs(np.arctan2(dx, dy))
    inside = (angle <= half_angle) & (radius <= depth) & (dy >= 0)
    return cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.8)


def place_in_frame(
    image: np.ndarray,
    mask: np.ndarray,
    frame_hw: tuple[int, int],
    scale: float,
    top_left: tuple[int, int],
    background: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The image (and its mask) scaled by ``scale`` and put at ``top_left`` (x, y) in a
    ``frame_hw`` frame of ``background`` grey: a wider field of view, a screen capture."""
    height, width = frame_hw
    matrix = np.float32([[scale, 0, top_left[0]], [0, scale, top_left[1]]])

    def warp(values: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(values, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0)

    coverage = warp(np.ones_like(image, dtype=np.float32))
    frame = warp(image) + np.float32(background) * (1.0 - coverage)
    out_mask = warp(mask)
    return frame, out_mask


def zoom_on(
    image: np.ndarray, mask: np.ndarray, centre_xy: tuple[float, float], zoom: float
) -> tuple[np.ndarray, np.ndarray]:
    """Magnify by ``zoom`` about ``centre_xy``, the frame size kept: a large head filling
    the frame (the third trimester at a shallow depth)."""
    matrix = cv2.getRotationMatrix2D(centre_xy, 0.0, zoom)
    size = (image.shape[1], image.shape[0])
    return (
        cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0.0),
        cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0.0),
    )


def draw_text(layer: np.ndarray, text: str, origin: tuple[int, int], height_px: float, font: int) -> None:
    """Vendor text into a uint8 overlay ``layer`` (OpenCV draws text on 8-bit images only)."""
    scale = max(0.2, height_px / 22.0)
    cv2.putText(layer, text, origin, font, scale, 255, max(1, round(scale)), cv2.LINE_AA)


def draw_ruler(layer: np.ndarray, x: int, y0: int, y1: int, step_px: float) -> None:
    """A depth ruler into a uint8 overlay: a vertical line, ticks every ``step_px``, long ones every fifth."""
    cv2.line(layer, (x, y0), (x, y1), 255, 1)
    for k, y in enumerate(np.arange(y0, y1, max(step_px, 2.0))):
        length = 6 if k % 5 == 0 else 3
        cv2.line(layer, (x, int(y)), (x + length, int(y)), 255, 1)


def burn_in(image: np.ndarray, layer: np.ndarray, value: float, keep_out: np.ndarray | None = None) -> None:
    """Burn a uint8 overlay into the image at grey ``value``, in place, except where ``keep_out``."""
    alpha = layer.astype(np.float32) / 255.0
    if keep_out is not None:
        alpha[keep_out] = 0.0
    image *= 1.0 - alpha
    image += alpha * np.float32(value)


def draw_grey_bar(image: np.ndarray, x: int, y0: int, y1: int, width_px: int) -> None:
    """The scanner's grey-scale bar: black at the bottom, white at the top."""
    y1 = min(y1, image.shape[0])
    if y1 - y0 < 2 or width_px < 1:
        return
    ramp = np.linspace(1.0, 0.0, y1 - y0, dtype=np.float32)[:, None]
    image[y0:y1, x : x + width_px] = ramp


def random_text(rng: np.random.Generator, low: int = 4, high: int = 18) -> str:
    return "".join(rng.choice(list(_TEXT_CHARS), size=int(rng.integers(low, high))))


class ScannerAugmenter:
    """:class:`Augmenter` (geometry, intensity, speckle, shadow), then other scanners'
    physics and capture styles, each drawn with its own probability:

    - TGC (random row gains 0.6-1.4), log compression (dynamic range), a coarser grid
      (resampled at 0.45-0.9), lateral-wall dropout (the skull echo faded by 40-90%
      where the outline runs along the beam);
    - a large head: magnified 1.15-1.5 about a point near the head;
    - a capture: the image shrunk to 0.5-0.95 of the canvas in a frame of black or grey,
      often cut to a sector fan, with vendor text, a depth ruler and a grey-scale bar
      around it. Overlays stay outside the head's mask (they are drawn where the mask is
      empty), so the mask is still the whole head.

    ``strength`` scales the probabilities (as the base Augmenter's). Call as the
    Augmenter: ``(image, mask, rng) -> (image, mask)`` on the training canvas.
    """

    P_TGC = 0.3
    P_COMPRESS = 0.3
    P_RESAMPLE = 0.25
    P_LATERAL = 0.35
    P_LARGE_HEAD = 0.12
    P_CAPTURE = 0.45
    P_SECTOR = 0.5
    P_OVERLAYS = 0.8

    def __init__(self, *, strength: float = 1.0, seed: int | None = None):
        self.base = Augmenter(strength=strength, seed=seed)
        self.strength = self.base.strength
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"ScannerAugmenter(strength={self.strength})"

    def _p(self, base: float) -> float:
        return min(1.0, base * self.strength)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng if rng is None else rng
        image, mask = self.base(image, mask, rng)
        if self.strength == 0.0:
            return image, mask
        black = image <= 0.0
        image = self._physics(image, mask, rng)
        image[black] = 0.0
        if rng.uniform() < self._p(self.P_LARGE_HEAD) and mask.max() > 0.5:
            image, mask = self._large_head(image, mask, rng)
        if rng.uniform() < self._p(self.P_CAPTURE):
            image, mask = self._capture(image, mask, rng)
        return np.clip(image, 0, 1).astype(np.float32), np.clip(mask, 0, 1).astype(np.float32)

    def _physics(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.uniform() < self._p(self.P_TGC):
            image = time_gain(image, rng.uniform(0.6, 1.4, size=int(rng.integers(3, 7))).astype(np.float32))
        if rng.uniform() < self._p(self.P_COMPRESS):
            image = compress(image, float(rng.uniform(-0.6, 0.8)))
        if rng.uniform() < self._p(self.P_RESAMPLE):
            image = resample(image, float(rng.uniform(0.45, 0.9)))
        if rng.uniform() < self._p(self.P_LATERAL) and mask.max() > 0.5:
            band = float(rng.uniform(0.012, 0.03) * image.shape[0])
            image = lateral_dropout(image, mask, float(rng.uniform(0.4, 0.9)), band)
        return image

    def _large_head(self, image, mask, rng):
        ys, xs = np.nonzero(mask > 0.5)
        centre = (
            float(xs.mean() + rng.normal(0, 0.05) * image.shape[1]),
            float(ys.mean() + rng.normal(0, 0.05) * image.shape[0]),
        )
        return zoom_on(image, mask, centre, float(rng.uniform(1.15, 1.5)))

    def _capture(self, image, mask, rng):
        height, width = image.shape
        scale = float(rng.uniform(0.5, 0.95))
        free_x, free_y = width * (1 - scale), height * (1 - scale)
        top_left = (int(rng.uniform(0.1, 0.9) * free_x), int(rng.uniform(0.0, 0.6) * free_y))
        background = 0.0 if rng.uniform() < 0.6 else float(rng.uniform(0.1, 0.35))
        if rng.uniform() < self._p(self.P_SECTOR):
            image = image * self._fan_that_keeps(mask, rng)
        image, mask = place_in_frame(image, mask, (height, width), scale, top_left, background)
        if rng.uniform() < self._p(self.P_OVERLAYS):
            self._overlays(image, mask, rng, top_left, scale)
        return image, mask

    def _fan_that_keeps(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A sector fan that leaves the head inside (no fan when none of three does)."""
        height, width = mask.shape
        for _ in range(3):
            apex = (float(rng.uniform(0.4, 0.6) * width), float(-rng.uniform(0.0, 0.5) * height))
            fan = sector((height, width), apex, float(rng.uniform(0.45, 0.8)), float(rng.uniform(1.0, 1.6) * height))
            if float((mask * (1 - fan)).sum()) <= 0.002 * float(mask.sum()):
                return fan
        return np.ones_like(mask)

    def _overlays(self, image, mask, rng, top_left, scale) -> None:
        """Text, a ruler and a grey bar in the frame's margins, away from the head."""
        height, width = image.shape
        keep_out = cv2.dilate((mask > 0.05).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        layer = np.zeros((height, width), np.uint8)
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        text_px = float(rng.uniform(0.025, 0.05) * height)
        for row in range(int(rng.integers(1, 6))):
            x = int(rng.uniform(0.0, 0.75) * width)
            y = int((row + 1) * text_px * 1.6) if rng.uniform() < 0.7 else int(height - row * text_px * 1.6 - 4)
            draw_text(layer, random_text(rng), (x, y), text_px, font)
        right_edge = int(top_left[0] + scale * width)
        if right_edge + 10 < width:
            draw_ruler(layer, right_edge + 3, top_left[1], int(top_left[1] + scale * height), float(rng.uniform(4, 12)))
        burn_in(image, layer, float(rng.uniform(0.6, 1.0)), keep_out)
        if rng.uniform() < 0.6:
            before = image.copy()
            bar_x = int(rng.uniform(0.88, 0.97) * width)
            draw_grey_bar(image, bar_x, int(0.1 * height), int(0.45 * height), max(2, width // 80))
            image[keep_out] = before[keep_out]


class BeamWidthAugmenter(ScannerAugmenter):
    """:class:`ScannerAugmenter`, then, with probability ``P_BEAM_BLUR``, a coarser lateral
    resolution (:func:`beam_blur`): sigma 0.5-2 canvas pixels at the top of the image,
    1.2-2.2 times that at the bottom. Another probe or scanner class resolves less across
    the beam than along it, and the skull's lateral walls run along the beam
    (``augmentation = "scanners-beam"``; an experiment, docs/BENCHMARKS.md)."""

    P_BEAM_BLUR = 0.3

    def __repr__(self) -> str:
        return f"BeamWidthAugmenter(strength={self.strength})"

    def _physics(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = super()._physics(image, mask, rng)
        if rng.uniform() < self._p(self.P_BEAM_BLUR):
            top = float(rng.uniform(0.5, 2.0))
            image = beam_blur(image, top, top * float(rng.uniform(1.2, 2.2)))
        return image


class WallLossAugmenter(ScannerAugmenter):
    """:class:`ScannerAugmenter`, then, with probability ``P_WALL_LOSS``, the skull's side
    walls lost (:func:`lateral_wall_loss`: within 25-55 degrees of horizontal, a band 3-7%
    of the head's minor diameter wide, darkened by 60-95%). The mask stays the whole head,
    so the network learns to close the ellipse through the gap (``augmentation =
    "scanners-walls"``; the default's recipe on 2026-12-07, docs/BENCHMARKS.md)."""

    P_WALL_LOSS = 0.25
    #: The ranges each loss is drawn from: degrees from horizontal, band width (share of the
    #: head's minor diameter), darkness.
    HALF_ANGLE_DEG = (25.0, 55.0)
    BAND = (0.03, 0.07)
    DARKNESS = (0.6, 0.95)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength})"

    def _physics(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = super()._physics(image, mask, rng)
        if rng.uniform() < self._p(self.P_WALL_LOSS) and mask.max() > 0.5:
            half_angle, band = float(rng.uniform(*self.HALF_ANGLE_DEG)), float(rng.uniform(*self.BAND))
            image = lateral_wall_loss(image, mask, half_angle, band, float(rng.uniform(*self.DARKNESS)))
        return image


class WideWallLossAugmenter(WallLossAugmenter):
    """:class:`WallLossAugmenter` with wider ranges, up to black walls within 70 degrees of
    horizontal on a band 12% of the minor diameter wide, in 35% of the images
    (``augmentation = "scanners-walls-wide"``; the default's recipe since 2026-12-08,
    docs/BENCHMARKS.md, "Lost side walls, two seeds of each range"). The
    ``lateral-wall-loss`` test style lies inside these ranges."""

    P_WALL_LOSS = 0.35
    HALF_ANGLE_DEG = (25.0, 70.0)
    BAND = (0.03, 0.12)
    DARKNESS = (0.6, 1.0)


class SectorCutAugmenter(ScannerAugmenter):
    """:class:`ScannerAugmenter`, then, with probability ``P_SECTOR_CUT``, a scan sector's
    straight side across the head (:func:`cut_beyond_line`, reach 0.6-1.05 of its extent,
    any direction). The mask stays the whole head: the network learns to outline the head
    the sector cuts, and the quality gate's ``outside_scan`` rule decides whether enough
    of it was in view (``augmentation = "scanners-cut"``; an experiment, docs/QUALITY.md)."""

    P_SECTOR_CUT = 0.15

    def __repr__(self) -> str:
        return f"SectorCutAugmenter(strength={self.strength})"

    def __call__(self, image, mask, rng=None):
        rng = self._rng if rng is None else rng
        image, mask = super().__call__(image, mask, rng)
        if self.strength > 0.0 and rng.uniform() < self._p(self.P_SECTOR_CUT) and mask.max() > 0.5:
            reach, direction = float(rng.uniform(0.6, 1.05)), float(rng.uniform(0.0, 2.0 * np.pi))
            image = cut_beyond_line(image, mask, reach, direction)
        return image, mask
