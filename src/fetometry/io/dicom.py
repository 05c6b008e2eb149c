"""DICOM ultrasound files -> gray frames in [0, 1] and a pixel size, or a clear error.

Single frames and multi-frame cine loops are read with pydicom. The pixel size comes
from the ultrasound regions (DICOM PS3.3 C.8.5.5, US Region Calibration): among the items of
SequenceOfUltrasoundRegions (0018,6011) whose RegionSpatialFormat is 1 (2D tissue) and
whose PhysicalUnitsX/YDirection are 3 (cm, so mm = PhysicalDelta * 10) we take the one
that contains a given point (e.g. the head centre), else the largest. PixelSpacing
(0028,0030) is a fallback, used only when present and named as such. A file we cannot
calibrate is read, with ``pixel_size_mm = None`` and ``calibration`` saying why: no
pixel size is ever guessed.

Privacy: patient identifiers (names, IDs, dates) are never read into a DicomImage, never
logged and never put in an error message; pydicom's own warnings, which may quote element
values, are swallowed and only counted. ``DicomImage.safe_summary()`` is what may be logged.

Safety: only files with the DICOM 'DICM' marker are parsed (pydicom, never pickle);
sizes are checked before any pixel is decoded; anything pydicom trips over becomes a
DicomError.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fetometry.io.images import MAX_SIDE_PX, MIN_SIDE_PX
from fetometry.io.pixel_size import PixelSizeError, validate_pixel_size

log = logging.getLogger(__name__)

#: Bytes 128-131 of every DICOM Part 10 file.
DICM_MARKER = b"DICM"
PREAMBLE_BYTES = 128
#: At most this many decoded pixels per file (frames x rows x columns x samples);
#: 2**28 float32 gray pixels are 1 GiB, more than any cine loop we should hold at once.
MAX_TOTAL_PIXELS = 2**28
#: X and Y pixel spacing may differ by at most this fraction: one pixel size must serve both.
MAX_ANISOTROPY = 0.01
#: DICOM codes (PS3.3 C.8.5.5.1): RegionSpatialFormat 1 = 2D tissue; units 3 = cm.
SPATIAL_FORMAT_2D = 1
UNITS_CM = 3
MM_PER_CM = 10.0
#: ITU-R BT.601 luma weights (as cv2.COLOR_RGB2GRAY, so PNG and DICOM gray agree).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

ULTRASOUND_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ULTRASOUND_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


class DicomError(ValueError):
    """The file is not a DICOM image we can read (and the message says what to do)."""


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of SequenceOfUltrasoundRegions; corners are inclusive pixel indices."""

    index: int
    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int | None
    units_x: int | None
    units_y: int | None
    delta_x: float | None
    delta_y: float | None

    @property
    def area_px(self) -> int:
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)

    @property
    def is_2d_tissue_cm(self) -> bool:
        return self.spatial_format == SPATIAL_FORMAT_2D and self.units_x == UNITS_CM and self.units_y == UNITS_CM

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def describe(self, total: int) -> str:
        return f"ultrasound region {self.index + 1} of {total} (x {self.x0}-{self.x1}, y {self.y0}-{self.y1} px)"


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_region(index: int, item) -> UltrasoundRegion | None:
    """A sequence item -> region, or None when its corners are missing or malformed."""
    corners = [
        _int_or_none(item.get(k))
        for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
    ]
    if any(c is None for c in corners):
        return None
    return UltrasoundRegion(
        index,
        *corners,
        spatial_format=_int_or_none(item.get("RegionSpatialFormat")),
        units_x=_int_or_none(item.get("PhysicalUnitsXDirection")),
        units_y=_int_or_none(item.get("PhysicalUnitsYDirection")),
        delta_x=_float_or_none(item.get("PhysicalDeltaX")),
        delta_y=_float_or_none(item.get("PhysicalDeltaY")),
    )


