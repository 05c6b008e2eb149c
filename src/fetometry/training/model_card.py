"""MODEL_CARD.md for a weights folder: data, recipe, hardware, metrics, attribution.

Written from the folder's config.json (what was trained, how, where) and, when a
benchmark has scored the model, from its results; no number is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from fetometry import DISCLAIMER
from fetometry.weights_config import WeightsConfig

HC18_ATTRIBUTION = (
    "HC18 challenge data: van den Heuvel TLA, de Bruijn D, "
    "de Korte CL, van Ginneken B (2018). Automated measurement of fetal head "
    "circumference using 2D ultrasound images. PLoS ONE 13(8): e0200412. Data set: "
    "Zenodo, doi 10.5281/zenodo.1327317. License: CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). These weights are a derived work "
    "and are distributed under the same license, with this attribution."
)


def _metrics_section(metrics: dict | None) -> list[str]:
    if not metrics:
        return [
            "Not yet scored: run `benchmarks/foundation.py --model <folder> --write-card` to add the validation metrics."
        ]
    v, t, g = metrics["validation"], metrics["validation_tta"], metrics["geometry"]
    rows = [
        f"Scored {metrics['date']} on the subject-grouped VALIDATION split ({v['n']} images, "
        "never used for training or calibration), at the original image resolution:",
        "",
        "| TTA | Dice | IoU | recall | precision | Hausdorff mm | HC MAE mm (SD) | HC signed mm | mAP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in (("none", v), ("flip", t)):
        if row is None:  # not scored (e.g. --no-tta for the diffusion model)
            continue
        rows.append(
            f"| {name} | {row['dice']:.4f} | {row['iou']:.4f} | {row['recall']:.4f} | {row['precision']:.4f} | "
            f"{row['hausdorff_mm']:.2f} | {row['hc_abs_difference_mm']:.2f} ({row['hc_abs_sd_mm']:.2f}) | "
            f"{row['hc_difference_mm']:+.2f} | {row['map']:.4f} |"
        )
    rows += [
        "",
        f"Geometry check (reference masks through the same ellipse path, offset calibrated on "
        f"train): HC MAE {g['train']['hc_mae_mm']:.3f} mm (train), {g['val']['hc_mae_mm']:.3f} mm (val).",
        "mAP: COCO-style mask AP over IoU 0.50:0.05:0.95, score = mean foreground probability.",
    ]
    return rows


def _data_section(data: dict) -> list[str]:
    where = f"`{data.get('path', 'unknown')}` ({data.get('layout', '?')} layout, {data.get('images', '?')} annotated images)."
    note = [f"How: {data['note']}."] if data.get("note") else []  # e.g. a GPU run trained from a canvas pack
    if data.get("layout") == "hc18":
        return [f"Trained on the HC18-layout data set {where}", *note, "", HC18_ATTRIBUTION]
    return [f"Trained on the folder data set {where}", *note]


def _initialisation_lines(initial: dict | None) -> list[str]:
    """A run that started from earlier weights states them and the time they took, so the
    card's training time is the whole cost, not just the last leg."""
    if not initial:
        return []
    earlier = initial.get("wall_time_s") or 0
    return [
        f"Initialised from `{initial.get('path')}` ({initial.get('epochs_run', '?')} earlier epochs, "
        f"{earlier / 60:.0f} min); total training time {(earlier + initial.get('this_run_wall_time_s', 0)) / 60:.0f} min.",
    ]


def _status_lines(status: str | None) -> list[str]:
    """A weights folder's ``status`` (config.json) heads its card: an undertrained model or
    a reference baseline says so before anything else."""
    return [f"> **{status}**", ""] if status else []


def _limits(config: WeightsConfig) -> list[str]:
    recipe = config.recipe
    lines = [
        "Trained on HC18 images of one centre (Radboud UMC, Voluson E8 / Voluson 730 scanners). "
        "The network measures the head in a standard plane; it does not check that the plane is "
        "correct (fetometry's plane check, SonoNet-16, does that before a measurement is reported). "
        "Every measurement needs review by a clinician."
    ]
    augmentation = str(recipe.get("augmentation", ""))
    if augmentation.startswith("scanners"):
        lines.append(
            f"Other scanners and capture styles were imitated in training (the `{augmentation}` augmentation) "
            "and tested only on HC18 heads re-rendered in other styles (docs/BENCHMARKS.md, "
            '"Heads from any scanner"); real images of other centres are untested here.'
        )
    else:
        lines.append("Other scanners and settings are untested.")
    if config.second_look:
        lines.append(
            "Heads small in the frame are segmented a second time in a window around them "
            f"(`second_look`: {json.dumps(dict(config.second_look))} in config.json)."
        )
    return lines


