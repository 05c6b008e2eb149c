"""Frame sources for the stream processor: video files, capture devices, DICOM cine loops.

Every source yields ``Frame(index, time_ms, image)`` with ``image`` a (H, W) float32
grayscale array in [0, 1], the same form ``read_image`` returns for a still image, and
states where its pixel size comes from (``pixel_size_mm`` + ``pixel_size_source``):

- a video file (anything OpenCV's ``cv2.VideoCapture`` decodes: AVI, MP4, ...) carries no
  calibration, so its pixel size is the explicit ``--pixel-size`` or nothing;
- a capture device (an integer index such as ``0``) likewise;
- a DICOM cine loop (multi-frame ultrasound) is calibrated by its ultrasound regions
  (read by ``fetometry.io.dicom.read_dicom``); an explicit value overrides it, and the
  source string says so.

Without a pixel size the stream still segments and fits, but reports no millimetre value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from fetometry.io.images import MAX_SIDE_PX, MIN_SIDE_PX
from fetometry.io.pixel_size import validate_pixel_size

log = logging.getLogger(__name__)

#: Suffixes tried as DICOM even when the file lacks the "DICM" preamble check.
DICOM_SUFFIXES = (".dcm", ".dicom")
NO_CALIBRATION = "none: {what} carries no calibration; give --pixel-size MM for mm values"


class VideoReadError(ValueError):
    """The input is not a readable video, capture device or cine loop."""


class Frame(NamedTuple):
    """One frame: its position in the stream, its time (ms, None when unknown) and pixels."""

    index: int
    time_ms: float | None
    image: np.ndarray


@dataclass
class FrameSource:
    """Base of all sources: iterate to get ``Frame``s; ``close()`` releases the input.

    ``frame_count`` and ``fps`` are None when the input does not say (live devices).
    """

    description: str
    pixel_size_mm: float | None
    pixel_size_source: str
    frame_count: int | None = None
    fps: float | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying input (no-op for in-memory sources)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_gray_float(pixels: np.ndarray) -> np.ndarray:
    """A decoded frame (8/16-bit, gray or BGR) -> (H, W) float32 in [0, 1]."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3:
        # OpenCV decodes video as BGR; BT.601 luma, as read_image does for still images.
        pixels = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2GRAY)
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return pixels.astype(np.float32) * np.float32(1.0 / scale)


def _check_frame_size(shape: tuple[int, ...], what: str) -> None:
    height, width = shape[:2]
    if min(height, width) < MIN_SIDE_PX or max(height, width) > MAX_SIDE_PX:
        raise VideoReadError(
            f"{what}: frames are {width}x{height} px; fetometry needs sides between {MIN_SIDE_PX} and {MAX_SIDE_PX} px"
        )


class CaptureSource(FrameSource):
    """Frames from ``cv2.VideoCapture``: a video file or a live device index."""

    def __init__(
        self,
        capture: cv2.VideoCapture,
        *,
        description: str,
        pixel_size_mm: float | None,
        pixel_size_source: str,
        live: bool,
    ):
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        super().__init__(
            description,
            pixel_size_mm,
            pixel_size_source,
            frame_count=None if live or count <= 0 else count,
            fps=fps if fps > 0 else None,
        )
        self._capture = capture
        self._live = live

    def _time_ms(self, index: int, started: float) -> float | None:
        if self._live:
            return (time.perf_counter() - started) * 1000.0
        if self.fps:
            # The container's nominal rate: CAP_PROP_POS_MSEC is unreliable for some codecs.
            return index * 1000.0 / self.fps
        return None

    def __iter__(self) -> Iterator[Frame]:
        started = time.perf_counter()
        index = 0
        while True:
            ok, pixels = self._capture.read()
            if not ok or pixels is None:
                return
            if index == 0:
                _check_frame_size(pixels.shape, self.description)
            yield Frame(index, self._time_ms(index, started), to_gray_float(pixels))
            index += 1

    def close(self) -> None:
        self._capture.release()


