"""Stream processing: frame sources, temporal consistency and smoothing, the `stream` verb.

Inputs are made here: short MJPG videos of a moving, growing phantom head
(fetometry.data.synthetic) and, when H2's DICOM writer is installed, a DICOM cine loop.
The end-to-end tests run the shipped UNeXt on small frames to stay fast on one core.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fetometry.data.synthetic import make_phantom
from fetometry.io.video import ArraySource, Frame, VideoReadError, open_source, open_video
from fetometry.stream.processor import (
    FRAME_COLUMNS,
    StreamError,
    StreamProcessor,
    TemporalTracker,
    run_stream,
)
from fetometry.threads import prefetch
from fetometry.weights_config import WeightsConfig

HEIGHT, WIDTH = 180, 264
PIXEL_SIZE_MM = 0.25
FPS = 25.0
BLANK_FRAME = 4  # a frame without a head
SHRUNK_FRAME = 8  # a frame whose head is 35% smaller: a size jump no real head makes


def phantom_cine(n_frames: int, *, seed: int = 3) -> tuple[np.ndarray, list[float | None]]:
    """(N, H, W) frames of one head drifting right and growing slowly; truth HC per frame.

    Frame BLANK_FRAME is empty tissue-free noise (no head, truth None); frame SHRUNK_FRAME
    holds a head 35% smaller than its neighbours.
    """
    frames, truth = [], []
    for i in range(n_frames):
        if i == BLANK_FRAME:
            rng = np.random.default_rng(i)
            frames.append(np.clip(0.05 + 0.02 * rng.standard_normal((HEIGHT, WIDTH)), 0, 1).astype(np.float32))
            truth.append(None)
            continue
        scale = 0.65 if i == SHRUNK_FRAME else 1.0
        phantom = make_phantom(
            height=HEIGHT,
            width=WIDTH,
            rng_or_seed=seed,
            semi_major_px=(52.0 + 0.5 * i) * scale,
            semi_minor_px=(42.0 + 0.4 * i) * scale,
            angle_rad=0.3,
            center=(125.0 + 1.5 * i, 100.0),
            pixel_size_mm=PIXEL_SIZE_MM,
            shadow=False,
        )
        frames.append(phantom.image)
        truth.append(phantom.hc_mm)
    return np.stack(frames), truth


def write_avi(path: Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """Grayscale MJPG AVI (decodes headless with opencv-python-headless)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]), False)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in frames:
        writer.write(np.round(frame * 255).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def cine() -> tuple[np.ndarray, list[float | None]]:
    return phantom_cine(14)


@pytest.fixture(scope="module")
def video(tmp_path_factory, cine) -> Path:
    return write_avi(tmp_path_factory.mktemp("video") / "loop.avi", cine[0])


@pytest.fixture(scope="module")
def predictor():
    from fetometry.inference.predictor import Predictor

    return Predictor.from_weights("unext")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- temporal


def test_consistency_is_relative_change_against_the_running_median():
    tracker = TemporalTracker(window=5, tolerance=0.10, min_history=3)
    for perimeter in (100.0, 98.0, 102.0):
        assert tracker.update(perimeter, None, True).consistency is None  # not enough history
    # median 100; 5% away with a 10% tolerance -> 0.5
    assert tracker.consistency(105.0) == pytest.approx(0.5)
    assert tracker.consistency(100.0) == pytest.approx(1.0)
    assert tracker.consistency(80.0) == 0.0


def test_an_outlier_is_rejected_and_does_not_move_the_smoothed_hc():
    tracker = TemporalTracker(window=5, tolerance=0.10, min_history=3)
    states = [tracker.update(p, p / 10, True) for p in (100.0, 101.0, 99.0, 100.0)]
    assert all(s.accepted for s in states)
    outlier = tracker.update(150.0, 15.0, True)
    assert not outlier.accepted and outlier.consistency == 0.0
    assert outlier.hc_smoothed_mm == pytest.approx(10.0)  # median of 10.0, 10.1, 9.9, 10.0
    assert tracker.update(100.5, 10.05, True).accepted


def test_the_reference_follows_a_real_change_of_view_within_half_a_window():
    tracker = TemporalTracker(window=5, tolerance=0.10, min_history=3)
    for p in (100.0,) * 5:
        tracker.update(p, None, True)
    accepted = [tracker.update(130.0, None, True).accepted for _ in range(5)]
    # 130 is 30% away: refused until 130 is the median of the last 5 (3 of them).
    assert accepted == [False, False, False, True, True]


def test_frames_that_fail_the_gate_are_neither_accepted_nor_remembered():
    tracker = TemporalTracker(window=5, tolerance=0.10, min_history=1)
    tracker.update(100.0, 10.0, True)
    refused = tracker.update(300.0, 30.0, False)
    assert not refused.accepted and refused.consistency is None
    assert tracker.consistency(100.0) == pytest.approx(1.0)  # the refused 300 is not in the reference
    assert tracker.update(None, None, True).accepted is False  # no ellipse


@pytest.mark.parametrize(
    "options", [dict(window=0), dict(window=3, min_history=4), dict(tolerance=0.0), dict(tolerance=1.5)]
)
def test_tracker_rejects_impossible_options(options):
    with pytest.raises(StreamError):
        TemporalTracker(**options)


class MaskPredictor:
    """Stands in for a Predictor: the probability map is the phantom's exact mask times
    a per-frame level, so the processor's logic is tested without a network."""

    batch_size, hc_offset_px, name, config, second_look = 2, 0.0, "exact-mask", WeightsConfig(), None

    def boundary_offset_px(self, prediction) -> float:
        return self.hc_offset_px

    def __init__(self, masks: dict[int, np.ndarray], levels: dict[int, float]):
        self.masks, self.levels, self.calls = masks, levels, 0

    def predict_batch(self, images):
        from fetometry.inference.predictor import Prediction

        out = []
        for image in images:
            index = int(round(image[0, 0] * 1000))  # the frame index is written into pixel (0, 0)
            probability = self.masks[index].astype(np.float32) * self.levels.get(index, 0.99)
            mask = probability >= 0.5
            out.append(Prediction(probability, mask, float(probability[mask].mean()) if mask.any() else 0.0))
        self.calls += 1
        return out

    def next_window(self, prediction):
        return None  # no second look: every frame is one pass, nothing to track


def exact_mask_frames(n: int) -> tuple[list[Frame], dict[int, np.ndarray], float]:
    """n small frames of one still phantom (frame index in pixel (0, 0)), masks, truth HC."""
    frames, masks = [], {}
    for i in range(n):
        phantom = make_phantom(
            height=96,
            width=128,
            rng_or_seed=1,
            semi_major_px=30.0,
            semi_minor_px=24.0,
            center=(64.0, 50.0),
            pixel_size_mm=0.5,
        )
        masks[i] = phantom.mask
        image = phantom.image.copy()
        image[0, 0] = i / 1000
        frames.append(Frame(i, 40.0 * i, image))
    return frames, masks, phantom.hc_mm


def test_gate_refusals_score_zero_and_stay_out_of_the_smoothing():
    frames, masks, truth_hc = exact_mask_frames(6)
    predictor = MaskPredictor(masks, levels={3: 0.6})  # frame 3: the network is unsure
    results = list(StreamProcessor(predictor, pixel_size_mm=0.5, window=5, min_history=2).process(frames))
    refused = results[3]
    assert not refused.quality.passed and refused.quality.rule == "low_confidence"
    assert refused.quality_score == 0.0 and not refused.temporal.accepted
    assert [r.temporal.accepted for r in results] == [True, True, True, False, True, True]
    assert [r.temporal.consistency is None for r in results] == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]  # refused: not scored
    assert results[-1].temporal.hc_smoothed_mm == pytest.approx(truth_hc, rel=0.01)  # exact masks: exact HC
    assert predictor.calls == 3  # batches of 2