def write_model_card(folder: str | Path, metrics: dict | None = None) -> Path:
    folder = Path(folder)
    config = WeightsConfig.read(folder)
    training = config.training
    recipe = config.recipe
    hardware = training.get("hardware", {})
    lines = [
        f"# {config.model} ({config.variant}) — fetometry weights",
        "",
        *_status_lines(config.status),
        f"> {DISCLAIMER}",
        "",
        "## What it does",
        "Segments the fetal head in a 2D ultrasound image (one class, logits -> sigmoid); "
        "fetometry fits an ellipse to the 0.5 contour and reports HC, BPD and OFD in mm.",
        f"Architecture `{config.model}` variant `{config.variant}` "
        f"({training.get('parameters', 0) / 1e6:.2f}M parameters), see docs/MODELS.md. "
        f"Input: grayscale letterboxed onto a {config.canvas_hw[0]}x{config.canvas_hw[1]} canvas.",
        "",
        "## Data",
        *_data_section(config.data),
        "",
        f"Split by subject (seed {recipe.get('split_seed')}, validation fraction {recipe.get('val_fraction')}); "
        "the images of each split are listed in `split.json` beside these weights.",
        _calibration_line(config),
        "",
        "## Recipe",
        "```json",
        json.dumps(recipe, indent=2),
        "```",
        (
            f"Best epoch by validation Dice: {training.get('best_epoch')} of {training.get('epochs_run')}; "
            if training.get("exported", "best") == "best"
            else f"Exported: the last epoch's weights ({training.get('epochs_run')} epochs; the recipe's "
            "export_checkpoint = last), not the best validation epoch "
            f"({training.get('best_epoch')}); "
        )
        + f"training wall time {training.get('wall_time_s', 0) / 60:.0f} min.",
        *_initialisation_lines(training.get("initialised_from")),
        "",
        "## Hardware",
        *([f"GPU: {hardware['gpu']} (CUDA {hardware.get('cuda')})."] if "gpu" in hardware else []),
        f"{hardware.get('cpu', 'unknown CPU')}; torch {hardware.get('torch')}; {hardware.get('platform', '')}. "
        f"Trained {training.get('date')} (commit {training.get('git_commit')})."
        + (f" Note: {training['git_commit_note']}." if training.get("git_commit_note") else ""),
        "",
        "## Metrics",
        *_metrics_section(metrics),
        "",
        "## Limits",
        *_limits(config),
        "",
    ]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _calibration_line(config: WeightsConfig) -> str:
    """Where the HC offset comes from: the reference masks (the trainer) or the model's own
    fitted ellipses (benchmarks/calibrate_offset.py), both on the training split."""
    offset, images = config.hc_offset_px, config.calibration_images
    return _offset_source(config, offset, images) + _OFFSET_UNITS


#: How the offset is applied (``Predictor.boundary_offset_px``).
_OFFSET_UNITS = (
    " The offset is in pixels of an 800x540 frame segmented whole; each measurement scales it by the canvas "
    "pixels per image pixel of the network pass that drew the head, so it is the same distance on any pixel grid."
)


def _offset_source(config: WeightsConfig, offset: float, images: int) -> str:
    if config.hc_offset_px_masks is not None:
        shift = offset - config.hc_offset_px_masks
        side = "outside" if shift > 0 else "inside"
        return (
            f"HC calibration: boundary offset {offset:.3f} px, the median over {images} TRAINING-split "
            "images of the offset between this model's own fitted ellipses and the reference HC. The "
            f"reference masks' offset is {config.hc_offset_px_masks:.3f} px (the filled HC18 masks lie "
            f"about 1.4 px outside the sonographer's ellipse), so this model's boundary lies "
            f"{abs(shift):.2f} px {side} the masks'."
        )
    return (
        f"HC calibration: boundary offset {offset:.3f} px, the median over {images} TRAINING-split "
        "reference masks (the filled HC18 masks lie about 1.4 px outside the sonographer's ellipse)."
    )
