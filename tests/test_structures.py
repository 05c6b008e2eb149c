"""biometry.structures: AC by the head's ellipse path, FL as the femur mask's major axis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from fetometry.biometry.ellipse import Ellipse, EllipseFitError
from fetometry.biometry.measures import ramanujan_perimeter
from fetometry.biometry.structures import (
    NoStructureError,
    femur_axis_px,
    measure_ac,
    measure_fl,
)
from fetometry.data.synthetic import make_phantom
from fetometry.io.pixel_size import PixelSizeError


def femur_phantom(shape, cx, cy, length, width, angle, *, soft_px=None):
    """A straight bone: a capsule (stadium) with END-TO-END length ``length`` px.

    Binary: pixels whose centres are inside. ``soft_px``: a probability map falling
    from 1 to 0 across the outline with that scale (a logistic of the signed distance).
    """
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    ux, uy = math.cos(angle), math.sin(angle)
    half = (length - width) / 2.0
    t = np.clip((x - cx) * ux + (y - cy) * uy, -half, half)
    distance = np.hypot(x - cx - t * ux, y - cy - t * uy) - width / 2.0
    if soft_px is None:
        return distance <= 0
    return (1.0 / (1.0 + np.exp(distance / soft_px))).astype(np.float32)


# --------------------------------------------------------------------------- AC


def test_ac_on_phantom_equals_the_true_perimeter():
    phantom = make_phantom(height=240, width=320, rng_or_seed=3, pixel_size_mm=0.25)
    measured = measure_ac(phantom.mask, phantom.pixel_size_mm)
    assert measured.ac_mm == pytest.approx(phantom.hc_mm, rel=0.005)
    assert measured.ellipse.center_x_px == pytest.approx(phantom.center_x_px, abs=0.5)
    assert measured.to_dict()["ac_mm"] == measured.ac_mm


def test_ac_from_a_probability_map_and_with_an_offset():
    truth = Ellipse.from_axes(160.0, 120.0, 90.0, 70.0, 0.4)
    probability = ndimage.gaussian_filter(truth.to_mask((240, 320)).astype(np.float32), 1.0)
    measured = measure_ac(probability, 0.2)
    assert measured.ac_mm == pytest.approx(ramanujan_perimeter(90.0, 70.0) * 0.2, rel=0.005)
    shrunk = measure_ac(probability, 0.2, offset_px=2.0)
    assert shrunk.semi_axes_a_mm == pytest.approx(measured.semi_axes_a_mm - 0.4)


def test_ac_needs_pixel_size_and_an_abdomen():
    mask = Ellipse.from_axes(100.0, 80.0, 60.0, 45.0, 0.0).to_mask((160, 200))
    for missing in (None, 0.0, 5.0):
        with pytest.raises(PixelSizeError):
            measure_ac(mask, missing)
    with pytest.raises(NoStructureError, match="abdomen"):
        measure_ac(np.zeros((160, 200), bool), 0.2)
    with pytest.raises(EllipseFitError):
        measure_ac(femur_phantom((160, 200), 100, 80, 150, 8, 0.3), 0.2)  # a bar is not an ellipse


# --------------------------------------------------------------------------- FL


@pytest.mark.parametrize("length", [40.3, 87.7, 150.2])
def test_fl_length_on_binary_phantoms_at_all_angles(length):
    for angle in np.linspace(0.0, math.pi, 13):
        axis = femur_axis_px(femur_phantom((200, 240), 120.3, 99.6, length, 9.0, angle))
        assert axis.length_px == pytest.approx(length, abs=0.75), f"angle {angle:.2f}"
        assert axis.width_px == pytest.approx(9.0, abs=1.0)
        assert not axis.touches_border


def test_fl_length_on_probability_maps_is_subpixel():
    for angle in np.linspace(0.0, math.pi, 7):
        axis = femur_axis_px(femur_phantom((200, 240), 120.3, 99.6, 110.0, 8.0, angle, soft_px=0.7))
        assert axis.length_px == pytest.approx(110.0, abs=0.15)
        direction = (axis.angle_rad - angle) % math.pi
        assert min(direction, math.pi - direction) < 0.01


def test_fl_ends_lie_at_the_bone_ends():
    angle, length = 0.6, 120.0
    axis = femur_axis_px(femur_phantom((200, 240), 120.0, 100.0, length, 8.0, angle, soft_px=0.7))
    ends = sorted([axis.end_a_px, axis.end_b_px])
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    assert ends[0] == pytest.approx((120.0 - dx, 100.0 - dy), abs=0.3)
    assert ends[1] == pytest.approx((120.0 + dx, 100.0 + dy), abs=0.3)
    assert math.dist(*ends) == pytest.approx(axis.length_px)


def test_fl_in_mm_uses_the_largest_component():
    mask = femur_phantom((200, 240), 120.0, 100.0, 100.0, 8.0, 1.0)
    mask |= femur_phantom((200, 240), 30.0, 30.0, 30.0, 6.0, 0.0)  # a smaller echo elsewhere
    measured = measure_fl(mask, 0.3)
    assert measured.fl_mm == pytest.approx(30.0, abs=0.75 * 0.3)
    assert measured.axis.area_px == int(femur_phantom((200, 240), 120.0, 100.0, 100.0, 8.0, 1.0).sum())
    assert measured.to_dict()["fl_touches_border"] is False


def test_fl_flags_a_femur_cut_by_the_image_edge():
    axis = femur_axis_px(femur_phantom((200, 240), 20.0, 100.0, 100.0, 8.0, 0.0))
    assert axis.touches_border
    assert axis.length_px < 100.0 - 20.0  # the visible part only


def test_fl_needs_pixel_size_and_a_femur():
    mask = femur_phantom((100, 120), 60.0, 50.0, 60.0, 6.0, 0.2)
    with pytest.raises(PixelSizeError):
        measure_fl(mask, None)
    with pytest.raises(NoStructureError, match="no femur"):
        measure_fl(np.zeros((100, 120), bool), 0.2)
    with pytest.raises(NoStructureError, match="minimum"):
        measure_fl(femur_phantom((100, 120), 60.0, 50.0, 6.0, 3.0, 0.0), 0.2)  # a speck
    with pytest.raises(ValueError, match="threshold"):
        femur_axis_px(mask, threshold=1.0)
    with pytest.raises(ValueError, match="2D"):
        femur_axis_px(mask[None])
