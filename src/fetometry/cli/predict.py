"""``fetometry predict INPUT --out DIR``: segment and measure images and DICOMs: one file, a
folder, an HC18-layout folder, a list file or a glob; ``--engine ray`` for an archive."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from fetometry.cli.common import add_prediction_arguments


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="segment and measure an image, a folder, an HC18-layout folder, a list file or a glob"
    )
    p.add_argument(
        "input",
        help="image or DICOM file, folder (with --engine ray: a folder tree), HC18-layout folder, "
        "list file (.txt: one path a line) or a quoted glob ('scans/**/*.dcm')",
    )
    p.add_argument("--out", required=True, help="output folder (measurements.csv, masks/)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--pixel-size", type=float, help="pixel size in mm for every image")
    size.add_argument("--pixel-csv", help="CSV with filename,pixel size(mm)")
    add_prediction_arguments(p)
    archive = p.add_argument_group("archive scale (--engine ray; pip install 'fetometry[ray]'; docs/ARCHIVE.md)")
    archive.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data + an actor pool, Parquet shards, resumable",
    )
    archive.add_argument("--address", help="Ray cluster: 'auto' or ray://HOST:PORT (default: start a local Ray)")
    archive.add_argument("--resume", action="store_true", help="continue a killed run in --out where it stopped")
    archive.add_argument("--actors", type=int, help="model actors (default: the cluster's CPUs / threads per actor)")
    archive.add_argument("--threads-per-actor", type=int, help="torch threads per actor (default: from the nodes)")
    archive.add_argument("--shard-batches", type=int, default=16, help="model batches per shard (default 16)")


def run(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _run_ray(args)
    for flag in ("address", "resume", "actors", "threads_per_actor"):
        if getattr(args, flag):
            print(f"--{flag.replace('_', '-')} needs --engine ray", file=sys.stderr)
            return 2
    from fetometry.pipeline import predict_path

    results = predict_path(args.input, args.out, **_measurement_options(args))
    return _report(args.out, len(results), dict(Counter(result.status for result in results)))


def _measurement_options(args: argparse.Namespace) -> dict:
    """What both engines take alike: the model, its backend, TTA, the plane check, pixel sizes."""
    return {
        "model": args.model,
        "backend": args.backend,
        "tta": args.tta,
        "plane_check": args.plane_check,
        "pixel_size_mm": args.pixel_size,
        "pixel_csv": args.pixel_csv,
        "progress": not args.quiet,
    }


def _run_ray(args: argparse.Namespace) -> int:
    from fetometry.archive import run_archive

    summary = run_archive(
        args.input,
        args.out,
        address=args.address,
        resume=args.resume,
        shard_batches=args.shard_batches,
        actors=args.actors,
        threads_per_actor=args.threads_per_actor,
        **_measurement_options(args),
    )
    print(
        f"ray: {summary.measured_now} images measured in {summary.seconds:.1f} s "
        f"({summary.images_per_s:.2f} images/s, {summary.actors} actors x {summary.threads_per_actor} threads); "
        f"{summary.resumed} from an earlier run"
    )
    for filename, detail in summary.failures[:10]:
        print(f"  unreadable: {detail}", file=sys.stderr)
    if summary.failures_total > 10:
        print(f"  ... {summary.failures_total - 10} more in {Path(args.out) / 'summary.json'}", file=sys.stderr)
    return _report(args.out, summary.inputs, summary.counts)


def _report(out: str, total: int, counts: dict[str, int]) -> int:
    from fetometry.pipeline import OK, UNREADABLE

    print(
        f"{total} images -> {Path(out) / 'measurements.csv'}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    if counts.get(OK, 0) < total:
        print("rows whose status is not 'ok' say why in the 'detail' column", file=sys.stderr)
    return 0 if counts.get(UNREADABLE, 0) < total else 1
