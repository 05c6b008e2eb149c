"""fetometry.io.dicom: frames, calibration from ultrasound regions, bad input, privacy."""

from __future__ import annotations

import io
import logging
import pickle
import warnings

import cv2
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.encaps import encapsulate

from fetometry.io.dicom import (
    DicomError,
    calibrate,
    is_dicom,
    read_dicom,
    ultrasound_dicom_bytes,
    ultrasound_region,
    write_ultrasound_dicom,
)
from fetometry.io.images import read_image

H, W = 40, 64


def _smooth(n_frames: int = 1, *, color: bool = False) -> np.ndarray:
    """Smooth gradients (JPEG keeps them nearly exact), one brightness per frame."""
    y, x = np.mgrid[0:H, 0:W]
    base = (0.2 + 0.6 * x / (W - 1)) * (0.5 + 0.5 * y / (H - 1))
    frames = np.stack([np.clip(base + 0.05 * i, 0, 1) for i in range(n_frames)]).astype(np.float32)
    if color:
        frames = np.stack([frames, frames * 0.8, frames * 0.5], axis=-1)
    return frames


def _rewrite(data: bytes, edit) -> bytes:
    """Parse ``data``, let ``edit(dataset)`` change it, return the new file bytes."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    edit(dataset)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "deflated", "rle"])
def test_lossless_syntaxes_roundtrip_a_cine_loop(tmp_path, syntax):
    frames = _smooth(3)
    path = write_ultrasound_dicom(
        tmp_path / "loop.dcm", frames, pixel_size_mm=0.15, frame_time_ms=33.3, transfer_syntax=syntax
    )
    image = read_dicom(path)
    assert image.frames.shape == (3, H, W) and image.frames.dtype == np.float32
    np.testing.assert_allclose(image.frames, np.round(frames * 255) / 255, atol=1e-6)
    assert image.frame_time_ms == pytest.approx(33.3)
    assert image.pixel_size_mm == pytest.approx(0.15)
    assert image.modality == "US" and image.n_frames == 3


def test_single_frame_is_one_frame_and_matches_the_png_reader(tmp_path):
    frame = _smooth(1)[0]
    path = write_ultrasound_dicom(tmp_path / "one.dcm", frame, pixel_size_mm=0.2)
    png = tmp_path / "one.png"
    cv2.imwrite(str(png), np.round(frame * 255).astype(np.uint8))
    image = read_dicom(path)
    assert image.frames.shape == (1, H, W)
    np.testing.assert_allclose(image.frames[0], read_image(png), atol=1e-6)
    assert image.frame_time_ms is None


def test_bytes_and_path_give_the_same_image(tmp_path):
    data = ultrasound_dicom_bytes(_smooth(2), pixel_size_mm=0.1)
    (tmp_path / "a.dcm").write_bytes(data)
    np.testing.assert_array_equal(read_dicom(data).frames, read_dicom(tmp_path / "a.dcm").frames)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_becomes_bt601_luma(photometric):
    rgb = _smooth(1, color=True)[0]
    image = read_dicom(ultrasound_dicom_bytes(rgb, photometric=photometric))
    expected = cv2.cvtColor(np.round(rgb * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) / 255.0
    # YBR_FULL storage rounds each channel once more: allow two grey levels.
    np.testing.assert_allclose(image.frames[0], expected, atol=2.5 / 255)


def test_monochrome1_is_inverted_to_white_on_black():
    frame = _smooth(1)[0]
    image = read_dicom(ultrasound_dicom_bytes(frame, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image.frames[0], np.round(frame * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("color", [False, True])
def test_jpeg_baseline_is_decoded(color):
    frames = _smooth(2, color=color)
    image = read_dicom(ultrasound_dicom_bytes(frames, transfer_syntax="jpeg-baseline", pixel_size_mm=0.2))
    gray = frames @ np.array([0.299, 0.587, 0.114]) if color else frames
    assert image.frames.shape == (2, H, W)
    assert np.abs(image.frames - gray).mean() < 0.01  # lossy, but the same picture
    assert image.pixel_size_mm == pytest.approx(0.2)


def test_palette_colour_is_looked_up_then_made_gray():
    frame = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
    ramp = np.arange(256, dtype=np.uint16) * 257  # 16-bit palette entries

    def palette(dataset):
        dataset.PhotometricInterpretation = "PALETTE COLOR"
        for colour, table in (("Red", ramp), ("Green", ramp), ("Blue", 65535 - ramp)):
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            dataset[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
            setattr(dataset, f"{colour}PaletteColorLookupTableData", table.astype("<u2").tobytes())

    image = read_dicom(_rewrite(ultrasound_dicom_bytes(frame), palette))
    expected = (0.299 + 0.587) * frame / 255 + 0.114 * (255 - frame) / 255
    np.testing.assert_allclose(image.frames[0], expected, atol=1e-5)


def test_scale_is_per_file_not_per_frame():
    frames = np.zeros((2, H, W), np.uint8)
    frames[0], frames[1] = 50, 100  # flat frames: a per-frame stretch would make both 0
    image = read_dicom(ultrasound_dicom_bytes(frames))
    np.testing.assert_allclose(image.frames[:, 0, 0], [50 / 255, 100 / 255], atol=1e-6)


def test_16_bit_uses_the_declared_bit_depth():
    frame = np.full((H, W), 1000, np.uint16)
    frame[0, 0] = 4095

    def twelve_bits(dataset):
        dataset.BitsStored, dataset.HighBit = 12, 11

    image = read_dicom(_rewrite(ultrasound_dicom_bytes(frame), twelve_bits))
    assert image.frames[0, 0, 0] == pytest.approx(1.0)
    assert image.frames[0, 1, 1] == pytest.approx(1000 / 4095, abs=1e-6)


def test_frame_time_from_cine_rate():
    def rate(dataset):
        dataset.CineRate = 25

    assert read_dicom(_rewrite(ultrasound_dicom_bytes(_smooth(2)), rate)).frame_time_ms == pytest.approx(40.0)


# --------------------------------------------------------------------------- calibration


def _three_regions() -> list[dict]:
    """A small 2D region (0.1 mm), a large 2D region (0.2 mm) and a Doppler strip."""
    return [
        ultrasound_region(0, 0, 19, 19, pixel_size_mm=0.1),
        ultrasound_region(20, 0, 63, 29, pixel_size_mm=0.2),
        ultrasound_region(0, 30, 63, 39, delta_x_cm=0.5, delta_y_cm=0.02, spatial_format=3, units=4),
    ]


def test_largest_2d_region_is_chosen_without_a_point():
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=_three_regions()))
    assert image.pixel_size_mm == pytest.approx(0.2)
    assert "region 2 of 3" in image.calibration and "largest" in image.calibration


def test_the_region_holding_the_point_is_chosen():
    data = ultrasound_dicom_bytes(_smooth(1), regions=_three_regions())
    image = read_dicom(data, point=(10, 10))
    assert image.pixel_size_mm == pytest.approx(0.1) and "region 1 of 3" in image.calibration
    assert read_dicom(data).at_point(40, 15).pixel_size_mm == pytest.approx(0.2)


def test_a_point_outside_every_2d_region_is_uncalibrated():
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=_three_regions()), point=(30, 35))
    assert image.pixel_size_mm is None and not image.calibrated
    assert "outside every 2D tissue region" in image.calibration


def test_cm_are_converted_to_mm():
    regions = [ultrasound_region(0, 0, W - 1, H - 1, delta_x_cm=0.0123, delta_y_cm=0.0123)]
    assert read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=regions)).pixel_size_mm == pytest.approx(0.123)


@pytest.mark.parametrize("dy_cm, calibrated", [(0.02019, True), (0.0203, False)])
def test_x_and_y_must_agree_within_one_percent(dy_cm, calibrated):
    regions = [ultrasound_region(0, 0, W - 1, H - 1, delta_x_cm=0.02, delta_y_cm=dy_cm)]
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=regions))
    assert image.calibrated is calibrated
    if not calibrated:
        assert "different X and Y spacing" in image.calibration


def test_non_spatial_regions_do_not_calibrate():
    regions = [ultrasound_region(0, 0, W - 1, H - 1, pixel_size_mm=0.2, units=4)]  # seconds, not cm
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=regions))
    assert image.pixel_size_mm is None
    assert "none of the 1 ultrasound regions is a 2D tissue region in cm" in image.calibration


def test_implausible_region_spacing_is_refused():
    regions = [ultrasound_region(0, 0, W - 1, H - 1, pixel_size_mm=5.0)]
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), regions=regions))
    assert image.pixel_size_mm is None and "plausible range" in image.calibration


def test_pixel_spacing_is_a_named_fallback():
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), pixel_spacing_mm=(0.25, 0.25)))
    assert image.pixel_size_mm == pytest.approx(0.25)
    assert image.calibration.startswith("PixelSpacing (0028,0030) fallback")


def test_regions_win_over_pixel_spacing():
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1), pixel_size_mm=0.1, pixel_spacing_mm=(0.25, 0.25)))
    assert image.pixel_size_mm == pytest.approx(0.1)


def test_uncalibrated_file_is_read_and_says_so():
    image = read_dicom(ultrasound_dicom_bytes(_smooth(1)))
    assert image.frames.shape == (1, H, W)
    assert image.pixel_size_mm is None
    assert image.calibration.startswith("uncalibrated") and "give the pixel size" in image.calibration


def test_calibrate_without_any_source():
    assert calibrate([], None) == (
        None,
        "uncalibrated: no ultrasound regions (0018,6011) and no PixelSpacing; give the pixel size explicitly",
    )


# --------------------------------------------------------------------------- bad input


def test_no_pixel_data():
    data = _rewrite(ultrasound_dicom_bytes(_smooth(1)), lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(DicomError, match="no pixel data"):
        read_dicom(data)


@pytest.mark.parametrize(
    "syntax, words", [(uid.JPEGLSLossless, "JPEG-LS"), (uid.JPEG2000MC, "2000"), (uid.MPEG4HP41, "MPEG-4")]
)
def test_undecodable_compression_names_the_syntax(syntax, words):
    def compress(dataset):
        dataset.file_meta.TransferSyntaxUID = syntax
        dataset.PixelData = encapsulate([b"\xff\xd8not really compressed\xff\xd9"])
        dataset["PixelData"].VR = "OB"

    data = _rewrite(ultrasound_dicom_bytes(_smooth(1)), compress)
    if _decoder_available(syntax):
        # A plugin decodes this syntax here (highdicom brings pyjpegls): the bogus stream is then corrupt.
        with pytest.raises(DicomError, match="could not be decoded"):
            read_dicom(data)
        return
    with pytest.raises(DicomError, match="unsupported") as info:
        read_dicom(data)
    assert words in str(info.value) and str(syntax) in str(info.value)


def _decoder_available(syntax) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def test_corrupt_jpeg_stream_is_a_dicom_error():
    def garbage(dataset):
        dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(200)])

    data = _rewrite(ultrasound_dicom_bytes(_smooth(1), transfer_syntax="jpeg-baseline"), garbage)
    with pytest.raises(DicomError, match="could not be decoded"):
        read_dicom(data)


def test_header_that_disagrees_with_pixel_data():
    def taller(dataset):
        dataset.Rows = H * 2

    with pytest.raises(DicomError):
        read_dicom(_rewrite(ultrasound_dicom_bytes(_smooth(1)), taller))


@pytest.mark.parametrize("rows, columns, frames", [(8, 64, 1), (40, 9000, 1), (4096, 4096, 20)])
def test_absurd_geometry_is_refused_before_decoding(rows, columns, frames):
    def resize(dataset):
        dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames

    with pytest.raises(DicomError, match="px"):
        read_dicom(_rewrite(ultrasound_dicom_bytes(_smooth(1)), resize))


def test_hostile_files(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DicomError, match="empty"):
        read_dicom(empty)
    with pytest.raises(DicomError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")
    png = tmp_path / "image.dcm"  # a PNG with a DICOM name
    cv2.imwrite(str(png.with_suffix(".png")), np.zeros((32, 32), np.uint8))
    png.write_bytes(png.with_suffix(".png").read_bytes())
    with pytest.raises(DicomError, match="not a DICOM file"):
        read_dicom(png)
    data = ultrasound_dicom_bytes(_smooth(2), pixel_size_mm=0.1)
    with pytest.raises(DicomError):
        read_dicom(data[: len(data) // 2])
    with pytest.raises(DicomError):
        read_dicom(data[:140])


def test_is_dicom_reads_content_not_the_extension(tmp_path):
    data = ultrasound_dicom_bytes(_smooth(1))
    (tmp_path / "scan.png").write_bytes(data)
    assert is_dicom(tmp_path / "scan.png") and is_dicom(data) and is_dicom(memoryview(data))
    assert not is_dicom(b"") and not is_dicom(b"\x89PNG\r\n") and not is_dicom(tmp_path / "missing")
    assert not is_dicom(tmp_path)


class _Exploit:
    """Unpickling this writes a marker file: proof that a reader called pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    for data in (payload, bytes(128) + b"DICM" + payload):
        path = tmp_path / "evil.dcm"
        path.write_bytes(data)
        with pytest.raises(DicomError):
            read_dicom(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- privacy


def test_patient_identifiers_never_leak(caplog):
    secrets = ("DOE^JANE", "SECRET-4711", "19870203")
    data = ultrasound_dicom_bytes(
        _smooth(1), regions=_three_regions(), patient_name=secrets[0], patient_id=secrets[1], study_date=secrets[2]
    )
    broken = _rewrite(data, lambda ds: setattr(ds, "Rows", H * 2))
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_dicom(data, point=(30, 35))  # uncalibrated: logs why
        with pytest.raises(DicomError) as error:
            read_dicom(broken)
    visible = " ".join(
        [caplog.text, repr(image), str(image.safe_summary()), str(error.value)] + [str(w.message) for w in caught]
    )
    assert "uncalibrated" in caplog.text  # the check below reads real log output
    for secret in secrets:
        assert secret not in visible
    assert set(image.safe_summary()) == {"modality", "frames", "height_px", "width_px", "pixel_size_mm", "calibration"}
    assert not any("patient" in f.lower() or "date" in f.lower() for f in vars(image))


def test_pydicom_messages_quoting_identifiers_are_swallowed(monkeypatch, caplog):
    """pydicom's warnings and log records can quote element values: none may get out."""
    real_dcmread = pydicom.dcmread

    def chatty_dcmread(*args, **kwargs):
        dataset = real_dcmread(*args, **kwargs)
        logging.getLogger("pydicom").warning("Invalid value for VR PN: %r", str(dataset.PatientName))
        logging.getLogger("pydicom.pixels.utils").warning("value %s", dataset.PatientID)
        warnings.warn(f"Invalid value {dataset.PatientName}", UserWarning)
        return dataset

    monkeypatch.setattr(pydicom, "dcmread", chatty_dcmread)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_dicom(ultrasound_dicom_bytes(_smooth(1), patient_name="DOE^JANE", patient_id="SECRET-4711"))
    assert image.frames.shape == (1, H, W)
    shown = caplog.text + " ".join(str(w.message) for w in caught)
    assert "3 pydicom warning(s) not shown" in caplog.text
    assert "DOE" not in shown and "SECRET" not in shown
    assert not logging.getLogger("pydicom").filters  # the filter does not outlive the read
