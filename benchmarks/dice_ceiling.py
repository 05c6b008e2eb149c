"""What limits the mask Dice: resolution, threshold, post-processing, or the annotations?

    .venv/bin/python benchmarks/dice_ceiling.py --model attention-unet+unext+transunet+duck-net

For one model (or a ``+``-joined ensemble), on its recipe's subject-grouped validation
split and on every fourth training image (at most ``--train-images``):
- the resolution ceiling: the reference masks letterboxed onto the model's canvas and
  back, against themselves (what the canvas alone costs);
- mask Dice at thresholds 0.30-0.70, on the training images (where a threshold may be
  chosen) and on the validation images;
- the validation Dice after largest-component post-processing (holes filled).
A model that matches its own training annotations no better than its validation ones is
limited by how exactly the reference ellipses can be reproduced, not by overfitting.

Writes benchmarks/results/dice_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fetometry.biometry.ellipse import largest_component
from fetometry.data.transforms import letterbox, unletterbox
from fetometry.evaluation.benchmark import model_spec, model_validation_split
from fetometry.evaluation.metrics import dice
from fetometry.inference.predictor import Predictor
from fetometry.training.config import TrainConfig
from fetometry.training.run import load_datasets
from fetometry.training.trainer import hardware_description, training_splits

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70)


def resolution_ceiling(samples, canvas_hw) -> float:
    """Mean Dice of each reference mask after a round trip through the canvas."""
    scores = []
    for sample in samples:
        truth = sample.load_mask() > 0
        canvas, box = letterbox(truth.astype(np.float32), canvas_hw)
        scores.append(dice(unletterbox(canvas, box) >= 0.5, truth))
    return float(np.mean(scores))


def threshold_and_postprocessing(predictor, samples) -> dict:
    """Mean Dice per threshold, and at the predictor's threshold after largest-component."""
    per_threshold = {t: [] for t in THRESHOLDS}
    largest = []
    for sample in samples:
        truth = sample.load_mask() > 0
        prediction = predictor.predict(sample.load_image())
        for t in THRESHOLDS:
            per_threshold[t].append(dice(prediction.probability >= t, truth))
        largest.append(dice(largest_component(prediction.mask), truth))
    return {
        "dice_by_threshold": {f"{t:.2f}": float(np.mean(v)) for t, v in per_threshold.items()},
        "dice_largest_component": float(np.mean(largest)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="attention-unet", help="shipped name or weights folder; join with + for an ensemble"
    )
    parser.add_argument("--train-images", type=int, default=150)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hc18"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    predictor = Predictor.from_weights(model_spec(args.model))
    samples = load_datasets(args.data)
    val = model_validation_split(samples, predictor)
    train = training_splits(samples, TrainConfig.from_dict(predictor.config["training"]["recipe"]))["train"][::4][
        : args.train_images
    ]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "model": predictor.name,
        "canvas_hw": list(predictor.canvas_hw),
        "threshold": predictor.threshold,
        "n_val": len(val),
        "n_train": len(train),
        "resolution_ceiling_val": resolution_ceiling(val, predictor.canvas_hw),
        "train": threshold_and_postprocessing(predictor, train),
        "val": threshold_and_postprocessing(predictor, val),
    }
    out = Path(args.out) / "dice_ceiling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
