"""Pixel sizes (mm per pixel): an explicit value or an HC18-style CSV.

Every length in mm traces back to one pixel size. A missing or absurd value is an
error, never a default: a wrong pixel size silently scales every measurement.

CSVs are untrusted input. The reader bounds the file and field sizes, accepts only
UTF-8 (with or without BOM), keeps non-finite numbers out, refuses an image listed
twice with different values, and refuses any ``filename`` that is not a bare file
name (``../../etc/passwd``, ``/abs/x.png``, ``sub/x.png``): a name from a CSV must
never be able to point a caller at a file outside the data folder.
"""

from __future__ import annotations

import csv
import logging
import math
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: Plausible range for 2D obstetric ultrasound (HC18 spans 0.052-0.326 mm).
MIN_PIXEL_SIZE_MM = 0.01
MAX_PIXEL_SIZE_MM = 1.0
#: Largest CSV we read: the HC18 training CSV is 40 KB for 999 images.
MAX_CSV_BYTES = 32 * 1024 * 1024
#: Longest file name most file systems allow (bytes of UTF-8).
MAX_FILE_NAME_BYTES = 255


class PixelSizeError(ValueError):
    """A pixel size is missing, unreadable or outside the plausible range."""


class UnsafeFileNameError(PixelSizeError):
    """A CSV names a file by a path (``..``, ``/``, a drive) instead of a bare file name."""


def _show(value: object, limit: int = 60) -> str:
    """repr() cut to ``limit`` characters: a hostile 100 kB field must not flood a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def validate_pixel_size(value: float | str | None, *, source: str = "pixel size") -> float:
    """Return ``value`` as a float in mm, or raise PixelSizeError saying why not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PixelSizeError(f"{source}: missing; give --pixel-size MM or --pixel-csv CSV")
    if isinstance(value, bool):  # float(True) == 1.0 would pass as a plausible size
        raise PixelSizeError(f"{source}: {_show(value)} is not a number")
    try:
        mm = float(value)
    except (TypeError, ValueError, OverflowError):
        raise PixelSizeError(f"{source}: {_show(value)} is not a number") from None
    if not math.isfinite(mm) or not MIN_PIXEL_SIZE_MM <= mm <= MAX_PIXEL_SIZE_MM:
        raise PixelSizeError(
            f"{source}: {_show(value)} mm is outside the plausible range "
            f"{MIN_PIXEL_SIZE_MM}-{MAX_PIXEL_SIZE_MM} mm per pixel"
        )
    return mm


def validate_file_name(name: str, *, source: str = "file name") -> str:
    """Return ``name`` if it is a bare file name (no folder part), else raise UnsafeFileNameError.

    Callers join such a name to their own data folder; a name with ``..``, a slash, a
    backslash, a drive or a control character could reach a file outside that folder.
    """
    reason = None
    if name in (".", ".."):
        reason = "is a folder reference"
    elif any(char in name for char in "/\\:"):  # POSIX and Windows separators, drives, NTFS streams
        reason = "has a folder or drive part"
    elif any(ord(char) < 32 or ord(char) == 127 for char in name):
        reason = "contains control characters"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        reason = f"is longer than {MAX_FILE_NAME_BYTES} bytes"
    if reason:
        raise UnsafeFileNameError(
            f"{source}: the file name {_show(name)} {reason}; list bare file names such as 000_HC.png"
        )
    return name


def _column(header: list[str], *candidates: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every record; PixelSizeError for anything but bounded UTF-8 CSV."""
    try:
        info = path.stat()
    except (OSError, ValueError):  # absent, unreachable, or a NUL in the name
        raise PixelSizeError(f"{path}: no such CSV file") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device would hang or mislead
        raise PixelSizeError(f"{path}: not a regular file; give the pixel-size CSV file")
    size = info.st_size
    if size > MAX_CSV_BYTES:
        raise PixelSizeError(f"{path}: the CSV is {size} bytes, more than {MAX_CSV_BYTES}; is this the pixel-size CSV?")
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                rows.append((reader.line_num, row))
    except UnicodeDecodeError:
        raise PixelSizeError(f"{path}: the CSV is not UTF-8 text; save it as CSV UTF-8") from None
    except csv.Error as error:  # e.g. a field over csv.field_size_limit() characters
        raise PixelSizeError(f"{path}: line {len(rows) + 1}: not a valid CSV ({error})") from None
    except OSError as error:
        raise PixelSizeError(f"{path}: the CSV cannot be read ({error})") from None
    return rows


def _optional_positive(text: str) -> float | None:
    """A finite positive number, or None for blank, non-numeric, NaN, inf, zero or negative."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def read_hc18_csv(path: str | Path) -> dict[str, dict[str, float | str | None]]:
    """Read an HC18-style CSV: ``filename,pixel size(mm)[,head circumference (mm)][,subject]``.

    Returns ``{filename: {"pixel_size_mm": float | None, "hc_mm": float | None}}``; when
    the CSV has a ``subject`` column each row also holds ``"subject": str | None``.
    Rows with an invalid pixel size keep ``None`` so that the caller can report that
    image by name instead of failing the whole batch; a blank or non-finite HC is None.

    Raises PixelSizeError for a missing, oversized, non-UTF-8 or malformed file, a header
    without ``filename`` and ``pixel size(mm)``, or an image listed twice with different
    values; UnsafeFileNameError (a PixelSizeError) for a filename that is a path.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise PixelSizeError(f"{path}: the CSV is empty")
    header = rows[0][1]
    name_col = _column(header, "filename", "file", "image")
    ps_col = _column(header, "pixel size(mm)", "pixel size (mm)", "pixel_size_mm", "pixel size")
    hc_col = _column(header, "head circumference (mm)", "head circumference(mm)", "hc_mm")
    subject_col = _column(header, "subject", "subject_id")
    if name_col is None or ps_col is None:
        raise PixelSizeError(
            f"{path}: expected a header with 'filename' and 'pixel size(mm)', got {_show(header, 200)}"
        )
    table: dict[str, dict[str, float | str | None]] = {}
    first_line: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) <= max(name_col, ps_col) or not row[name_col].strip():
            continue  # blank or short line: nothing to attach to an image
        name = validate_file_name(row[name_col].strip(), source=f"{path}: line {line}")
        entry = _parse_row(row, ps_col, hc_col, subject_col, source=f"{path}:{name}")
        if name in table and table[name] != entry:
            raise PixelSizeError(
                f"{path}: line {line}: {_show(name)} is listed again with other values "
                f"(first on line {first_line[name]}); keep one row per image"
            )
        table[name] = entry
        first_line.setdefault(name, line)
    return table


def _parse_row(row: list[str], ps_col: int, hc_col: int | None, subject_col: int | None, *, source: str) -> dict:
    """One data row -> {"pixel_size_mm", "hc_mm"[, "subject"]}; invalid numbers become None."""
    try:
        pixel_size = validate_pixel_size(row[ps_col], source=source)
    except PixelSizeError as error:
        log.debug("%s", error)
        pixel_size = None
    hc = _optional_positive(row[hc_col]) if hc_col is not None and len(row) > hc_col else None
    entry: dict[str, float | str | None] = {"pixel_size_mm": pixel_size, "hc_mm": hc}
    if subject_col is not None:
        subject = row[subject_col].strip() if len(row) > subject_col else ""
        entry["subject"] = subject or None
    return entry


def read_pixel_size_csv(path: str | Path) -> dict[str, float | None]:
    """``{filename: pixel_size_mm or None}`` from an HC18-style CSV."""
    return {name: row["pixel_size_mm"] for name, row in read_hc18_csv(path).items()}