def _isotropic_mm(dx_mm: float | None, dy_mm: float | None, source: str) -> tuple[float | None, str]:
    """(pixel size, "") when X and Y agree and are plausible, else (None, why not)."""
    if dx_mm is None or dy_mm is None or dx_mm <= 0 or dy_mm <= 0:
        return None, f"{source} has no positive X/Y spacing ({dx_mm}, {dy_mm} mm)"
    if abs(dx_mm - dy_mm) > MAX_ANISOTROPY * max(dx_mm, dy_mm):
        return None, (
            f"{source} has different X and Y spacing ({dx_mm:.5g} vs {dy_mm:.5g} mm per pixel, "
            f"more than {MAX_ANISOTROPY:.0%} apart); one pixel size cannot serve both"
        )
    try:
        return validate_pixel_size((dx_mm + dy_mm) / 2.0, source=source), ""
    except PixelSizeError as error:
        return None, str(error)


def calibrate(
    regions: Sequence[UltrasoundRegion],
    pixel_spacing_mm: tuple[float, float] | None = None,
    *,
    point: tuple[float, float] | None = None,
) -> tuple[float | None, str]:
    """Choose the pixel size: ``(pixel_size_mm or None, human-readable calibration)``.

    ``pixel_spacing_mm`` is PixelSpacing as (row spacing = Y, column spacing = X).
    """
    usable = [r for r in regions if r.is_2d_tissue_cm]
    if usable:
        return _calibrate_from_regions(usable, len(regions), point)
    why = (
        f"none of the {len(regions)} ultrasound regions is a 2D tissue region in cm"
        if regions
        else "no ultrasound regions (0018,6011)"
    )
    if pixel_spacing_mm is not None:
        size, problem = _isotropic_mm(pixel_spacing_mm[1], pixel_spacing_mm[0], "PixelSpacing (0028,0030)")
        if size is not None:
            return size, f"PixelSpacing (0028,0030) fallback: {size:.5g} mm per pixel ({why})"
        return None, f"uncalibrated: {why}; {problem}"
    return None, f"uncalibrated: {why} and no PixelSpacing; give the pixel size explicitly"


def _calibrate_from_regions(
    usable: list[UltrasoundRegion], total: int, point: tuple[float, float] | None
) -> tuple[float | None, str]:
    if point is not None:
        x, y = point
        holding = [r for r in usable if r.contains(x, y)]
        if not holding:
            return None, f"uncalibrated: the point ({x:.0f}, {y:.0f}) px lies outside every 2D tissue region"
        # Nested regions: the smallest one holding the point is the most specific.
        chosen = min(holding, key=lambda r: r.area_px)
        reason = f"the 2D tissue region holding ({x:.0f}, {y:.0f}) px"
    else:
        chosen = max(usable, key=lambda r: r.area_px)
        reason = "the largest 2D tissue region" if len(usable) > 1 else "the only 2D tissue region"
    dx = chosen.delta_x * MM_PER_CM if chosen.delta_x is not None else None
    dy = chosen.delta_y * MM_PER_CM if chosen.delta_y is not None else None
    where = chosen.describe(total)
    size, problem = _isotropic_mm(dx, dy, where)
    if size is None:
        return None, f"uncalibrated: {problem}"
    return size, f"{where}, {reason}: {size:.5g} mm per pixel"


# --------------------------------------------------------------------------- image


