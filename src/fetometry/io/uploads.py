"""Bytes from outside (an upload, a PACS download): what kind of file they are, and a safe label.

Files are recognised by their content, never by their name or declared type; the name
only labels results and is never used to open or write a file.
"""

from __future__ import annotations

import re

#: Magic numbers of the raster formats ``fetometry.io.images`` decodes; anything else is
#: refused as an unsupported type before any decoder sees it.
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)


class UnsupportedFileTypeError(ValueError):
    """The bytes are neither a supported raster image nor DICOM (refused before any decoder)."""


def safe_filename(name: str | None, *, default: str = "upload") -> str:
    """A display name with no directories, control characters or shell surprises.

    ``../../etc/passwd.png`` -> ``passwd.png``; ``C:\\x\\a b.png`` -> ``a_b.png``.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return cleaned or default


def sniff_kind(data: bytes) -> str | None:
    """'dicom', 'png', 'jpeg', 'bmp', 'tiff' or None, from the bytes alone (DICOM: 'DICM' at 128)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    for signature, suffix in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return suffix
    return None
