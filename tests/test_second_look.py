"""The predictor's second look at small heads (a window around the first look's head,
segmented again at the canvas's full resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fetometry.inference.predictor import DEFAULT_SECOND_LOOK, Predictor, head_window


class Brightness(nn.Module):
    """Logits from brightness: bright pixels are head. Counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (x - 0.5) * 40.0


def _disc(hw=(540, 800), centre=(200, 150), radius=40) -> np.ndarray:
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (((x - centre[0]) ** 2 + (y - centre[1]) ** 2) <= radius**2).astype(np.float32)


def test_head_window_frames_a_small_head_in_the_canvas_shape():
    mask = _disc() > 0.5
    rows, cols = head_window(mask, (256, 384), **DEFAULT_SECOND_LOOK)
    assert rows.start <= 110 and rows.stop >= 190 and cols.start <= 160 and cols.stop >= 240
    assert (cols.stop - cols.start) / (rows.stop - rows.start) == pytest.approx(1.5, rel=0.02)
    assert rows.start >= 0 and cols.start >= 0 and rows.stop <= 540 and cols.stop <= 800


def test_head_window_is_none_without_a_head_or_for_a_head_filling_the_frame():
    assert head_window(np.zeros((540, 800), bool), (256, 384)) is None
    assert head_window(_disc(radius=240, centre=(400, 270)) > 0.5, (256, 384)) is None


def test_second_look_segments_small_heads_again_and_leaves_large_ones():
    model = Brightness()
    predictor = Predictor(model, canvas_hw=(64, 96), config={"second_look": dict(DEFAULT_SECOND_LOOK)})
    small, large = _disc(), _disc(radius=250, centre=(400, 270))
    first = Predictor(Brightness(), canvas_hw=(64, 96)).predict_batch([small, large])
    second = predictor.predict_batch([small, large])
    assert model.calls == 2  # the first look, then one batch of windows
    assert np.array_equal(second[1].probability, first[1].probability)
    window = head_window(first[0].mask, (64, 96), **DEFAULT_SECOND_LOOK)
    outside = np.ones(small.shape, bool)
    outside[window] = False
    assert np.array_equal(second[0].probability[outside], first[0].probability[outside])
    # At four times the canvas resolution the disc's outline is closer to the truth.
    truth = small > 0.5

    def error(p):
        return np.logical_xor(p.mask, truth).sum()

    assert error(second[0]) < error(first[0])


def test_second_look_is_off_unless_the_config_asks():
    model = Brightness()
    Predictor(model, canvas_hw=(64, 96)).predict_batch([_disc()])
    assert model.calls == 1


def _second_look_predictor(model: nn.Module) -> Predictor:
    return Predictor(model, canvas_hw=(64, 96), config={"second_look": dict(DEFAULT_SECOND_LOOK)})


def test_predict_in_window_runs_one_pass_and_matches_the_two_pass_prediction():
    model = Brightness()
    predictor = _second_look_predictor(model)
    disc = _disc()
    full = predictor.predict(disc)
    # The window the two-pass prediction took: around its first look's head.
    window = head_window(Predictor(Brightness(), canvas_hw=(64, 96)).predict(disc).mask, (64, 96))
    model.calls = 0
    (tracked,) = predictor.predict_in_window([disc], window)
    assert model.calls == 1
    # At that window: the same map inside, zero outside.
    assert np.array_equal(tracked.probability[window], full.probability[window])
    outside = np.ones(disc.shape, bool)
    outside[window] = False
    assert not tracked.probability[outside].any()
    assert predictor.next_window(tracked) == head_window(tracked.mask, (64, 96), **DEFAULT_SECOND_LOOK)


def test_predict_in_window_refuses_a_head_that_left_the_window():
    predictor = _second_look_predictor(Brightness())
    window = predictor.next_window(predictor.predict(_disc(centre=(200, 150))))
    moved, gone = _disc(centre=(260, 150)), np.zeros((540, 800), np.float32)
    kept, lost, empty = predictor.predict_in_window([_disc(centre=(205, 152)), moved, gone], window)
    assert kept is not None and kept.mask.any()
    assert lost is None and empty is None


def test_predict_in_window_accepts_a_head_at_the_frame_edge():
    # The window is clamped to the frame's left edge; the head touches the frame there.
    predictor = _second_look_predictor(Brightness())
    disc = _disc(centre=(20, 150))
    window = predictor.next_window(predictor.predict(disc))
    assert window[1].start == 0
    (tracked,) = predictor.predict_in_window([disc], window)
    assert tracked is not None


def test_next_window_is_none_without_a_second_look():
    predictor = Predictor(Brightness(), canvas_hw=(64, 96))
    assert predictor.next_window(predictor.predict(_disc())) is None


def test_each_prediction_records_the_canvas_scale_of_the_pass_that_drew_its_head():
    """First look: the frame's letterbox scale. Second look: its window's. A tracked frame:
    the carried window's. The boundary offset follows it."""
    predictor = Predictor(Brightness(), canvas_hw=(64, 96), config={"second_look": dict(DEFAULT_SECOND_LOOK)})
    small, large = _disc(), _disc(radius=250, centre=(400, 270))
    looked_again, whole = predictor.predict_batch([small, large])
    assert whole.canvas_scale == pytest.approx(min(64 / 540, 96 / 800))
    window = head_window(Predictor(Brightness(), canvas_hw=(64, 96)).predict(small).mask, (64, 96))
    window_hw = (window[0].stop - window[0].start, window[1].stop - window[1].start)
    assert looked_again.canvas_scale == pytest.approx(min(64 / window_hw[0], 96 / window_hw[1]))
    assert looked_again.canvas_scale > 2 * whole.canvas_scale
    (tracked,) = predictor.predict_in_window([small], window)
    assert tracked.canvas_scale == pytest.approx(looked_again.canvas_scale)


def test_the_boundary_offset_is_hc_offset_px_on_an_800x540_frame_and_scales_with_the_pass():
    from fetometry.inference.predictor import Prediction

    predictor = Predictor(Brightness(), canvas_hw=(256, 384), config={"hc_offset_px": 1.2})
    whole = predictor.predict(np.zeros((540, 800), np.float32))
    assert predictor.boundary_offset_px(whole) == 1.2  # exactly: the frame the offset holds for
    doubled = predictor.predict(np.zeros((1080, 1600), np.float32))
    assert predictor.boundary_offset_px(doubled) == pytest.approx(2.4)  # the same distance on a finer grid
    halved = predictor.predict(np.zeros((270, 400), np.float32))
    assert predictor.boundary_offset_px(halved) == pytest.approx(0.6)
    unknown = Prediction(whole.probability, whole.mask, whole.confidence)
    assert predictor.boundary_offset_px(unknown) == 1.2
