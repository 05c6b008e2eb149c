"""Synthetic ultrasound head phantoms with a known ellipse: tests and smoke training.

A phantom is drawn from one ellipse, the OUTER edge of the skull, so its truth is exact:
the filled mask, the ellipse parameters and the head circumference (Ramanujan's second
approximation of the ellipse perimeter times the pixel size). The picture imitates a
transthalamic plane on a curvilinear probe: tissue texture, dark amniotic fluid, a
bright skull ring whose echo is strongest where the beam hits it square on, a darker
brain with a faint midline echo, acoustic shadowing behind part of the skull, speckle,
depth attenuation and a fan-shaped field of view with black outside.

Conventions (shared with the rest of fetometry):
- pixel centres sit at integer coordinates, ``x`` = column, ``y`` = row (y down);
- ``angle_rad`` is the direction of the major axis, measured from +x toward +y, in [0, pi);
- the mask holds the pixels whose centres lie inside (or on) the outer ellipse.

Everything random comes from one seed (or Generator): a phantom is reproducible.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fetometry.io.pixel_size import validate_pixel_size

log = logging.getLogger(__name__)

#: Cephalic index (BPD / OFD) range of normal heads, as a semi-minor / semi-major ratio.
CEPHALIC_INDEX_RANGE = (0.70, 0.90)
#: Pixel sizes drawn when none is given (HC18 spans about 0.05-0.33 mm).
PIXEL_SIZE_RANGE_MM = (0.05, 0.30)
#: Head circumferences the drawn pixel size aims at (about 12 to 42 weeks).
HC_RANGE_MM = (60.0, 360.0)
#: Semi-major axis drawn when none is given, as a fraction of the image's shorter side.
SEMI_MAJOR_FRACTION_RANGE = (0.20, 0.42)
#: Skull thickness as a fraction of the semi-minor axis.
SKULL_FRACTION_RANGE = (0.04, 0.08)
MIN_SIDE_PX = 32

CSV_HEADER = ("filename", "pixel size(mm)", "head circumference (mm)")


class PhantomParameterError(ValueError):
    """A phantom parameter is impossible (negative axis, head outside the image, ...)."""


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class Phantom:
    """One synthetic image with its exact truth.

    image: (H, W) float32 in [0, 1]; mask: (H, W) bool, the filled head (inside the
    outer edge of the skull). The ellipse is in pixels (see the module conventions);
    ``hc_mm`` is the perimeter of that ellipse times ``pixel_size_mm``.
    """

    image: np.ndarray
    mask: np.ndarray
    center_x_px: float
    center_y_px: float
    semi_major_px: float
    semi_minor_px: float
    angle_rad: float
    pixel_size_mm: float
    hc_mm: float

    @property
    def cephalic_index(self) -> float:
        """Semi-minor / semi-major (BPD / OFD of the outer ellipse)."""
        return self.semi_minor_px / self.semi_major_px

    def outline(self, *, thickness_px: float = 2.0) -> np.ndarray:
        """(H, W) bool: a drawn outline of the ellipse, like the official HC18 annotation.

        The band of pixels within ``thickness_px / 2`` of the ellipse, on both sides.
        """
        distance = _ellipse_distance_px(
            self.mask.shape,
            self.center_x_px,
            self.center_y_px,
            self.semi_major_px,
            self.semi_minor_px,
            self.angle_rad,
        )
        return np.abs(distance) <= thickness_px / 2.0


# --------------------------------------------------------------------------- helpers


def _ramanujan_perimeter_px(semi_major: float, semi_minor: float) -> float:
    """Ellipse perimeter by Ramanujan's second approximation (same units as the axes).

    Private copy kept here so that phantoms do not depend on ``fetometry.biometry``.
    """
    a, b = float(semi_major), float(semi_minor)
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


def _ellipse_frame(
    shape: tuple[int, int], cx: float, cy: float, angle: float, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) coordinates of every pixel centre along the major / minor axis, (H, W) each."""
    h, w = shape
    x = np.arange(w, dtype=dtype)[None, :] - dtype(cx)
    y = np.arange(h, dtype=dtype)[:, None] - dtype(cy)
    cos, sin = dtype(math.cos(angle)), dtype(math.sin(angle))
    return x * cos + y * sin, -x * sin + y * cos


