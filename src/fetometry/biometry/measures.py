"""Ellipse in pixels -> head circumference (HC), BPD, OFD and cephalic index in mm.

Formulas (primary sources: Ramanujan 1914 and Hadlock et al. 1981)
------------------------------------------------------------------
- HC = ellipse perimeter, Ramanujan's second approximation (S. Ramanujan, "Modular
  equations and approximations to pi", Quart. J. Pure Appl. Math. 45, 1914):
  h = (a-b)^2/(a+b)^2, P = pi (a+b) (1 + 3h / (10 + sqrt(4 - 3h))). Check value:
  a = 50, b = 40 -> 283.617. It is also the formula of the HC18 challenge
  (van den Heuvel et al., PLoS ONE 13(8) e0200412, 2018).
- On the outer skull ellipse: OFD = 2a, BPD = 2b (outer-to-outer), cephalic index
  CI = BPD / OFD * 100, normal about 74-83 (Hadlock et al., AJR 137, 1981).

Offset
------
``offset_px`` is subtracted from BOTH semi-axes before conversion. HC18's filled masks
lie about 1.4 px outside the sonographer's ellipse (the drawn outline's thickness, see
shared/data/hc18/README.md); ``calibrate_offset_px`` estimates it on a TRAINING split,
and the caller passes it here. The offset is in pixels of the analysed image.

HC18 submission row (``hc18_row``)
----------------------------------
Columns ``center_x_mm, center_y_mm, semi_axes_a_mm, semi_axes_b_mm, angle_rad`` (after
``filename``). CONFIRMED: these column names and their order, as used by HC18 challenge
submissions (many public submission scripts; matches the fetometry CLI contract).
NOT CONFIRMED from an official HC18 source (public submission scripts disagree, some
even swap x and y), hence CHOSEN and documented here:
- center = pixel coordinates (x = column, y = row, origin at the CENTER of the top-left
  pixel) times the pixel size, in mm;
- semi_axes_a_mm = the semi-axis along ``angle_rad`` (the major one), semi_axes_b_mm the
  other (minor), both after subtracting ``offset_px``, in mm;
- angle_rad = direction of the a-axis from +x towards +y (y down, clockwise on screen),
  in [0, pi).
The HC18 evaluation ranks by HC, which is invariant to these choices as long as a and b
are the semi-axes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fetometry.biometry.ellipse import Ellipse
from fetometry.io.pixel_size import validate_pixel_size

log = logging.getLogger(__name__)

#: HC18 submission columns after ``filename``, in order.
HC18_COLUMNS = ("center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")


def ramanujan_perimeter(a: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """Ellipse perimeter from semi-axes a, b (any order, same unit), Ramanujan II (1914).

    h = (a-b)^2/(a+b)^2; P = pi (a+b) (1 + 3h / (10 + sqrt(4 - 3h))).
    Check value (Ramanujan 1914, formula II): a=50, b=40 -> 283.617. Relative error below
    1e-9 for axis ratios >= 0.5 and 1.2e-5 at 0.1 (against the exact 4a E(1 - b^2/a^2)),
    far below pixel quantisation for heads.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError(f"semi-axes must be finite, got a={a}, b={b}")
    if (a_arr < 0).any() or (b_arr < 0).any():
        raise ValueError(f"semi-axes must be non-negative, got a={a}, b={b}")
    total = a_arr + b_arr
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(total > 0, (a_arr - b_arr) ** 2 / np.where(total > 0, total, 1.0) ** 2, 0.0)
    perimeter = np.pi * total * (1.0 + 3.0 * h / (10.0 + np.sqrt(4.0 - 3.0 * h)))
    return float(perimeter) if perimeter.ndim == 0 else perimeter


@dataclass(frozen=True)
class HeadMeasurement:
    """Head biometry in mm (one pixel size), plus the ellipse it came from.

    ``semi_axes_*_mm`` and the diameters are AFTER subtracting ``offset_px``;
    ``center_*_mm`` = pixel coordinates (origin at the center of the top-left pixel)
    times ``pixel_size_mm``; ``angle_rad`` = major axis from +x towards +y, in [0, pi).
    """

    hc_mm: float
    bpd_mm: float
    ofd_mm: float
    cephalic_index: float
    center_x_mm: float
    center_y_mm: float
    semi_axes_a_mm: float
    semi_axes_b_mm: float
    angle_rad: float
    pixel_size_mm: float
    offset_px: float

    def to_dict(self) -> dict[str, float]:
        """Plain ``{field: float}`` for CSV/JSON."""
        return {key: float(value) for key, value in asdict(self).items()}


def _corrected_axes_px(ellipse: Ellipse, offset_px: float) -> tuple[float, float]:
    offset_px = float(offset_px)
    if not math.isfinite(offset_px):
        raise ValueError(f"offset_px must be finite, got {offset_px}")
    a_px, b_px = ellipse.semi_major_px - offset_px, ellipse.semi_minor_px - offset_px
    if b_px <= 0:
        raise ValueError(
            f"offset_px={offset_px} is not smaller than the semi-minor axis {ellipse.semi_minor_px:.3f} px; "
            "the offset calibration or the segmentation is wrong"
        )
    return a_px, b_px


