"""Segmentation (mask or probability map) -> sub-pixel head boundary -> robust ellipse.

Coordinate convention (used everywhere in fetometry)
----------------------------------------------------
Image pixel coordinates: ``x`` = column, ``y`` = row, ``y`` points DOWN, and pixel
``(row r, column c)`` has its CENTER at ``(x, y) = (c, r)``. A pixel is inside an
ellipse when its center is. ``angle_rad`` is the angle of the MAJOR axis measured from
+x towards +y (clockwise on screen, the same sense as ``cv2.ellipse``), in [0, pi).

Boundary convention
-------------------
``subpixel_boundary`` returns points where the map crosses ``level``, interpolated
linearly between the centers of two 4-neighbouring pixels, one inside and one outside the
head component (marching squares restricted to grid edges). For a binary mask (values 0
and 1, level 0.5) every such point lies exactly on the shared pixel EDGE, i.e. half a
pixel outside the outermost head pixel centers. A mask drawn as "pixel centers inside the
ellipse E" therefore yields a boundary whose fitted ellipse is E itself, without bias.
Boundary pixels on the image border produce no points: a head cut by the image edge is
fitted to its visible outline only.

Fitting
-------
1. Algebraic direct least squares constrained to ellipses (Fitzgibbon, Pilu & Fisher,
   IEEE TPAMI 21(5) 1999), in the numerically stable partitioned form of Halir & Flusser
   (WSCG 1998), on coordinates normalised to zero mean and unit RMS radius (Hartley-style
   conditioning, Hartley IEEE TPAMI 19(6) 1997).
2. Outlier rejection: least-median-of-squares over seeded random 6-point subsets
   (Rousseeuw, JASA 79, 1984; robust scale 1.4826 * median; skipped for a clean outline,
   whose all-point fit is the start), then iterative refitting on the inliers
   (|distance| <= 2.5 robust sigma).
3. Geometric refinement of (center, axes, angle) by robust non-linear least squares
   (Huber loss, Huber 1964; Levenberg-Marquardt on reweighted residuals with the analytic
   Jacobian) on a first-order geometric distance that is exact for circles (see
   ``_geometric_distance``); this removes the small shrinkage bias of the algebraic fit.

The path needs NumPy and OpenCV only (no SciPy import on a measurement's start-up).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from fetometry.masks import fill_holes

log = logging.getLogger(__name__)

#: Smallest head component (pixels) ``ellipse_from_probability`` accepts by default.
#: The smallest HC18 heads (HC ~ 45 mm at 0.33 mm/px) still cover several thousand px.
MIN_HEAD_AREA_PX = 200
#: Fewest points that determine a conic (5 degrees of freedom).
MIN_FIT_POINTS = 5
#: A fit is rejected when the median |distance| of the points exceeds this fraction of
#: the semi-minor axis, or when fewer than ``_MIN_INLIER_FRACTION`` of them are inliers.
_MAX_MEDIAN_RELATIVE_RESIDUAL = 0.05
_MIN_INLIER_FRACTION = 0.5
_RANSAC_TRIALS = 100
_RANSAC_SAMPLE = 6
#: The least-median start screens its candidates on this many evenly spaced boundary
#: points and ranks the best ``_FINALISTS`` of them on every point.
_MAX_SCREENED_POINTS = 512
_FINALISTS = 10
#: A clean outline skips the random subsets: when the all-point fit's median |distance| is
#: at most this (in units of the RMS radius, 2% of it), that fit is the start. The inlier
#: refit and the refinement then end on the same ellipse: on 697 of the default's maps
#: (397 HC18 heads and 300 of them in the capture, combined and large-head styles) every
#: parameter was identical to the last bit at 0.02; at 0.03 one moved 0.08 px and at 0.05
#: five moved up to 19 px. ``benchmarks/fit_speed.py`` compares the two on the validation maps.
_CLEAN_OUTLINE_MEDIAN = 0.02
#: The geometric refinement stops when a step lowers the cost, or moves the parameters
#: (in units of the points' RMS radius), by less than this relative amount.
_REFINE_TOLERANCE = 1e-10
_REFINE_MAX_STEPS = 100
#: Floor of the robust residual scale, in units of the points' RMS radius (about the
#: head's mean radius). A segmentation network's outline deviates SMOOTHLY from an
#: ellipse by a few % of the radius; with a tiny floor those deviations count as
#: outliers and trimming them biases the fit towards one side. Measured on predictions
#: of the default model on 205 TRAINING-split HC18 images: HC MAE 2.62 mm with a floor
#: of 1e-6, 2.22 mm at 0.01, 1.77 mm at 0.04, 1.76 mm with no rejection at all. Gross
#: outliers (beyond 2.5 x 4% = 10% of the radius) are still rejected.
_SIGMA_FLOOR = 0.04
_INLIER_SIGMAS = 2.5
#: Consistency factor turning a median absolute residual into a Gaussian sigma.
_MAD_TO_SIGMA = 1.4826


class EllipseFitError(ValueError):
    """The points do not determine an ellipse (too few, collinear, not elliptical)."""


class NoHeadError(ValueError):
    """The segmentation contains no plausible head (empty or too small)."""


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in image pixel coordinates (see the module docstring for the axes).

    ``semi_major_px >= semi_minor_px > 0``; ``angle_rad`` in [0, pi) is the direction
    of the major axis from +x towards +y. Use ``Ellipse.from_axes`` to build one from
    axes in any order and any angle.
    """

    center_x_px: float
    center_y_px: float
    semi_major_px: float
    semi_minor_px: float
    angle_rad: float

    def __post_init__(self) -> None:
        values = (self.center_x_px, self.center_y_px, self.semi_major_px, self.semi_minor_px, self.angle_rad)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"ellipse parameters must be finite, got {values}")
        if not 0 < self.semi_minor_px <= self.semi_major_px:
            raise ValueError(
                f"need semi_major_px >= semi_minor_px > 0, got a={self.semi_major_px}, "
                f"b={self.semi_minor_px}; use Ellipse.from_axes to sort the axes"
            )
        if not 0 <= self.angle_rad < math.pi:
            raise ValueError(
                f"angle_rad must be in [0, pi), got {self.angle_rad}; use Ellipse.from_axes to normalise it"
            )

    @classmethod
    def from_axes(
        cls, center_x_px: float, center_y_px: float, axis1_px: float, axis2_px: float, angle1_rad: float
    ) -> Ellipse:
        """Build from two semi-axes in any order; ``angle1_rad`` is the direction of ``axis1_px``."""
        a, b, angle = abs(float(axis1_px)), abs(float(axis2_px)), float(angle1_rad)
        if b > a:
            a, b, angle = b, a, angle + math.pi / 2
        return cls(float(center_x_px), float(center_y_px), a, b, _normalise_angle(angle))

    @property
    def axis_ratio(self) -> float:
        """semi-minor / semi-major, in (0, 1]; 1 is a circle."""
        return self.semi_minor_px / self.semi_major_px

    def points(self, n: int = 360) -> np.ndarray:
        """(n, 2) float xy points on the boundary, evenly spaced in the parametric angle."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        cos_a, sin_a = math.cos(self.angle_rad), math.sin(self.angle_rad)
        u, v = self.semi_major_px * np.cos(t), self.semi_minor_px * np.sin(t)
        x = self.center_x_px + u * cos_a - v * sin_a
        y = self.center_y_px + u * sin_a + v * cos_a
        return np.stack([x, y], axis=1)

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) bool mask of the pixels whose CENTERS lie inside or on the ellipse."""
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}")
        rows, cols = np.ogrid[: shape[0], : shape[1]]
        return self.normalised_radius(cols.astype(float), rows.astype(float)) <= 1.0

    def normalised_radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """sqrt((u/a)^2 + (v/b)^2) at points (x, y): < 1 inside, 1 on, > 1 outside."""
        u, v = self._local(x, y)
        return np.sqrt((u / self.semi_major_px) ** 2 + (v / self.semi_minor_px) ** 2)

    def _local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - self.center_x_px, y - self.center_y_px
        cos_a, sin_a = math.cos(self.angle_rad), math.sin(self.angle_rad)
        return dx * cos_a + dy * sin_a, -dx * sin_a + dy * cos_a