def _ellipse_distance_px(shape: tuple[int, int], cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """(H, W) float32 signed distance to the ellipse in px (negative inside).

    First-order estimate along the normal, exact on the curve and for circles; good to a
    small fraction of a pixel within a few pixels of the curve, which is where it is used.
    """
    u, v = _ellipse_frame(shape, cx, cy, angle)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    safe = np.maximum(rho, 1e-6)
    cos_t, sin_t = u / (safe * a), v / (safe * b)
    cos_t = np.where(rho < 1e-6, 1.0, cos_t)
    return ((rho - 1.0) / np.sqrt((cos_t / a) ** 2 + (sin_t / b) ** 2)).astype(np.float32)


def _ellipse_points(cx: float, cy: float, a: float, b: float, angle: float, n: int = 72) -> np.ndarray:
    """(n, 2) points (x, y) on the ellipse."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    cos, sin = math.cos(angle), math.sin(angle)
    px, py = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + px * cos - py * sin, cy + px * sin + py * cos], axis=1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_xy: tuple[float, float]) -> np.ndarray:
    """(H, W) float32 Gaussian-filtered noise scaled to unit standard deviation."""
    field = rng.standard_normal(shape, dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=sigma_xy[0], sigmaY=sigma_xy[1], borderType=cv2.BORDER_REFLECT)
    return field / max(float(field.std()), 1e-6)


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step from 0 (x <= -width/2) to 1 (x >= width/2)."""
    return np.clip(x / width + 0.5, 0.0, 1.0)


def _as_rng(rng_or_seed: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)) and not isinstance(rng_or_seed, bool):
        return np.random.default_rng(rng_or_seed)
    raise PhantomParameterError(
        f"rng_or_seed must be an int seed or a numpy Generator, got {type(rng_or_seed).__name__}"
    )


# --------------------------------------------------------------------------- phantom