class ArraySource(FrameSource):
    """Frames held in memory: a DICOM cine loop or a (N, H, W) array in [0, 1]."""

    def __init__(
        self,
        frames: np.ndarray,
        *,
        description: str,
        pixel_size_mm: float | None,
        pixel_size_source: str,
        frame_time_ms: float | None = None,
    ):
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3 or frames.shape[0] == 0:
            raise VideoReadError(f"{description}: expected frames of shape (N, H, W), got {frames.shape}")
        _check_frame_size(frames.shape[1:], description)
        valid_time = frame_time_ms is not None and frame_time_ms > 0
        super().__init__(
            description,
            pixel_size_mm,
            pixel_size_source,
            frame_count=frames.shape[0],
            fps=1000.0 / frame_time_ms if valid_time else None,
        )
        self._frames = frames
        self._frame_time_ms = frame_time_ms if valid_time else None

    def __iter__(self) -> Iterator[Frame]:
        for index, pixels in enumerate(self._frames):
            time_ms = None if self._frame_time_ms is None else index * self._frame_time_ms
            yield Frame(index, time_ms, np.clip(pixels.astype(np.float32, copy=False), 0.0, 1.0))


def _explicit_pixel_size(pixel_size_mm: float | None) -> float | None:
    return None if pixel_size_mm is None else validate_pixel_size(pixel_size_mm, source="--pixel-size")


def open_device(index: int, *, pixel_size_mm: float | None = None) -> CaptureSource:
    """A live capture device (camera, frame grabber) by its OpenCV index."""
    capture = cv2.VideoCapture(int(index))
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(f"capture device {index}: cannot be opened; check that it is connected and not in use")
    mm = _explicit_pixel_size(pixel_size_mm)
    source = "--pixel-size" if mm is not None else NO_CALIBRATION.format(what="a capture device")
    return CaptureSource(capture, description=f"device {index}", pixel_size_mm=mm, pixel_size_source=source, live=True)


def open_video(path: str | Path, *, pixel_size_mm: float | None = None) -> CaptureSource:
    """A video file decoded by OpenCV; the pixel size is the explicit one or none."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(f"{path}: not a video OpenCV can decode (try AVI/MP4), nor a DICOM file")
    mm = _explicit_pixel_size(pixel_size_mm)
    source = "--pixel-size" if mm is not None else NO_CALIBRATION.format(what="a video file")
    return CaptureSource(capture, description=path.name, pixel_size_mm=mm, pixel_size_source=source, live=False)


def open_dicom_cine(path: str | Path, *, pixel_size_mm: float | None = None) -> ArraySource:
    """A DICOM file (cine loop or single frame), calibrated by its ultrasound regions.

    An explicit ``pixel_size_mm`` overrides the file's calibration; the source says so.
    Raises fetometry.io.dicom.DicomError (a ValueError) for files it cannot read.
    """
    from fetometry.io.dicom import read_dicom  # optional dependency chain: pydicom

    path = Path(path)
    dicom = read_dicom(path)
    mm = _explicit_pixel_size(pixel_size_mm)
    if mm is not None:
        found = f"{dicom.pixel_size_mm:g} mm" if dicom.pixel_size_mm is not None else "none"
        source = f"--pixel-size (overrides the DICOM calibration: {found})"
        if dicom.pixel_size_mm is not None and abs(dicom.pixel_size_mm - mm) > 1e-6:
            log.warning(
                "%s: --pixel-size %g mm overrides the DICOM calibration %g mm", path.name, mm, dicom.pixel_size_mm
            )
    else:
        mm = dicom.pixel_size_mm
        source = f"DICOM: {dicom.calibration}"
    return ArraySource(
        dicom.frames,
        description=path.name,
        pixel_size_mm=mm,
        pixel_size_source=source,
        frame_time_ms=dicom.frame_time_ms,
    )


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        from fetometry.io.dicom import is_dicom
    except ImportError:
        return False
    return is_dicom(path)


def open_source(spec: str | Path, *, pixel_size_mm: float | None = None) -> FrameSource:
    """``spec`` -> a frame source: an existing DICOM file, a video file, or a device index.

    An integer string that is not an existing file (``"0"``) opens that capture device.
    """
    path = Path(spec)
    if path.is_file():
        return (
            open_dicom_cine(path, pixel_size_mm=pixel_size_mm)
            if _is_dicom(path)
            else open_video(path, pixel_size_mm=pixel_size_mm)
        )
    if str(spec).strip().isdigit():
        return open_device(int(str(spec)), pixel_size_mm=pixel_size_mm)
    raise VideoReadError(
        f"{spec}: no such file; give a video file, a DICOM cine loop or a capture device index (0, 1, ...)"
    )
