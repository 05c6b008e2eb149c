"""Biometry of other structures: abdominal circumference (AC) and femur length (FL).

For models that segment the fetal abdomen or femur; the image conventions are those of
``fetometry.biometry.ellipse`` (x = column, y = row, pixel centres at integers).

AC - the head's ellipse path, unchanged
---------------------------------------
Largest component of the abdomen mask -> sub-pixel boundary -> robust ellipse
(``ellipse_from_probability``) -> perimeter by Ramanujan's second approximation
(``ramanujan_perimeter``) times the pixel size. AC is measured on the skin line, which
is the outer edge of the abdomen mask.

FL - major-axis length of the femur mask
----------------------------------------
The femur is measured end to end along its long axis (the ossified diaphysis, ISUOG
practice guidelines on fetal biometry). Here: largest 8-connected component of the
mask (holes filled) -> its principal axis (PCA of the component's pixel centres) ->
the sub-pixel boundary (the same level-crossing convention as the head: a binary mask
gives points on pixel edges) projected on that axis -> FL = max - min of the
projections. For a straight bone this is the length of the minimum-area bounding
rectangle along its axis; for a gently curved one it is the end-to-end chord.

No pixel size, no mm: the ``*_px`` functions work in pixels, the ``measure_*`` functions
need a validated pixel size (PixelSizeError otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fetometry.biometry.ellipse import (
    MIN_HEAD_AREA_PX,
    Ellipse,
    NoHeadError,
    ellipse_from_probability,
    largest_component,
    subpixel_boundary,
)
from fetometry.biometry.measures import ramanujan_perimeter
from fetometry.io.pixel_size import validate_pixel_size

#: Smallest femur component (px) accepted by default: a few hundred pixels even for an
#: 18-week femur (25 mm at 0.3 mm/px is about 80 px long and several px wide).
MIN_FEMUR_AREA_PX = 30
#: Smallest abdomen component (px) accepted by default (same floor as the head).
MIN_ABDOMEN_AREA_PX = MIN_HEAD_AREA_PX


class NoStructureError(ValueError):
    """The segmentation contains no plausible abdomen / femur (empty or too small)."""


# ---------------------------------------------------------------------------------------
# Abdominal circumference
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbdomenMeasurement:
    """AC in mm and the ellipse (pixels) it came from; axes after ``offset_px``."""

    ac_mm: float
    semi_axes_a_mm: float
    semi_axes_b_mm: float
    pixel_size_mm: float
    offset_px: float
    ellipse: Ellipse

    def to_dict(self) -> dict[str, float]:
        return {
            "ac_mm": self.ac_mm,
            "ac_semi_axes_a_mm": self.semi_axes_a_mm,
            "ac_semi_axes_b_mm": self.semi_axes_b_mm,
            "ac_center_x_px": self.ellipse.center_x_px,
            "ac_center_y_px": self.ellipse.center_y_px,
            "ac_angle_rad": self.ellipse.angle_rad,
            "pixel_size_mm": self.pixel_size_mm,
        }


def abdomen_ellipse(prob: np.ndarray, *, threshold: float = 0.5, min_area_px: int = MIN_ABDOMEN_AREA_PX) -> Ellipse:
    """(H, W) abdomen probability map or mask -> ellipse in pixels (the head's path)."""
    try:
        return ellipse_from_probability(prob, threshold=threshold, min_area_px=min_area_px)
    except NoHeadError as error:  # same geometry, different structure: say so
        raise NoStructureError(str(error).replace("head", "abdomen")) from None


def measure_ac(
    prob: np.ndarray,
    pixel_size_mm: float,
    *,
    threshold: float = 0.5,
    min_area_px: int = MIN_ABDOMEN_AREA_PX,
    offset_px: float = 0.0,
) -> AbdomenMeasurement:
    """Abdominal circumference (mm) from an (H, W) abdomen probability map or mask.

    ``offset_px`` is subtracted from both semi-axes (a calibrated outline thickness, as
    for the head). Raises PixelSizeError without a valid pixel size, NoStructureError
    without an abdomen, EllipseFitError when its outline is not elliptical.
    """
    pixel_size_mm = validate_pixel_size(pixel_size_mm)
    ellipse = abdomen_ellipse(prob, threshold=threshold, min_area_px=min_area_px)
    a_px, b_px = ellipse.semi_major_px - offset_px, ellipse.semi_minor_px - offset_px
    if b_px <= 0:
        raise ValueError(
            f"offset_px={offset_px} is not smaller than the semi-minor axis {ellipse.semi_minor_px:.2f} px"
        )
    a_mm, b_mm = a_px * pixel_size_mm, b_px * pixel_size_mm
    return AbdomenMeasurement(ramanujan_perimeter(a_mm, b_mm), a_mm, b_mm, pixel_size_mm, float(offset_px), ellipse)


# ---------------------------------------------------------------------------------------
# Femur length
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FemurAxis:
    """Femur geometry in pixels.

    ``end_a_px`` / ``end_b_px``: (x, y) of the two ends on the principal axis;
    ``angle_rad`` in [0, pi) from +x towards +y; ``width_px`` the extent across the
    axis; ``touches_border``: the bone is cut by the image edge, so the length is a
    lower bound and should not be reported as FL.
    """

    length_px: float
    width_px: float
    angle_rad: float
    end_a_px: tuple[float, float]
    end_b_px: tuple[float, float]
    area_px: int
    touches_border: bool


@dataclass(frozen=True)
class FemurMeasurement:
    """FL in mm (one pixel size) and the axis it came from."""

    fl_mm: float
    width_mm: float
    pixel_size_mm: float
    axis: FemurAxis

    def to_dict(self) -> dict[str, float | bool]:
        return {
            "fl_mm": self.fl_mm,
            "fl_width_mm": self.width_mm,
            "pixel_size_mm": self.pixel_size_mm,
            "fl_end_a_x_px": self.axis.end_a_px[0],
            "fl_end_a_y_px": self.axis.end_a_px[1],
            "fl_end_b_x_px": self.axis.end_b_px[0],
            "fl_end_b_y_px": self.axis.end_b_px[1],
            "fl_touches_border": self.axis.touches_border,
        }


def _principal_axes(component: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre xy, major unit vector, minor unit vector) of a component's pixel centres."""
    rows, cols = np.nonzero(component)
    xy = np.stack([cols, rows], axis=1).astype(float)
    centre = xy.mean(axis=0)
    covariance = np.cov((xy - centre).T) if len(xy) > 1 else np.eye(2)
    _, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues: last column = major
    major, minor = vectors[:, 1], vectors[:, 0]
    if major[0] < 0 or (major[0] == 0 and major[1] < 0):
        major = -major  # a fixed sign makes the ends' order deterministic
    return centre, major, minor


def _touches_border(component: np.ndarray) -> bool:
    return bool(component[0].any() or component[-1].any() or component[:, 0].any() or component[:, -1].any())


def femur_axis_px(prob: np.ndarray, *, threshold: float = 0.5, min_area_px: int = MIN_FEMUR_AREA_PX) -> FemurAxis:
    """(H, W) femur probability map or mask -> FemurAxis in pixels (see the module doc)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    boundary = subpixel_boundary(prob, level=threshold)  # validates prob; (N, 2) xy
    component = largest_component(np.asarray(prob) >= threshold)
    area = int(component.sum())
    if area == 0 or area < min_area_px or len(boundary) == 0:
        raise NoStructureError(
            f"no femur found: the largest candidate covers {area} px, below the minimum of {min_area_px} px"
        )
    centre, major, minor = _principal_axes(component)
    along, across = (boundary - centre) @ major, (boundary - centre) @ minor
    end_a, end_b = centre + along.min() * major, centre + along.max() * major
    angle = float(np.arctan2(major[1], major[0]) % np.pi)
    return FemurAxis(
        length_px=float(along.max() - along.min()),
        width_px=float(across.max() - across.min()),
        angle_rad=0.0 if angle >= np.pi else angle,
        end_a_px=(float(end_a[0]), float(end_a[1])),
        end_b_px=(float(end_b[0]), float(end_b[1])),
        area_px=area,
        touches_border=_touches_border(component),
    )


def measure_fl(
    prob: np.ndarray,
    pixel_size_mm: float,
    *,
    threshold: float = 0.5,
    min_area_px: int = MIN_FEMUR_AREA_PX,
) -> FemurMeasurement:
    """Femur length (mm) from an (H, W) femur probability map or mask.

    Raises PixelSizeError without a valid pixel size, NoStructureError without a femur.
    Check ``axis.touches_border``: a femur cut by the image edge is too short.
    """
    pixel_size_mm = validate_pixel_size(pixel_size_mm)
    axis = femur_axis_px(prob, threshold=threshold, min_area_px=min_area_px)
    return FemurMeasurement(axis.length_px * pixel_size_mm, axis.width_px * pixel_size_mm, pixel_size_mm, axis)
