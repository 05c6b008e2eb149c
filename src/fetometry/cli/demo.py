"""``fetometry demo``: the default model on the bundled HC18 samples (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetometry import DISCLAIMER
from fetometry.cli.common import add_model_argument

SAMPLE_ATTRIBUTION = (
    "Sample images: HC18 challenge (van den Heuvel et al. 2018, doi 10.5281/zenodo.1327317), CC BY 4.0."
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the default model on the bundled HC18 samples")
    p.add_argument("--out", default="demo_output", help="output folder")
    add_model_argument(p)


def run(args: argparse.Namespace) -> int:
    from fetometry.demo import run_demo

    outcome = run_demo(args.out, model=args.model, progress=not args.quiet)
    print(outcome["table"])
    print(f"\noverlay figure: {outcome['figure']}\nmeasurements:   {Path(args.out) / 'measurements.csv'}")
    print(SAMPLE_ATTRIBUTION)
    print(DISCLAIMER)
    return 0