def _normalise_angle(angle_rad: float) -> float:
    """Map an axis direction to [0, pi) (an axis has no sign)."""
    angle = math.fmod(angle_rad, math.pi)
    if angle < 0:
        angle += math.pi
    return 0.0 if angle >= math.pi else angle  # fmod of tiny negatives can round to pi


# ---------------------------------------------------------------------------------------
# Components and boundaries
# ---------------------------------------------------------------------------------------


def largest_component(mask: np.ndarray, *, min_area_px: int = 0) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the largest 8-connected component, holes filled.

    Components smaller than ``min_area_px`` are not plausible heads: if the largest is
    smaller, the result is empty. Empty in -> empty out.
    """
    mask = _as_2d(mask, "mask").astype(bool)
    if not mask.any():
        return np.zeros_like(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    best = int(np.argmax(areas)) + 1
    if areas[best - 1] < min_area_px:
        return np.zeros_like(mask)
    # Fill holes inside the component's bounding box (padded by one background pixel):
    # the same result as filling the whole frame, at a fraction of the cost on video frames.
    x, y, w, h = stats[best, :4]
    top, left = max(y - 1, 0), max(x - 1, 0)
    bottom, right = min(y + h + 1, mask.shape[0]), min(x + w + 1, mask.shape[1])
    component = np.zeros_like(mask)
    crop = np.pad(labels[top:bottom, left:right] == best, 1)
    component[top:bottom, left:right] = fill_holes(crop)[1:-1, 1:-1]
    return component


def subpixel_boundary(prob: np.ndarray, level: float = 0.5) -> np.ndarray:
    """(H, W) float probability map (or bool mask) -> (N, 2) float xy boundary points.

    The iso-contour of ``prob`` at ``level``, restricted to the outer boundary of the
    largest component of ``prob >= level`` (see the module docstring for the exact
    convention: binary masks give points on pixel edges). Points are ordered by angle
    around the component's centroid. Returns an empty (0, 2) array when nothing is at or
    above ``level``.
    """
    prob = _as_probability(prob)
    component = largest_component(prob >= level)
    return _component_boundary(prob, component, level)


def _foreground_window(foreground: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the box around the ``foreground`` pixels, padded by one
    pixel within the frame; None when there is none."""
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0:
        return None
    height, width = foreground.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)),
    )


