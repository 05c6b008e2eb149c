"""Foundation benchmark: geometry calibration, default-model accuracy, predict speed.

Reruns on any machine with ../shared/data/hc18 (or --data):

    .venv/bin/python benchmarks/foundation.py [--model attention-unet] [--out benchmarks/results]

1. Geometry: ellipses fitted to the REFERENCE masks, offset calibrated on the training
   split (split_seed from the model's recipe), HC error vs the CSV on train and val.
2. Model: the model on the subject-grouped VALIDATION split of its own recipe, at the
   original resolution: Dice, IoU, recall, precision, Hausdorff (mm), HC error (mm),
   mAP; with and without flip TTA.
3. Speed: `fetometry predict` (read, segment, fit, measure, write CSV + masks) on
   200 images; images per second, median of 3 runs.
Writes results JSON and prints the Markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fetometry.biometry.ellipse import ellipse_from_probability
from fetometry.biometry.measures import measure_ellipse
from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import split_samples
from fetometry.evaluation.metrics import SegmentationMetrics
from fetometry.inference.predictor import Predictor
from fetometry.pipeline import ImageInput, predict_images, write_predictions
from fetometry.training.model_card import write_model_card
from fetometry.training.run import calibrate_on
from fetometry.training.trainer import hardware_description

REPO = Path(__file__).resolve().parents[1]


def splits_for(samples, recipe: dict) -> dict:
    fractions = {"train": 1 - recipe["val_fraction"], "val": recipe["val_fraction"]}
    return split_samples(samples, fractions, seed=recipe["split_seed"])


def geometry(splits: dict) -> dict:
    calibration = calibrate_on(splits["train"])
    out = {"hc_offset_px": calibration["hc_offset_px"]}
    for name, samples in splits.items():
        errors = []
        for sample in tqdm(samples, desc=f"geometry {name}", leave=False):
            ellipse = ellipse_from_probability(sample.load_mask())
            hc = measure_ellipse(ellipse, sample.pixel_size_mm, offset_px=calibration["hc_offset_px"]).hc_mm
            errors.append(hc - sample.hc_mm)
        errors = np.abs(errors)
        out[name] = {"n": len(errors), "hc_mae_mm": float(errors.mean()), "hc_max_abs_mm": float(errors.max())}
    return out


def accuracy(predictor: Predictor, samples, *, tta: bool) -> dict:
    predictor.tta = tta
    metrics = SegmentationMetrics()
    inputs = [ImageInput.from_sample(s) for s in samples]
    started = time.perf_counter()
    results = predict_images(predictor, inputs, gate=False)  # HC18 protocol: every image is scored
    elapsed = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for sample, result in zip(samples, results):
        statuses[result.status] = statuses.get(result.status, 0) + 1
        hc = result.measurement.hc_mm if result.measurement else None
        mask = result.prediction.mask if result.prediction is not None else None
        score = result.prediction.confidence if result.prediction is not None else None
        metrics.add(sample.name, mask, sample.load_mask(), sample.pixel_size_mm, hc, sample.hc_mm, score)
    summary = metrics.summary()
    flat = {name: stats["mean"] for name, stats in summary["metrics"].items()}
    hc_abs = [r["hc_abs_difference_mm"] for r in metrics.rows() if r["hc_abs_difference_mm"] is not None]
    flat.update(
        n=len(samples),
        statuses=statuses,
        map=summary["map"],
        hc_abs_sd_mm=float(np.std(hc_abs, ddof=1)) if len(hc_abs) > 1 else None,
        hc_abs_median_mm=float(np.median(hc_abs)) if hc_abs else None,
        hc_abs_p95_mm=float(np.percentile(hc_abs, 95)) if hc_abs else None,
        seconds_per_image=elapsed / len(samples),
        tta=tta,
    )
    return flat


def predict_speed(predictor: Predictor, samples, repeats: int = 3) -> dict:
    predictor.tta = False
    inputs = [ImageInput.from_sample(s) for s in samples]
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            write_predictions(predict_images(predictor, inputs, progress=False), tmp)
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"n_images": len(inputs), "runs_s": times, "median_s": median, "images_per_s": len(inputs) / median}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--model", default="attention-unet")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--speed-images", type=int, default=200)
    parser.add_argument(
        "--no-tta", action="store_true", help="skip the flip-TTA pass (slow models, e.g. the diffusion sampler)"
    )
    parser.add_argument(
        "--write-card", action="store_true", help="rewrite the weights folder's MODEL_CARD.md with these results"
    )
    args = parser.parse_args(argv)
    samples = load_hc18(args.data)
    predictor = Predictor.from_weights(args.model)
    recipe = predictor.config.recipe
    splits = splits_for(samples, recipe)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "model": args.model,
        "weights_config": {k: v for k, v in predictor.config.to_dict().items() if k != "training"},
        "training": dict(predictor.config.training),
        "split": {k: len(v) for k, v in splits.items()},
    }
    report["geometry"] = geometry(splits)
    report["validation"] = accuracy(predictor, splits["val"], tta=False)
    report["validation_tta"] = None if args.no_tta else accuracy(predictor, splits["val"], tta=True)
    report["predict_speed"] = predict_speed(predictor, samples[: args.speed_images])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"foundation_{Path(args.model).name}.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if args.write_card:
        write_model_card(predictor.config.weights_dir, report)
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    g, v, t, s = r["geometry"], r["validation"], r["validation_tta"], r["predict_speed"]
    lines = [
        f"Date {r['date']}; {r['hardware']['cpu']}, {r['hardware']['threads']} threads, torch {r['hardware']['torch']}.",
        "",
        f"Geometry (reference masks, offset {g['hc_offset_px']:.3f} px calibrated on train): "
        f"HC MAE train {g['train']['hc_mae_mm']:.3f} mm (n={g['train']['n']}), val {g['val']['hc_mae_mm']:.3f} mm (n={g['val']['n']}).",
        "",
        "| model | TTA | n | Dice | IoU | recall | precision | HD mm | HC MAE mm | HC SD mm | HC signed mm | mAP | s/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in (v, t) if r):
        lines.append(
            f"| {r['model']} | {'flip' if row['tta'] else 'none'} | {row['n']} | {row['dice']:.4f} | {row['iou']:.4f} | {row['recall']:.4f} | "
            f"{row['precision']:.4f} | {row['hausdorff_mm']:.2f} | {row['hc_abs_difference_mm']:.2f} | {row['hc_abs_sd_mm']:.2f} | "
            f"{row['hc_difference_mm']:+.2f} | {row['map']:.4f} | {row['seconds_per_image']:.3f} |"
        )
    lines += [
        "",
        f"`predict` on {s['n_images']} images: {s['images_per_s']:.1f} images/s (median of {len(s['runs_s'])} runs, {s['median_s']:.1f} s).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
