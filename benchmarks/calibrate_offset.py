"""The HC offset calibrated on a model's own predictions, on its TRAINING split.

    .venv/bin/python benchmarks/calibrate_offset.py --model unext-scanners [--write]

A weights folder's ``hc_offset_px`` comes from the trainer (``training.run.calibrate_on``):
the median offset between the REFERENCE masks' fitted ellipses and the CSV's HC. A model's
predicted boundary does not lie exactly on the reference mask's boundary, so the model's
HC carries a bias the mask offset does not remove (the default's was -0.33 mm on its
validation split and -0.34 mm on its training split). ``calibrate_on_predictions``
estimates the offset from the model's own fitted ellipses instead, with the same median
rule, over the training split only; this script prints both offsets and what each does on
the validation split (HC MAE and bias over every fitted ellipse, as the HC18 protocol
scores), and with ``--write`` stores the new offset in the weights' config.json (the mask
offset stays beside it as ``hc_offset_px_masks``). Writes
benchmarks/results/calibrate_offset_{model}.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fetometry.biometry.measures import measure_ellipse
from fetometry.data.loaders import load
from fetometry.data.splits import model_split
from fetometry.inference.predictor import Predictor
from fetometry.machine import hardware_description
from fetometry.resources import resolve_weights
from fetometry.training.run import calibrate_on_predictions, fitted_ellipses, write_prediction_offset


def hc_errors(predictor, fitted, samples, offset_px: float) -> dict:
    """HC error over every fitted ellipse (the HC18 protocol scores every image), with
    ``offset_px`` scaled to each head's pass as ``Predictor.boundary_offset_px`` does."""
    errors = [
        measure_ellipse(e, s.pixel_size_mm, offset_px=predictor.offset_at(scale, offset_px)).hc_mm - s.hc_mm
        for (e, _, scale), s in zip(fitted, samples)
        if e is not None and s.pixel_size_mm is not None and s.hc_mm is not None
    ]
    return {
        "n": len(errors),
        "hc_mae_mm": round(float(np.mean(np.abs(errors))), 4),
        "hc_bias_mm": round(float(np.mean(errors)), 4),
        "hc_abs_error_median_mm": round(float(np.median(np.abs(errors))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--write", action="store_true", help="store the new offset in the weights' config.json")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    started = time.perf_counter()
    predictor = Predictor.from_weights(args.model)
    parts = model_split(predictor.config, source="recipe").select(load(args.data))
    masks = predictor.config.hc_offset_px_masks
    mask_offset = predictor.hc_offset_px if masks is None else masks
    calibration = calibrate_on_predictions(predictor, parts["train"])
    validation = fitted_ellipses(predictor, parts["val"])
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "model": args.model,
        "training_images": len(parts["train"]),
        "validation_images": len(parts["val"]),
        "offset_masks_px": round(mask_offset, 4),
        "offset_predictions_px": round(calibration["hc_offset_px"], 4),
        "calibration_images": calibration["calibration_images"],
        "validation_with_mask_offset": hc_errors(predictor, validation, parts["val"], mask_offset),
        "validation_with_prediction_offset": hc_errors(
            predictor, validation, parts["val"], calibration["hc_offset_px"]
        ),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"calibrate_offset_{Path(args.model).name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.write:
        write_prediction_offset(resolve_weights(args.model), calibration)
        print(f"wrote hc_offset_px {calibration['hc_offset_px']:.4f} to {resolve_weights(args.model)}/config.json")


if __name__ == "__main__":
    main()
