"""``fetometry train --model NAME --data DIR --out RUN_DIR``: the one trainer, from a recipe and overrides."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model on an HC18-layout or folder data set")
    p.add_argument("--model", required=True, help="registered architecture name, e.g. attention-unet")
    p.add_argument("--variant", help="architecture variant (default from the config)")
    p.add_argument(
        "--data", required=True, action="append", help="HC18-layout or folder data set (repeat to combine several)"
    )
    p.add_argument("--config", help="recipe file (configs/*.toml)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, manifest, model/)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--folds", type=int, help="subject-grouped k-fold: the number of folds (validation = one fold)")
    p.add_argument("--fold", type=int, default=0, help="with --folds: which fold to hold out (0..folds-1)")
    p.add_argument(
        "--init-from", help="start from these weights (weights folder or .safetensors) instead of random ones"
    )


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe fields the command line sets; the rest come from --config or the defaults."""
    overrides = {"model": args.model}
    if args.variant:
        overrides["variant"] = args.variant
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    if args.init_from:
        overrides["init_from"] = args.init_from
    if args.folds:
        overrides.update(folds=args.folds, fold=args.fold)
    return overrides


def run(args: argparse.Namespace) -> int:
    from fetometry.training.config import TrainConfig
    from fetometry.training.run import train_and_export

    overrides = recipe_overrides(args)
    config = TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig.from_dict(overrides)
    data = args.data[0] if len(args.data) == 1 else args.data
    folder = train_and_export(config, data, args.out, progress=not args.quiet)
    print(f"trained; weights folder {folder} (use it with --model {folder})")
    return 0
