"""Train, calibrate and export a weights folder: what `fetometry train` does.

Calibration: the HC18 filled masks lie about 1.4 px outside the sonographer's ellipse
(../shared/data/hc18/README.md), so an ellipse fitted to a perfect mask overestimates
HC. The offset is estimated on the TRAINING split's reference masks only and stored in
the weights' config; the predictor subtracts it from both semi-axes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tqdm import tqdm

from fetometry.biometry.ellipse import EllipseFitError, NoHeadError, ellipse_from_probability
from fetometry.biometry.measures import calibrate_offset_px
from fetometry.data.loaders import load_annotated, load_datasets
from fetometry.data.sample import Sample
from fetometry.models.weights import load_weights, save_weights
from fetometry.training.config import TrainConfig
from fetometry.training.distributed import DistributedContext
from fetometry.training.model_card import write_model_card
from fetometry.training.trainer import train
from fetometry.weights_config import WeightsConfig

log = logging.getLogger(__name__)


def load_dataset(data_dir: str | Path) -> list[Sample]:
    """The annotated samples of a data-set folder of any registered layout (``fetometry.data.load``)."""
    return load_annotated(data_dir)


def calibrate_on(samples: list[Sample], *, progress: bool = True, canvas_hw: tuple[int, int] | None = None) -> dict:
    """Median boundary offset (px) between reference masks and reference HC, in pixels of
    an 800x540 frame (``Predictor.boundary_offset_px``): each image's offset is scaled by
    its frame's canvas scale over that frame's on ``canvas_hw`` (1 for HC18's frames;
    None: not scaled)."""
    ellipses, sizes, references, ratios = [], [], [], []
    for sample in tqdm(samples, desc="calibrating HC offset", disable=not progress, leave=False):
        if sample.pixel_size_mm is None or sample.hc_mm is None:
            continue
        mask = sample.load_mask().astype("float32")
        try:
            ellipses.append(ellipse_from_probability(mask))
        except (NoHeadError, EllipseFitError, ValueError) as error:
            log.warning("calibration skips %s: %s", sample.name, error)
            continue
        sizes.append(sample.pixel_size_mm)
        references.append(sample.hc_mm)
        ratios.append(1.0 if canvas_hw is None else _frame_scale_ratio(mask.shape, canvas_hw))
    if not ellipses:
        log.warning("no reference HC available: HC offset calibration skipped (offset 0 px)")
        return {"hc_offset_px": 0.0, "calibration_images": 0}
    return {
        "hc_offset_px": float(calibrate_offset_px(ellipses, sizes, references, scale_ratios=ratios)),
        "calibration_images": len(ellipses),
    }


def _frame_scale_ratio(frame_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> float:
    """A whole frame's canvas pixels per image pixel over an 800x540 frame's."""
    from fetometry.data.transforms import Letterbox
    from fetometry.inference.predictor import offset_reference_scale

    return Letterbox(*frame_hw, *canvas_hw).scale / offset_reference_scale(canvas_hw)


def fitted_ellipses(predictor, samples: list[Sample], *, batch_size: int = 4) -> list:
    """The ellipse ``measure``'s path (segment, second look, fit; no plane check, no gate)
    fits to each sample, in order: (ellipse or None, the reason when None, the canvas
    scale of the pass that drew the head)."""
    from fetometry.pipeline import measure_batch

    fitted = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        results = measure_batch(
            predictor,
            [s.load_image() for s in chunk],
            filenames=[s.name for s in chunk],
            pixel_sizes_mm=[s.pixel_size_mm for s in chunk],
            gate=False,
        )
        fitted.extend((r.ellipse, r.detail, r.prediction.canvas_scale if r.prediction else None) for r in results)
    return fitted


def calibrate_on_predictions(predictor, samples: list[Sample]) -> dict:
    """Median boundary offset (px) between the model's OWN fitted ellipses
    (``fitted_ellipses``) and the reference HC, on TRAINING samples only.

    The mask offset (``calibrate_on``) corrects the reference masks' boundary; a model's
    boundary sits a fraction of a pixel away from that, and this offset corrects the
    model's (benchmarks/calibrate_offset.py measures both on the validation split)."""
    usable = [s for s in samples if s.pixel_size_mm is not None and s.hc_mm is not None]
    ellipses, sizes, references, ratios = [], [], [], []
    for sample, (ellipse, reason, scale) in zip(usable, fitted_ellipses(predictor, usable)):
        if ellipse is None:
            log.warning("prediction calibration skips %s: %s", sample.name, reason)
            continue
        ellipses.append(ellipse)
        sizes.append(sample.pixel_size_mm)
        references.append(sample.hc_mm)
        # A pass of unknown scale counts in its own pixels, as boundary_offset_px measures it.
        ratios.append(1.0 if scale is None else scale / predictor.offset_reference_scale)
    if not ellipses:
        raise ValueError("no training image with a pixel size, a reference HC and a fitted head to calibrate on")
    return {
        "hc_offset_px": float(calibrate_offset_px(ellipses, sizes, references, scale_ratios=ratios)),
        "calibration_images": len(ellipses),
        "hc_offset_source": "the model's own fitted ellipses on its training split (benchmarks/calibrate_offset.py)",
    }