def _component_boundary(
    prob: np.ndarray, component: np.ndarray, level: float, *, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Level crossings on the grid edges between ``component`` and in-image outside pixels.

    ``origin``: (row, col) of ``prob[0, 0]`` in the frame when ``prob`` is a window of it;
    the points are in frame coordinates."""
    points = []
    for axis in (0, 1):  # 0: vertical neighbours (rows), 1: horizontal neighbours (cols)
        first = [slice(None), slice(None)]
        second = [slice(None), slice(None)]
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        inside_a = component[tuple(first)]
        value_a, value_b = prob[tuple(first)], prob[tuple(second)]
        # One comparison finds every edge the outline crosses; the first pixel's side
        # then splits them, each part in raster order as its own scan would give.
        rows_all, cols_all = np.nonzero(inside_a != component[tuple(second)])
        first_inside = inside_a[rows_all, cols_all]
        for a_in in (True, False):  # the inside pixel is the first or the second one
            rows, cols = rows_all[first_inside == a_in], cols_all[first_inside == a_in]
            v_in = (value_a if a_in else value_b)[rows, cols].astype(float)
            v_out = (value_b if a_in else value_a)[rows, cols].astype(float)
            # Linear interpolation from the inside center towards the outside center.
            # Filled holes can hold v_in < level; clip keeps the point on the edge segment.
            t = np.clip((v_in - level) / np.maximum(v_in - v_out, 1e-12), 0.0, 1.0)
            step = t if a_in else 1.0 - t  # offset from the FIRST pixel's center
            y, x = (rows + origin[0]).astype(float), (cols + origin[1]).astype(float)
            if axis == 0:
                y = y + step
            else:
                x = x + step
            points.append(np.stack([x, y], axis=1))
    if not points:
        return np.zeros((0, 2))
    xy = np.concatenate(points)
    if len(xy) == 0:
        return np.zeros((0, 2))
    center_y, center_x = _centroid(component, origin)
    order = np.argsort(np.arctan2(xy[:, 1] - center_y, xy[:, 0] - center_x), kind="stable")
    return xy[order]


def _centroid(component: np.ndarray, origin: tuple[int, int]) -> tuple[float, float]:
    """(row, col) mean of the True pixels in frame coordinates, from the row and column
    counts: the same float64 values as the mean of ``np.nonzero``'s indices plus
    ``origin`` (each sum is an exact integer below 2**53, divided once), without listing
    every pixel."""
    count = np.count_nonzero(component)
    rows = np.arange(origin[0], origin[0] + component.shape[0], dtype=np.int64)
    cols = np.arange(origin[1], origin[1] + component.shape[1], dtype=np.int64)
    row_sum = int(component.sum(axis=1, dtype=np.int64) @ rows)
    col_sum = int(component.sum(axis=0, dtype=np.int64) @ cols)
    return row_sum / count, col_sum / count


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) array, got shape {array.shape}; squeeze batch/channel axes first")
    return array


def _as_probability(prob: np.ndarray) -> np.ndarray:
    """Bool/integer masks -> float 0/1 (nonzero = head); float maps must be in [0, 1]."""
    prob = _as_2d(prob, "prob")
    if prob.dtype == bool or np.issubdtype(prob.dtype, np.integer):
        return (prob != 0).astype(np.float32)
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"prob must be a float probability map or a mask, got dtype {prob.dtype}")
    if not np.isfinite(prob).all():
        raise ValueError("prob contains NaN or infinite values; fix the model output before fitting")
    if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError(
            f"prob must lie in [0, 1] (got {prob.min():.3g}..{prob.max():.3g}); apply a sigmoid/softmax to logits first"
        )
    return prob


# ---------------------------------------------------------------------------------------
# Conic algebra
# ---------------------------------------------------------------------------------------


def _direct_fit(xy: np.ndarray) -> np.ndarray | None:
    """Halir-Flusser direct ellipse fit: (N, 2) -> conic (A, B, C, D, E, F) or None.

    Conic: A x^2 + B xy + C y^2 + D x + E y + F = 0 with the ellipse constraint
    4AC - B^2 = 1 (Fitzgibbon 1999, eq. 5; Halir & Flusser 1998, sec. 3).
    """
    x, y = xy[:, 0], xy[:, 1]
    d1 = np.stack([x * x, x * y, y * y], axis=1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        return None  # collinear points: the linear part is singular
    m = s1 + s2 @ t
    # Premultiply by inv(C1), C1 = [[0, 0, 2], [0, -1, 0], [2, 0, 0]].
    m = np.stack([m[2] / 2.0, -m[1], m[0] / 2.0])
    if not np.isfinite(m).all():
        return None
    eigvals, eigvecs = np.linalg.eig(m)
    eigvecs = np.real(eigvecs)
    condition = 4.0 * eigvecs[0] * eigvecs[2] - eigvecs[1] ** 2
    candidates = np.nonzero(condition > 0)[0]
    if len(candidates) == 0:
        return None
    # Exactly one eigenvector satisfies the constraint in exact arithmetic; take the
    # one with the smallest |eigenvalue| if rounding admits more.
    best = candidates[np.argmin(np.abs(eigvals[candidates]))]
    a1 = eigvecs[:, best]
    return np.concatenate([a1, t @ a1])


def _conic_to_ellipse(conic: np.ndarray) -> Ellipse | None:
    """Conic coefficients -> Ellipse, or None when the conic is not a real ellipse."""
    a, b, c, d, e, f = conic
    quad = np.array([[a, b / 2.0], [b / 2.0, c]])
    try:
        center = np.linalg.solve(2.0 * quad, [-d, -e])
    except np.linalg.LinAlgError:
        return None
    f0 = f + (d * center[0] + e * center[1]) / 2.0  # conic value at the center
    eigvals, eigvecs = np.linalg.eigh(quad)  # ascending: eigvals[0] belongs to the major axis
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = -f0 / eigvals
    if not (np.isfinite(squared).all() and (squared > 0).all() and np.isfinite(center).all()):
        return None
    semi = np.sqrt(squared)
    major_dir = eigvecs[:, 0]
    try:
        return Ellipse.from_axes(center[0], center[1], semi[0], semi[1], math.atan2(major_dir[1], major_dir[0]))
    except ValueError:
        return None


def _conics_to_params(conics: list[np.ndarray]) -> np.ndarray:
    """``_conic_to_ellipse`` of many conics at once: (K, 5) rows (cx, cy, semi-axis 1,
    semi-axis 2, direction of axis 1) of the conics that are real ellipses, in order.
    The axes are not sorted: ``_geometric_distance`` is the same either way."""
    if not conics:
        return np.zeros((0, 5))
    a, b, c, d, e, f = np.array(conics).T
    quad = np.stack([np.stack([a, b / 2.0], -1), np.stack([b / 2.0, c], -1)], -2)
    det = a * c - b * b / 4.0
    solvable = np.isfinite(quad).all(axis=(1, 2)) & (np.abs(det) > 0)
    if not solvable.all():  # rare: keep the exact one-by-one path for degenerate conics
        ellipses = [e for e in (_conic_to_ellipse(conic) for conic in conics) if e is not None]
        return np.array([_params(e) for e in ellipses]).reshape(-1, 5)
    center = np.linalg.solve(2.0 * quad, np.stack([-d, -e], -1)[..., None])[..., 0]
    f0 = f + (d * center[:, 0] + e * center[:, 1]) / 2.0
    eigvals, eigvecs = np.linalg.eigh(quad)
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = -f0[:, None] / eigvals
    ok = np.isfinite(squared).all(1) & (squared > 0).all(1) & np.isfinite(center).all(1)
    angle = np.arctan2(eigvecs[:, 1, 0], eigvecs[:, 0, 0])
    return np.column_stack([center, np.sqrt(np.where(ok[:, None], squared, 1.0)), angle])[ok]


def _params(ellipse: Ellipse) -> np.ndarray:
    """(cx, cy, a, b, angle) of an ellipse, the parameter vector of the geometric fit."""
    return np.array(
        [ellipse.center_x_px, ellipse.center_y_px, ellipse.semi_major_px, ellipse.semi_minor_px, ellipse.angle_rad]
    )


def _geometric_distance(ellipse_params: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Signed distance (+ outside) to the ellipse (cx, cy, a, b, angle), first order.

    With s = sqrt((u/a)^2 + (v/b)^2) in the ellipse's own frame, d = (s - 1) / |grad s|
    (one Newton step from the curve, Sampson-style); it is exact for circles and
    second-order accurate for points near any ellipse.
    """
    cx, cy, a, b, angle = ellipse_params
    dx, dy = xy[:, 0] - cx, xy[:, 1] - cy
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    u, v = dx * cos_a + dy * sin_a, -dx * sin_a + dy * cos_a
    s = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2)
    return (s - 1.0) * s / np.maximum(grad, 1e-12)


