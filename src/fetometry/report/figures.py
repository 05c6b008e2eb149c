"""Overlay figures: the image, the fitted ellipse and its numbers; a map blended over the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fetometry import DISCLAIMER


def draw_overlay(image: np.ndarray, result, *, reference_hc_mm: float | None = None) -> np.ndarray:
    """(H, W) float image + an ImageResult -> (H, W, 3) uint8 RGB with ellipse and text."""
    rgb = cv2.cvtColor(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(min(image.shape) / 270))
    if result.ellipse is not None:
        e = result.ellipse
        # cv2.ellipse takes integer geometry: draw at 1/16 px precision via `shift`.
        scale = 16
        center = (round(e.center_x_px * scale), round(e.center_y_px * scale))
        axes = (round(e.semi_major_px * scale), round(e.semi_minor_px * scale))
        cv2.ellipse(rgb, center, axes, float(np.degrees(e.angle_rad)), 0, 360, (0, 255, 0), thickness, cv2.LINE_AA, 4)
    lines = [_headline(result)]
    if reference_hc_mm is not None:
        lines.append(f"reference HC {reference_hc_mm:.1f} mm")
    for i, text in enumerate(lines):
        y = int(24 + 26 * i * image.shape[0] / 540)
        cv2.putText(
            rgb,
            text,
            (10, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7 * image.shape[0] / 540,
            (255, 255, 0),
            thickness,
            cv2.LINE_AA,
        )
    return rgb


def blend_map(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Gray image + a [0, 1] map of the same size -> (H, W, 3) uint8 RGB (JET colour map)."""
    if heat.shape != image.shape:
        raise ValueError(f"map shape {heat.shape} differs from the image's {image.shape}")
    gray = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    colour = cv2.applyColorMap(np.round(np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - alpha, colour, alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def _headline(result) -> str:
    if result.measurement is not None:
        m = result.measurement
        return f"HC {m.hc_mm:.1f} mm  BPD {m.bpd_mm:.1f}  OFD {m.ofd_mm:.1f}"
    return result.status.replace("_", " ")


def save_overlay_grid(
    images: Sequence[np.ndarray],
    results: Sequence,
    references: Sequence[float | None],
    path: str | Path,
    *,
    columns: int = 5,
    title: str = "",
) -> Path:
    """A grid of overlays (matplotlib) with the decision-support disclaimer as footer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.75 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, result, reference in zip(axes.ravel(), images, results, references):
        ax.imshow(draw_overlay(image, result))
        label = result.filename
        if result.measurement is not None and reference is not None:
            label += f"\nHC {result.measurement.hc_mm:.1f} mm (ref {reference:.1f})"
        elif result.measurement is not None:
            label += f"\nHC {result.measurement.hc_mm:.1f} mm"
        else:
            label += f"\n{result.status}"
        ax.set_title(label, fontsize=8)
    return save_with_disclaimer(fig, path, title=title)


def save_with_disclaimer(fig, path: str | Path, *, title: str = "", fontsize: float = 7.0, dpi: int = 110) -> Path:
    """Finish a saved figure the one way they all end: optional title, the decision-support
    disclaimer as its footer, tight layout, written to ``path`` (folders made), closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.005, DISCLAIMER, ha="center", va="bottom", fontsize=fontsize, style="italic")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