@dataclass(frozen=True, eq=False)
class DicomImage:
    """Gray frames of one DICOM file plus how (and whether) it is calibrated.

    ``frames``: (N, H, W) float32 in [0, 1], N = 1 for a single image.
    Holds no patient identifiers.
    """

    frames: np.ndarray = field(repr=False)
    pixel_size_mm: float | None
    calibration: str
    frame_time_ms: float | None = None
    modality: str = ""
    transfer_syntax: str = ""
    regions: tuple[UltrasoundRegion, ...] = ()
    pixel_spacing_mm: tuple[float, float] | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def calibrated(self) -> bool:
        return self.pixel_size_mm is not None

    def at_point(self, x: float, y: float) -> DicomImage:
        """The same image calibrated by the region holding pixel (x, y), e.g. the head centre."""
        size, text = calibrate(self.regions, self.pixel_spacing_mm, point=(x, y))
        return replace(self, pixel_size_mm=size, calibration=text)

    def safe_summary(self) -> dict:
        """What may be logged or shown: modality, frames, size, calibration; no identifiers."""
        return {
            "modality": self.modality,
            "frames": self.n_frames,
            "height_px": int(self.frames.shape[1]),
            "width_px": int(self.frames.shape[2]),
            "pixel_size_mm": self.pixel_size_mm,
            "calibration": self.calibration,
        }


def is_dicom(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> bool:
    """True when the content (not the file name) carries the DICOM Part 10 'DICM' marker."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        head = bytes(path_or_bytes[: PREAMBLE_BYTES + 4])
    else:
        try:
            with open(path_or_bytes, "rb") as handle:
                head = handle.read(PREAMBLE_BYTES + 4)
        except OSError:
            return False
    return head[PREAMBLE_BYTES:] == DICM_MARKER


def read_dicom(
    path_or_bytes: str | Path | bytes | bytearray | memoryview, *, point: tuple[float, float] | None = None
) -> DicomImage:
    """Read a DICOM image or cine loop; ``point=(x, y)`` picks the region that holds it.

    Raises DicomError for anything that is not a readable DICOM image (no pixel data,
    an undecodable transfer syntax, a truncated or corrupt file).
    """
    name = "DICOM bytes" if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) else str(path_or_bytes)
    with _pydicom_silenced(name):
        dataset = _parse(path_or_bytes, name)
        frames = _decode_gray(dataset, name)
        try:
            image = _describe(dataset, frames, name, point)
        except DicomError:
            raise
        except Exception as error:  # a malformed header value, parsed lazily by pydicom
            raise DicomError(
                f"{name}: a header value is malformed ({type(error).__name__}); the file may be corrupt"
            ) from None
    log.debug("%s: %s", name, image.safe_summary())
    return image


class _CountAndDrop(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.dropped += 1
        return False


#: pydicom's loggers (a filter on a parent does not see its children's records).
PYDICOM_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils")
#: warnings.catch_warnings swaps process-wide state: one silenced read at a time.
_SILENCE_LOCK = threading.Lock()


@contextlib.contextmanager
def _pydicom_silenced(name: str):
    """Drop pydicom's warnings and log records for the duration; they can quote element
    values (patient names, IDs, dates), so they are counted, never shown."""
    loggers = [logging.getLogger(n) for n in PYDICOM_LOGGERS]
    dropper = _CountAndDrop()
    with _SILENCE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for logger in loggers:
            logger.addFilter(dropper)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(dropper)
            if caught or dropper.dropped:
                log.debug(
                    "%s: %d pydicom warning(s) not shown (they may quote patient data)",
                    name,
                    len(caught) + dropper.dropped,
                )


def _parse(source, name: str):
    """Bytes or path -> pydicom Dataset, or DicomError; never ``force``: no marker, no parse."""
    import pydicom

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DicomError(f"{name}: no such file")
        data = path.read_bytes()
    if not data:
        raise DicomError(f"{name}: the file is empty (0 bytes)")
    if not is_dicom(data):
        raise DicomError(
            f"{name}: not a DICOM file (no 'DICM' marker at byte 128); export the image as DICOM Part 10 or as PNG"
        )
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises many types on corrupt input
        raise DicomError(f"{name}: corrupt or truncated DICOM ({type(error).__name__})") from None


# --------------------------------------------------------------------------- pixels


def _header_int(dataset, keyword: str, name: str, *, default: int | None = None) -> int:
    try:
        value = dataset.get(keyword, default)
        return int(value)
    except Exception:
        raise DicomError(f"{name}: the image header has no valid {keyword}") from None


def _check_geometry(dataset, name: str) -> tuple[int, int, int, int]:
    """(frames, rows, columns, samples) after checking they are sane, before decoding."""
    if "PixelData" not in dataset:
        raise DicomError(
            f"{name}: the DICOM file has no pixel data (7FE0,0010): it may be truncated, or a report or presentation state rather than an image"
        )
    rows = _header_int(dataset, "Rows", name)
    columns = _header_int(dataset, "Columns", name)
    samples = _header_int(dataset, "SamplesPerPixel", name, default=1)
    frames = _header_int(dataset, "NumberOfFrames", name, default=1) or 1
    if min(rows, columns) < MIN_SIDE_PX or max(rows, columns) > MAX_SIDE_PX:
        raise DicomError(f"{name}: image is {columns}x{rows} px; sides must be {MIN_SIDE_PX}-{MAX_SIDE_PX} px")
    if samples not in (1, 3):
        raise DicomError(f"{name}: {samples} samples per pixel; only gray (1) or colour (3) images are supported")
    if frames < 1 or frames * rows * columns * samples > MAX_TOTAL_PIXELS:
        raise DicomError(
            f"{name}: {frames} frames of {columns}x{rows} px is too large to read at once (limit {MAX_TOTAL_PIXELS} pixels); split the loop"
        )
    return frames, rows, columns, samples


def _transfer_syntax(dataset, name: str):
    """The file's transfer syntax UID; inferred from the encoding for native data without one."""
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    uid = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if uid:
        return UID(str(uid))
    implicit, little = getattr(dataset, "original_encoding", (None, None))
    if little and not dataset["PixelData"].is_undefined_length:
        return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    raise DicomError(f"{name}: the file meta information has no TransferSyntaxUID")


def _decoder(uid, name: str):
    """pydicom's decoder for ``uid``, or a DicomError naming the syntax and what it needs."""
    from pydicom.pixels import get_decoder

    label = f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)
    try:
        decoder = get_decoder(uid)
    except Exception:
        raise DicomError(
            f"{name}: transfer syntax {label} is unsupported (no decoder); export the images uncompressed or as JPEG baseline"
        ) from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "an extra decoder"
        raise DicomError(
            f"{name}: transfer syntax {label} is unsupported here: decoding it needs {needs}; export the images uncompressed or as JPEG baseline"
        )
    return decoder


