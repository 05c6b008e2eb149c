"""Image files -> 2D grayscale arrays, safely.

Ultrasound exports come as PNG, JPEG, BMP or TIFF, 8- or 16-bit, sometimes RGB(A) with
burnt-in annotations. Everything leaves this module as a 2D float32 array scaled to
[0, 1] (``read_image``) or a boolean mask (``read_mask``), in the file's own pixel grid.

Files are untrusted input (a clinic's export, an upload to ``fetometry serve``), so:
- the format is decided by the content, never by the file name, and only the four
  formats above reach a decoder;
- the image size is read from the header by our own small parser and checked against
  ``MAX_SIDE_PX`` / ``MAX_PIXELS`` BEFORE anything is decoded, so a 100 KB file that
  declares 20000x20000 pixels never allocates gigabytes;
- every failure is an ``ImageReadError`` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import logging
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Smallest side we accept: below this no head can be measured meaningfully.
MIN_SIDE_PX = 16
#: Largest side we accept; protects memory against absurd headers.
MAX_SIDE_PX = 8192
#: Largest pixel count we decode. A 4K ultrasound frame is 8.3 MP (HC18: 0.4 MP); 25 MP
#: leaves 3x headroom while the costliest decode we allow (4 samples of 64-bit float)
#: stays under 1 GB, and the usual 16-bit RGBA under 200 MB.
MAX_PIXELS = 25_000_000
#: Largest file we read into memory: an uncompressed 16-bit RGBA TIFF of MAX_PIXELS is 200 MB.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Samples per pixel that a TIFF may declare (gray, gray+alpha, RGB, RGBA).
MAX_TIFF_SAMPLES = 4

_SUPPORTED = "PNG, JPEG, BMP or TIFF"


class ImageReadError(ValueError):
    """The file is not an image we can measure (unreadable, truncated, empty, tiny, huge)."""


@dataclass(frozen=True)
class ImageHeader:
    """What the file's header declares, read without decoding any pixel."""

    format: str  # "PNG" | "JPEG" | "BMP" | "TIFF"
    width: int
    height: int


# --------------------------------------------------------------------------- headers
# Each parser reads the same field the decoder (libpng, libjpeg, OpenCV's BMP reader,
# libtiff) reads to size its output; any header it cannot follow is rejected, never guessed.


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    end = offset + struct.calcsize(fmt)
    if offset < 0 or end > len(data):
        raise ImageReadError("the header is cut short (truncated file)")
    return struct.unpack_from(fmt, data, offset)


def _png_size(data: bytes) -> tuple[int, int]:
    # The first chunk of every PNG is IHDR: width and height, big-endian uint32.
    if data[12:16] != b"IHDR":
        raise ImageReadError("PNG without an IHDR header chunk")
    return _unpack(">II", data, 16)


def _check_png_chunk_lengths(data: bytes, source: str) -> None:
    """No chunk may declare more bytes than the file holds. libpng trusts the length:
    OpenCV spent 1-4 s on an 860-byte file whose IDAT claimed 2.8 GB (found by the fuzz
    test), which a server must not do for each damaged upload. Where the bytes end at a
    chunk boundary, the decoder judges what is missing."""
    offset = 8  # after the signature
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if offset + 12 + length > len(data):  # length, type, data, CRC
            raise ImageReadError(
                f"{source}: not a readable image (PNG chunk {kind.decode('latin-1')!r} declares {length} bytes, "
                "more than the file holds); the file is truncated or corrupt"
            )
        if kind == b"IEND":
            return
        offset += 12 + length


# SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    offset = 2  # after SOI
    while True:
        if _unpack("B", data, offset)[0] != 0xFF:
            raise ImageReadError("JPEG with a corrupt marker sequence")
        while _unpack("B", data, offset)[0] == 0xFF:  # fill bytes before a marker
            offset += 1
        marker = data[offset]
        offset += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):
            raise ImageReadError("JPEG without a frame header before its image data")
        (length,) = _unpack(">H", data, offset)
        if length < 2:
            raise ImageReadError("JPEG with a corrupt segment length")
        if marker in _JPEG_SOF:
            _precision, height, width = _unpack(">BHH", data, offset + 2)
            if height == 0:
                raise ImageReadError("JPEG whose height is deferred to a DNL marker (unsupported)")
            return width, height
        offset += length


