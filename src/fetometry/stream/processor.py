"""Cine loops and video at frame rate: per-frame measurement, quality, smoothing, best frame.

    frames (io.video) -> Predictor.predict_batch (batches) + PlaneChecker (the frames stream.plane_schedule picks)
           -> pipeline.result_from_prediction (plane check, gate, ellipse, HC)
           -> quality gate (biometry.quality) x temporal consistency -> smoothing -> outputs

Per frame
---------
- ``status``/``detail``/ellipse/HC exactly as ``fetometry predict`` reports a still image
  (``pipeline.result_from_prediction``): no pixel size -> no mm, no head -> no ellipse.
- ``quality_score`` in [0, 1] = the quality gate's score (confidence and ellipse
  plausibility; ``fetometry.biometry.quality.assess_quality``) times the temporal
  consistency below; 0 for a frame the gate refuses (``quality_rule`` names the rule).
- Temporal consistency (defined here): the head cannot change size between frames a few
  ms apart, so a perimeter far from the recent ones is a segmentation failure, not
  anatomy. Reference = median ellipse perimeter (px, so it works without a pixel size) of
  the last ``window`` frames that passed the gate; relative change c = |P - ref| / ref;
  consistency = max(0, 1 - c / tolerance) (1 = on the median, 0 = ``tolerance`` or more
  away). It is undefined (None) until ``min_history`` frames passed the gate. Frames that
  the consistency rejects still enter the reference, so after a real change of view the
  median follows within half a window.
- ``accepted`` = an ellipse, gate passed, and consistency > 0 (or undefined).
- Smoothing: ``hc_smoothed_mm`` = median HC of the last ``window`` accepted frames (the
  running median rejects single outliers and lags a real change by at most half a window).
- Best frame: the highest ``quality_score`` among accepted frames with a defined
  consistency (all accepted frames if none has one); its overlay is saved.

Speed: frames are read in a background thread while the model runs, and the ellipse fits
and gates of the batches already segmented run in ``fit_workers`` threads while the model
segments the next batch (OpenCV, NumPy, onnxruntime and PyTorch release the GIL), so
the stages overlap on the cores there are. The temporal terms are then applied in frame
order.

Tracking (``track``, on by default): a still image takes two network passes when its head
is small in the frame (``Predictor``'s second look: the first pass finds the head, the
second segments a window around it at a higher resolution). Between frames of a loop the
head moves a few pixels, so the stream carries the window of the batch before and runs
the second pass alone (``Predictor.predict_in_window``). This is the one place where a
frame's segmentation differs from ``fetometry predict`` on the same image: the window
comes from the frame before rather than from this frame's first pass, and the map is
zero outside the window. A frame whose head touches the window's edge (or has none in
it) takes the full two passes, and so does every frame whose index is divisible by
``refresh_every``, so a head entering elsewhere in the frame is found within a second.
``docs/BENCHMARKS.md`` ("Every scale") measures its speed and its agreement with the
untracked stream.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fetometry import DISCLAIMER, __version__
from fetometry.biometry.ellipse import Ellipse
from fetometry.biometry.measures import ramanujan_perimeter
from fetometry.inference.plane import PlaneChecker, PlaneResult
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.io.images import write_mask
from fetometry.io.video import Frame, FrameSource
from fetometry.pipeline import PLANE_COLUMNS, HeadFit, ImageResult, fit_head, result_from_prediction
from fetometry.stream.plane_schedule import DEFAULT_MAX_VIEW_CHANGE, DEFAULT_PLANE_EVERY, PlaneSchedule
from fetometry.threads import prefetch

log = logging.getLogger(__name__)

#: frames.csv columns, in order.
FRAME_COLUMNS = [
    "frame",
    "time_ms",
    "status",
    "detail",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "cephalic_index",
    "center_x_px",
    "center_y_px",
    "semi_axes_a_px",
    "semi_axes_b_px",
    "angle_rad",
    "perimeter_px",
    "confidence",
    "quality_score",
    "quality_passed",
    "quality_rule",
    "temporal_consistency",
    "accepted",
    "hc_smoothed_mm",
    "pixel_size_mm",
    *PLANE_COLUMNS,
    "plane_checked",
]
DEFAULT_WINDOW = 9
DEFAULT_TOLERANCE = 0.10
DEFAULT_MIN_HISTORY = 3
#: With tracking, every frame whose index is divisible by this takes the full two-pass
#: segmentation (about once a second at 30 frames/s).
DEFAULT_REFRESH_EVERY = 30


class StreamError(ValueError):
    """The stream cannot be processed (no frames, bad options)."""


# --------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class FrameQuality:
    """The gate's verdict on one frame, before the temporal term."""

    passed: bool
    score: float
    rule: str | None
    detail: str