def _decode_gray(dataset, name: str) -> np.ndarray:
    """Pixel data -> (N, H, W) float32 in [0, 1]: colour to luma, one scale per file."""
    n_frames, rows, columns, samples = _check_geometry(dataset, name)
    decoder = _decoder(_transfer_syntax(dataset, name), name)
    try:
        # raw=False converts YBR to RGB; no modality or VOI LUT is applied (no windowing).
        pixels, meta = decoder.as_array(dataset)
        photometric = str(meta.get("photometric_interpretation", dataset.get("PhotometricInterpretation", "")))
        bits = _bits_stored(dataset, pixels.dtype)
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels, photometric = apply_color_lut(pixels, dataset), "RGB"
            bits = 8 * pixels.dtype.itemsize  # the palette's depth, not the indices'
    except Exception as error:
        raise DicomError(
            f"{name}: the pixel data could not be decoded ({type(error).__name__}); the file may be truncated or corrupt"
        ) from None
    channels = 3 if photometric == "RGB" else samples  # a palette turns 1 sample into RGB
    if pixels.size != n_frames * rows * columns * channels:
        raise DicomError(
            f"{name}: decoded {pixels.shape} pixels, expected {n_frames} frames of {columns}x{rows}x{channels}; the header does not match the pixel data"
        )
    gray = _to_gray(pixels.reshape(n_frames, rows, columns, channels))
    scaled = _scale(gray, bits, signed=_signed(pixels.dtype))
    if photometric == "MONOCHROME1":  # 0 = white in MONOCHROME1
        scaled = 1.0 - scaled
    return np.ascontiguousarray(scaled, dtype=np.float32)