def _bmp_size(data: bytes) -> tuple[int, int]:
    (dib_size,) = _unpack("<I", data, 14)
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        return _unpack("<HH", data, 18)
    if dib_size < 16:
        raise ImageReadError(f"BMP with an unknown header size {dib_size}")
    width, height = _unpack("<ii", data, 18)
    if width < 0:
        raise ImageReadError(f"BMP with a negative width {width}")
    return width, abs(height)  # a negative height means rows stored top-down


def _tiff_size(data: bytes) -> tuple[int, int]:
    if data[2:4] in (b"+\x00", b"\x00+"):
        raise ImageReadError("BigTIFF is not supported; save as a regular TIFF or PNG")
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = _unpack(order + "I", data, 4)
    (count,) = _unpack(order + "H", data, ifd)
    tags: dict[int, int] = {}
    for index in range(count):  # bounded: every entry must lie inside the file
        entry = ifd + 2 + 12 * index
        tag, kind, _n = _unpack(order + "HHI", data, entry)
        if tag not in (256, 257, 277):  # ImageWidth, ImageLength, SamplesPerPixel
            continue
        if kind == 3:  # SHORT, left-justified in the value field
            (value,) = _unpack(order + "H", data, entry + 8)
        elif kind == 4:  # LONG
            (value,) = _unpack(order + "I", data, entry + 8)
        else:
            raise ImageReadError(f"TIFF tag {tag} has an invalid type {kind}")
        if tags.setdefault(tag, value) != value:
            raise ImageReadError(f"TIFF declares tag {tag} twice with different values")
    if 256 not in tags or 257 not in tags:
        raise ImageReadError("TIFF without image width and length in its first directory")
    if tags.get(277, 1) > MAX_TIFF_SAMPLES:
        raise ImageReadError(f"TIFF with {tags[277]} samples per pixel; save as gray, RGB or RGBA")
    return tags[256], tags[257]


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG", _png_size),
    (b"\xff\xd8", "JPEG", _jpeg_size),
    (b"BM", "BMP", _bmp_size),
    (b"II*\x00", "TIFF", _tiff_size),
    (b"MM\x00*", "TIFF", _tiff_size),
    (b"II+\x00", "TIFF", _tiff_size),
    (b"MM\x00+", "TIFF", _tiff_size),
)


def read_header(data: bytes, *, source: str = "image") -> ImageHeader:
    """Format and size declared by an image's header; decodes no pixel.

    Raises ImageReadError when the content is not PNG, JPEG, BMP or TIFF (whatever the
    file is named) or when its header is corrupt or cut short.
    """
    for magic, name, parse in _SIGNATURES:
        if data.startswith(magic):
            try:
                width, height = parse(data)
            except ImageReadError as error:
                raise ImageReadError(f"{source}: not a readable image: {error}") from None
            return ImageHeader(name, int(width), int(height))
    raise ImageReadError(
        f"{source}: not a readable image: the content is not {_SUPPORTED} "
        f"(supported files: {', '.join(IMAGE_SUFFIXES)}); the file name's extension does not matter"
    )


def _check_size(width: int, height: int, source: str) -> None:
    if min(width, height) < MIN_SIDE_PX:
        raise ImageReadError(f"{source}: image is {width}x{height} px, too small (min side {MIN_SIDE_PX} px)")
    if max(width, height) > MAX_SIDE_PX or width * height > MAX_PIXELS:
        raise ImageReadError(
            f"{source}: image is {width}x{height} px, too large (max side {MAX_SIDE_PX} px and "
            f"{MAX_PIXELS // 1_000_000} megapixels: ultrasound frames are far smaller, and "
            "decoding it could exhaust memory); crop or downscale the export"
        )


