"""The stream's plane schedule: every k-th frame, and at once after a change of view."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetometry.data.synthetic import make_phantom
from fetometry.stream.plane_schedule import (
    DEFAULT_MAX_VIEW_CHANGE,
    PlaneSchedule,
    thumbnail,
    view_change,
)

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 540, 800


def head(seed: int = 0, *, dx: float = 0.0) -> np.ndarray:
    return make_phantom(
        height=HEIGHT,
        width=WIDTH,
        rng_or_seed=seed,
        semi_major_px=180.0,
        semi_minor_px=150.0,
        angle_rad=0.2,
        center=(400.0 + dx, 270.0),
        pixel_size_mm=0.15,
        shadow=False,
    ).image


def other_view() -> np.ndarray:
    """Another picture: the head's content moved into the far corner, the rest black."""
    image = np.zeros((HEIGHT, WIDTH), np.float32)
    image[:200, 500:] = head(1)[170:370, 200:500]
    return image


def due_frames(schedule: PlaneSchedule, frames: list[np.ndarray]) -> list[int]:
    return [i for i, frame in enumerate(frames) if schedule.due(frame)]


def test_every_kth_frame_while_the_view_holds():
    frames = [head(0, dx=0.5 * i) for i in range(17)]
    assert due_frames(PlaneSchedule(every=8), frames) == [0, 8, 16]
    assert due_frames(PlaneSchedule(every=1), frames) == list(range(17))
    assert due_frames(PlaneSchedule(every=8, max_view_change=None), frames) == [0, 8, 16]


def test_a_change_of_view_is_checked_at_once_and_restarts_the_count():
    frames = [head(0)] * 3 + [other_view()] * 10
    schedule = PlaneSchedule(every=8)
    assert due_frames(schedule, frames) == [0, 3, 11]
    assert schedule.checked_for_change == 1
    # Without the view rule the new picture waits for its turn, carrying the old verdict.
    assert due_frames(PlaneSchedule(every=8, max_view_change=None), frames) == [0, 8]


def test_the_view_change_ignores_gain_and_sees_content():
    picture = thumbnail(head(0))
    assert view_change(picture, thumbnail(0.6 * head(0))) < 0.02  # darker, the same picture
    assert view_change(picture, thumbnail(head(0, dx=2.0))) < DEFAULT_MAX_VIEW_CHANGE / 3  # 2 px of motion
    assert view_change(picture, thumbnail(other_view())) > 3 * DEFAULT_MAX_VIEW_CHANGE
    assert view_change(thumbnail(np.zeros((HEIGHT, WIDTH))), thumbnail(np.zeros((HEIGHT, WIDTH)))) == 0.0


def test_a_thumbnail_is_standardised():
    picture = thumbnail(head(0))
    assert picture.shape == (28, 36) and picture.dtype == np.float32
    assert abs(float(picture.mean())) < 1e-5 and float(picture.std()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("options", [{"every": 0}, {"every": 4, "max_view_change": 0.0}, {"max_view_change": -1}])
def test_bad_schedules_are_refused(options):
    with pytest.raises(ValueError):
        PlaneSchedule(**options)


def test_the_shipped_limit_is_the_measured_one():
    """The limit in the code is the one ``benchmarks/plane_view_change.py`` measured: at most
    half the smallest view change at which a head plane's verdict was seen to change."""
    measured = json.loads((REPO / "benchmarks" / "results" / "plane_view_change.json").read_text())
    assert DEFAULT_MAX_VIEW_CHANGE == measured["limit"]
    assert DEFAULT_MAX_VIEW_CHANGE <= measured["smallest_flip_change"] * measured["safety_factor"]


def test_thumbnail_takes_any_frame_size():
    small = cv2.resize(head(0), (264, 180), interpolation=cv2.INTER_AREA)
    assert thumbnail(small).shape == (28, 36)


def test_the_stream_verb_reads_the_view_change_limit():
    import argparse

    from fetometry.cli.stream import _view_change_limit

    assert _view_change_limit("off") is None and _view_change_limit("0.2") == 0.2
    for bad in ("0", "-1", "much"):
        with pytest.raises(argparse.ArgumentTypeError):
            _view_change_limit(bad)