def make_phantom(
    *,
    height: int = 540,
    width: int = 800,
    rng_or_seed: int | np.random.Generator,
    semi_major_px: float | None = None,
    semi_minor_px: float | None = None,
    angle_rad: float | None = None,
    center: tuple[float, float] | None = None,
    pixel_size_mm: float | None = None,
    speckle: float = 1.0,
    shadow: bool | None = None,
    noise: float = 0.02,
) -> Phantom:
    """Draw one ultrasound-like head phantom.

    Args:
        height, width: image size in px (HC18 images are 540 x 800).
        rng_or_seed: an int seed or a numpy Generator; all randomness comes from it.
        semi_major_px, semi_minor_px: outer-skull semi-axes; a missing one is drawn
            (semi-major 20-42% of the shorter side, cephalic index 0.70-0.90).
        angle_rad: major-axis direction from +x toward +y (y down); taken modulo pi.
        center: (x, y) of the ellipse centre in px; drawn inside the image when None.
        pixel_size_mm: mm per pixel; drawn in 0.05-0.30 mm (aiming at a plausible HC)
            when None.
        speckle: strength of multiplicative speckle, 0 (none) to 1 (fully developed).
        shadow: acoustic shadow behind part of the skull; None draws it at random (60%).
        noise: standard deviation of additive Gaussian noise (image units).

    Returns:
        Phantom with image (H, W) float32 in [0, 1] and mask (H, W) bool.
    """
    rng = _as_rng(rng_or_seed)
    if int(height) < MIN_SIDE_PX or int(width) < MIN_SIDE_PX:
        raise PhantomParameterError(f"image size {height}x{width} px is too small; use sides >= {MIN_SIDE_PX} px")
    height, width = int(height), int(width)
    if not 0.0 <= speckle <= 1.0:
        raise PhantomParameterError(f"speckle={speckle}: use a strength between 0 and 1")
    if not (noise >= 0.0 and math.isfinite(noise)):
        raise PhantomParameterError(f"noise={noise}: use a standard deviation >= 0")

    # Draw every random value in a fixed order, whether or not it is overridden, so that
    # fixing one parameter does not change the others for the same seed.
    short_side = min(height, width)
    draw_a = rng.uniform(*SEMI_MAJOR_FRACTION_RANGE) * short_side
    draw_ci = rng.uniform(*CEPHALIC_INDEX_RANGE)
    draw_angle = rng.uniform(0.0, math.pi)
    draw_center_u = rng.uniform(0.0, 1.0, size=2)
    draw_pixel_u = rng.uniform(0.0, 1.0)
    draw_shadow = rng.uniform() < 0.6

    a, b = _axes(semi_major_px, semi_minor_px, draw_a, draw_ci)
    if a > 0.5 * math.hypot(height, width):
        raise PhantomParameterError(
            f"semi-major axis {a:.1f} px does not fit a {height}x{width} image; use a smaller axis or a larger image"
        )
    angle = draw_angle if angle_rad is None else float(angle_rad) % math.pi
    if not math.isfinite(angle):
        raise PhantomParameterError(f"angle_rad={angle_rad} is not a finite number")
    half_w, half_h = _half_extent(a, b, angle)
    if center is None:
        margin = 0.02 * short_side
        lo_x, hi_x = half_w + margin, width - 1 - half_w - margin
        lo_y, hi_y = half_h + margin + 0.08 * height, height - 1 - half_h - margin
        # A head too large for the image is centred and clipped by the frame, as happens
        # with late-pregnancy heads on real scanners.
        cx = lo_x + draw_center_u[0] * (hi_x - lo_x) if hi_x > lo_x else (width - 1) / 2.0
        cy = lo_y + draw_center_u[1] * (hi_y - lo_y) if hi_y > lo_y else (height - 1) / 2.0
    else:
        if len(center) != 2:
            raise PhantomParameterError(f"center={center!r}: give (x, y) in px")
        cx, cy = (float(c) for c in center)
        if not (0.0 <= cx <= width - 1 and 0.0 <= cy <= height - 1):
            raise PhantomParameterError(
                f"center {center} lies outside the {height}x{width} image; give (x, y) in px inside it"
            )
    perimeter_px = _ramanujan_perimeter_px(a, b)
    if pixel_size_mm is None:
        lo = max(PIXEL_SIZE_RANGE_MM[0], HC_RANGE_MM[0] / perimeter_px)
        hi = min(PIXEL_SIZE_RANGE_MM[1], HC_RANGE_MM[1] / perimeter_px)
        if hi < lo:  # a head so small or large in px that no plausible HC is reachable
            lo, hi = PIXEL_SIZE_RANGE_MM
        pixel_size = lo + draw_pixel_u * (hi - lo)
    else:
        pixel_size = validate_pixel_size(pixel_size_mm, source="make_phantom pixel_size_mm")
    with_shadow = draw_shadow if shadow is None else bool(shadow)

    image = _render(
        rng, (height, width), cx, cy, a, b, angle, speckle=float(speckle), with_shadow=with_shadow, noise=float(noise)
    )
    u, v = _ellipse_frame((height, width), cx, cy, angle, dtype=np.float64)  # the truth: full precision
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return Phantom(
        image=image,
        mask=mask,
        center_x_px=float(cx),
        center_y_px=float(cy),
        semi_major_px=float(a),
        semi_minor_px=float(b),
        angle_rad=float(angle),
        pixel_size_mm=float(pixel_size),
        hc_mm=float(perimeter_px * pixel_size),
    )


def _axes(semi_major: float | None, semi_minor: float | None, draw_a: float, draw_ci: float) -> tuple[float, float]:
    for name, value in (("semi_major_px", semi_major), ("semi_minor_px", semi_minor)):
        if value is not None and not (math.isfinite(value) and value >= 4.0):
            raise PhantomParameterError(f"{name}={value}: use a finite axis of at least 4 px")
    if semi_major is None and semi_minor is None:
        return draw_a, draw_a * draw_ci
    if semi_major is None:
        return float(semi_minor) / draw_ci, float(semi_minor)
    if semi_minor is None:
        return float(semi_major), float(semi_major) * draw_ci
    if semi_minor > semi_major:
        raise PhantomParameterError(
            f"semi_minor_px={semi_minor} > semi_major_px={semi_major}: swap them and turn angle_rad by pi/2"
        )
    return float(semi_major), float(semi_minor)