def assess_frame(result: ImageResult, image_shape: tuple[int, int]) -> FrameQuality:
    """The shared quality gate's verdict on one measured frame (no ellipse: refused)."""
    report = result.quality  # the gate ran inside pipeline.result_from_prediction
    if result.ellipse is None or result.prediction is None or report is None:
        # No head, or the plane check refused the frame before the gate.
        return FrameQuality(False, 0.0, result.status, result.detail)
    return FrameQuality(bool(report.passed), float(report.score), report.rule, report.detail)


# --------------------------------------------------------------------------- temporal


def perimeter_px(ellipse: Ellipse | None) -> float | None:
    """Ellipse perimeter in px (Ramanujan II, as biometry.measures), None without an ellipse."""
    return None if ellipse is None else ramanujan_perimeter(ellipse.semi_major_px, ellipse.semi_minor_px)


@dataclass(frozen=True)
class TemporalState:
    consistency: float | None
    accepted: bool
    hc_smoothed_mm: float | None


class TemporalTracker:
    """Causal temporal consistency and HC smoothing (see the module docstring)."""

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        tolerance: float = DEFAULT_TOLERANCE,
        min_history: int = DEFAULT_MIN_HISTORY,
    ):
        if window < 1 or min_history < 1 or min_history > window:
            raise StreamError(f"window={window}, min_history={min_history}: need 1 <= min_history <= window")
        if not 0.0 < tolerance < 1.0:
            raise StreamError(f"tolerance={tolerance}: give a relative change between 0 and 1 (e.g. 0.10)")
        self.window, self.tolerance, self.min_history = window, tolerance, min_history
        self._gated_perimeters: deque[float] = deque(maxlen=window)
        self._accepted_hc: deque[float] = deque(maxlen=window)

    def consistency(self, perimeter_px: float) -> float | None:
        """1 - relative change vs the median of recent gated perimeters / tolerance, in [0, 1]."""
        if len(self._gated_perimeters) < self.min_history:
            return None
        reference = statistics.median(self._gated_perimeters)
        change = abs(perimeter_px - reference) / reference
        return max(0.0, 1.0 - change / self.tolerance)

    def update(self, perimeter_px: float | None, hc_mm: float | None, gate_passed: bool) -> TemporalState:
        """Score one frame against the history, then add it to the history."""
        if perimeter_px is None or not gate_passed:
            return TemporalState(None, False, self.smoothed_hc_mm)
        consistency = self.consistency(perimeter_px)
        accepted = consistency is None or consistency > 0.0
        self._gated_perimeters.append(perimeter_px)
        if accepted and hc_mm is not None:
            self._accepted_hc.append(hc_mm)
        return TemporalState(consistency, accepted, self.smoothed_hc_mm)

    @property
    def smoothed_hc_mm(self) -> float | None:
        return statistics.median(self._accepted_hc) if self._accepted_hc else None


# --------------------------------------------------------------------------- per frame


