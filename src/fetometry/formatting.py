"""Formatting shared by every writer: values made JSON-safe, numbers for tables, Markdown tables.

One cleaner and one table formatter, so a JSON file, a CSV row and a results table agree on
what an absent value is: ``None`` / an empty cell, never NaN and never an invented number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np


def json_safe(value):
    """Numpy scalars and arrays -> Python; NaN/inf -> None (JSON has no NaN); paths -> str; keys -> str."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_number(value) -> float | None:
    """``value`` as a finite float, or None for None, bools, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value, digits: int = 1, *, unit: str = "", missing: str = "-") -> str:
    """A number with ``digits`` decimals (and a unit), or ``missing`` for None/bool/NaN/inf/non-numbers."""
    number = finite_number(value)
    if number is None:
        return missing
    text = f"{number:.{digits}f}"
    return f"{text} {unit}" if unit else text


def csv_cell(value) -> str:
    """A CSV cell: empty for None, floats to 6 significant digits, the rest as str."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are str()-ed, ``|`` escaped so a cell never splits a row."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
