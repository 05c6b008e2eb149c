"""Hostile input for fetometry.io: property-based fuzzing and named hostile files.

The contract under test: every image or CSV a user can hand us ends as a valid result
or as ImageReadError / PixelSizeError (ValueErrors with a message), never as another
exception type, a hang, or a decode of a header that declares a giant image.
Bounded for CI: small inputs, <= 100 examples per property, a deadline, no example DB.
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
import zlib
from datetime import timedelta
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fetometry.io import images
from fetometry.io import pixel_size as ps
from fetometry.io.images import (
    MAX_PIXELS,
    MAX_SIDE_PX,
    MIN_SIDE_PX,
    ImageReadError,
    decode_image,
    read_header,
    read_image,
    read_mask,
)
from fetometry.io.pixel_size import (
    MAX_PIXEL_SIZE_MM,
    MIN_PIXEL_SIZE_MM,
    PixelSizeError,
    UnsafeFileNameError,
    read_hc18_csv,
    validate_file_name,
    validate_pixel_size,
)

#: Multiply every example budget, e.g. FETOMETRY_FUZZ_SCALE=50 for a deep run outside CI.
SCALE = max(1, int(os.environ.get("FETOMETRY_FUZZ_SCALE", "1")))
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=timedelta(seconds=2) if SCALE == 1 else None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _encode(pixels: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, pixels)
    assert ok
    return buffer.tobytes()


def _assert_valid_image(image: np.ndarray) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.float32 and image.ndim == 2
    assert MIN_SIDE_PX <= min(image.shape) and max(image.shape) <= MAX_SIDE_PX
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


def _decode_or_error(data: bytes) -> np.ndarray | None:
    """decode_image, where ImageReadError is an accepted answer; any other exception fails."""
    try:
        image = decode_image(data, source="fuzz")
    except ImageReadError as error:
        assert str(error).startswith("fuzz: "), "the message must name the file"
        return None
    _assert_valid_image(image)
    header = read_header(data)
    assert image.shape == (header.height, header.width)
    return image


_RNG = np.random.default_rng(7)
_GRAY8 = (_RNG.random((24, 32)) * 255).astype(np.uint8)
_RGBA16 = (_RNG.random((24, 32, 4)) * 65535).astype(np.uint16)
#: Small valid files of every supported kind, the seeds that the mutation fuzzer corrupts.
SEEDS = {
    "png8": _encode(_GRAY8, ".png"),
    "png16-rgba": _encode(_RGBA16, ".png"),
    "jpeg": _encode(_GRAY8, ".jpg"),
    "bmp": _encode(np.dstack([_GRAY8] * 3), ".bmp"),
    "tiff16": _encode(_RGBA16[..., 0], ".tif"),
    "tiff-float": _encode(_RNG.random((24, 32)).astype(np.float32), ".tif"),
}


def test_seeds_are_valid_images():
    """The fuzzers start from files that do read: a broken seed would make them vacuous."""
    for name, data in SEEDS.items():
        image = decode_image(data, source=name)
        assert image.shape == (24, 32), name


# --------------------------------------------------------------------------- image fuzzing


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data):
    _decode_or_error(data)


_MAGICS = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00"]


@FUZZ
@given(st.sampled_from(_MAGICS), st.binary(max_size=256))
def test_bytes_behind_a_valid_signature_never_crash(magic, tail):
    """Random bodies behind each format's magic drive the header parsers down every branch."""
    _decode_or_error(magic + tail)


@st.composite
def _mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        # Headers hold the dangerous fields: bias half the edits to the first 64 bytes.
        where = draw(st.one_of(st.integers(0, 63), st.integers(0, len(data) - 1)))
        where = min(where, len(data) - 1)
        action = draw(st.sampled_from(["set", "cut", "insert", "delete"]))
        if action == "set":
            data[where] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[where : where + draw(st.integers(1, 16))]
        if not data:
            break
    return bytes(data)


@settings(FUZZ, max_examples=100 * SCALE)
@given(_mutated())
def test_corrupted_images_never_crash(data):
    _decode_or_error(data)


