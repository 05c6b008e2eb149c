"""Property-based fuzzing of the DICOM reader: whatever the bytes, a valid image or a DicomError.

Three attacks: corrupting a valid file (truncation, overwritten and inserted bytes),
rewriting its header with hostile but well-formed values, and random bytes behind a
DICM marker. Plus a property of region choice: a pixel size only ever comes from a
plausible, isotropic 2D tissue region that holds the point.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fetometry.io.dicom import (
    DicomError,
    UltrasoundRegion,
    calibrate,
    read_dicom,
    ultrasound_dicom_bytes,
    ultrasound_region,
)
from fetometry.io.pixel_size import MAX_PIXEL_SIZE_MM, MIN_PIXEL_SIZE_MM

# Deterministic (CI must not flake) and no example database left in the repository.
FUZZ = settings(
    max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _valid_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    gray = rng.random((2, 20, 24)).astype(np.float32)
    color = rng.random((20, 24, 3)).astype(np.float32)
    regions = [ultrasound_region(0, 0, 11, 19, pixel_size_mm=0.1), ultrasound_region(12, 0, 23, 19, pixel_size_mm=0.2)]
    return [
        ultrasound_dicom_bytes(gray, pixel_size_mm=0.2, frame_time_ms=30),
        ultrasound_dicom_bytes(gray, regions=regions, transfer_syntax="implicit"),
        ultrasound_dicom_bytes(gray, transfer_syntax="rle", pixel_spacing_mm=(0.3, 0.3)),
        ultrasound_dicom_bytes(color, transfer_syntax="jpeg-baseline", pixel_size_mm=0.2),
        ultrasound_dicom_bytes(color, photometric="YBR_FULL", transfer_syntax="deflated"),
    ]


VALID = _valid_files()


def _read_or_reject(data: bytes, point=None):
    """The property: a well-formed DicomImage, or a DicomError; nothing else escapes."""
    try:
        image = read_dicom(data, point=point)
    except DicomError as error:
        assert str(error)
        return None
    frames = image.frames
    assert frames.ndim == 3 and frames.dtype == np.float32 and frames.shape[0] >= 1
    assert np.isfinite(frames).all() and frames.min() >= 0.0 and frames.max() <= 1.0
    assert image.pixel_size_mm is None or MIN_PIXEL_SIZE_MM <= image.pixel_size_mm <= MAX_PIXEL_SIZE_MM
    assert image.calibration
    return image


def test_the_valid_seeds_read():
    for data in VALID:
        assert _read_or_reject(data) is not None


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_truncated_files(data, draw):
    cut = draw.draw(st.integers(0, len(data) - 1))
    _read_or_reject(data[:cut])


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_overwritten_bytes(data, edits):
    mutated = bytearray(data)
    for where, value in edits:
        mutated[132 + int(where * (len(data) - 132))] = value  # keep the marker: fuzz the parser
    _read_or_reject(bytes(mutated))


@FUZZ
@given(st.sampled_from(VALID), st.floats(0, 1), st.binary(min_size=1, max_size=16))
def test_inserted_bytes(data, where, junk):
    at = 132 + int(where * (len(data) - 132))
    _read_or_reject(data[:at] + junk + data[at:])


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_behind_a_dicm_marker(tail):
    _read_or_reject(bytes(128) + b"DICM" + tail)


HEADER_VALUES = {
    "Rows": st.integers(0, 65535),
    "Columns": st.integers(0, 65535),
    "NumberOfFrames": st.integers(0, 100000).map(str),
    "SamplesPerPixel": st.integers(0, 5),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 64),
    "HighBit": st.integers(0, 64),
    "PixelRepresentation": st.integers(0, 2),
    "PlanarConfiguration": st.integers(0, 2),
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "HSV", ""]
    ),
    "FrameTime": st.sampled_from(["0", "-5", "1e308", "NaN", "33.3"]),
    "PixelSpacing": st.lists(st.sampled_from(["0", "-1", "0.2", "0.5", "1e9", "nan", "inf"]), min_size=2, max_size=2),
}


@FUZZ
@given(
    st.sampled_from(VALID),
    st.dictionaries(st.sampled_from(sorted(HEADER_VALUES)), st.none(), min_size=1, max_size=4),
    st.data(),
)
def test_hostile_header_values(data, keys, draw):
    dataset = pydicom.dcmread(io.BytesIO(data))
    for keyword in keys:
        setattr(dataset, keyword, draw.draw(HEADER_VALUES[keyword], label=keyword))
    out = io.BytesIO()
    try:
        dataset.save_as(out, enforce_file_format=True)
    except Exception:  # pydicom refuses to write some combinations: not the reader's business
        assume(False)
    image = _read_or_reject(out.getvalue())
    if image is not None:
        assert image.frames.shape[1:] == (int(dataset.Rows), int(dataset.Columns))


REGION_NUMBERS = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([float("nan"), float("inf"), 0.0, 1e-9]))


@st.composite
def _regions(draw):
    regions = []
    for index in range(draw(st.integers(0, 4))):
        x0, y0 = draw(st.integers(-5, 100)), draw(st.integers(-5, 100))
        regions.append(
            UltrasoundRegion(
                index,
                x0,
                y0,
                x0 + draw(st.integers(-3, 100)),
                y0 + draw(st.integers(-3, 100)),
                spatial_format=draw(st.sampled_from([None, 0, 1, 2, 3])),
                units_x=draw(st.sampled_from([None, 0, 3, 4])),
                units_y=draw(st.sampled_from([None, 3, 5])),
                delta_x=draw(st.none() | REGION_NUMBERS),
                delta_y=draw(st.none() | REGION_NUMBERS),
            )
        )
    return regions


@FUZZ
@given(
    _regions(),
    st.none() | st.tuples(st.floats(-10, 120), st.floats(-10, 120)),
    st.none() | st.tuples(REGION_NUMBERS, REGION_NUMBERS),
)
def test_a_pixel_size_only_comes_from_a_sound_source(regions, point, spacing):
    size, text = calibrate(regions, spacing, point=point)
    assert text
    if size is None:
        assert text.startswith("uncalibrated")
        return
    assert MIN_PIXEL_SIZE_MM <= size <= MAX_PIXEL_SIZE_MM
    sources = [r for r in regions if r.is_2d_tissue_cm]
    if not sources:
        assert text.startswith("PixelSpacing")
        return
    sources = [r for r in sources if point is None or r.contains(*point)]
    assert any(
        r.delta_x
        and r.delta_y
        and abs(r.delta_x - r.delta_y) <= 0.01 * max(r.delta_x, r.delta_y)
        and size == pytest.approx((r.delta_x + r.delta_y) * 5.0)
        for r in sources
    )
