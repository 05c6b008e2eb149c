"""Pixel sizes (mm per pixel): an explicit value or an HC18-style CSV.

Every length in mm traces back to one pixel size. A missing or absurd value is an
error, never a default: a wrong pixel size silently scales every measurement.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

#: Plausible range for 2D obstetric ultrasound (HC18 spans 0.052-0.326 mm).
MIN_PIXEL_SIZE_MM = 0.01
MAX_PIXEL_SIZE_MM = 1.0


class PixelSizeError(ValueError):
    """A pixel size is missing, unreadable or outside the plausible range."""


def validate_pixel_size(value: float | str | None, *, source: str = "pixel size") -> float:
    """Return ``value`` as a float in mm, or raise PixelSizeError saying why not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PixelSizeError(f"{source}: missing; give --pixel-size MM or --pixel-csv CSV")
    try:
        mm = float(value)
    except (TypeError, ValueError):
        raise PixelSizeError(f"{source}: {value!r} is not a number") from None
    if not math.isfinite(mm) or not MIN_PIXEL_SIZE_MM <= mm <= MAX_PIXEL_SIZE_MM:
        raise PixelSizeError(
            f"{source}: {value!r} mm is outside the plausible range "
            f"{MIN_PIXEL_SIZE_MM}-{MAX_PIXEL_SIZE_MM} mm per pixel"
        )
    return mm


def _column(header: list[str], *candidates: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


def read_hc18_csv(path: str | Path) -> dict[str, dict[str, float | str | None]]:
    """Read an HC18-style CSV: ``filename,pixel size(mm)[,head circumference (mm)][,subject]``.

    Returns ``{filename: {"pixel_size_mm": float | None, "hc_mm": float | None}}``; when
    the CSV has a ``subject`` column each row also holds ``"subject": str | None``.
    Rows with an invalid pixel size keep ``None`` so that the caller can report that
    image by name instead of failing the whole batch.
    """
    path = Path(path)
    if not path.is_file():
        raise PixelSizeError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise PixelSizeError(f"{path}: the CSV is empty")
    header = rows[0]
    name_col = _column(header, "filename", "file", "image")
    ps_col = _column(header, "pixel size(mm)", "pixel size (mm)", "pixel_size_mm", "pixel size")
    hc_col = _column(header, "head circumference (mm)", "head circumference(mm)", "hc_mm")
    subject_col = _column(header, "subject", "subject_id")
    if name_col is None or ps_col is None:
        raise PixelSizeError(
            f"{path}: expected a header with 'filename' and 'pixel size(mm)', got {header}"
        )
    table: dict[str, dict[str, float | str | None]] = {}
    for row in rows[1:]:
        if not row or len(row) <= max(name_col, ps_col):
            continue
        name = row[name_col].strip()
        try:
            pixel_size = validate_pixel_size(row[ps_col], source=f"{path}:{name}")
        except PixelSizeError:
            pixel_size = None
        hc = None
        if hc_col is not None and len(row) > hc_col and row[hc_col].strip():
            try:
                hc = float(row[hc_col])
            except ValueError:
                hc = None
        table[name] = {"pixel_size_mm": pixel_size, "hc_mm": hc}
        if subject_col is not None:
            subject = row[subject_col].strip() if len(row) > subject_col else ""
            table[name]["subject"] = subject or None
    return table


def read_pixel_size_csv(path: str | Path) -> dict[str, float | None]:
    """``{filename: pixel_size_mm or None}`` from an HC18-style CSV."""
    return {name: row["pixel_size_mm"] for name, row in read_hc18_csv(path).items()}
