"""Arguments several verbs share, declared once so their names and help agree."""

from __future__ import annotations

import argparse


def add_model_argument(parser: argparse.ArgumentParser, *, ensembles: bool = False) -> None:
    """``--model``: a shipped name or a weights folder (several, comma-separated, where ``ensembles``)."""
    help_text = "shipped model name or weights folder"
    if ensembles:
        help_text += "; several, comma-separated, average their probabilities (an ensemble sharing one canvas)"
    parser.add_argument("--model", default=None, help=help_text + " (default: the default model)")


def add_plane_check_argument(parser: argparse.ArgumentParser, *, what: str = "images") -> None:
    """``--plane-check on|off``: the SonoNet-16 plane check and out-of-distribution score."""
    parser.add_argument(
        "--plane-check",
        choices=("on", "off"),
        default="on",
        help=f"refuse {what} that are not a fetal head plane (SonoNet-16 + out-of-distribution score); "
        "off for research scoring, where the HC18 protocol scores every image (default on)",
    )


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend auto|torch|onnx`` (fetometry.inference.backend)."""
    from fetometry.inference.backend import BACKENDS, DEFAULT_BACKEND

    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="run the network on PyTorch or onnxruntime; auto: onnxruntime for one feed-forward model, "
        "PyTorch for ensembles and MedSegDiff-V2 (default auto)",
    )


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, its backend, flip TTA and the plane check: what predict and measure share."""
    add_model_argument(parser, ensembles=True)
    add_backend_argument(parser)
    parser.add_argument("--tta", action="store_true", help="average with a horizontally flipped prediction")
    add_plane_check_argument(parser)
