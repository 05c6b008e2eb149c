"""``fetometry stream``: argument parsing and the summary; the work is in ``fetometry.stream.processor.run_stream``.

    fetometry stream INPUT --out DIR [--model NAME] [--pixel-size MM] [--backend auto|torch|onnx]

INPUT is a video file (no calibration: give --pixel-size for mm values), a DICOM cine
loop (calibrated by its ultrasound regions) or a capture device index (0, 1, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fetometry import DISCLAIMER
from fetometry.cli.common import add_backend_argument, add_model_argument, add_plane_check_argument
from fetometry.stream.plane_schedule import DEFAULT_MAX_VIEW_CHANGE, DEFAULT_PLANE_EVERY


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("stream", help="measure every frame of a video, DICOM cine loop or capture device")
    p.add_argument("input", help="video file, DICOM cine loop, or capture device index (0, 1, ...)")
    p.add_argument("--out", required=True, help="output folder (frames.csv, best_frame.png, summary.json)")
    add_model_argument(p)
    p.add_argument(
        "--pixel-size", type=float, help="pixel size in mm (videos carry none; overrides a DICOM's calibration)"
    )
    add_backend_argument(p)
    p.add_argument("--masks", action="store_true", help="also write DIR/masks/frame_NNNNNN_mask.png")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (a live device also stops on Ctrl-C)")
    p.add_argument("--batch-size", type=int, help="frames segmented together (default: the predictor's)")
    p.add_argument("--window", type=int, default=9, help="frames in the temporal median (consistency and smoothing)")
    p.add_argument(
        "--tolerance", type=float, default=0.10, help="relative perimeter change that scores 0 temporal consistency"
    )
    add_plane_check_argument(p, what="frames")
    p.add_argument(
        "--plane-every",
        type=int,
        default=DEFAULT_PLANE_EVERY,
        help="run the plane classifier on at least every k-th frame; the frames between carry its verdict "
        f"(default {DEFAULT_PLANE_EVERY}; 1: every frame)",
    )
    p.add_argument(
        "--plane-view-change",
        type=_view_change_limit,
        default=DEFAULT_MAX_VIEW_CHANGE,
        help="also check at once a frame whose picture moved more than this from the last checked frame's "
        f"(mean |difference| of standardised thumbnails; default {DEFAULT_MAX_VIEW_CHANGE:g}; 'off': every k-th only)",
    )
    p.add_argument(
        "--track",
        choices=("on", "off"),
        default="on",
        help="on: a model with a second look segments each frame once, at the head window of the frame "
        "before (the full two passes every 30 frames and whenever the head leaves the window); "
        "off: every frame as `fetometry predict` segments a still image (default on)",
    )


def _view_change_limit(text: str) -> float | None:
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number, or 'off'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number, or 'off'")
    return value


def run(args: argparse.Namespace) -> int:
    from fetometry.inference.backend import build_predictor
    from fetometry.io.video import open_source
    from fetometry.pipeline import plane_checker_for
    from fetometry.stream.processor import run_stream

    predictor = build_predictor(args.model, args.backend)
    with open_source(args.input, pixel_size_mm=args.pixel_size) as source:
        summary = run_stream(
            source,
            predictor,
            args.out,
            backend=predictor.config.backend,
            write_masks=args.masks,
            max_frames=args.max_frames,
            progress=not args.quiet,
            batch_size=args.batch_size,
            window=args.window,
            tolerance=args.tolerance,
            min_history=min(3, max(1, args.window)),
            plane_checker=plane_checker_for(args.plane_check),
            plane_every=args.plane_every,
            max_view_change=args.plane_view_change,
            track=args.track == "on",
        )
    _print_summary(summary, Path(args.out))
    return 0


def _print_summary(summary: dict, out_dir: Path) -> None:
    print(
        f"{summary['frames']} frames at {summary['fps']} fps: {summary['frames_with_head']} with a head, {summary['frames_accepted']} accepted"
    )
    print(f"pixel size: {summary['pixel_size_source']}")
    best = summary["best_frame"]
    if best is None:
        print("no frame was accepted: no best frame, no measurement")
    elif best["hc_mm"] is not None:
        print(
            f"best frame {best['frame']}: HC {best['hc_mm']:.1f} mm, BPD {best['bpd_mm']:.1f} mm, OFD {best['ofd_mm']:.1f} mm (quality {best['quality_score']:.2f})"
        )
        print(f"median HC of accepted frames: {summary['hc_mm_median_accepted']:.1f} mm")
    else:
        print(f"best frame {best['frame']} (quality {best['quality_score']:.2f}): no mm values without a pixel size")
    print(
        f"wrote {out_dir / 'frames.csv'}, {out_dir / 'summary.json'}"
        + (f", {out_dir / 'best_frame.png'}" if best else "")
    )
    print(DISCLAIMER)