@dataclass
class FrameResult:
    """One processed frame; ``image`` and ``result.prediction`` are dropped once written."""

    index: int
    time_ms: float | None
    result: ImageResult
    quality: FrameQuality
    temporal: TemporalState
    image: np.ndarray | None = field(default=None, repr=False)
    #: True when the plane classifier ran on THIS frame (not carried from an earlier one).
    plane_checked: bool = False

    @property
    def perimeter_px(self) -> float | None:
        return perimeter_px(self.result.ellipse)

    @property
    def quality_score(self) -> float:
        """Gate score x temporal consistency (x 1 while the consistency is undefined)."""
        if not self.quality.passed:
            return 0.0
        term = 1.0 if self.temporal.consistency is None else self.temporal.consistency
        return self.quality.score * term

    @property
    def hc_mm(self) -> float | None:
        return None if self.result.measurement is None else self.result.measurement.hc_mm

    def to_row(self) -> dict:
        """One frames.csv row (None = empty cell)."""
        base = self.result.to_dict()
        e = self.result.ellipse
        return {
            "frame": self.index,
            "time_ms": self.time_ms,
            "status": self.result.status,
            "detail": self.result.detail,
            **{
                key: base[key]
                for key in (
                    "hc_mm",
                    "bpd_mm",
                    "ofd_mm",
                    "cephalic_index",
                    "center_x_px",
                    "center_y_px",
                    "semi_axes_a_px",
                    "semi_axes_b_px",
                    "confidence",
                    "pixel_size_mm",
                )
            },
            "angle_rad": None if e is None else e.angle_rad,
            "perimeter_px": self.perimeter_px,
            "quality_score": round(self.quality_score, 4),
            "quality_passed": self.quality.passed,
            "quality_rule": self.quality.rule,
            "temporal_consistency": None if self.temporal.consistency is None else round(self.temporal.consistency, 4),
            "accepted": self.temporal.accepted,
            "hc_smoothed_mm": self.temporal.hc_smoothed_mm,
            **{key: base[key] for key in PLANE_COLUMNS},
            "plane_checked": self.plane_checked if self.result.plane is not None else None,
        }


# --------------------------------------------------------------------------- threads


#: A frame's temporal state before the tracker has seen it.
_UNTRACKED = TemporalState(None, False, None)


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- processor