@FUZZ
@given(
    height=st.integers(MIN_SIDE_PX, 72),
    width=st.integers(MIN_SIDE_PX, 72),
    kind=st.sampled_from(
        ["png8", "png16", "png-rgb", "png-rgba", "bmp", "tif16", "tif-rgb", "jpg", "pil-tif", "pil-bmp", "pil-jpg"]
    ),
    seed=st.integers(0, 2**16),
)
def test_header_parser_agrees_with_the_decoders(height, width, kind, seed):
    """On valid files of any size our header size equals what the decoder produces."""
    rng = np.random.default_rng(seed)
    gray = (rng.random((height, width)) * 255).astype(np.uint8)
    if kind.startswith("pil-"):
        buffer = io.BytesIO()
        Image.fromarray(gray).convert("RGB").save(buffer, format={"tif": "TIFF", "bmp": "BMP", "jpg": "JPEG"}[kind[4:]])
        data = buffer.getvalue()
    else:
        pixels = {
            "png16": gray.astype(np.uint16) * 257,
            "tif16": gray.astype(np.uint16) * 257,
            "png-rgb": np.dstack([gray] * 3),
            "tif-rgb": np.dstack([gray] * 3),
            "png-rgba": np.dstack([gray] * 4),
        }.get(kind, gray)
        data = _encode(pixels, "." + kind.split("-")[0].rstrip("0123456789"))
    header = read_header(data)
    assert (header.width, header.height) == (width, height)
    image = decode_image(data, source=kind)
    _assert_valid_image(image)
    assert image.shape == (height, width)
    if kind in ("png8", "png16", "tif16", "png-rgb", "tif-rgb", "png-rgba", "pil-tif", "pil-bmp"):
        np.testing.assert_allclose(image, gray / 255.0, atol=1 / 255 + 1e-6)  # lossless


# ---- crafted headers that declare any size, with no pixel data behind them


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc)


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def _bmp_header(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib


def _tiff_header(width: int, height: int, samples: int = 1) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, samples)]
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0)


CRAFTED = {"png": _png_header, "jpeg": _jpeg_header, "bmp": _bmp_header, "tiff": _tiff_header}


class _DecoderCalled(Exception):
    """Raised by a stand-in for cv2.imdecode: the code reached the decoder."""


def _no_decoder(*_args, **_kwargs):
    raise _DecoderCalled


