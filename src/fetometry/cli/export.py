"""``fetometry export``: a model to ONNX for onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx",)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX for onnxruntime")
    p.add_argument("--model", default=None, help="shipped model name or weights folder (default: the default model)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output .onnx file (MedSegDiff-V2: <stem>_condition/_denoiser.onnx, or a folder)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch agreement check")


def run(args: argparse.Namespace) -> int:
    from fetometry.inference.export import export_onnx

    paths = export_onnx(args.model, args.out, verify=not args.no_verify)
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print("verified against PyTorch on phantoms" if not args.no_verify else "not verified (--no-verify)")
    return 0