def _to_gray(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H, W) float32; colour -> BT.601 luma."""
    if pixels.shape[-1] == 1:
        return pixels[..., 0].astype(np.float32)
    return pixels[..., :3].astype(np.float32) @ LUMA_WEIGHTS


def _signed(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.signedinteger)


def _bits_stored(dataset, dtype: np.dtype) -> int:
    if not np.issubdtype(dtype, np.integer):
        return 0
    bits = _int_or_none(dataset.get("BitsStored")) or 0
    return bits if 1 <= bits <= 8 * dtype.itemsize else 8 * dtype.itemsize


def _scale(gray: np.ndarray, bits: int, *, signed: bool) -> np.ndarray:
    """One linear scale for the whole file (never per frame, so a loop does not flicker).

    Integers use the declared bit depth (8-bit / 255, as for a PNG, so the model sees
    what it was trained on); floats and headers the data exceed fall back to min-max.
    """
    if bits:
        low = -(2 ** (bits - 1)) if signed else 0
        high = low + 2**bits - 1
        if gray.size == 0 or (gray.min() >= low and gray.max() <= high):
            return (gray - low) / (high - low)
    finite = np.nan_to_num(gray, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    return (finite - low) / (high - low) if high > low else np.zeros_like(finite)


# --------------------------------------------------------------------------- description


def _describe(dataset, frames: np.ndarray, name: str, point) -> DicomImage:
    regions = _regions(dataset)
    spacing = _pixel_spacing(dataset)
    size, text = calibrate(regions, spacing, point=point)
    if size is None:
        log.info("%s: %s", name, text)
    return DicomImage(
        frames=frames,
        pixel_size_mm=size,
        calibration=text,
        frame_time_ms=_frame_time_ms(dataset),
        modality=str(dataset.get("Modality", "") or ""),
        transfer_syntax=str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or ""),
        regions=tuple(regions),
        pixel_spacing_mm=spacing,
    )


def _regions(dataset) -> list[UltrasoundRegion]:
    try:
        items = list(dataset.get("SequenceOfUltrasoundRegions", None) or [])
    except Exception:
        return []
    parsed = [_parse_region_safely(i, item) for i, item in enumerate(items)]
    return [r for r in parsed if r is not None]


def _parse_region_safely(index: int, item) -> UltrasoundRegion | None:
    """A malformed region (pydicom parses values lazily and raises many types) is skipped:
    it can calibrate nothing, and calibrate() says so when no sound region remains."""
    try:
        return _parse_region(index, item)
    except Exception:
        return None


def _pixel_spacing(dataset) -> tuple[float, float] | None:
    try:
        values = dataset.get("PixelSpacing", None)
        row, col = (_float_or_none(v) for v in values)
    except Exception:
        return None
    return (row, col) if row is not None and col is not None else None


def _frame_time_ms(dataset) -> float | None:
    """FrameTime (0018,1063), else 1000 / CineRate (0018,0040) or the display rate; None
    when absent or malformed (timing is informative, never a reason to refuse a file)."""
    try:
        return _declared_frame_time_ms(dataset)
    except Exception:
        return None


def _declared_frame_time_ms(dataset) -> float | None:
    frame_time = _float_or_none(dataset.get("FrameTime", None))
    if frame_time is not None and frame_time > 0:
        return frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _float_or_none(dataset.get(keyword, None))
        if rate is not None and rate > 0:
            return 1000.0 / rate
    return None


# --------------------------------------------------------------------------- writing (synthetic test files)


def ultrasound_region(
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    *,
    pixel_size_mm: float | None = None,
    delta_x_cm: float | None = None,
    delta_y_cm: float | None = None,
    spatial_format: int = SPATIAL_FORMAT_2D,
    units: int = UNITS_CM,
    data_type: int = 1,
) -> dict:
    """One SequenceOfUltrasoundRegions item as ``{DICOM keyword: value}``."""
    if pixel_size_mm is not None:
        delta_x_cm = delta_y_cm = pixel_size_mm / MM_PER_CM
    item = {
        "RegionSpatialFormat": spatial_format,
        "RegionDataType": data_type,
        "RegionFlags": 0,
        "RegionLocationMinX0": x0,
        "RegionLocationMinY0": y0,
        "RegionLocationMaxX1": x1,
        "RegionLocationMaxY1": y1,
        "PhysicalUnitsXDirection": units,
        "PhysicalUnitsYDirection": units,
    }
    if delta_x_cm is not None:
        item["PhysicalDeltaX"] = float(delta_x_cm)
    if delta_y_cm is not None:
        item["PhysicalDeltaY"] = float(delta_y_cm)
    return item


#: Short names for the transfer syntaxes the writer can produce.
WRITABLE_SYNTAXES = ("explicit", "implicit", "deflated", "rle", "jpeg-baseline")


def write_ultrasound_dicom(path: str | Path, frames: np.ndarray, **options) -> Path:
    """Write a synthetic ultrasound DICOM file (see ``ultrasound_dicom_bytes``); never real patient data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ultrasound_dicom_bytes(frames, **options))
    return path


