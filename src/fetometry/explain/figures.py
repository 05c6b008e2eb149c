"""Explanation figures: the image, the predicted ellipse and a map, blended, with a colour bar.

``explanation_rgb`` renders one panel to an (H, W, 3) uint8 array (for PDF reports and
the web page); ``save_explanation_png`` writes it; ``save_panel_grid`` puts several
panels side by side (the docs' example figures). matplotlib runs on the Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fetometry import DISCLAIMER
from fetometry.report.figures import save_with_disclaimer

#: Opacity of the map over the image.
ALPHA = 0.45
CMAP = "jet"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_panel(
    ax,
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    ellipse=None,
    title: str = "",
    label: str = "map (0..1)",
    vmax: float = 1.0,
):
    """Draw one panel on a matplotlib axis; returns the map's image (for a colour bar)."""
    if image.shape != saliency.shape:
        raise ValueError(
            f"image {image.shape} and map {saliency.shape} differ in shape; maps must be on the image's grid"
        )
    ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    shown = ax.imshow(saliency, cmap=CMAP, vmin=0, vmax=vmax, alpha=ALPHA, interpolation="bilinear")
    if ellipse is not None:
        points = ellipse.points(720)
        ax.plot(
            np.append(points[:, 0], points[0, 0]), np.append(points[:, 1], points[0, 1]), color="lime", linewidth=1.2
        )
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    return shown


def _figure(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    ellipse=None,
    title: str = "",
    label: str = "map (0..1)",
    vmax: float = 1.0,
    footer: bool = True,
):
    plt = _pyplot()
    height, width = image.shape
    fig_w = 6.4
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * height / width * 0.92 + 0.7))
    shown = draw_panel(ax, image, saliency, ellipse=ellipse, title=title, label=label, vmax=vmax)
    bar = fig.colorbar(shown, ax=ax, fraction=0.035, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if footer:
        fig.text(0.5, 0.01, DISCLAIMER, ha="center", va="bottom", fontsize=5.5, style="italic", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if footer else 0, 1, 1))
    return fig


def explanation_rgb(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    ellipse=None,
    title: str = "",
    label: str = "map (0..1)",
    vmax: float = 1.0,
    dpi: int = 110,
) -> np.ndarray:
    """One panel as an (H', W', 3) uint8 RGB array (image, ellipse, blended map, colour bar)."""
    plt = _pyplot()
    fig = _figure(image, saliency, ellipse=ellipse, title=title, label=label, vmax=vmax)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return rgb


def save_explanation_png(
    path: str | Path,
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    ellipse=None,
    title: str = "",
    label: str = "map (0..1)",
    vmax: float = 1.0,
    dpi: int = 110,
) -> Path:
    """Write the panel of ``explanation_rgb`` as a PNG; returns the path."""
    fig = _figure(image, saliency, ellipse=ellipse, title=title, label=label, vmax=vmax, footer=False)
    # The project's one footer (save_with_disclaimer), as on every other saved figure; 5.5 pt
    # keeps the one-line disclaimer inside this figure's 6.4 inch width.
    return save_with_disclaimer(fig, path, fontsize=5.5, dpi=dpi)


def save_panel_grid(
    path: str | Path, panels: Sequence[dict], *, columns: int = 5, title: str = "", dpi: int = 100
) -> Path:
    """Several panels ({image, saliency, ellipse, title, label, vmax}) in a grid, one
    colour bar each, the disclaimer as footer."""
    plt = _pyplot()
    rows = max(1, int(np.ceil(len(panels) / columns)))
    height, width = panels[0]["image"].shape
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows * height / width + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        shown = draw_panel(
            ax,
            panel["image"],
            panel["saliency"],
            ellipse=panel.get("ellipse"),
            title=panel.get("title", ""),
            label=panel.get("label", "map (0..1)"),
            vmax=panel.get("vmax", 1.0),
        )
        bar = fig.colorbar(shown, ax=ax, fraction=0.035, pad=0.02)
        bar.ax.tick_params(labelsize=6)
    return save_with_disclaimer(fig, path, title=title, fontsize=6.5, dpi=dpi)
