"""``fetometry predict INPUT --out DIR``: segment and measure an image, a folder or an HC18-layout folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fetometry.cli.common import add_prediction_arguments


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment and measure an image, a folder, or an HC18-layout folder")
    p.add_argument("input", help="image file, folder of images, or HC18-layout folder")
    p.add_argument("--out", required=True, help="output folder (measurements.csv, masks/)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--pixel-size", type=float, help="pixel size in mm for every image")
    size.add_argument("--pixel-csv", help="CSV with filename,pixel size(mm)")
    add_prediction_arguments(p)


def run(args: argparse.Namespace) -> int:
    from fetometry.pipeline import OK, UNREADABLE, predict_path

    results = predict_path(
        args.input,
        args.out,
        model=args.model,
        pixel_size_mm=args.pixel_size,
        pixel_csv=args.pixel_csv,
        tta=args.tta,
        progress=not args.quiet,
        plane_check=args.plane_check,
    )
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    print(
        f"{len(results)} images -> {Path(args.out) / 'measurements.csv'}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    if counts.get(OK, 0) < len(results):
        print("rows whose status is not 'ok' say why in the 'detail' column", file=sys.stderr)
    return 0 if counts.get(UNREADABLE, 0) < len(results) else 1
