"""Subject-grouped k-fold cross-validation of one model: train every fold, score each on
its own held-out subjects, and report the mean and SD over folds.

    .venv/bin/python benchmarks/kfold.py --config configs/unext.toml --folds 5 \
        [--epochs 20] [--data ../shared/data/hc18] [--runs runs/kfold-unext] [--out benchmarks/results]

Every fold is a normal `fetometry train` run folder (RUNS/foldK, with checkpoints): an
interrupted run resumes its fold, and finished folds are not retrained. Each fold model
is scored without the quality gate on ITS validation subjects only (the HC18 protocol:
original resolution, every image), so no image is scored by a model that trained on it.
The folds' models together form a fold ensemble (`--model RUNS/fold0/model,...`), whose
score would need data none of them saw; it is not scored here.
Writes OUT/kfold_<model>.json and prints the Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fetometry.evaluation.benchmark import score_predictor
from fetometry.inference.predictor import Predictor
from fetometry.training.config import TrainConfig
from fetometry.training.run import load_datasets, train_and_export
from fetometry.training.trainer import hardware_description, training_splits

KEYS = ("dice", "dice_ellipse", "iou", "recall", "hc_mae_mm")


def run_fold(config: TrainConfig, samples, data: str, runs: Path) -> dict:
    run_dir = runs / f"fold{config.fold}"
    folder = run_dir / "model"
    if not (folder / "config.json").is_file():
        train_and_export(config, data, run_dir, progress=True, samples=samples)
    predictor = Predictor.from_weights(folder)
    val = training_splits(samples, config)["val"]
    summary = score_predictor(predictor, val, progress=True)["summary"]
    training = predictor.config.training
    return {
        "fold": config.fold,
        "n_val": len(val),
        "train_minutes": training["wall_time_s"] / 60,
        "best_epoch": training["best_epoch"],
        **{key: summary[key] for key in KEYS},
    }


def _over_folds(statistic, folds: list[dict], key: str) -> float | None:
    """The statistic over the folds that have the value (a fold without any measured HC
    has none); None when fewer than two do."""
    values = [f[key] for f in folds if f[key] is not None]
    return statistic(values) if len(values) > 1 else None


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        "| fold | val images | Dice | Dice ellipse | IoU | recall | HC MAE mm | trained min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["folds"]:
        lines.append(
            f"| {r['fold']} | {r['n_val']} | {_f(r['dice'])} | {_f(r['dice_ellipse'])} | {_f(r['iou'])} | {_f(r['recall'])} | {_f(r['hc_mae_mm'], 2)} | {r['train_minutes']:.0f} |"
        )
    m, s = report["mean"], report["sd"]
    lines.append(
        f"| mean (SD) | {sum(r['n_val'] for r in report['folds'])} | "
        + " | ".join(
            f"{_f(m[k], d)} ({_f(s[k], d)})"
            for k, d in (("dice", 4), ("dice_ellipse", 4), ("iou", 4), ("recall", 4), ("hc_mae_mm", 2))
        )
        + " | "
        f"{sum(r['train_minutes'] for r in report['folds']):.0f} in all |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the model's recipe (configs/*.toml)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (say so when you publish)")
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--runs", type=Path, help="where the fold runs go (default runs/kfold-<model>)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    overrides = {"folds": args.folds, **({"epochs": args.epochs} if args.epochs else {})}
    base = TrainConfig.from_file(args.config, **overrides)
    runs = args.runs or Path("runs") / f"kfold-{base.model}"
    samples = load_datasets(args.data)
    folds = [
        run_fold(TrainConfig.from_file(args.config, **overrides, fold=k), samples, args.data, runs)
        for k in range(args.folds)
    ]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": base.model,
        "variant": base.variant,
        "recipe": base.to_dict(),
        "hardware": hardware_description(),
        "folds": folds,
        "mean": {key: _over_folds(statistics.mean, folds, key) for key in KEYS},
        "sd": {key: _over_folds(statistics.stdev, folds, key) for key in KEYS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kfold_{base.model}.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
