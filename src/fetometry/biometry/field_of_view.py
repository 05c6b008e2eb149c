"""The scanned area of an ultrasound image, and how much of a head's outline lies outside it.

An ultrasound image shows echoes only inside the scan sector: the fan of a curved probe,
the rectangle of a linear one. Around it lie black corners, or on a full-screen capture
grey panels, text, rulers and bars. Where the sector's edge cuts through a head, its
outline cannot be seen, and a network rounds off the part it sees: the ellipse fitted to
that is too small, yet elliptical and confident (measured: docs/QUALITY.md, rule
``outside_scan``). The quality gate's ``clipped`` rule catches a head cut by the image's
border; ``outside_scan`` catches one cut by the sector's.

``scanned_area``: the convex hull of the large speckled regions. Speckle (an intensity SD
of at least half a grey level in every 5x5 window) covers tissue; solid panels and the
black outside the sector have none, and text, rulers and grey bars are small regions.
Amniotic fluid can be as flat as the corners (HC18's first-trimester frames hold large
areas around the head with no speckle above half a grey level), so flatness alone cannot
tell it from the outside;
the hull can: a sector is convex, and fluid lies inside it, between speckled tissue.

``outside_scan_fraction``: the share of the ellipse's outline (by the parameter of its
samples, near-uniform in arc length at a head's axis ratio) whose outside, out to a few
pixels, leaves the scanned area or the image: the part of the outline the image cannot
show.
"""

from __future__ import annotations

import cv2
import numpy as np

from fetometry.biometry.ellipse import Ellipse

#: Window (px, at half resolution) and intensity SD (of a [0, 1] image) of speckle.
SPECKLE_WINDOW = 5
SPECKLE_SD = 0.5 / 255
#: Speckled regions smaller than this share of the image (text, rulers, bars) are not the scan.
MIN_REGION_SHARE = 0.02
#: The outward look past the outline: REACH_PX plus REACH_OF_MINOR of the semi-minor axis,
#: about the skull's thickness, which lies outside a fitted head outline.
REACH_PX = 2.0
REACH_OF_MINOR = 0.03
SAMPLES = 360


def scanned_area(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: True inside the scanned area (module docstring). An image with no
    large speckled region (a drawing, a phantom without speckle) shows no sector to find:
    all of it counts as scanned, and only the image's border bounds what it shows (the
    plane check is what refuses such an image as ultrasound). Computed at half resolution."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D grayscale image, got shape {pixels.shape}")
    height, width = pixels.shape
    small = cv2.resize(pixels, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_AREA)
    mean = cv2.blur(small, (SPECKLE_WINDOW, SPECKLE_WINDOW))
    variance = cv2.blur(small * small, (SPECKLE_WINDOW, SPECKLE_WINDOW)) - mean * mean
    speckled = (variance >= np.float32(SPECKLE_SD) ** 2).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(speckled, connectivity=8)
    large = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= MIN_REGION_SHARE * speckled.size) + 1
    if not large.size:
        return np.ones((height, width), dtype=bool)
    area = np.zeros_like(speckled)
    is_large = np.zeros(count, dtype=np.uint8)
    is_large[large] = 1
    regions = is_large[labels]
    contours, _ = cv2.findContours(regions, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.fillConvexPoly(area, cv2.convexHull(np.concatenate(contours)), 1)
    return cv2.resize(area, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def outside_scan_fraction(ellipse: Ellipse, scanned: np.ndarray) -> float:
    """Share of the ellipse's outline whose outside, out to ``REACH_PX + REACH_OF_MINOR x
    semi-minor`` px, leaves ``scanned`` (``scanned_area``) or the image."""
    unseen, _ = unseen_outline(ellipse, scanned)
    return float(unseen.mean())


def unseen_outline(ellipse: Ellipse, scanned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SAMPLES,) bool: which outline samples' outside leaves ``scanned`` or the image
    (``outside_scan_fraction``), and (SAMPLES, 2) their unit outward normals (x, y)."""
    height, width = scanned.shape
    x, y = ellipse.points(SAMPLES).T
    # The outward normal at the parametric angle t, the points' own (a cos t, b sin t), is
    # along (b cos t, a sin t), then rotated.
    t = np.linspace(0.0, 2.0 * np.pi, SAMPLES, endpoint=False)
    a, b = ellipse.semi_major_px, ellipse.semi_minor_px
    cos_a, sin_a = np.cos(ellipse.angle_rad), np.sin(ellipse.angle_rad)
    normal_x = b * np.cos(t) * cos_a - a * np.sin(t) * sin_a
    normal_y = b * np.cos(t) * sin_a + a * np.sin(t) * cos_a
    norm = np.hypot(normal_x, normal_y)
    normal_x, normal_y = normal_x / norm, normal_y / norm
    unseen = np.zeros(SAMPLES, dtype=bool)
    for distance in np.linspace(0.0, REACH_PX + REACH_OF_MINOR * b, 6):
        col = np.round(x + distance * normal_x).astype(int)
        row = np.round(y + distance * normal_y).astype(int)
        off_image = (col < 0) | (col >= width) | (row < 0) | (row >= height)
        inside = scanned[np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)]
        unseen |= off_image | ~inside
    return unseen, np.stack([normal_x, normal_y], axis=1)


def cut_on_opposite_sides(unseen: np.ndarray, normals: np.ndarray) -> bool:
    """Whether the unseen parts of an outline face opposite ways (two of their outward
    normals more than 120 degrees apart): the view cuts the head on two opposite sides,
    so no shift of the head brings all of it into view."""
    facing = normals[unseen]
    return bool(facing.size and (facing @ facing.T).min() < -0.5)