def _geometric_distance_batch(params: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``_geometric_distance`` for K ellipses (K, 5) at once -> (K, N)."""
    cx, cy, a, b, angle = (params[:, i : i + 1] for i in range(5))
    dx, dy = xy[None, :, 0] - cx, xy[None, :, 1] - cy
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    u, v = dx * cos_a + dy * sin_a, -dx * sin_a + dy * cos_a
    s = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2)
    return (s - 1.0) * s / np.maximum(grad, 1e-12)


def _distances(ellipse: Ellipse, xy: np.ndarray) -> np.ndarray:
    return _geometric_distance(_params(ellipse), xy)


def _geometric_jacobian(params: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_geometric_distance`` (N,) and its analytic derivatives (N, 5) with respect to
    (cx, cy, a, b, angle).

    With q = (u/a)^2 + (v/b)^2, s = sqrt(q), G = (u/a^2)^2 + (v/b^2)^2, g = sqrt(G), the
    distance is d = (q - s) / g, so dd = dq (1 - 1/(2s)) / g - (q - s) dG / (2 g^3);
    u and v move with the center (du/dcx = -cos, dv/dcx = sin, du/dcy = -sin,
    dv/dcy = -cos) and the angle (du/dangle = v, dv/dangle = -u).
    """
    cx, cy, a, b, angle = params
    dx, dy = xy[:, 0] - cx, xy[:, 1] - cy
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    u, v = dx * cos_a + dy * sin_a, -dx * sin_a + dy * cos_a
    a2, b2 = a * a, b * b
    q = (u / a) ** 2 + (v / b) ** 2
    s = np.maximum(np.sqrt(q), 1e-12)
    g = np.maximum(np.sqrt((u / a2) ** 2 + (v / b2) ** 2), 1e-12)
    q_u, q_v, g_u, g_v = 2 * u / a2, 2 * v / b2, 2 * u / (a2 * a2), 2 * v / (b2 * b2)
    dq = np.stack(
        [
            -q_u * cos_a + q_v * sin_a,
            -q_u * sin_a - q_v * cos_a,
            -2 * u * u / (a2 * a),
            -2 * v * v / (b2 * b),
            q_u * v - q_v * u,
        ],
        axis=1,
    )
    dg = np.stack(
        [
            -g_u * cos_a + g_v * sin_a,
            -g_u * sin_a - g_v * cos_a,
            -4 * u * u / (a2 * a2 * a),
            -4 * v * v / (b2 * b2 * b),
            g_u * v - g_v * u,
        ],
        axis=1,
    )
    distance = (q - s) / g
    jacobian = dq * ((1.0 - 0.5 / s) / g)[:, None] - dg * ((q - s) / (2.0 * g**3))[:, None]
    return distance, jacobian


def _huber_cost(residuals: np.ndarray, scale: float) -> float:
    """sum of rho(r): r^2 / 2 within ``scale``, scale |r| - scale^2 / 2 beyond it."""
    size = np.abs(residuals)
    return float(np.sum(np.where(size <= scale, 0.5 * residuals**2, scale * size - 0.5 * scale**2)))


# ---------------------------------------------------------------------------------------
# Robust fit
# ---------------------------------------------------------------------------------------


def _validate_points(points: np.ndarray) -> np.ndarray:
    xy = np.asarray(points, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise EllipseFitError(f"points must be an (N, 2) array of xy coordinates, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise EllipseFitError("points contain NaN or infinite coordinates; drop them before fitting")
    # Distinct points, counted as complex numbers x + iy: one sort of N values instead of
    # np.unique's slower row-wise sort, with the same count for finite points.
    distinct = len(np.unique(xy[:, 0] + 1j * xy[:, 1]))
    if distinct < MIN_FIT_POINTS:
        raise EllipseFitError(f"an ellipse needs at least {MIN_FIT_POINTS} distinct points, got {distinct}")
    return xy


def _clean_outline_start(xy: np.ndarray, conic: np.ndarray | None) -> Ellipse | None:
    """The all-point fit when its median |distance| is within ``_CLEAN_OUTLINE_MEDIAN``, else None."""
    if conic is None:
        return None
    params = _conics_to_params([conic])
    if not len(params) or np.median(np.abs(_geometric_distance_batch(params, xy)[0])) > _CLEAN_OUTLINE_MEDIAN:
        return None
    try:
        return Ellipse.from_axes(*params[0])
    except ValueError:
        return None


def _least_median_start(xy: np.ndarray, rng: np.random.Generator) -> Ellipse | None:
    """Least-median-of-squares over the all-point fit and random 6-point subsets, or the
    all-point fit alone when the outline is clean (``_CLEAN_OUTLINE_MEDIAN``).

    The subset fits are computed as one batch. The cost of a candidate is the median
    |distance| over every point; it is computed for the ``_FINALISTS`` candidates that rank
    best on an evenly spaced ``_MAX_SCREENED_POINTS``-point subsample (the points are
    ordered along the outline), which leaves the choice that of ranking every candidate on
    every point unless the best lies outside the finalists. The first of equal costs wins.
    """
    conics = [_direct_fit(xy)]
    clean = _clean_outline_start(xy, conics[0])
    if clean is not None:
        return clean
    if len(xy) > 2 * _RANSAC_SAMPLE:
        subsets = np.stack([rng.choice(len(xy), size=_RANSAC_SAMPLE, replace=False) for _ in range(_RANSAC_TRIALS)])
        conics.extend(_direct_fit_batch(xy[subsets]))
    params = _conics_to_params([c for c in conics if c is not None])
    if len(params) == 0:
        return None
    screened = xy[:: max(1, math.ceil(len(xy) / _MAX_SCREENED_POINTS))]
    rough = np.median(np.abs(_geometric_distance_batch(params, screened)), axis=1)
    finalists = np.sort(np.argsort(rough, kind="stable")[:_FINALISTS])  # in candidate order: ties as before
    costs = np.median(np.abs(_geometric_distance_batch(params[finalists], xy)), axis=1)
    best = params[finalists[int(np.argmin(costs))]]
    try:
        return Ellipse.from_axes(*best)
    except ValueError:
        return None


def _direct_fit_batch(subsets: np.ndarray) -> list[np.ndarray | None]:
    """``_direct_fit`` of each (K, n, 2) subset, vectorised; falls back to one by one
    when a subset is degenerate (a singular system stops a batched solve)."""
    x, y = subsets[..., 0], subsets[..., 1]
    d1 = np.stack([x * x, x * y, y * y], axis=-1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=-1)
    s1 = np.einsum("kni,knj->kij", d1, d1)
    s2 = np.einsum("kni,knj->kij", d1, d2)
    s3 = np.einsum("kni,knj->kij", d2, d2)
    try:
        t = -np.linalg.solve(s3, np.swapaxes(s2, 1, 2))
    except np.linalg.LinAlgError:
        return [_direct_fit(subset) for subset in subsets]
    m = s1 + s2 @ t
    m = np.stack([m[:, 2] / 2.0, -m[:, 1], m[:, 0] / 2.0], axis=1)
    if not np.isfinite(m).all():
        return [_direct_fit(subset) for subset in subsets]
    eigvals, eigvecs = np.linalg.eig(m)
    eigvecs = np.real(eigvecs)
    # Per subset, as _direct_fit: of the eigenvectors meeting the ellipse constraint, the
    # one with the smallest |eigenvalue|.
    condition = 4.0 * eigvecs[:, 0] * eigvecs[:, 2] - eigvecs[:, 1] ** 2  # (K, 3), one per eigenvector
    ranked = np.where(condition > 0, np.abs(eigvals), np.inf)
    best = np.argmin(ranked, axis=1)
    a1 = eigvecs[np.arange(len(subsets)), :, best]  # (K, 3)
    conics = np.concatenate([a1, np.einsum("kij,kj->ki", t, a1)], axis=1)
    return [conic if np.isfinite(rank).any() else None for conic, rank in zip(conics, ranked)]


def _robust_sigma(residuals: np.ndarray, floor: float) -> float:
    return max(_MAD_TO_SIGMA * float(np.median(np.abs(residuals))), floor)


def _refit_inliers(xy: np.ndarray, ellipse: Ellipse, floor: float) -> tuple[Ellipse, np.ndarray]:
    """Iterate: inliers within 2.5 robust sigma -> direct refit, until the set is stable."""
    inliers = np.ones(len(xy), dtype=bool)
    for _ in range(10):
        dist = _distances(ellipse, xy)
        sigma = _robust_sigma(dist[inliers], floor)
        new_inliers = np.abs(dist) <= _INLIER_SIGMAS * sigma
        if new_inliers.sum() < MIN_FIT_POINTS:
            break
        conic = _direct_fit(xy[new_inliers])
        refit = None if conic is None else _conic_to_ellipse(conic)
        if refit is None:
            break
        ellipse = refit
        if np.array_equal(new_inliers, inliers):
            break
        inliers = new_inliers
    return ellipse, inliers


def _geometric_refine(xy: np.ndarray, ellipse: Ellipse, sigma: float) -> Ellipse:
    """Robust geometric least squares over (cx, cy, a, b, angle): the Huber loss with
    scale ``sigma`` on ``_geometric_distance``, minimised by Levenberg-Marquardt
    (Marquardt's diagonal scaling) on iteratively reweighted residuals with the analytic
    Jacobian. A step is kept only when it lowers the Huber cost, so the fit never ends
    worse than ``ellipse``; at convergence the gradient of the Huber cost is zero."""
    params = _params(ellipse)
    residuals, jacobian = _geometric_jacobian(params, xy)
    cost = _huber_cost(residuals, sigma)
    damping = 1e-3
    for _ in range(_REFINE_MAX_STEPS):
        size = np.abs(residuals)
        weights = np.where(size <= sigma, 1.0, sigma / np.maximum(size, 1e-300))
        normal = jacobian.T @ (jacobian * weights[:, None])
        gradient = jacobian.T @ (weights * residuals)
        try:
            step = np.linalg.solve(normal + damping * np.diag(np.maximum(np.diag(normal), 1e-12)), -gradient)
        except np.linalg.LinAlgError:
            break
        trial = params + step
        trial_cost = math.inf
        if np.isfinite(trial).all() and trial[2] > 0 and trial[3] > 0:
            trial_residuals, trial_jacobian = _geometric_jacobian(trial, xy)
            trial_cost = _huber_cost(trial_residuals, sigma)
        if not trial_cost <= cost:
            damping *= 10.0
            if damping > 1e12:
                break
            continue
        small = cost - trial_cost <= _REFINE_TOLERANCE * cost or np.linalg.norm(step) <= _REFINE_TOLERANCE * (
            np.linalg.norm(params) + _REFINE_TOLERANCE
        )
        params, residuals, jacobian, cost = trial, trial_residuals, trial_jacobian, trial_cost
        damping = max(damping / 10.0, 1e-12)
        if small:
            break
    try:
        return Ellipse.from_axes(*params)
    except ValueError:
        return ellipse


def fit_ellipse(points: np.ndarray) -> Ellipse:
    """Robustly fit an ellipse to (N, 2) xy points (N >= 5); see the module docstring.

    Deterministic (the random subsets use a fixed seed). Raises EllipseFitError when the
    points do not determine an ellipse: fewer than 5 distinct points, collinear points,
    or points that do not lie on any ellipse (median residual above 5% of the semi-minor
    axis, or fewer than half of them within the inlier band).
    """
    xy = _validate_points(points)
    mean = xy.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((xy - mean) ** 2, axis=1))))
    if scale <= 0:
        raise EllipseFitError("all points coincide; they do not determine an ellipse")
    unit = (xy - mean) / scale  # conditioning: zero mean, unit RMS radius
    singular = np.linalg.svd(unit, compute_uv=False)
    if singular[-1] <= 1e-9 * singular[0]:
        # Collinear points: rounding can still give the direct fit a needle-thin "ellipse"
        # (semi-minor axis 1e-5 px), which measures nothing.
        raise EllipseFitError("the points are collinear; they do not determine an ellipse")
    floor = _SIGMA_FLOOR  # see _SIGMA_FLOOR: smooth shape deviations are not outliers
    start = _least_median_start(unit, np.random.default_rng(0))
    if start is None:
        raise EllipseFitError("no ellipse fits these points (they may be collinear or lie on a hyperbola)")
    ellipse, inliers = _refit_inliers(unit, start, floor)
    sigma = _robust_sigma(_distances(ellipse, unit[inliers]), floor)
    ellipse = _geometric_refine(unit[inliers], ellipse, sigma)
    _check_quality(ellipse, unit, sigma)
    return Ellipse.from_axes(
        ellipse.center_x_px * scale + mean[0],
        ellipse.center_y_px * scale + mean[1],
        ellipse.semi_major_px * scale,
        ellipse.semi_minor_px * scale,
        ellipse.angle_rad,
    )


