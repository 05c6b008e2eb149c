"""benchmarks/onscreen_ellipse.py: reading a sonographer's on-screen ellipse off a capture,
and (with ../shared) the default model against the one on SonoNet's UK brain frame."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from test_benchmark_scripts import load_script

from fetometry.biometry.ellipse import Ellipse
from fetometry.inference.backend import build_predictor
from fetometry.resources import DEFAULT_MODEL

onscreen = load_script("onscreen_ellipse")

TRUTH = Ellipse(center_x_px=410.3, center_y_px=300.6, semi_major_px=180.0, semi_minor_px=140.0, angle_rad=0.3)
YELLOW = (230, 230, 40)


def marked_capture(rng: np.random.Generator) -> np.ndarray:
    """A grey speckled capture with a dotted ellipse, a dotted BPD line inside it and a
    coloured mark in the vendor header, as a scanner draws them (RGB)."""
    grey = np.clip(rng.normal(90, 25, (600, 820)), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for x, y in TRUTH.points(120):
        cv2.circle(rgb, (round(x), round(y)), 1, YELLOW, -1)
    for y in range(200, 400, 8):
        cv2.circle(rgb, (410, y), 1, YELLOW, -1)
    cv2.rectangle(rgb, (300, 10), (360, 30), YELLOW, -1)  # in the header: not a caliper mark
    return rgb


def test_the_dotted_ellipse_is_read_back_and_the_line_left_out():
    ellipse, found = onscreen.onscreen_ellipse(marked_capture(np.random.default_rng(0)))
    assert found["dots_on_the_ellipse"] == 120
    assert found["marks"] == 120 + 25
    assert math.hypot(ellipse.center_x_px - TRUTH.center_x_px, ellipse.center_y_px - TRUTH.center_y_px) < 0.5
    assert ellipse.semi_major_px == pytest.approx(TRUTH.semi_major_px, abs=0.5)
    assert ellipse.semi_minor_px == pytest.approx(TRUTH.semi_minor_px, abs=0.5)


def test_a_capture_without_marks_has_no_ellipse_to_read():
    grey = np.full((300, 400, 3), 90, np.uint8)
    with pytest.raises(ValueError, match="no on-screen ellipse"):
        onscreen.onscreen_ellipse(grey)


def test_the_marks_are_painted_out_of_the_grey_image():
    rgb = marked_capture(np.random.default_rng(1))
    image = onscreen.without_marks(rgb)
    assert image.shape == rgb.shape[:2] and image.dtype == np.float32
    on_marks = onscreen.marks(rgb)
    # The yellow dots are brighter in grey (about 205) than the speckle they sit on (90 +- 25).
    assert cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[on_marks].mean() > 180
    assert abs(image[on_marks].mean() * 255 - 90) < 20


def test_hc_in_pixels_takes_the_offset_off_both_semi_axes():
    circle = Ellipse(0.0, 0.0, 100.0, 100.0, 0.0)
    assert onscreen.hc_px(circle) == pytest.approx(2 * math.pi * 100)
    assert onscreen.hc_px(circle, 1.5) == pytest.approx(2 * math.pi * 98.5)


def test_the_default_outline_lies_on_a_uk_sonographers_ellipse():
    """A guard on the one real head from another centre with its sonographer's outline
    (docs/BENCHMARKS.md, "A UK sonographer's own ellipse"): measured -0.50%. A change that
    moves the default's outline by a skull's thickness (about 2% of HC here) fails it."""
    if not onscreen.FRAME.is_file():
        pytest.skip("../shared/data/sononet is not present")
    rgb = cv2.cvtColor(cv2.imread(str(onscreen.FRAME), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    reference, found = onscreen.onscreen_ellipse(rgb)
    assert found["dot_residual_max_fraction"] < 0.01
    predictor = build_predictor(DEFAULT_MODEL, "auto")
    row, ellipse = onscreen.compare(predictor, onscreen.without_marks(rgb), reference, checker=None)
    assert ellipse is not None and row["status"] == "no_pixel_size"
    assert abs(row["hc_difference_percent"]) < 2.0