class ScriptedPlaneChecker:
    """Stands in for PlaneChecker: frames listed in ``thorax`` look like a 4CH plane."""

    name = "scripted"

    def __init__(self, thorax: set[int]):
        self.thorax, self.checked = thorax, []

    def check_batch(self, images):
        from fetometry.inference.plane import PlaneResult

        out = []
        for image in images:
            index = int(round(image[0, 0] * 1000))
            self.checked.append(index)
            if index in self.thorax:
                out.append(PlaneResult("4CH", 0.97, 0.01, "4CH", 0.97, 3.0, self.name).decide())
            else:
                out.append(PlaneResult("Brain (Tv.)", 0.95, 0.95, "4CH", 0.01, 3.0, self.name).decide())
        return out


def test_only_checked_head_plane_frames_can_be_the_best_frame(tmp_path):
    frames, masks, _ = exact_mask_frames(8)
    checker = ScriptedPlaneChecker(thorax={4})
    # 0.9 mm pixels: a 153 mm head, in the range where the classifier's named call counts.
    processor = StreamProcessor(
        MaskPredictor(masks, {}), pixel_size_mm=0.9, window=5, min_history=2, plane_checker=checker, plane_every=2
    )
    results = list(processor.process(frames))
    assert checker.checked == [0, 2, 4, 6]  # every 2nd frame
    assert [r.result.status for r in results][4:6] == [
        "not_a_head_plane",
        "not_a_head_plane",
    ]  # frame 5 carries 4's verdict
    assert all(r.result.measurement is None for r in results[4:6])
    assert [r.plane_checked for r in results] == [True, False] * 4
    rows = [r.to_row() for r in results]
    assert rows[4]["plane_label"] == "4CH" and rows[4]["head_plane"] is False and rows[1]["plane_checked"] is False
    from fetometry.stream.processor import FRAME_COLUMNS, _is_better

    assert {"plane_label", "head_plane", "ood_distance", "plane_checked"} <= set(FRAME_COLUMNS)
    assert not _is_better(results[3], None)  # accepted, but its plane verdict was carried, not checked
    assert _is_better(results[2], None) and results[2].temporal.accepted