def _half_extent(a: float, b: float, angle: float) -> tuple[float, float]:
    """Half width and half height of the ellipse's bounding box."""
    cos, sin = math.cos(angle), math.sin(angle)
    return math.sqrt((a * cos) ** 2 + (b * sin) ** 2), math.sqrt((a * sin) ** 2 + (b * cos) ** 2)


def _render(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cx: float,
    cy: float,
    a: float,
    b: float,
    angle: float,
    *,
    speckle: float,
    with_shadow: bool,
    noise: float,
) -> np.ndarray:
    """The ultrasound picture of the head, (H, W) float32 in [0, 1]."""
    height, width = shape
    f32 = np.float32
    distance = _ellipse_distance_px(shape, cx, cy, a, b, angle)
    u, v = _ellipse_frame(shape, cx, cy, angle)

    # Probe: the fan's apex sits at the top, near the middle; the fan opens wide enough
    # to hold the head, and reaches below its far side.
    apex_x = width / 2.0 + rng.uniform(-0.05, 0.05) * width
    apex_y = -rng.uniform(0.02, 0.15) * height
    xs = np.arange(width, dtype=f32)[None, :] - f32(apex_x)
    ys = np.arange(height, dtype=f32)[:, None] - f32(apex_y)
    radius = np.sqrt(xs**2 + ys**2)
    beam = np.arctan2(xs, ys)  # 0 straight down, positive toward +x
    outline = _ellipse_points(cx, cy, a, b, angle)
    head_beams = np.arctan2(outline[:, 0] - apex_x, outline[:, 1] - apex_y)
    head_radii = np.hypot(outline[:, 0] - apex_x, outline[:, 1] - apex_y)
    half_angle = min(
        math.radians(80.0),
        max(rng.uniform(math.radians(35.0), math.radians(50.0)), float(np.abs(head_beams).max()) + math.radians(3.0)),
    )
    outer_radius = max(rng.uniform(0.95, 1.15) * (height - apex_y), float(head_radii.max()) + 0.03 * height)
    inner_radius = rng.uniform(0.0, 0.5) * abs(apex_y) + abs(apex_y)

    # Tissue: layered texture (elongated across the beam), a few bright interfaces
    # (uterine wall, placenta) and a dark pocket of amniotic fluid around the head.
    tissue = 0.22 + 0.06 * _smooth_noise(rng, shape, (6.0, 2.0)) + 0.06 * _smooth_noise(rng, shape, (25.0, 25.0))
    for _ in range(int(rng.integers(2, 5))):
        layer = np.zeros(shape, np.float32)
        center_px = (int(rng.uniform(0, width) * 16), int(rng.uniform(0, height) * 16))
        axes_px = (int(rng.uniform(0.2, 0.6) * width * 16), int(rng.uniform(2, 8) * 16))
        cv2.ellipse(layer, center_px, axes_px, float(rng.uniform(-20, 20)), 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        tissue += f32(rng.uniform(0.15, 0.35)) * cv2.GaussianBlur(layer, (0, 0), 1.5)
    fluid_scale = rng.uniform(1.15, 1.6)
    fluid_u = u - f32(rng.uniform(-0.2, 0.2) * a)
    fluid_v = v - f32(rng.uniform(-0.2, 0.2) * b)
    fluid_rho = np.sqrt((fluid_u / (fluid_scale * a)) ** 2 + (fluid_v / (fluid_scale * b)) ** 2)
    fluid = 1.0 - _ramp(fluid_rho - 1.0, 0.3)
    image = tissue * (1.0 - 0.85 * fluid) + 0.02 * fluid

    # Brain: darker, faint texture, midline echo (falx) along the major axis with gaps,
    # cavum septi pellucidi (small dark box) and the two thalami (hypoechoic ovals).
    inside = _ramp(-distance, 1.0)
    brain = 0.10 + 0.03 * _smooth_noise(rng, shape, (3.0, 3.0))
    gaps = np.cos(u / f32(a) * f32(rng.uniform(8, 16)) + f32(rng.uniform(0, 2 * math.pi))) > -0.3
    midline = (np.abs(v) < 1.2) & (np.abs(u) < 0.85 * a) & gaps
    brain = brain + f32(rng.uniform(0.12, 0.25)) * midline
    cavum_u = rng.uniform(-0.45, -0.3) * a
    cavum = (np.abs(u - f32(cavum_u)) < 0.07 * a) & (np.abs(v) < 0.05 * b)
    thalamus_rho = np.sqrt(
        ((u - f32(0.05 * a)) / f32(0.16 * a)) ** 2 + ((np.abs(v) - f32(0.14 * b)) / f32(0.1 * b)) ** 2
    )
    brain = np.where(cavum | (thalamus_rho < 1.0), brain * 0.45, brain)
    image = image * (1.0 - inside) + brain * inside

    # Skull: a bright ring inside the outer edge, brightest where the beam meets it head-on.
    thickness = max(2.0, rng.uniform(*SKULL_FRACTION_RANGE) * b)
    ring = _ramp(distance + f32(thickness), 1.0) * _ramp(-distance, 1.0)
    cos, sin = f32(math.cos(angle)), f32(math.sin(angle))
    gu, gv = u / f32(a * a), v / f32(b * b)
    gx, gy = gu * cos - gv * sin, gu * sin + gv * cos
    facing = np.abs(gx * xs + gy * ys) / (np.sqrt(gx**2 + gy**2) * radius + 1e-6)
    skull = f32(rng.uniform(0.6, 0.85)) * (0.2 + 0.8 * facing**1.5)
    image = image * (1.0 - ring) + skull * ring
    halo = _ramp(distance - 1.0, 1.0) * _ramp(f32(3.0 + thickness) - distance, 2.0)
    image = image + 0.08 * halo  # scalp and soft tissue just outside the bone

    # A wedge of beams through the head, dark beyond the near wall of the skull. Its
    # parameters are drawn either way, so that shadow=True/False differ only there.
    lo, hi = float(head_beams.min()), float(head_beams.max())
    centre = rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))
    half_width = rng.uniform(math.radians(2.0), math.radians(7.0))
    darkness = rng.uniform(0.4, 0.75)
    if with_shadow:
        in_wedge = _ramp(f32(half_width) - np.abs(beam - f32(centre)), math.radians(1.5))
        centre_radius = math.hypot(cx - apex_x, cy - apex_y)
        behind = np.maximum(_ramp(-(distance + f32(thickness)), 2.0), _ramp(radius - f32(centre_radius), 2.0))
        image = image * (1.0 - f32(darkness) * in_wedge * behind)

    # Depth attenuation (partly compensated by the scanner's gain) and speckle.
    image = image * np.exp(-f32(rng.uniform(0.1, 0.5)) * radius / f32(height))
    if speckle > 0:
        re = rng.standard_normal(shape, dtype=np.float32)
        im = rng.standard_normal(shape, dtype=np.float32)
        sigma = (rng.uniform(1.2, 2.2), rng.uniform(0.7, 1.2))  # speckle cells wider than deep
        re = cv2.GaussianBlur(re, (0, 0), sigmaX=sigma[0], sigmaY=sigma[1])
        im = cv2.GaussianBlur(im, (0, 0), sigmaX=sigma[0], sigmaY=sigma[1])
        amplitude = np.sqrt(re**2 + im**2)  # Rayleigh distributed
        amplitude /= max(float(amplitude.mean()), 1e-6)
        image = image * ((1.0 - speckle) + speckle * amplitude)
    # Log compression as on a scanner display, then electronic noise.
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.6, 1.1))
    gain = f32(rng.uniform(1.0, 2.5))
    image = np.log1p(gain * np.maximum(image, 0.0)) / np.log1p(gain * f32(1.1))
    if noise > 0:
        image = image + f32(noise) * rng.standard_normal(shape, dtype=np.float32)

    fan = (np.abs(beam) <= half_angle) & (radius >= inner_radius) & (radius <= outer_radius)
    image = np.where(fan, image, 0.0)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def make_phantom_set(n: int, *, seed: int, height: int = 540, width: int = 800, **options) -> list[Phantom]:
    """``n`` independent phantoms; phantom ``i`` depends only on (seed, i), not on ``n``.

    ``options`` are passed to ``make_phantom`` (e.g. ``speckle``, ``pixel_size_mm``).
    """
    if int(n) < 0:
        raise PhantomParameterError(f"n={n}: ask for zero or more phantoms")
    children = np.random.SeedSequence(seed).spawn(int(n))
    return [make_phantom(height=height, width=width, rng_or_seed=np.random.default_rng(c), **options) for c in children]


