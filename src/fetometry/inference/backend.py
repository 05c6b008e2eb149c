"""The backend a predictor runs on: PyTorch, or onnxruntime on a graph exported from the same weights.

``auto`` (the default of ``measure``, ``predict``, ``stream`` and ``pacs watch``) runs a
feed-forward model on onnxruntime, which is the faster of the two on a CPU for every
shipped segmenter (docs/BENCHMARKS.md, "Deployment speed"), and a sampled model
(MedSegDiff-V2, whose bf16 PyTorch sampler is faster) or an ensemble on PyTorch. Tools
that need gradients (Grad-CAM, training, the research benchmark) load PyTorch models
with ``Predictor.from_weights``.

The ONNX graph is exported once per weights file and kept in a cache folder named by the
weights' sha256, so a later start loads it in a fraction of a second:
``$FETOMETRY_CACHE`` or ``$XDG_CACHE_HOME/fetometry`` or ``~/.cache/fetometry``, under
``onnx/``. A file is written next to its final name and renamed, so two processes
starting at once never read half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
DEFAULT_BACKEND = "auto"


def cache_root() -> Path:
    """Where derived files (exported graphs) are kept between runs."""
    if os.environ.get("FETOMETRY_CACHE"):
        return Path(os.environ["FETOMETRY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fetometry"


def cached_onnx(weights_dir: str | Path) -> Path:
    """The ONNX export of a feed-forward weights folder, exported on first use."""
    from fetometry.inference.export import export_onnx
    from fetometry.resources import file_sha256
    from fetometry.weights_config import WeightsConfig

    weights_dir = Path(weights_dir)
    config = WeightsConfig.read(weights_dir)
    digest = file_sha256(weights_dir / "model.safetensors")[:16]
    path = cache_root() / "onnx" / f"{config.model}-{config.variant}-{digest}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX once (cached in %s)", weights_dir.name, path.parent)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        written = export_onnx(weights_dir, Path(scratch) / path.name)
        os.replace(written[0], path)
    return path


def resolve_backend(backend: str, predictor) -> str:
    """``auto`` -> ``onnx`` for one feed-forward model where onnxruntime is installed,
    else ``torch``; an explicit choice is checked and kept."""
    from fetometry.models.base import is_sampled

    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if predictor.config.backend == "onnxruntime":
        return "onnx"  # an .onnx file given as the model
    if backend != "auto":
        return backend
    if predictor.config.members or is_sampled(predictor.model):
        return "torch"  # an ensemble averages PyTorch members; the bf16 sampler is faster
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


def build_predictor(model: str | Path | None, backend: str = DEFAULT_BACKEND, *, tta: bool = False):
    """A Predictor for ``model`` on ``backend`` (``auto``, ``torch`` or ``onnx``)."""
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights(model, tta=tta)
    if resolve_backend(backend, predictor) == "torch" or predictor.config.backend == "onnxruntime":
        return predictor
    if predictor.config.members:
        raise ValueError("--backend onnx runs one model; an ensemble runs on PyTorch (--backend torch or auto)")
    from fetometry.inference.onnx_backend import load_onnx_model

    # Exported from the same weights folder, so the PyTorch predictor's config (canvas,
    # threshold, boundary offset, quality limits) describes the ONNX graph too.
    graph = cached_onnx(predictor.config.weights_dir)
    config = predictor.config.replace(backend="onnxruntime", onnx_path=str(graph))
    return Predictor(
        load_onnx_model(graph), canvas_hw=predictor.canvas_hw, threshold=predictor.threshold, config=config, tta=tta
    )
