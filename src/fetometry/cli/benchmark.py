"""``fetometry benchmark --data DIR``: every model scored on one protocol (Markdown, CSV and a plot)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="score the trained models on one protocol: Markdown, CSV and a plot")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="HC18-layout or folder data set with reference masks and HCs (repeat to combine several: metrics per source)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated shipped model names or weights folders; join names with + to score their ensemble (averaged probabilities) as one row (default: all shipped)",
    )
    p.add_argument("--tta", action="store_true", help="also score every model with flip TTA")
    p.add_argument(
        "--train-reference",
        action="store_true",
        help="also train the stock reference row (MONAI AttentionUnet 16..256, plain recipe: about 20 min on one CPU core) and score it in the same run",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs for the latency column (median)")
    p.add_argument("--out", default="benchmark_output", help="output folder")


def run(args: argparse.Namespace) -> int:
    from fetometry.evaluation.benchmark import model_spec, run_benchmark
    from fetometry.resources import shipped_models

    models = [model_spec(m) for m in args.models.split(",")] if args.models else shipped_models()
    if args.train_reference and not args.models:  # the freshly trained row replaces the shipped one
        models = [m for m in models if m != "reference-monai-attention-unet"]
    if not models and not args.train_reference:
        raise FileNotFoundError("no trained models found: train one (fetometry train) or name a weights folder")
    data = args.data[0] if len(args.data) == 1 else args.data
    if args.train_reference:  # trained on the same data into OUT/reference-monai-attention-unet, scored first
        from fetometry.training.run import train_reference_row

        row = train_reference_row(data, Path(args.out) / "reference-monai-attention-unet", progress=not args.quiet)
        models = [str(row), *models]
    report = run_benchmark(
        models,
        data,
        args.out,
        tta_modes=(False, True) if args.tta else (False,),
        progress=not args.quiet,
        repeats=args.repeats,
    )
    print(Path(report["paths"]["md"]).read_text())
    print(f"wrote {', '.join(report['paths'].values())}")
    return 0