def ultrasound_dicom_bytes(
    frames: np.ndarray,
    *,
    pixel_size_mm: float | None = None,
    regions: Sequence[dict] | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    frame_time_ms: float | None = None,
    photometric: str | None = None,
    transfer_syntax: str = "explicit",
    patient_name: str = "PHANTOM^SYNTHETIC",
    patient_id: str = "SYNTH-0000",
    study_date: str = "20000101",
) -> bytes:
    """A synthetic US (multi-frame) image as DICOM Part 10 bytes.

    ``frames``: (H, W) or (N, H, W) gray, (H, W, 3) or (N, H, W, 3) RGB; floats in
    [0, 1] become uint8, integer arrays are written as they are. ``pixel_size_mm`` adds
    one 2D tissue region covering the image; ``regions`` (``ultrasound_region`` items)
    replaces it. ``photometric``: MONOCHROME2 (default gray), MONOCHROME1, RGB (default
    colour) or YBR_FULL. ``transfer_syntax``: one of WRITABLE_SYNTAXES.
    """
    pixels, color = _as_stored_pixels(frames)
    dataset = _base_dataset(pixels, color, patient_name, patient_id, study_date)
    photometric = photometric or ("RGB" if color else "MONOCHROME2")
    pixels = _apply_photometric(pixels, photometric)
    dataset.PhotometricInterpretation = photometric
    _add_calibration(dataset, pixels, pixel_size_mm, regions, pixel_spacing_mm)
    if frame_time_ms is not None:
        dataset.FrameTime = float(frame_time_ms)
    _encode(dataset, pixels, transfer_syntax)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _as_stored_pixels(frames: np.ndarray) -> tuple[np.ndarray, bool]:
    """-> ((N, H, W[, 3]) integer array, is colour)."""
    frames = np.asarray(frames)
    color = frames.ndim >= 3 and frames.shape[-1] == 3
    if frames.ndim == (3 if color else 2):
        frames = frames[None]
    if frames.ndim != (4 if color else 3):
        raise ValueError(f"frames must be (H, W), (N, H, W) or with a last axis of 3 for RGB; got {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating):
        frames = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    if frames.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"frames must be float in [0, 1], uint8, uint16 or int16; got {frames.dtype}")
    return frames, color