class StreamProcessor:
    """Segment, fit, score and smooth a stream of frames; yields ``FrameResult``s in order."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        pixel_size_mm: float | None,
        pixel_size_problem: str = "",
        window: int = DEFAULT_WINDOW,
        tolerance: float = DEFAULT_TOLERANCE,
        min_history: int = DEFAULT_MIN_HISTORY,
        batch_size: int | None = None,
        threads: bool = True,
        fit_workers: int = 2,
        plane_checker: PlaneChecker | None = None,
        plane_every: int = DEFAULT_PLANE_EVERY,
        max_view_change: float | None = DEFAULT_MAX_VIEW_CHANGE,
        track: bool = True,
        refresh_every: int = DEFAULT_REFRESH_EVERY,
    ):
        if fit_workers < 1:
            raise StreamError(f"fit_workers={fit_workers}: give at least 1")
        self.fit_workers = fit_workers
        try:
            self.plane_schedule = PlaneSchedule(every=plane_every, max_view_change=max_view_change)
        except ValueError as error:
            raise StreamError(str(error)) from None
        self.plane_checker = plane_checker
        self._last_plane: PlaneResult | None = None
        self.predictor = predictor
        self.pixel_size_mm = pixel_size_mm
        self.pixel_size_problem = pixel_size_problem
        self.tracker = TemporalTracker(window=window, tolerance=tolerance, min_history=min_history)
        self.batch_size = int(batch_size or predictor.batch_size)
        if self.batch_size < 1:
            raise StreamError(f"batch_size={batch_size}: give at least 1")
        self.threads = threads
        if refresh_every < 1:
            raise StreamError(f"refresh_every={refresh_every}: give at least 1")
        self.track = track
        self.refresh_every = refresh_every
        self._window: tuple[slice, slice] | None = None
        #: Frames segmented by the window alone (``Predictor.predict_in_window``).
        self.frames_tracked = 0

    def _segment(self, frames: list[Frame]) -> list[Prediction]:
        """The batch's predictions. Tracking: with a window carried from the batch before,
        only the second look runs (one pass per frame instead of two); a frame whose head
        left the window, and every frame whose index is a multiple of ``refresh_every``,
        take the full ``predict_batch`` (first look, then the second look at its own
        window)."""
        images = [f.image for f in frames]
        if not self.track or self._window is None:
            predictions = self.predictor.predict_batch(images)
        else:
            due = [f.index % self.refresh_every == 0 for f in frames]
            tracked = iter(self.predictor.predict_in_window([i for i, d in zip(images, due) if not d], self._window))
            predictions = [None if d else next(tracked) for d in due]
            full = [i for i, p in zip(images, predictions) if p is None]
            redone = iter(self.predictor.predict_batch(full))
            predictions = [next(redone) if p is None else p for p in predictions]
            self.frames_tracked += len(images) - len(full)
        if self.track:
            self._window = self.predictor.next_window(predictions[-1])
        return predictions

    def _planes(self, frames: list[Frame]) -> list[tuple[PlaneResult | None, bool]]:
        """(plane scores, checked on this frame) per frame: the classifier runs on the
        frames ``plane_schedule`` picks (every k-th, and any whose view changed) and the
        frames between carry its verdict; only a frame checked itself can become the best
        frame (``_is_better``)."""
        if self.plane_checker is None:
            return [(None, False)] * len(frames)
        due = [f for f in frames if self.plane_schedule.due(f.image)]
        checked = dict(zip((f.index for f in due), self.plane_checker.check_batch([f.image for f in due])))
        planes = []
        for frame in frames:
            if frame.index in checked:
                self._last_plane = checked[frame.index]
            planes.append((self._last_plane, frame.index in checked))
        return planes

    def _analyse(
        self, frame: Frame, prediction: Prediction, head: HeadFit, plane: PlaneResult | None, plane_checked: bool
    ) -> FrameResult:
        """Everything about one frame that does not depend on the frames before it."""
        result = result_from_prediction(
            self.predictor,
            f"frame_{frame.index:06d}",
            prediction,
            self.pixel_size_mm,
            pixel_size_problem=self.pixel_size_problem,
            plane=plane,
            head=head,
            image=frame.image,
        )
        quality = assess_frame(result, frame.image.shape)
        return FrameResult(
            frame.index, frame.time_ms, result, quality, _UNTRACKED, image=frame.image, plane_checked=plane_checked
        )

    def _analyse_batch(
        self, frames: list[Frame], predictions: list[Prediction], planes: list | Future
    ) -> list[FrameResult]:
        """``planes``: ``_planes(frames)``, or its Future while the plane check still runs
        (the ellipses are fitted meanwhile)."""
        heads = [fit_head(prediction) for prediction in predictions]
        if isinstance(planes, Future):
            planes = planes.result()
        return [
            self._analyse(frame, prediction, head, *plane)
            for frame, prediction, head, plane in zip(frames, predictions, heads, planes)
        ]

    def _track(self, frames: list[FrameResult]) -> Iterator[FrameResult]:
        """The temporal terms, in frame order (the tracker's history is causal)."""
        for frame in frames:
            frame.temporal = self.tracker.update(frame.perimeter_px, frame.hc_mm, frame.quality.passed)
            yield frame

    def process(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """All frames, in order; the tracker's state carries over between calls.

        With threads, frames are read ``2 x batch`` ahead in a reader thread, the network
        runs in this thread with the plane check beside it in another, and
        ``fit_workers`` threads fit and gate the batches already segmented while it
        segments the next; their results are taken in order, so the temporal terms see
        the frames in order."""
        if not self.threads:
            for batch in _batches(frames, self.batch_size):
                predictions = self._segment(batch)
                yield from self._track(self._analyse_batch(batch, predictions, self._planes(batch)))
            return
        pending: deque[Future] = deque()
        with (
            ThreadPoolExecutor(max_workers=self.fit_workers, thread_name_prefix="fetometry-fit") as fitter,
            # One worker: a verdict carries to the frames after it, so batches are checked in order.
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetometry-plane") as plane_checks,
        ):
            for batch in _batches(prefetch(frames, depth=2 * self.batch_size), self.batch_size):
                planes = plane_checks.submit(self._planes, batch)
                predictions = self._segment(batch)
                pending.append(fitter.submit(self._analyse_batch, batch, predictions, planes))
                while len(pending) > self.fit_workers or (pending and pending[0].done()):
                    yield from self._track(pending.popleft().result())
            while pending:
                yield from self._track(pending.popleft().result())


# --------------------------------------------------------------------------- outputs


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _is_better(candidate: FrameResult, best: FrameResult | None) -> bool:
    """Best-frame order: accepted with a defined consistency, then score."""
    if not candidate.temporal.accepted:
        return False
    if candidate.result.plane is not None and not (candidate.plane_checked and candidate.result.plane.head_plane):
        return False  # only a frame the plane check itself saw as a head plane
    if best is None:
        return True
    rank = (candidate.temporal.consistency is not None, candidate.quality_score)
    return rank > (best.temporal.consistency is not None, best.quality_score)


def write_best_frame(path: Path, frame: FrameResult) -> Path:
    """The best frame with its ellipse and numbers (report.figures.draw_overlay), PNG."""
    from fetometry.report.figures import draw_overlay

    rgb = draw_overlay(frame.image, frame.result)
    label = (
        f"frame {frame.index}"
        + ("" if frame.time_ms is None else f"  t={frame.time_ms / 1000:.2f} s")
        + f"  quality {frame.quality_score:.2f}"
    )
    scale = frame.image.shape[0] / 540
    cv2.putText(
        rgb,
        label,
        (10, rgb.shape[0] - int(12 * scale) - 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6 * scale,
        (255, 255, 0),
        max(1, round(scale)),
        cv2.LINE_AA,
    )
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


@dataclass
class StreamRun:
    """Counters of one run, turned into summary.json."""

    frames: int = 0
    with_head: int = 0
    accepted: int = 0
    accepted_hc_mm: list[float] = field(default_factory=list)
    best: FrameResult | None = None
    last_smoothed_mm: float | None = None

    def add(self, frame: FrameResult) -> None:
        self.frames += 1
        self.with_head += frame.result.ellipse is not None
        if frame.temporal.accepted:
            self.accepted += 1
            if frame.hc_mm is not None:
                self.accepted_hc_mm.append(frame.hc_mm)
        self.last_smoothed_mm = frame.temporal.hc_smoothed_mm
        if _is_better(frame, self.best):
            self.best = frame


def _best_frame_summary(best: FrameResult | None) -> dict | None:
    if best is None:
        return None
    m = best.result.measurement
    return {
        "frame": best.index,
        "time_ms": best.time_ms,
        "status": best.result.status,
        "quality_score": round(best.quality_score, 4),
        "hc_mm": None if m is None else m.hc_mm,
        "bpd_mm": None if m is None else m.bpd_mm,
        "ofd_mm": None if m is None else m.ofd_mm,
        "cephalic_index": None if m is None else m.cephalic_index,
        "image": "best_frame.png",
    }


def _summary(run: StreamRun, source: FrameSource, processor: StreamProcessor, elapsed_s: float, backend: str) -> dict:
    tracker = processor.tracker
    return {
        "source": source.description,
        "frames": run.frames,
        "frames_with_head": run.with_head,
        "frames_accepted": run.accepted,
        "pixel_size_mm": source.pixel_size_mm,
        "pixel_size_source": source.pixel_size_source,
        "model": processor.predictor.name,
        "backend": backend,
        "elapsed_s": round(elapsed_s, 3),
        "fps": round(run.frames / elapsed_s, 2) if elapsed_s > 0 else None,
        "hc_mm_median_accepted": statistics.median(run.accepted_hc_mm) if run.accepted_hc_mm else None,
        "hc_smoothed_last_mm": run.last_smoothed_mm,
        "best_frame": _best_frame_summary(run.best),
        "quality_gate": "fetometry.biometry.quality.assess_quality (score: confidence x mask-fit IoU x unclipped fraction)",
        "plane_check": (
            "off"
            if processor.plane_checker is None
            else f"{processor.plane_checker.name} on {_plane_schedule_summary(processor.plane_schedule)} (frames "
            "between carry its verdict; only a frame checked itself and seen as a head plane can be the best frame)"
        ),
        "frames_plane_checked": processor.plane_schedule.checked,
        "frames_plane_checked_for_view_change": processor.plane_schedule.checked_for_change,
        "segmentation": _segmentation_summary(processor),
        "frames_tracked": processor.frames_tracked,
        "temporal_consistency": f"1 - |P - median of the last {tracker.window} gated perimeters| / median / {tracker.tolerance:g}, clipped to [0, 1]; undefined for the first {tracker.min_history} gated frames",
        "smoothing": f"median HC of the last {tracker.window} accepted frames",
        "disclaimer": DISCLAIMER,
        "version": __version__,
    }


def _plane_schedule_summary(schedule: PlaneSchedule) -> str:
    if schedule.every == 1:
        return "every frame"
    rule = f"every {schedule.every}. frame"
    if schedule.max_view_change is None:
        return rule
    return f"{rule} and every frame whose view changed by more than {schedule.max_view_change:g} since the last check"


def _segmentation_summary(processor: StreamProcessor) -> str:
    if processor.predictor.second_look is None:
        return "one pass per frame (the model takes no second look)"
    if not processor.track:
        return "first look and second look on every frame, as `fetometry predict`"
    return (
        "tracked: the second look alone at the window of the frame before; the full two passes on "
        f"the first batch, every frame whose index is divisible by {processor.refresh_every}, "
        "and every frame whose head left the window"
    )


def run_stream(
    source: FrameSource,
    predictor: Predictor,
    out_dir: str | Path,
    *,
    backend: str = "torch",
    write_masks: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    on_frame: Callable[[FrameResult], None] | None = None,
    **options,
) -> dict:
    """`fetometry stream`: process ``source`` into DIR/frames.csv, best_frame.png, summary.json.

    ``options`` go to ``StreamProcessor`` (window, tolerance, min_history, batch_size,
    threads). Returns the summary dict (also written as summary.json).
    Raises StreamError when the source yields no frame at all.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problem = (
        ""
        if source.pixel_size_mm is not None
        else f"no pixel size ({source.pixel_size_source}); no mm value without it"
    )
    processor = StreamProcessor(predictor, pixel_size_mm=source.pixel_size_mm, pixel_size_problem=problem, **options)
    frames: Iterable[Frame] = source if max_frames is None else _first(source, max_frames)
    run = StreamRun()
    bar = tqdm(
        total=_total(source, max_frames), desc=f"stream {source.description}", unit="frame", disable=not progress
    )
    started = time.perf_counter()
    interrupted = False
    with (out_dir / "frames.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FRAME_COLUMNS)
        writer.writeheader()
        try:
            for frame in processor.process(frames):
                writer.writerow({key: _cell(value) for key, value in frame.to_row().items()})
                if write_masks and frame.result.prediction is not None:
                    write_mask(out_dir / "masks" / f"frame_{frame.index:06d}_mask.png", frame.result.prediction.mask)
                run.add(frame)
                if on_frame is not None:
                    on_frame(frame)
                _release(frame, keep=frame is run.best)
                _progress(bar, run, started)
        except KeyboardInterrupt:
            # Ctrl-C is how a live device's stream ends: keep what was measured so far.
            interrupted = True
            log.warning("interrupted after %d frames; writing the results so far", run.frames)
    elapsed = time.perf_counter() - started
    bar.close()
    if run.frames == 0:
        raise StreamError(f"{source.description}: no frame could be read")
    if run.best is not None:
        write_best_frame(out_dir / "best_frame.png", run.best)
    summary = _summary(run, source, processor, elapsed, backend)
    summary["interrupted"] = interrupted
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _first(frames: Iterable[Frame], n: int) -> Iterator[Frame]:
    if n < 1:
        raise StreamError(f"max_frames={n}: give at least 1")
    for frame in frames:
        if frame.index >= n:
            return
        yield frame


def _total(source: FrameSource, max_frames: int | None) -> int | None:
    if source.frame_count is None:
        return max_frames
    return source.frame_count if max_frames is None else min(source.frame_count, max_frames)


def _release(frame: FrameResult, *, keep: bool) -> None:
    """Drop a written frame's full-size arrays (a long loop must not fill memory)."""
    frame.result.prediction = None  # the row and mask are written; the overlay needs no map
    if not keep:
        frame.image = None


def _progress(bar: tqdm, run: StreamRun, started: float) -> None:
    bar.update(1)
    elapsed = time.perf_counter() - started
    if run.frames % 4 == 0 and elapsed > 0:
        smoothed = "-" if run.last_smoothed_mm is None else f"{run.last_smoothed_mm:.1f}"
        bar.set_postfix(fps=f"{run.frames / elapsed:.1f}", hc_mm=smoothed, accepted=run.accepted, refresh=False)