@FUZZ
@given(st.sampled_from(sorted(CRAFTED)), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_declared_size_is_checked_before_any_decoding(kind, width, height):
    limit = 0xFFFF if kind == "jpeg" else 2**31 - 1  # JPEG sides are 16-bit
    width, height = min(width, limit), min(height, limit)
    data = CRAFTED[kind](width, height)
    if kind == "jpeg" and height == 0:  # JPEG's "height in a later DNL marker": refused outright
        with pytest.raises(ImageReadError, match="DNL marker"):
            read_header(data)
        return
    assert (read_header(data).width, read_header(data).height) == (width, height)
    acceptable = (
        MIN_SIDE_PX <= min(width, height) and max(width, height) <= MAX_SIDE_PX and width * height <= MAX_PIXELS
    )
    with mock.patch.object(images.cv2, "imdecode", _no_decoder):
        if acceptable:
            with pytest.raises(_DecoderCalled):
                decode_image(data)
        else:
            with pytest.raises(ImageReadError, match=rf"{width}x{height} px, too (small|large)"):
                decode_image(data)


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_20000_square_header_is_refused_with_its_size(tmp_path, kind):
    path = tmp_path / f"huge.{kind}"
    path.write_bytes(CRAFTED[kind](20000, 20000))
    with mock.patch.object(images.cv2, "imdecode", _no_decoder):
        with pytest.raises(ImageReadError, match=r"huge\..*20000x20000 px, too large.*megapixels"):
            read_image(path)


def test_a_real_pixel_bomb_is_refused_before_decoding(tmp_path):
    """A valid 6000x5000 PNG (30 MP, under the side limit) compresses to ~30 kB: refused by MAX_PIXELS."""
    width, height = 6000, 5000
    assert max(width, height) <= MAX_SIDE_PX and width * height > MAX_PIXELS
    raw = zlib.compress(bytes(height * (width + 1)), 9)
    data = _png_header(width, height) + struct.pack(">I", len(raw)) + b"IDAT" + raw
    data += (
        struct.pack(">I", zlib.crc32(b"IDAT" + raw))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    assert path.stat().st_size < 100_000
    # The file is a real image: OpenCV alone would decode it (30 MB, then 120 MB as float).
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (height, width)
    with mock.patch.object(images.cv2, "imdecode", _no_decoder):
        with pytest.raises(ImageReadError, match="6000x5000 px, too large"):
            read_image(path)
        with pytest.raises(ImageReadError, match="too large"):
            read_mask(path)


def test_a_png_chunk_longer_than_the_file_is_refused_before_decoding():
    """The fuzz test's find: IDAT's length field mutated to 0xAB000323 (2.8 GB) in an
    860-byte PNG kept OpenCV busy for 1-4 s. Refused by its chunk walk, unread."""
    good = cv2.imencode(".png", _GRAY8)[1].tobytes()
    idat = good.index(b"IDAT") - 4
    damaged = good[:idat] + struct.pack(">I", 0xAB000323) + good[idat + 4 :]
    with mock.patch.object(images.cv2, "imdecode", _no_decoder):
        with pytest.raises(
            ImageReadError, match=r"fuzz: .*chunk 'IDAT' declares 2868904739 bytes, more than the file holds"
        ):
            decode_image(damaged, source="fuzz")
        with pytest.raises(ImageReadError, match="chunk 'IDAT'"):  # cut inside its data
            decode_image(good[: idat + 20], source="fuzz")
        with pytest.raises(_DecoderCalled):  # the intact file reaches the decoder
            decode_image(good, source="fuzz")


def test_the_decoder_stand_in_is_on_the_real_path(tmp_path):
    """Control for the tests above: a normal image does reach the patched decoder."""
    with mock.patch.object(images.cv2, "imdecode", _no_decoder):
        with pytest.raises(_DecoderCalled):
            decode_image(SEEDS["png8"])


# --------------------------------------------------------------------------- named hostile files


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


HOSTILE = [
    ("zero.png", b"", r"empty \(0 bytes\)"),
    ("one.png", _encode(np.zeros((1, 1), np.uint8), ".png"), "1x1 px, too small"),
    ("one.bmp", _encode(np.zeros((1, 1, 3), np.uint8), ".bmp"), "1x1 px, too small"),
    ("thin.tif", _encode(np.zeros((400, 3), np.uint8), ".tif"), "3x400 px, too small"),
    ("text.png", b"filename,pixel size(mm)\n../../etc/passwd,0.1\n", "not PNG, JPEG, BMP or TIFF"),
    ("gif.png", b"GIF89a\x10\x00\x10\x00\x00\x00\x00;", "not PNG, JPEG, BMP or TIFF"),
    ("webp.png", _encode(_GRAY8, ".webp"), "not PNG, JPEG, BMP or TIFF"),
    ("pickle.png", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "not PNG, JPEG, BMP or TIFF"),
    ("bigtiff.tif", b"II+\x00\x08\x00\x00\x00" + bytes(16), "BigTIFF is not supported"),
    ("samples.tif", _tiff_header(64, 64, samples=7), "7 samples per pixel"),
    ("nosof.jpg", b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02", "without a frame header"),
    ("int16.tif", _encode(np.full((20, 20), -5, np.int16), ".tif"), "unsupported pixel type int16"),
]


@pytest.mark.parametrize(("name", "data", "message"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_files_give_a_clear_error(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(ImageReadError, match=message) as caught:
        read_image(path)
    assert name in str(caught.value)


@pytest.mark.parametrize("seed", sorted(SEEDS))
@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.8, 0.97])
def test_truncated_files_give_a_clear_error(tmp_path, seed, fraction):
    data = SEEDS[seed]
    path = _write(tmp_path, f"cut_{seed}", data[: max(1, int(len(data) * fraction))])
    try:
        image = read_image(path)
    except ImageReadError as error:
        assert "truncated" in str(error) or "not a readable image" in str(error)
    else:  # a TIFF cut only in trailing tags may still hold every pixel
        assert seed.startswith("tiff") and image.shape == (24, 32)


def test_wrong_extension_is_read_by_content(tmp_path):
    png_named_jpg = _write(tmp_path, "really_png.jpg", SEEDS["png8"])
    jpeg_named_tif = _write(tmp_path, "really_jpeg.tif", SEEDS["jpeg"])
    np.testing.assert_array_equal(read_image(png_named_jpg), _GRAY8 / np.float32(255))
    assert read_image(jpeg_named_tif).shape == _GRAY8.shape


@pytest.mark.parametrize(
    ("pixels", "ext"),
    [
        (_RGBA16, ".png"),
        (_RGBA16, ".tif"),
        (_RGBA16[..., :3], ".png"),
        ((_RNG.random((24, 32, 3))).astype(np.float32), ".tif"),  # float colour: cvtColor path
        (_RNG.random((24, 32)), ".tif"),  # float64 gray
    ],
    ids=["png16-rgba", "tif16-rgba", "png16-rgb", "tif-float32-rgb", "tif-float64"],
)
def test_deep_and_colour_images_read_as_unit_gray(tmp_path, pixels, ext):
    path = _write(tmp_path, f"deep{ext}", _encode(pixels, ext))
    image = read_image(path)
    _assert_valid_image(image)
    assert image.shape == pixels.shape[:2]
    gray = pixels if pixels.ndim == 2 else pixels[..., :3].astype(np.float64) @ [0.114, 0.587, 0.299]  # BGR
    scale = 65535.0 if pixels.dtype == np.uint16 else 1.0
    np.testing.assert_allclose(image, gray / scale, atol=2e-3)


def test_gray_alpha_and_palette_pngs(tmp_path):
    gray = _GRAY8
    la = np.dstack([gray, np.zeros_like(gray)])  # fully transparent must not blank the image
    for mode, array in (("LA", la), ("P", gray)):
        buffer = io.BytesIO()
        Image.fromarray(array if mode == "LA" else gray).convert(mode).save(buffer, format="PNG")
        image = read_image(_write(tmp_path, f"{mode}.png", buffer.getvalue()))
        np.testing.assert_allclose(image, gray / 255.0, atol=1.5 / 255, err_msg=mode)


def test_nan_and_inf_in_float_tiff_become_finite(tmp_path):
    pixels = np.full((20, 20), 0.5, np.float32)
    pixels[0, :3] = (np.nan, np.inf, -np.inf)
    image = read_image(_write(tmp_path, "nan.tif", _encode(pixels, ".tif")))
    _assert_valid_image(image)
    assert image[0, 0] == 0.0 and image[0, 1] == 1.0 and image[0, 2] == 0.0 and image[5, 5] == 0.5


def test_non_files_are_refused_without_hanging(tmp_path):
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening a FIFO would block forever
    with pytest.raises(ImageReadError, match="pipe.png: not a regular file"):
        read_image(fifo)
    with pytest.raises(ImageReadError, match="cannot be read|no such file"):
        read_image(tmp_path / "nul\x00.png")
    with pytest.raises(ImageReadError, match="cannot be read"):
        read_image(tmp_path / ("x" * 5000 + ".png"))


def test_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    path = _write(tmp_path, "big.png", SEEDS["png16-rgba"])
    assert path.stat().st_size > 1000
    with pytest.raises(ImageReadError, match=r"big.png: the file is \d+ bytes, larger than"):
        read_image(path)
    with pytest.raises(ImageReadError, match="larger than 1000 bytes"):
        decode_image(SEEDS["png16-rgba"])


def test_path_like_image_names_are_plain_paths(tmp_path):
    """read_image opens exactly the path it is given: a traversal name is the caller's path."""
    outside = _write(tmp_path, "secret.png", SEEDS["png8"])
    inner = tmp_path / "data"
    inner.mkdir()
    assert read_image(inner / ".." / "secret.png").shape == read_image(outside).shape
    with pytest.raises(ImageReadError, match="not PNG, JPEG, BMP or TIFF"):
        read_image(__file__)  # this test module: text, whatever its path


# --------------------------------------------------------------------------- pixel sizes


@FUZZ
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=40),
        st.floats(MIN_PIXEL_SIZE_MM, MAX_PIXEL_SIZE_MM).map(lambda v: f" {v!r} "),
        st.lists(st.floats(), max_size=2),
        st.binary(max_size=8),
    )
)
def test_validate_pixel_size_returns_a_plausible_float_or_raises(value):
    try:
        mm = validate_pixel_size(value, source="fuzz")
    except PixelSizeError as error:
        assert str(error).startswith("fuzz: ") and len(str(error)) < 300
        return
    assert isinstance(mm, float) and math.isfinite(mm) and MIN_PIXEL_SIZE_MM <= mm <= MAX_PIXEL_SIZE_MM
    assert not isinstance(value, bool)


@pytest.mark.parametrize("value", [10**400, "1e400", "-1e-400", True, "0x1p-3", "0.1 mm", "0,1"])
def test_pixel_size_edge_values(value):
    with pytest.raises(PixelSizeError):
        validate_pixel_size(value)


def test_long_values_do_not_flood_messages():
    with pytest.raises(PixelSizeError) as caught:
        validate_pixel_size("9" * 100_000)
    assert len(str(caught.value)) < 300


# --------------------------------------------------------------------------- CSV


HEADER = ["filename", "pixel size(mm)", "head circumference (mm)"]


def _csv(tmp_path, rows, *, header=HEADER, name="p.csv", encoding="utf-8"):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def _independently_unsafe(name: str) -> bool:
    return (
        name in (".", "..")
        or "/" in name
        or "\\" in name
        or ":" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or len(name.encode()) > 255
    )


_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-inf", "1e309", "0", "-0.1", "0.1", "abc", "0,1", " 0.2 "]),
    st.text(max_size=12),
)
_NAMES = st.one_of(
    st.from_regex(r"[0-9]{3}_(2)?HC\.png", fullmatch=True),
    st.sampled_from(
        ["../../etc/passwd", "/etc/passwd", "sub/a.png", "..\\a.png", "C:a.png", "..", ".", " ", "..a.png"]
    ),
    st.text(max_size=20),
)