def _check_quality(ellipse: Ellipse, unit: np.ndarray, sigma: float) -> None:
    dist = np.abs(_distances(ellipse, unit))
    median_relative = float(np.median(dist)) / ellipse.semi_minor_px
    inlier_fraction = float(np.mean(dist <= max(3.0 * sigma, 1e-6)))
    if median_relative > _MAX_MEDIAN_RELATIVE_RESIDUAL or inlier_fraction < _MIN_INLIER_FRACTION:
        raise EllipseFitError(
            f"the points do not lie on an ellipse (median residual {median_relative:.1%} of the "
            f"semi-minor axis, {inlier_fraction:.0%} inliers); check the segmentation"
        )


@dataclass(frozen=True)
class HeadComponent:
    """The head's pixels that an ellipse was fitted to: the largest component of the
    probability map at ``threshold`` (holes filled), cut to a window of the frame."""

    pixels: np.ndarray  # (h, w) bool
    origin: tuple[int, int]  # (row, col) of pixels[0, 0] in the frame
    threshold: float


def ellipse_from_probability(
    prob: np.ndarray, *, threshold: float = 0.5, min_area_px: int = MIN_HEAD_AREA_PX
) -> Ellipse:
    """(H, W) probability map or bool mask -> the head ellipse in pixel coordinates.

    Largest 8-connected component of ``prob >= threshold`` (holes filled) -> sub-pixel
    boundary of ``prob`` at ``threshold`` along that component's outer edge -> robust fit.
    Integer masks count nonzero as head. Raises NoHeadError when no component of at least
    ``min_area_px`` pixels exists, EllipseFitError when its outline is not elliptical.
    """
    return head_from_probability(prob, threshold=threshold, min_area_px=min_area_px)[0]


