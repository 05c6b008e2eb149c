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

from fetometry.weights_config import SEGMENTER, WeightsConfig

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
DEFAULT_BACKEND = "auto"


def cache_root() -> Path:
    """Where derived files (exported graphs) are kept between runs."""
    if os.environ.get("FETOMETRY_CACHE"):
        return Path(os.environ["FETOMETRY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fetometry"


def cached_onnx_path(weights_dir: str | Path, config: WeightsConfig | None = None) -> Path:
    """Where the ONNX export of a weights folder is kept (named by its weights' sha256);
    ``config``: the folder's config when the caller has read it already."""
    from fetometry.resources import file_sha256

    weights_dir = Path(weights_dir)
    config = config or WeightsConfig.read(weights_dir)
    digest = file_sha256(weights_dir / "model.safetensors")[:16]
    return cache_root() / "onnx" / f"{config.model}-{config.variant}-{digest}.onnx"


def cached_onnx(weights_dir: str | Path) -> Path:
    """The ONNX export of a feed-forward weights folder, exported on first use."""
    path = cached_onnx_path(weights_dir)
    if path.is_file():
        return path
    from fetometry.inference.export import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX once (cached in %s)", Path(weights_dir).name, path.parent)
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
    return "onnx" if _onnxruntime_installed() else "torch"


def build_predictor(model: str | Path | None, backend: str = DEFAULT_BACKEND, *, tta: bool = False):
    """A Predictor for ``model`` on ``backend`` (``auto``, ``torch`` or ``onnx``).

    On onnxruntime it is an ``OnnxPredictor`` over the cached export, configured from the
    weights folder's own config.json: with the graph in the cache, no PyTorch is imported
    (the cache only ever holds feed-forward graphs). Without it, the PyTorch model is
    loaded once to choose the backend and export the graph."""
    folder = _single_weights_folder(model)
    if backend in ("auto", "onnx") and folder is not None and _onnxruntime_installed():
        config = WeightsConfig.read(folder)
        graph = cached_onnx_path(folder, config)
        if graph.is_file() and config.kind == SEGMENTER:
            return _onnx_predictor(graph, config, tta=tta)
    from fetometry.inference.predictor import Predictor
    from fetometry.models.base import is_sampled

    predictor = Predictor.from_weights(model, tta=tta)
    if resolve_backend(backend, predictor) == "torch" or predictor.config.backend == "onnxruntime":
        return predictor
    if predictor.config.members:
        raise ValueError("--backend onnx runs one model; an ensemble runs on PyTorch (--backend torch or auto)")
    if is_sampled(predictor.model):
        raise ValueError(
            f"--backend onnx runs a feed-forward model; {predictor.name} samples: use --backend torch or auto, "
            "or export it with `fetometry export` and give the .onnx file as --model"
        )
    return _onnx_predictor(cached_onnx(predictor.config.weights_dir), predictor.config, tta=tta)


def _onnx_predictor(graph: Path, config: WeightsConfig, *, tta: bool):
    """The OnnxPredictor over ``graph``, exported from the weights folder whose ``config``
    (canvas, threshold, boundary offset, quality limits) describes the graph too."""
    from fetometry.inference import onnx_session

    session = onnx_session.create_session(graph)
    if onnx_session.read_metadata(session).get(onnx_session.ROLE_KEY) != onnx_session.SEGMENTER:
        raise onnx_session.OnnxModelError(
            f"{graph}: not a feed-forward export; delete it and run again to export it anew"
        )
    config = config.replace(backend="onnxruntime", onnx_path=str(graph))
    return onnx_session.OnnxPredictor(
        session, canvas_hw=config.canvas_hw, threshold=config.threshold, config=config, tta=tta
    )


def _single_weights_folder(model: str | Path | None) -> Path | None:
    """The weights folder of one shipped or given model; None for an ensemble (a comma
    list), an ONNX file or a name that resolves to nothing (the full path reports it)."""
    from fetometry.resources import resolve_weights

    if model is not None and ("," in str(model) or str(model).endswith(".onnx")):
        return None
    try:
        folder = Path(resolve_weights(model))
    except FileNotFoundError:
        return None
    return folder if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file() else None


def _onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