@settings(FUZZ, max_examples=80 * SCALE)
@given(st.lists(st.tuples(_NAMES, _NUMBERS, _NUMBERS), max_size=8))
def test_fuzzed_csv_rows_give_a_clean_table_or_a_clear_error(tmp_path_factory, rows):
    path = _csv(tmp_path_factory.mktemp("csv"), rows)
    names = [name.strip() for name, _, _ in rows if name.strip()]
    try:
        table = read_hc18_csv(path)
    except UnsafeFileNameError:
        assert any(_independently_unsafe(name) for name in names)
        return
    except PixelSizeError as error:
        assert "listed again" in str(error) and len(set(names)) < len(names)
        return
    assert set(table) == set(names)
    assert not any(_independently_unsafe(name) for name in table)
    for entry in table.values():
        pixel, hc = entry["pixel_size_mm"], entry["hc_mm"]
        assert pixel is None or (math.isfinite(pixel) and MIN_PIXEL_SIZE_MM <= pixel <= MAX_PIXEL_SIZE_MM)
        assert hc is None or (math.isfinite(hc) and hc > 0)


@FUZZ
@given(st.sampled_from([b"", b"filename,pixel size(mm)\n", b"\xef\xbb\xbf"]), st.binary(max_size=300))
def test_arbitrary_csv_bytes_never_crash(tmp_path_factory, prefix, body):
    path = tmp_path_factory.mktemp("csvbytes") / "x.csv"
    path.write_bytes(prefix + body)
    try:
        table = read_hc18_csv(path)
    except PixelSizeError:
        return
    assert all(isinstance(name, str) and not _independently_unsafe(name) for name in table)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "sub/000_HC.png",
        "..\\..\\win.ini",
        "C:000_HC.png",
        "..",
        ".",
        "a\x00b.png",
        "a\nb.png",
        "x" * 300,
    ],
)
def test_path_like_csv_names_are_refused(tmp_path, name):
    path = _csv(tmp_path, [("000_HC.png", "0.1", "50"), (name, "0.1", "60")])
    with pytest.raises(UnsafeFileNameError, match="line [3-9].*bare file names"):
        read_hc18_csv(path)