def _base_dataset(pixels: np.ndarray, color: bool, patient_name: str, patient_id: str, study_date: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    n_frames, rows, columns = pixels.shape[:3]
    sop_class = ULTRASOUND_MULTIFRAME_STORAGE if n_frames > 1 else ULTRASOUND_IMAGE_STORAGE
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.Modality = "US"
    dataset.PatientName, dataset.PatientID = patient_name, patient_id
    dataset.StudyDate = dataset.SeriesDate = study_date
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 3 if color else 1
    if color:
        dataset.PlanarConfiguration = 0
    bits = 8 * pixels.dtype.itemsize
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    dataset.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if n_frames > 1:
        dataset.NumberOfFrames = n_frames
        dataset.FrameIncrementPointer = 0x00181063  # FrameTime
    return dataset


def _apply_photometric(pixels: np.ndarray, photometric: str) -> np.ndarray:
    if photometric == "MONOCHROME1":
        return (np.iinfo(pixels.dtype).max - pixels).astype(pixels.dtype)
    if photometric == "YBR_FULL":
        from pydicom.pixels import convert_color_space

        return convert_color_space(pixels, "RGB", "YBR_FULL")
    if photometric not in ("MONOCHROME2", "RGB"):
        raise ValueError(f"photometric must be MONOCHROME1, MONOCHROME2, RGB or YBR_FULL; got {photometric!r}")
    return pixels


def _add_calibration(dataset, pixels: np.ndarray, pixel_size_mm, regions, pixel_spacing_mm) -> None:
    from pydicom.dataset import Dataset

    rows, columns = pixels.shape[1:3]
    if regions is None and pixel_size_mm is not None:
        regions = [ultrasound_region(0, 0, columns - 1, rows - 1, pixel_size_mm=pixel_size_mm)]
    if regions:
        items = []
        for region in regions:
            item = Dataset()
            for keyword, value in region.items():
                setattr(item, keyword, value)
            items.append(item)
        dataset.SequenceOfUltrasoundRegions = items
    if pixel_spacing_mm is not None:
        dataset.PixelSpacing = [float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])]


def _encode(dataset, pixels: np.ndarray, transfer_syntax: str) -> None:
    from pydicom import uid

    syntaxes = {
        "explicit": uid.ExplicitVRLittleEndian,
        "implicit": uid.ImplicitVRLittleEndian,
        "deflated": uid.DeflatedExplicitVRLittleEndian,
        "rle": uid.RLELossless,
        "jpeg-baseline": uid.JPEGBaseline8Bit,
    }
    if transfer_syntax not in syntaxes:
        raise ValueError(f"transfer_syntax must be one of {', '.join(WRITABLE_SYNTAXES)}; got {transfer_syntax!r}")
    dataset.file_meta.TransferSyntaxUID = syntaxes[transfer_syntax]
    if transfer_syntax == "rle":
        dataset.compress(uid.RLELossless, pixels if pixels.shape[0] > 1 else pixels[0], generate_instance_uid=False)
    elif transfer_syntax == "jpeg-baseline":
        _encode_jpeg_baseline(dataset, pixels)
    else:
        dataset.PixelData = pixels.tobytes()
        dataset["PixelData"].VR = "OB" if pixels.dtype == np.uint8 else "OW"


def _encode_jpeg_baseline(dataset, pixels: np.ndarray) -> None:
    """8-bit JPEG baseline through Pillow (colour as YBR_FULL_422, as scanners do)."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    if pixels.dtype != np.uint8 or dataset.PhotometricInterpretation not in ("MONOCHROME2", "RGB"):
        raise ValueError("jpeg-baseline needs uint8 MONOCHROME2 or RGB frames")
    encoded = []
    for frame in pixels:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95, subsampling=1)  # 1 = 4:2:2
        encoded.append(buffer.getvalue())
    dataset.PixelData = encapsulate(encoded)
    dataset["PixelData"].VR = "OB"
    if pixels.ndim == 4:
        dataset.PhotometricInterpretation = "YBR_FULL_422"
    dataset.LossyImageCompression = "01"