def test_the_plane_check_runs_beside_the_segmenter():
    """Each batch's plane check and segmentation meet at a barrier: run one after the
    other, the first to arrive waits out the timeout and the barrier breaks."""
    import threading

    frames, masks, _ = exact_mask_frames(6)
    meeting = threading.Barrier(2, timeout=10)

    class MeetingPredictor(MaskPredictor):
        def predict_batch(self, images):
            meeting.wait()
            return super().predict_batch(images)

    class MeetingChecker(ScriptedPlaneChecker):
        def check_batch(self, images):
            meeting.wait()
            return super().check_batch(images)

    checker = MeetingChecker(thorax={4})
    processor = StreamProcessor(MeetingPredictor(masks, {}), pixel_size_mm=0.9, plane_checker=checker, plane_every=1)
    results = list(processor.process(frames))
    assert checker.checked == list(range(6))
    assert [r.result.status == "not_a_head_plane" for r in results] == [i == 4 for i in range(6)]


def test_ctrl_c_ends_a_stream_and_keeps_the_results(tmp_path):
    frames, masks, _ = exact_mask_frames(8)
    source = ArraySource(
        np.stack([f.image for f in frames]), description="live", pixel_size_mm=0.5, pixel_size_source="--pixel-size"
    )

    def stop_at_frame_3(frame):
        if frame.index == 3:
            raise KeyboardInterrupt

    summary = run_stream(
        source, MaskPredictor(masks, {}), tmp_path, progress=False, on_frame=stop_at_frame_3, min_history=2
    )
    assert summary["interrupted"] and summary["frames"] == 4
    assert len(read_rows(tmp_path / "frames.csv")) == 4 and (tmp_path / "best_frame.png").is_file()


# --------------------------------------------------------------------------- sources


def test_video_file_frames_times_and_missing_calibration(video, cine):
    with open_video(video) as source:
        frames = list(source)
        assert source.frame_count == len(cine[0]) and source.fps == pytest.approx(FPS)
        assert source.pixel_size_mm is None and "no calibration" in source.pixel_size_source
    assert [f.index for f in frames] == list(range(len(cine[0])))
    assert [f.time_ms for f in frames] == pytest.approx([i * 1000 / FPS for i in range(len(cine[0]))])
    first = frames[0].image
    assert first.shape == (HEIGHT, WIDTH) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    # MJPG is lossy: the decoded frame stays close to what was written.
    assert np.abs(first - cine[0][0]).mean() < 0.03


def test_explicit_pixel_size_is_validated_and_stated(video):
    with open_source(video, pixel_size_mm=0.2) as source:
        assert source.pixel_size_mm == 0.2 and source.pixel_size_source == "--pixel-size"
    with pytest.raises(ValueError, match="plausible range"):
        open_source(video, pixel_size_mm=5.0)