# --------------------------------------------------------------------------- decoding


def _read_file(path: Path) -> bytes:
    """The file's bytes, after checking that it is a regular, non-empty, bounded file."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ImageReadError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:  # permission, name too long, NUL in the name
        raise ImageReadError(f"{path}: cannot be read ({error})") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device would hang or mislead
        raise ImageReadError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageReadError(
            f"{path}: the file is {info.st_size} bytes, larger than any ultrasound image "
            f"we accept ({MAX_FILE_BYTES} bytes)"
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except OSError as error:
        raise ImageReadError(f"{path}: cannot be read ({error})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(f"{path}: the file is larger than {MAX_FILE_BYTES} bytes")
    return data


def _decode(data: bytes, source: str) -> np.ndarray:
    """Checked header, then pixels exactly as stored (depth and channels kept)."""
    if not data:
        raise ImageReadError(f"{source}: the file is empty (0 bytes)")
    header = read_header(data, source=source)
    _check_size(header.width, header.height, source)
    if header.format == "PNG":
        _check_png_chunk_lengths(data, source)
    try:
        # IMREAD_UNCHANGED keeps 16-bit depth and lets us handle RGB(A) ourselves.
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None:
        raise ImageReadError(
            f"{source}: not a readable image ({header.format} {header.width}x{header.height} "
            "header, but its pixel data cannot be decoded); the file may be truncated or corrupt"
        )
    if pixels.shape[:2] != (header.height, header.width):
        raise ImageReadError(
            f"{source}: the decoded image is {pixels.shape[1]}x{pixels.shape[0]} px but its header "
            f"declares {header.width}x{header.height} px; the file is corrupt"
        )
    return pixels


def _to_gray(pixels: np.ndarray, source: str) -> np.ndarray:
    if pixels.dtype == np.float64 or pixels.dtype == np.float16:
        pixels = pixels.astype(np.float32)  # cvtColor handles 8U, 16U and 32F only
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):
        pixels = pixels[:, :, 0]  # gray (+ alpha)
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        if channels == 4:
            pixels = pixels[:, :, :3]  # drop alpha: ultrasound has no transparency
        elif channels != 3:
            raise ImageReadError(f"{source}: unsupported channel count {channels}")
        try:
            # OpenCV decodes as BGR; ITU-R BT.601 luma weights.
            pixels = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2GRAY)
        except cv2.error:
            raise ImageReadError(f"{source}: unsupported colour pixel type {pixels.dtype}") from None
    if pixels.ndim != 2:
        raise ImageReadError(f"{source}: unsupported image layout {pixels.shape}")
    return pixels


def _to_unit_float(pixels: np.ndarray, source: str) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    if np.issubdtype(pixels.dtype, np.floating):
        return np.clip(np.nan_to_num(pixels.astype(np.float32)), 0.0, 1.0)
    raise ImageReadError(f"{source}: unsupported pixel type {pixels.dtype}; export 8- or 16-bit unsigned images")


def decode_image(data: bytes | bytearray | memoryview, *, source: str = "uploaded image") -> np.ndarray:
    """Like ``read_image`` for bytes already in memory (an upload); ``source`` names them in errors."""
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(f"{source}: {len(data)} bytes, larger than {MAX_FILE_BYTES} bytes")
    return _to_unit_float(_to_gray(_decode(data, source), source), source)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as grayscale float32 in [0, 1], shape (H, W).

    8-bit files are divided by 255, 16-bit files by 65535, float files clipped to [0, 1].
    Raises ImageReadError with a message naming the file and the problem.
    """
    path = Path(path)
    return decode_image(_read_file(path), source=str(path))


def read_mask(path: str | Path) -> np.ndarray:
    """Read an annotation or predicted mask as a boolean (H, W) array (nonzero = head)."""
    path = Path(path)
    source = str(path)
    return _to_gray(_decode(_read_file(path), source), source) > 0


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a boolean mask as an 8-bit PNG with values 0/255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.where(mask, 255, 0).astype(np.uint8)):
        raise OSError(f"could not write {path}")