def measure_ellipse(ellipse: Ellipse, pixel_size_mm: float, *, offset_px: float = 0.0) -> HeadMeasurement:
    """Ellipse (pixels) -> HeadMeasurement (mm). ``offset_px`` is subtracted from a and b.

    Raises PixelSizeError (a ValueError) for a missing or implausible pixel size: no
    pixel size, no mm; the caller reports that instead of calling this.
    """
    pixel_size_mm = validate_pixel_size(pixel_size_mm)
    a_px, b_px = _corrected_axes_px(ellipse, offset_px)
    a_mm, b_mm = a_px * pixel_size_mm, b_px * pixel_size_mm
    ofd_mm, bpd_mm = 2.0 * a_mm, 2.0 * b_mm  # outer-to-outer, as in INTERGROWTH-21st (Papageorghiou 2014)
    return HeadMeasurement(
        hc_mm=ramanujan_perimeter(a_mm, b_mm),  # Ramanujan II (1914)
        bpd_mm=bpd_mm,
        ofd_mm=ofd_mm,
        cephalic_index=bpd_mm / ofd_mm * 100.0,  # Hadlock 1981
        center_x_mm=ellipse.center_x_px * pixel_size_mm,
        center_y_mm=ellipse.center_y_px * pixel_size_mm,
        semi_axes_a_mm=a_mm,
        semi_axes_b_mm=b_mm,
        angle_rad=ellipse.angle_rad,
        pixel_size_mm=pixel_size_mm,
        offset_px=float(offset_px),
    )


def hc18_row(ellipse: Ellipse, pixel_size_mm: float, offset_px: float = 0.0) -> dict[str, float]:
    """The HC18 submission columns (``HC18_COLUMNS``) for one image; convention above."""
    measurement = measure_ellipse(ellipse, pixel_size_mm, offset_px=offset_px).to_dict()
    return {key: measurement[key] for key in HC18_COLUMNS}


def offset_for_reference_px(ellipse: Ellipse, pixel_size_mm: float, reference_hc_mm: float) -> float:
    """The shift d (px) with ramanujan(a - d, b - d) * pixel_size_mm == reference_hc_mm.

    The perimeter decreases strictly as d grows, so the root is unique; it is bracketed
    in [-(a + b), b) and found with Brent's method. Raises ValueError when the reference
    is smaller than any ellipse with these shifted axes can be (inconsistent input).
    """
    pixel_size_mm = validate_pixel_size(pixel_size_mm)
    reference_hc_mm = float(reference_hc_mm)
    if not (math.isfinite(reference_hc_mm) and reference_hc_mm > 0):
        raise ValueError(f"reference HC must be a positive number of mm, got {reference_hc_mm}")
    a_px, b_px = ellipse.semi_major_px, ellipse.semi_minor_px
    target_px = reference_hc_mm / pixel_size_mm

    def excess(d: float) -> float:
        return ramanujan_perimeter(a_px - d, b_px - d) - target_px

    low, high = -(a_px + b_px), b_px
    if excess(high) > 0:
        raise ValueError(
            f"reference HC {reference_hc_mm} mm is too small for an ellipse with semi-axes "
            f"{a_px:.1f}/{b_px:.1f} px at {pixel_size_mm} mm/px; check the pairing of images and references"
        )
    while excess(low) < 0:  # reference far larger than the ellipse: widen the bracket
        low *= 2.0
    from scipy import optimize  # calibration only: measuring needs no SciPy

    return float(optimize.brentq(excess, low, high, xtol=1e-9))


def calibrate_offset_px(
    ellipses: Sequence[Ellipse],
    pixel_sizes_mm: Sequence[float],
    reference_hc_mm: Sequence[float],
    *,
    scale_ratios: Sequence[float] | None = None,
) -> float:
    """Median over images of the per-image offset (``offset_for_reference_px``), in px.

    Use it on a TRAINING split only; pass the result to ``measure_ellipse(offset_px=...)``.
    Positive: the fitted ellipses lie outside the reference ellipses. Images whose
    reference cannot be matched are skipped with a warning; none matched -> ValueError.
    ``scale_ratios``: per image, the canvas pixels per image pixel of the network pass
    that drew its outline over those of the reference frame
    (``Predictor.boundary_offset_px``); each offset is multiplied by its ratio, so the
    result is in pixels of the reference frame. None: every ratio is 1.
    """
    scale_ratios = [1.0] * len(ellipses) if scale_ratios is None else list(scale_ratios)
    if not (len(ellipses) == len(pixel_sizes_mm) == len(reference_hc_mm) == len(scale_ratios)):
        raise ValueError(
            f"need one pixel size, one reference HC and one scale ratio per ellipse, got {len(ellipses)} ellipses, "
            f"{len(pixel_sizes_mm)} pixel sizes, {len(reference_hc_mm)} references, {len(scale_ratios)} ratios"
        )
    offsets = []
    rows = zip(ellipses, pixel_sizes_mm, reference_hc_mm, scale_ratios)
    for index, (ellipse, pixel_size, reference, ratio) in enumerate(rows):
        try:
            offsets.append(offset_for_reference_px(ellipse, pixel_size, reference) * ratio)
        except ValueError as error:
            log.warning("offset calibration: skipping image %d: %s", index, error)
    if not offsets:
        raise ValueError("offset calibration needs at least one image with a valid pixel size and reference HC")
    offset = float(np.median(offsets))
    log.info(
        "calibrated offset %.3f px (median of %d images, IQR %.3f-%.3f px)",
        offset,
        len(offsets),
        *np.percentile(offsets, [25, 75]),
    )
    return offset