def test_unreadable_inputs_raise_errors_that_say_what_to_give(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        open_source(tmp_path / "missing.avi")
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        open_source(tmp_path / "empty.avi")
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(VideoReadError, match="not a video"):
        open_source(tmp_path / "notes.avi")
    with pytest.raises(VideoReadError, match="capture device 97"):
        open_source("97")
    with pytest.raises(VideoReadError, match=r"\(N, H, W\)"):
        ArraySource(np.zeros((0, 64, 64)), description="x", pixel_size_mm=None, pixel_size_source="")


def test_prefetch_keeps_order_and_hands_over_reader_errors():
    def frames():
        for i in range(5):
            yield Frame(i, None, np.zeros((2, 2), np.float32))
        raise RuntimeError("decoder broke")

    seen = []
    with pytest.raises(RuntimeError, match="decoder broke"):
        for frame in prefetch(frames(), depth=2):
            seen.append(frame.index)
    assert seen == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- end to end


def test_stream_measures_every_frame_and_rejects_the_blank_and_the_jump(tmp_path, video, cine, predictor):
    truth = cine[1]
    with open_source(video, pixel_size_mm=PIXEL_SIZE_MM) as source:
        summary = run_stream(source, predictor, tmp_path, progress=False, write_masks=True)
    rows = read_rows(tmp_path / "frames.csv")
    assert list(rows[0]) == FRAME_COLUMNS and len(rows) == len(truth)
    assert (
        rows[BLANK_FRAME]["status"] == "no_head"
        and rows[BLANK_FRAME]["hc_mm"] == ""
        and rows[BLANK_FRAME]["accepted"] == "False"
    )
    shrunk = rows[SHRUNK_FRAME]
    assert shrunk["status"] == "ok" and shrunk["accepted"] == "False" and float(shrunk["temporal_consistency"]) == 0.0
    normal = [i for i, t in enumerate(truth) if t is not None and i != SHRUNK_FRAME]
    errors = [abs(float(rows[i]["hc_mm"]) / truth[i] - 1) for i in normal]
    assert np.median(errors) < 0.06, errors  # the model's error on phantoms, not the stream's
    assert sum(rows[i]["accepted"] == "True" for i in normal) >= len(normal) - 1
    # Smoothed HC = median of the last 9 accepted frames' HC.
    last = len(truth) - 1
    accepted_hc = [float(r["hc_mm"]) for r in rows if r["accepted"] == "True"]
    assert float(rows[last]["hc_smoothed_mm"]) == pytest.approx(np.median(accepted_hc[-9:]), rel=1e-5)
    # Best frame: accepted, defined consistency, highest score of those.
    eligible = [r for r in rows if r["accepted"] == "True" and r["temporal_consistency"] != ""]
    best = max(eligible, key=lambda r: float(r["quality_score"]))
    assert summary["best_frame"]["frame"] == int(best["frame"])
    assert summary["frames"] == len(truth) and summary["frames_with_head"] == len(truth) - 1
    assert summary["pixel_size_mm"] == PIXEL_SIZE_MM and summary["fps"] > 0
    overlay = cv2.imread(str(tmp_path / "best_frame.png"))
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    assert len(list((tmp_path / "masks").glob("frame_*_mask.png"))) == len(truth)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_without_pixel_size_there_is_no_mm_anywhere(tmp_path, cine, predictor):
    frames = cine[0][:6]
    source = ArraySource(frames, description="loop", pixel_size_mm=None, pixel_size_source="none: test")
    summary = run_stream(source, predictor, tmp_path, progress=False, max_frames=5)
    rows = read_rows(tmp_path / "frames.csv")
    assert len(rows) == 5
    for row in rows:
        assert row["hc_mm"] == row["bpd_mm"] == row["hc_smoothed_mm"] == row["pixel_size_mm"] == ""
        assert row["status"] in ("no_pixel_size", "no_head")
    assert rows[0]["status"] == "no_pixel_size" and float(rows[0]["perimeter_px"]) > 0
    assert summary["best_frame"] is not None and summary["best_frame"]["hc_mm"] is None
    assert summary["hc_mm_median_accepted"] is None and summary["hc_smoothed_last_mm"] is None
    assert (tmp_path / "best_frame.png").is_file()


def test_threaded_and_sequential_processing_agree(cine, predictor):
    frames = [Frame(i, None, image) for i, image in enumerate(cine[0][:7])]
    rows = {}
    for threads in (True, False):
        processor = StreamProcessor(
            predictor, pixel_size_mm=PIXEL_SIZE_MM, batch_size=3, threads=threads, min_history=2
        )
        rows[threads] = [r.to_row() for r in processor.process(frames)]
    assert [r["frame"] for r in rows[True]] == list(range(7))
    assert rows[True] == rows[False]


def test_an_empty_stream_is_an_error(tmp_path, predictor):
    class Empty(ArraySource):
        def __iter__(self):
            return iter(())

    source = Empty(np.zeros((1, 64, 64), np.float32), description="nothing", pixel_size_mm=None, pixel_size_source="")
    with pytest.raises(StreamError, match="no frame"):
        run_stream(source, predictor, tmp_path, progress=False)


def test_stream_verb_writes_its_outputs(tmp_path, video, monkeypatch, capsys):
    from fetometry import cli

    out = tmp_path / "out"
    code = cli.main(
        [
            "-q",
            "stream",
            str(video),
            "--model",
            "unext",
            "--pixel-size",
            str(PIXEL_SIZE_MM),
            "--out",
            str(out),
            "--max-frames",
            "4",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 frames at" in printed and "best frame" in printed and "decision support" in printed
    assert len(read_rows(out / "frames.csv")) == 4 and (out / "summary.json").is_file()
    assert cli.main(["-q", "stream", str(tmp_path / "none.avi"), "--out", str(out)]) == 1


@pytest.mark.slow  # exports the model (a few seconds)
def test_onnx_backend_measures_like_pytorch(tmp_path, cine, predictor):
    pytest.importorskip("fetometry.inference.onnx_backend", reason="the ONNX backend is not installed")
    from fetometry.inference.backend import build_predictor

    onnx = build_predictor("unext", "onnx")
    assert onnx.config.backend == "onnxruntime" and onnx.hc_offset_px == predictor.hc_offset_px
    frames = [Frame(i, None, image) for i, image in enumerate(cine[0][:3])]
    hc = {}
    for name, model in (("onnx", onnx), ("torch", predictor)):
        processor = StreamProcessor(model, pixel_size_mm=PIXEL_SIZE_MM, threads=False)
        hc[name] = [r.hc_mm for r in processor.process(frames)]
    # onnxruntime runs fp32, the PyTorch predictor bf16 autocast: close, not identical.
    assert hc["onnx"] == pytest.approx(hc["torch"], rel=0.02)


# --------------------------------------------------------------------------- DICOM cine


def test_dicom_cine_is_calibrated_by_its_regions(tmp_path, cine):
    dicom = pytest.importorskip("fetometry.io.dicom", reason="H2's DICOM reader is not installed")
    frames = cine[0][:3]
    path = tmp_path / "cine.dcm"
    dicom.write_ultrasound_dicom(path, frames, pixel_size_mm=0.2, frame_time_ms=40.0)
    with open_source(path) as source:
        read = list(source)
        assert source.pixel_size_mm == pytest.approx(0.2)
        assert source.pixel_size_source.startswith("DICOM") and source.fps == pytest.approx(25.0)
    assert [f.time_ms for f in read] == pytest.approx([0.0, 40.0, 80.0])
    assert read[0].image.shape == (HEIGHT, WIDTH)
    assert np.abs(read[1].image - frames[1]).max() < 2 / 255  # 8-bit storage
    with open_source(path, pixel_size_mm=0.3) as source:
        assert source.pixel_size_mm == 0.3 and "overrides the DICOM calibration" in source.pixel_size_source
    no_suffix = path.rename(tmp_path / "IM0001")  # scanners often write names without a suffix
    with open_source(no_suffix) as source:
        assert source.frame_count == 3 and source.pixel_size_mm == pytest.approx(0.2)


class Brightness(torch.nn.Module):
    """A network for tracking tests: bright pixels are head (logits from brightness);
    counts the images it segments."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return (x - 0.5) * 40.0


def _disc_frames(centres: list[tuple[float, float]], radius: float = 90.0) -> list[Frame]:
    y, x = np.mgrid[0:540, 0:800]
    return [
        Frame(i, 40.0 * i, (((x - cx) ** 2 + (y - cy) ** 2) <= radius**2).astype(np.float32))
        for i, (cx, cy) in enumerate(centres)
    ]


def _tracking_run(frames: list[Frame], *, track: bool, refresh_every: int = 30):
    from fetometry.inference.predictor import DEFAULT_SECOND_LOOK, Predictor

    network = Brightness()
    predictor = Predictor(network, canvas_hw=(64, 96), config={"second_look": dict(DEFAULT_SECOND_LOOK)})
    processor = StreamProcessor(
        predictor, pixel_size_mm=0.2, batch_size=2, threads=False, track=track, refresh_every=refresh_every
    )
    return [r.to_row() for r in processor.process(frames)], processor, network.images


def test_tracking_segments_each_frame_once_and_measures_like_the_untracked_stream():
    frames = _disc_frames([(300 + 3 * i, 250 + i) for i in range(12)])
    tracked, processor, tracked_images = _tracking_run(frames, track=True)
    untracked, _, untracked_images = _tracking_run(frames, track=False)
    assert processor.frames_tracked == 10  # all but the first batch
    assert untracked_images == 2 * 12 and tracked_images == 2 * 2 + 10
    assert [r["status"] for r in tracked] == [r["status"] for r in untracked] == ["ok"] * 12
    for a, b in zip(tracked, untracked):
        assert a["hc_mm"] == pytest.approx(b["hc_mm"], rel=0.01)


def test_a_head_that_jumps_out_of_the_window_takes_the_full_segmentation():
    centres = [(200, 200)] * 4 + [(600, 380)] * 4  # frame 4: the head is elsewhere
    frames = _disc_frames(centres)
    tracked, processor, _ = _tracking_run(frames, track=True)
    untracked, _, _ = _tracking_run(frames, track=False)
    assert processor.frames_tracked == 2 + 2  # frames 2-3, then 6-7 at the new window
    assert [r["status"] for r in tracked] == ["ok"] * 8
    assert tracked[4]["center_x_px"] == pytest.approx(untracked[4]["center_x_px"], abs=0.5)
    assert tracked[4]["center_x_px"] == pytest.approx(600, abs=2)


def test_tracking_refreshes_with_the_full_segmentation_every_k_frames():
    frames = _disc_frames([(300, 250)] * 8)
    _, processor, _ = _tracking_run(frames, track=True, refresh_every=4)
    # The first batch (0,1) is full, and so is frame 4, a multiple of 4; 2, 3, 5, 6, 7 tracked.
    assert processor.frames_tracked == 5


def test_tracking_options_are_checked():
    with pytest.raises(StreamError, match="refresh_every"):
        StreamProcessor(MaskPredictor({}, {}), pixel_size_mm=None, batch_size=1, refresh_every=0)


def test_a_change_of_view_gets_its_own_plane_check_before_its_turn():
    """Plane check every 8th frame: the probe leaves the head at frame 3 (another picture,
    which the scripted classifier calls 4CH). The view rule checks frame 3 at once, so no
    frame of the new view is measured under the head's carried verdict; without the rule,
    frames 3-7 are."""
    frames, masks, _ = exact_mask_frames(8)
    for i in range(3, 8):
        moved = np.roll(frames[i].image, (40, 60), axis=(0, 1))  # the picture moves away
        moved[0, 0] = i / 1000
        frames[i] = Frame(i, frames[i].time_ms, moved)
    thorax = set(range(3, 8))

    def statuses(max_view_change):
        checker = ScriptedPlaneChecker(thorax=thorax)
        processor = StreamProcessor(
            MaskPredictor(masks, {}),
            pixel_size_mm=0.9,
            plane_checker=checker,
            plane_every=8,
            max_view_change=max_view_change,
        )
        return checker, [r.result.status for r in processor.process(frames)], processor

    checker, with_rule, processor = statuses(0.25)
    assert checker.checked == [0, 3] and processor.plane_schedule.checked_for_change == 1
    assert with_rule[3:] == ["not_a_head_plane"] * 5
    checker, without_rule, _ = statuses(None)
    assert checker.checked == [0] and without_rule[3:] == ["ok"] * 5


def test_bad_plane_schedules_are_stream_errors():
    frames, masks, _ = exact_mask_frames(2)
    with pytest.raises(StreamError, match="plane_every"):
        StreamProcessor(MaskPredictor(masks, {}), pixel_size_mm=0.5, plane_every=0)
    with pytest.raises(StreamError, match="max_view_change"):
        StreamProcessor(MaskPredictor(masks, {}), pixel_size_mm=0.5, max_view_change=0.0)
