"""``fetometry evaluate --pred DIR --truth DIR``: score predictions against reference masks and HC."""

from __future__ import annotations

import argparse
from pathlib import Path

SUMMARY_KEYS = ("dice", "iou", "recall", "precision", "hausdorff_mm", "hc_abs_difference_mm", "hc_difference_mm")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score predictions against reference masks and HC")
    p.add_argument("--pred", required=True, help="a predict output folder")
    p.add_argument("--truth", required=True, help="HC18-layout (or images/masks folder) with references")
    p.add_argument("--out", help="where summary.json and metrics.csv go (default: --pred)")


def run(args: argparse.Namespace) -> int:
    from fetometry.evaluation.evaluate import evaluate_dirs

    summary = evaluate_dirs(args.pred, args.truth, out_dir=args.out)
    mean = summary.get("mean", {})
    parts = [f"{k} {mean[k]:.4f}" for k in SUMMARY_KEYS if mean.get(k) is not None]
    if summary.get("map") is not None:
        parts.append(f"mAP {summary['map']:.4f}")
    print(", ".join(parts))
    print(f"wrote {Path(args.out or args.pred) / 'summary.json'} and metrics.csv")
    return 0
