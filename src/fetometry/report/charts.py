"""Growth charts: INTERGROWTH-21st centile curves with this fetus's measurements.

The curves are the 3rd, 10th, 50th, 90th and 97th centiles of the INTERGROWTH-21st fetal
growth standards (Papageorghiou et al., Lancet 2014), computed by
``fetometry.clinical.growth.value_at_centile`` over the standard's range (14-40 weeks).
A point is drawn only at a gestational age that was given independently of the scan:
a GA estimated from the same HC would always sit on the 50th centile. Points outside
the standard's range are not drawn (and the chart says how many).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: Centile lines drawn on every chart.
CHART_CENTILES = (3.0, 10.0, 50.0, 90.0, 97.0)
#: The fetus's points are drawn in this colour (RGB 0-1), which no centile line uses.
POINT_COLOR = (0.85, 0.1, 0.1)
_LINE_STYLES = {3.0: ":", 10.0: "--", 50.0: "-", 90.0: "--", 97.0: ":"}


def centile_curves(measure: str, ga_weeks: np.ndarray) -> dict[float, np.ndarray]:
    """``{centile: values in mm at ga_weeks}`` for CHART_CENTILES (INTERGROWTH-21st)."""
    from fetometry.clinical import growth

    return {c: np.array([growth.value_at_centile(measure, float(ga), c) for ga in ga_weeks]) for c in CHART_CENTILES}


def _split_points(
    points: Sequence[tuple[float, float]], ga_range: tuple[float, float]
) -> tuple[list[tuple[float, float]], int]:
    """(drawable points sorted by GA, number left out: outside the range or not finite)."""
    low, high = ga_range
    inside = []
    for ga, value in points:
        ga, value = float(ga), float(value)
        if math.isfinite(ga) and math.isfinite(value) and value > 0 and low <= ga <= high:
            inside.append((ga, value))
    return sorted(inside), len(points) - len(inside)


def growth_chart_png(
    measure: str, points: Sequence[tuple[float, float]], path: str | Path | BinaryIO, *, dpi: int = 110
) -> str | Path | BinaryIO:
    """Draw the centile chart of ``measure`` ('hc', 'bpd', ...) with ``points`` =
    [(ga_weeks, value_mm), ...]; write a PNG to ``path`` (a path or a binary file) and return it.

    Raises ValueError (growth.UnknownMeasureError) for a measure the standard lacks.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fetometry.clinical import growth

    name = growth.check_measure(measure)
    grid = np.linspace(*growth.GA_RANGE_WEEKS, 105)
    drawn, left_out = _split_points(points, growth.GA_RANGE_WEEKS)
    # Figure + Agg canvas, not pyplot: no global state, safe in a web server's threads.
    figure = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    _draw_curves(axes, grid, centile_curves(name, grid))
    _draw_points(axes, drawn)
    axes.set_xlim(grid[0], grid[-1] + 2.2)  # room for the centile labels
    axes.set_xlabel("gestational age (weeks)")
    axes.set_ylabel(f"{name.upper()} (mm)")
    axes.set_title(f"{name.upper()}: INTERGROWTH-21st fetal growth standard", fontsize=10)
    axes.grid(alpha=0.3)
    if left_out:
        axes.text(
            0.02,
            0.97,
            f"{left_out} point(s) outside {grid[0]:g}-{grid[-1]:g} weeks not shown",
            transform=axes.transAxes,
            va="top",
            fontsize=8,
        )
    figure.tight_layout()
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def _draw_curves(axes, grid: np.ndarray, curves: dict[float, np.ndarray]) -> None:
    for centile, values in curves.items():
        axes.plot(grid, values, color="0.25", linestyle=_LINE_STYLES.get(centile, "-"), linewidth=1.0)
        axes.annotate(
            _ordinal(centile),
            (grid[-1], values[-1]),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )


def _ordinal(centile: float) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(int(centile) % 10 if int(centile) % 100 not in (11, 12, 13) else 0, "th")
    return f"{centile:g}{suffix}"


def _draw_points(axes, drawn: list[tuple[float, float]]) -> None:
    if not drawn:
        return
    ga, value = zip(*drawn)
    if len(drawn) > 1:
        axes.plot(ga, value, color=POINT_COLOR, linewidth=1.2)
    axes.plot(ga, value, linestyle="none", marker="o", markersize=6, color=POINT_COLOR, label="this fetus")
    axes.legend(loc="lower right", fontsize=8)
