"""fetometry.io: image files -> (H, W) float32, pixel sizes and HC18-style CSVs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from fetometry.io import ImageReadError, PixelSizeError, read_image, read_mask, validate_pixel_size
from fetometry.io.images import write_mask
from fetometry.io.pixel_size import read_hc18_csv, read_pixel_size_csv


def _gradient(dtype=np.uint8, shape=(24, 40)) -> np.ndarray:
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, shape[1]).round().astype(dtype)
    return np.tile(ramp, (shape[0], 1))


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_8bit_roundtrip(tmp_path, suffix):
    pixels = _gradient(np.uint8)
    path = tmp_path / f"img{suffix}"
    assert cv2.imwrite(str(path), pixels)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_scaled_by_65535(tmp_path, suffix):
    pixels = _gradient(np.uint16)
    pixels[0, 0] = 32768
    pixels[2, :3] = (1000, 1001, 1002)  # steps that 8 bits cannot hold
    path = tmp_path / f"img16{suffix}"
    assert cv2.imwrite(str(path), pixels)
    image = read_image(path)
    assert image.dtype == np.float32
    assert image.max() == pytest.approx(1.0)
    assert image[0, 0] == pytest.approx(32768 / 65535, abs=1e-6)
    # 16-bit precision survives (an 8-bit conversion would merge these three values).
    np.testing.assert_allclose(np.diff(image[2, :3]), 1 / 65535, rtol=1e-3)


def test_jpeg_is_read_approximately(tmp_path):
    pixels = np.full((32, 32), 128, np.uint8)
    path = tmp_path / "img.jpg"
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    image = read_image(path)
    assert image.shape == (32, 32)
    assert abs(float(image.mean()) - 128 / 255) < 2 / 255


def test_rgb_is_converted_to_luma(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10, 0] = 255  # red
    rgb[:, 10:20, 1] = 255  # green
    rgb[:, 20:, 2] = 255  # blue
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb, mode="RGB").save(path)  # PIL writes RGB order, cv2 reads BGR
    image = read_image(path)
    assert image.shape == (20, 30)
    # ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B; a channel mix-up would swap red and blue.
    assert image[0, 0] == pytest.approx(0.299, abs=2 / 255)
    assert image[0, 15] == pytest.approx(0.587, abs=2 / 255)
    assert image[0, 25] == pytest.approx(0.114, abs=2 / 255)


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: must not darken the ultrasound
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_image(path)
    assert image.shape == (20, 20)
    np.testing.assert_allclose(image, 200 / 255, atol=1 / 255)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.png"
    ok, buffer = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    path.write_bytes(buffer.tobytes()[: len(buffer) // 2])
    with pytest.raises(ImageReadError, match="cut.png.*truncated"):
        read_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty.png.*empty \(0 bytes\)"):
        read_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("filename,pixel size(mm)\n000_HC.png,0.1\n")
    with pytest.raises(ImageReadError, match="notes.png.*not a readable image"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "absent.png")


def test_tiny_image_is_rejected_with_its_size(tmp_path):
    path = tmp_path / "tiny.png"
    assert cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageReadError, match=r"tiny.png.*4x4 px, too small"):
        read_image(path)
    with pytest.raises(ImageReadError, match="too small"):
        read_mask(path)


def test_image_read_error_is_a_value_error():
    assert issubclass(ImageReadError, ValueError)
    assert issubclass(PixelSizeError, ValueError)


def test_mask_roundtrip_and_any_nonzero_is_head(tmp_path):
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    path = tmp_path / "sub" / "m.png"
    write_mask(path, mask)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
    np.testing.assert_array_equal(read_mask(path), mask)
    # Annotation tools write 1 instead of 255: still the head.
    ones = tmp_path / "ones.png"
    assert cv2.imwrite(str(ones), mask.astype(np.uint8))
    np.testing.assert_array_equal(read_mask(ones), mask)


# --------------------------------------------------------------------------- pixel size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("abc", "not a number"),
        ([0.1], "not a number"),
        (0.001, "outside the plausible range"),
        (5.0, "outside the plausible range"),
        (0.0, "outside the plausible range"),
        (-0.1, "outside the plausible range"),
        (float("nan"), "outside the plausible range"),
        ("nan", "outside the plausible range"),
        (float("inf"), "outside the plausible range"),
    ],
)
def test_invalid_pixel_sizes(value, message):
    with pytest.raises(PixelSizeError, match=message):
        validate_pixel_size(value, source="case.png")


def test_missing_pixel_size_message_says_how_to_fix():
    with pytest.raises(PixelSizeError, match="--pixel-size MM or --pixel-csv CSV"):
        validate_pixel_size(None)


@pytest.mark.parametrize(("value", "mm"), [(0.1, 0.1), ("0.0691358041432", 0.0691358041432), (" 0.3 ", 0.3), (1, 1.0)])
def test_valid_pixel_sizes(value, mm):
    assert validate_pixel_size(value) == pytest.approx(mm)


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_hc18_csv_parsing(tmp_path):
    path = _write(
        tmp_path / "t.csv",
        "filename,pixel size(mm),head circumference (mm)\n"
        "000_HC.png,0.0691358041432,44.3\n"
        "001_HC.png,abc,56.81\n"
        "002_HC.png,0.2,\n"
        "\n"
        "003_HC.png\n",
    )
    table = read_hc18_csv(path)
    assert set(table) == {"000_HC.png", "001_HC.png", "002_HC.png"}
    assert table["000_HC.png"] == {"pixel_size_mm": pytest.approx(0.0691358041432), "hc_mm": pytest.approx(44.3)}
    assert table["001_HC.png"]["pixel_size_mm"] is None  # reported per image, not fatal
    assert table["001_HC.png"]["hc_mm"] == pytest.approx(56.81)
    assert table["002_HC.png"]["hc_mm"] is None
    assert "subject" not in table["000_HC.png"]
    assert read_pixel_size_csv(path) == {
        "000_HC.png": pytest.approx(0.0691358041432),
        "001_HC.png": None,
        "002_HC.png": pytest.approx(0.2),
    }


def test_test_set_csv_without_hc_and_with_bom(tmp_path):
    path = tmp_path / "test_set_pixel_size.csv"
    path.write_bytes("filename,pixel size(mm)\r\n000_HC.png,0.1\r\n".encode("utf-8-sig"))
    assert read_hc18_csv(path) == {"000_HC.png": {"pixel_size_mm": pytest.approx(0.1), "hc_mm": None}}


def test_csv_subject_column(tmp_path):
    path = _write(tmp_path / "s.csv", "filename,pixel size(mm),subject\na.png,0.1,P7\nb.png,0.1,\n")
    table = read_hc18_csv(path)
    assert table["a.png"]["subject"] == "P7"
    assert table["b.png"]["subject"] is None


def test_csv_errors(tmp_path):
    with pytest.raises(PixelSizeError, match="no such CSV"):
        read_hc18_csv(tmp_path / "absent.csv")
    with pytest.raises(PixelSizeError, match="empty"):
        read_hc18_csv(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(PixelSizeError, match="expected a header with 'filename' and 'pixel size"):
        read_hc18_csv(_write(tmp_path / "bad.csv", "name,size\na.png,0.1\n"))


def test_csv_missing_the_image(tmp_path):
    path = _write(tmp_path / "t.csv", "filename,pixel size(mm)\n000_HC.png,0.1\n")
    table = read_pixel_size_csv(path)
    assert "001_HC.png" not in table
    assert not math.isnan(table["000_HC.png"])