@pytest.mark.parametrize("name", ["..hidden_HC.png", "a..b.png", "...png", "0 1_HC.png", "émigré_HC.png"])
def test_unusual_but_bare_names_are_kept(tmp_path, name):
    assert validate_file_name(name) == name
    assert read_hc18_csv(_csv(tmp_path, [(name, "0.1", "")]))[name]["pixel_size_mm"] == pytest.approx(0.1)


def test_non_finite_and_non_numeric_values_become_none(tmp_path):
    rows = [
        ("a.png", "nan", "nan"),
        ("b.png", "inf", "inf"),
        ("c.png", "1e309", "-5"),
        ("d.png", "x", "0"),
        ("e.png", "0.2", "1e3"),
    ]
    table = read_hc18_csv(_csv(tmp_path, rows))
    assert all(table[f"{n}.png"]["pixel_size_mm"] is None for n in "abcd")
    assert all(table[f"{n}.png"]["hc_mm"] is None for n in "abcd")
    assert table["e.png"] == {"pixel_size_mm": pytest.approx(0.2), "hc_mm": pytest.approx(1000.0)}


def test_duplicate_names(tmp_path):
    same = read_hc18_csv(_csv(tmp_path, [("a.png", "0.1", "50"), ("a.png", "0.10", "50.0")], name="same.csv"))
    assert same == {"a.png": {"pixel_size_mm": pytest.approx(0.1), "hc_mm": pytest.approx(50.0)}}
    conflicting = _csv(
        tmp_path, [("a.png", "0.1", ""), ("b.png", "0.1", ""), (" a.png ", "0.2", "")], name="conflict.csv"
    )
    with pytest.raises(PixelSizeError, match=r"line 4: 'a.png' is listed again.*first on line 2"):
        read_hc18_csv(conflicting)