# --------------------------------------------------------------------------- data sets


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _hc18_names(n: int) -> list[str]:
    """HC18-style stems: every third subject has a second image ``NNN_2HC``."""
    names, subject = [], 0
    while len(names) < n:
        names.append(f"{subject:03d}_HC")
        if subject % 3 == 1 and len(names) < n:
            names.append(f"{subject:03d}_2HC")
        subject += 1
    return names


def write_phantom_dataset(
    root: str | Path,
    n: int,
    *,
    seed: int,
    layout: str = "hc18",
    outline: bool = False,
    size: tuple[int, int] = (540, 800),
    **options,
) -> Path:
    """Write ``n`` phantom images as a data set on disk and return ``root``.

    layout="hc18": ``root/training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png`` and
    ``root/training_set_pixel_size_and_HC.csv`` (official header). Every third subject
    has a second image ``NNN_2HC.png`` of the same head (same axes and pixel size, new
    position, angle and texture). With ``outline=True`` annotations are 2-px ellipse
    outlines like the official download, otherwise filled masks.

    layout="folder": ``root/images/<name>.png``, ``root/masks/<name>.png`` and
    ``root/pixel_sizes.csv`` (``filename,pixel size(mm),head circumference (mm),subject``).

    The CSV's HC is the exact HC of the outer ellipse, rounded to 0.01 mm.
    ``options`` are passed to ``make_phantom``. Deterministic for a seed.
    """
    if layout not in ("hc18", "folder"):
        raise PhantomParameterError(f"layout={layout!r}: use 'hc18' or 'folder'")
    if int(n) < 1:
        raise PhantomParameterError(f"n={n}: write at least one image")
    height, width = (int(s) for s in size)
    root = Path(root)
    stems = _hc18_names(int(n))
    children = np.random.SeedSequence(seed).spawn(len(stems))
    rows, first_of_subject = [], {}
    for stem, child in zip(stems, children):
        subject = stem.split("_", 1)[0]
        rng = np.random.default_rng(child)
        same_head = first_of_subject.get(subject)
        if same_head is not None:
            options_i = {
                **options,
                "semi_major_px": same_head.semi_major_px,
                "semi_minor_px": same_head.semi_minor_px,
                "pixel_size_mm": same_head.pixel_size_mm,
            }
        else:
            options_i = options
        phantom = make_phantom(height=height, width=width, rng_or_seed=rng, **options_i)
        first_of_subject.setdefault(subject, phantom)
        annotation = phantom.outline() if outline else phantom.mask
        if layout == "hc18":
            image_path = root / "training_set" / f"{stem}.png"
            mask_path = root / "training_set" / f"{stem}_Annotation.png"
        else:
            image_path = root / "images" / f"{stem}.png"
            mask_path = root / "masks" / f"{stem}.png"
        _write_png(image_path, _to_uint8(phantom.image))
        _write_png(mask_path, np.where(annotation, 255, 0).astype(np.uint8))
        row = [image_path.name, f"{phantom.pixel_size_mm:.10g}", f"{phantom.hc_mm:.2f}"]
        rows.append(row if layout == "hc18" else [*row, subject])
    csv_path = root / ("training_set_pixel_size_and_HC.csv" if layout == "hc18" else "pixel_sizes.csv")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER if layout == "hc18" else (*CSV_HEADER, "subject"))
        writer.writerows(rows)
    log.info("wrote %d phantom images (%s layout) to %s", len(rows), layout, root)
    return root