def train_and_export(
    config: TrainConfig,
    data_dir: str | Path | list[str | Path],
    run_dir: str | Path,
    *,
    progress: bool = True,
    samples: list | None = None,
) -> Path:
    """Train on ``data_dir`` (one folder or several) into ``run_dir`` and write
    ``run_dir/model`` (a weights folder). ``samples``: that data set, already listed
    (callers that train several runs on one data set list it once)."""
    run_dir = Path(run_dir)
    samples = load_datasets(data_dir) if samples is None else samples
    if not samples:
        raise ValueError(f"{data_dir}: no annotated images to train on")
    train(config, samples, run_dir, progress=progress)
    if not DistributedContext.from_environment().is_main:
        return run_dir / "model"  # rank 0 calibrates and exports
    paths = [str(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) else [str(data_dir)]
    data = {
        "path": paths[0] if len(paths) == 1 else paths,
        "layout": samples[0].source or "folder",
        "images": len(samples),
    }
    return calibrate_and_export(run_dir, config, samples, data, progress=progress)


def train_reference_row(data, run_dir: Path, *, progress: bool = True) -> Path:
    """Train (or, when its run folder has finished weights, reuse) the benchmark's
    reference row: MONAI's stock AttentionUnet with the plain recipe."""
    from fetometry.models import reference

    folder = run_dir / "model"
    if (folder / "config.json").is_file():
        log.info("reference row: reusing %s", folder)
        return folder
    log.info("reference row: training MONAI AttentionUnet with the plain recipe into %s", run_dir)
    return train_and_export(TrainConfig.from_dict(reference.REFERENCE_RECIPE), data, run_dir, progress=progress)


def calibrate_and_export(
    run_dir: Path, config: TrainConfig, samples: list[Sample], data: dict, *, progress: bool = True
) -> Path:
    """A trained run folder -> ``run_dir/model``: the HC offset calibrated on the run's
    TRAINING split (its split.json) of ``samples``, then the weights folder. Also for runs
    trained elsewhere (benchmarks/gpu_train.py) and exported here on the original images."""
    train_names = set(json.loads((run_dir / "split.json").read_text())["train"])
    training = [s for s in samples if s.name in train_names]
    calibration = calibrate_on(training, progress=progress, canvas_hw=config.canvas_hw)
    folder = export_weights(run_dir, run_dir / "model", config, calibration, data)
    if config.hc_offset_from == "predictions":
        recalibrate_on_predictions(folder, training)
    return folder


def recalibrate_on_predictions(folder: Path, training: list[Sample]) -> dict | None:
    """Replace a weights folder's mask-calibrated HC offset by the one calibrated on its
    own fitted ellipses over ``training`` (``calibrate_on_predictions``), keeping the
    mask offset as ``hc_offset_px_masks``, and write its model card again. A model that
    fits no training head keeps the mask offset (returns None, with a warning)."""
    from fetometry.inference.predictor import Predictor

    try:
        calibration = calibrate_on_predictions(Predictor.from_weights(folder), training)
    except ValueError as error:
        log.warning("%s keeps the reference masks' HC offset: %s", folder, error)
        return None
    write_prediction_offset(folder, calibration)
    return calibration


def write_prediction_offset(folder: Path, calibration: dict) -> None:
    """Store ``calibrate_on_predictions``' result in a weights folder's config.json (the
    mask offset kept as ``hc_offset_px_masks``, also when it is written a second time)
    and write its model card again."""
    current = WeightsConfig.read(folder)
    masks = current.hc_offset_px if current.hc_offset_px_masks is None else current.hc_offset_px_masks
    path = folder / "config.json"
    config = {**json.loads(path.read_text(encoding="utf-8")), "hc_offset_px_masks": masks, **calibration}
    WeightsConfig.from_dict(config, source=str(path))  # a wrong value fails before it is written
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_model_card(folder)
    log.info("%s: HC offset %.3f px from its own fitted ellipses", folder, calibration["hc_offset_px"])


def _initialisation(config: TrainConfig, this_run_wall_time_s: float) -> dict | None:
    """Provenance of ``init_from`` weights: their path and, for a weights folder, the
    epochs and time that trained them (earlier legs included)."""
    if not config.init_from:
        return None
    initial = {"path": config.init_from, "this_run_wall_time_s": this_run_wall_time_s}
    if (Path(config.init_from) / "config.json").is_file():
        earlier = WeightsConfig.read(config.init_from).training
        before = earlier.get("initialised_from") or {}
        initial["epochs_run"] = earlier.get("epochs_run", 0) + before.get("epochs_run", 0)
        initial["wall_time_s"] = earlier.get("wall_time_s", 0) + before.get("wall_time_s", 0)
    return initial


def exported_checkpoint(config: TrainConfig) -> str:
    """The checkpoint file the recipe exports: the best epoch, or the last (EMA) weights."""
    if config.export_checkpoint == "best":
        return "best.safetensors"
    return "last_ema.safetensors" if config.ema_decay > 0 else "last.safetensors"


def export_weights(run_dir: Path, folder: Path, config: TrainConfig, calibration: dict, data: dict) -> Path:
    """The run's exported checkpoint (``config.export_checkpoint``) + config.json
    (architecture, canvas, calibration, provenance)."""
    from fetometry.models import create_model

    model = create_model(config.model, config.variant, **config.model_kwargs)
    load_weights(model, run_dir / "checkpoints" / exported_checkpoint(config))
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / "model.safetensors")
    shutil.copyfile(run_dir / "split.json", folder / "split.json")  # which images trained it
    manifest = json.loads((run_dir / "manifest.json").read_text())
    weights_config = {
        "model": config.model,
        "variant": config.variant,
        "model_kwargs": config.model_kwargs,
        "canvas_hw": [config.canvas_h, config.canvas_w],
        "threshold": 0.5,
        **calibration,
        "data": data,
        "training": {
            "recipe": config.to_dict(),
            "best_epoch": manifest["best_epoch"],
            "exported": config.export_checkpoint,
            "epochs_run": manifest["epochs_run"],
            "wall_time_s": manifest["wall_time_s"],
            "hardware": manifest["hardware"],  # where it trained, which need not be where it is exported
            "git_commit": manifest["git_commit"],
            "date": manifest["date"],
            "parameters": manifest["parameters"],
        },
    }
    initial = _initialisation(config, manifest["wall_time_s"])
    if initial:
        weights_config["training"]["initialised_from"] = initial
    WeightsConfig.from_dict(
        weights_config, source=str(folder / "config.json")
    )  # a wrong key fails before it is written
    (folder / "config.json").write_text(json.dumps(weights_config, indent=2))
    write_model_card(folder)
    return folder