def head_from_probability(
    prob: np.ndarray, *, threshold: float = 0.5, min_area_px: int = MIN_HEAD_AREA_PX
) -> tuple[Ellipse, HeadComponent]:
    """``ellipse_from_probability``, and the component it was fitted to (the quality
    gate's mask-fit rule compares the two without finding the component again)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    prob = _as_probability(prob)
    window = _foreground_window(prob >= threshold)
    if window is None:
        raise NoHeadError(f"no pixel reaches the threshold {threshold}: no head found")
    # Every pixel at or above the threshold, and each one's outside neighbours, lie in the
    # window: the component and its boundary are those of the whole frame, for less work.
    prob = prob[window]
    component = largest_component(prob >= threshold)
    area = int(component.sum())
    if area < min_area_px:
        raise NoHeadError(
            f"the largest head candidate covers {area} px, below the minimum of {min_area_px} px; "
            "no plausible head found (lower min_area_px only for tiny images)"
        )
    origin = (window[0].start, window[1].start)
    boundary = _component_boundary(prob, component, threshold, origin=origin)
    if len(boundary) < MIN_FIT_POINTS:
        raise EllipseFitError(f"the head outline has only {len(boundary)} points inside the image")
    ellipse = fit_ellipse(boundary)
    log.debug("fitted %s to %d boundary points of a %d px component", ellipse, len(boundary), area)
    return ellipse, HeadComponent(component, origin, threshold)