def test_bom_and_header_variants(tmp_path):
    path = _csv(tmp_path, [("a.png", "0.1")], header=[" FileName ", "Pixel Size (mm)"], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_hc18_csv(path) == {"a.png": {"pixel_size_mm": pytest.approx(0.1), "hc_mm": None}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("filename,pixel size(mm)\na.png,0.1\n".encode("utf-16"), "not UTF-8"),
        (b"filename,pixel size(mm)\ncaf\xe9.png,0.1\n", "not UTF-8"),
        (b"filename,pixel size(mm)\na.png," + b"9" * 200_000 + b"\n", "line 2: not a valid CSV.*field"),
        (b"name,size\na.png,0.1\n", "expected a header with 'filename' and 'pixel size"),
        (b"\n\n", "expected a header"),
        (b"", "the CSV is empty"),
    ],
    ids=["utf16", "latin1", "huge-field", "wrong-columns", "blank", "empty"],
)
def test_malformed_csv_files(tmp_path, data, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(PixelSizeError, match=message) as caught:
        read_hc18_csv(path)
    assert len(str(caught.value)) < 500


def test_csv_size_and_file_type_limits(tmp_path, monkeypatch):
    with pytest.raises(PixelSizeError, match="not a regular file"):
        read_hc18_csv(tmp_path)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(PixelSizeError, match="not a regular file"):
        read_hc18_csv(fifo)
    monkeypatch.setattr(ps, "MAX_CSV_BYTES", 100)
    path = _csv(tmp_path, [(f"{i:03d}_HC.png", "0.1", "50") for i in range(10)])
    with pytest.raises(PixelSizeError, match=r"the CSV is \d+ bytes, more than 100"):
        read_hc18_csv(path)
