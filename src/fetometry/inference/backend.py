"""The backend a predictor runs on: PyTorch, or onnxruntime on a graph exported from the same weights."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("torch", "onnx")


def build_predictor(model: str | Path | None, backend: str, work_dir: Path):
    """A Predictor for ``model`` running on PyTorch or on onnxruntime (exported into work_dir)."""
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights(model)
    if backend == "torch":
        return predictor
    if backend != "onnx":
        raise ValueError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    from fetometry.inference.export import export_onnx
    from fetometry.inference.onnx_backend import load_onnx_model

    # Exported from the same weights folder, so the PyTorch predictor's config (canvas,
    # threshold, boundary offset) describes the ONNX graph too.
    files = export_onnx(predictor.config["weights_dir"], work_dir / "model.onnx")
    config = {**predictor.config, "backend": "onnxruntime"}
    return Predictor(
        load_onnx_model(files[0]), canvas_hw=predictor.canvas_hw, threshold=predictor.threshold, config=config
    )
