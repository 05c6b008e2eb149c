"""onnxruntime without PyTorch: sessions, the export's metadata, and the predictor over a
feed-forward graph.

    predictor = OnnxPredictor.from_file("unext.onnx")      # canvas, threshold, gate: from the file
    predictor.predict(image)                                # the one Predictor's geometry

``OnnxPredictor`` is the ``Predictor`` (letterbox, second look, windows, maps on the
original grid) with its network step on an onnxruntime session in NumPy: logits ->
sigmoid, the flip test-time augmentation flipped back and averaged in float32. Nothing
here imports PyTorch, so `fetometry measure`, `predict` and `stream` start without it once
the graph exists (``inference.backend.build_predictor`` exports it once and caches it).
A graph that is not one forward pass (MedSegDiff-V2's pair) runs through
``inference.onnx_backend``, which wraps sessions as PyTorch modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fetometry.inference.predictor import Predictor
from fetometry.threads import network_threads
from fetometry.weights_config import WeightsConfig

#: Metadata keys of an exported file (written by ``inference.export``).
ROLE_KEY = "fetometry_role"
CONFIG_KEY = "fetometry_config"
MODEL_INFO_KEY = "fetometry_model"
#: ``fetometry_role`` values.
SEGMENTER, CONDITION, DENOISER = "segmenter", "condition", "denoiser"
PLANE_CLASSIFIER = "plane-classifier"
#: The input name of a feed-forward export.
INPUT_NAME = "images"


class OnnxModelError(ValueError):
    """The file is not a fetometry ONNX export (or its partner file is missing)."""


def create_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session with ``threads`` intra-op threads (default:
    ``threads.network_threads()``, the same cores PyTorch would use)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such ONNX file; create one with `fetometry export --format onnx --out {path}`"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or network_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the plane check and the ellipse
    # fits run on the same cores between two network calls, and spinning threads took
    # half their time (the plane check measured 15.6 ms per image instead of 7.3).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def read_metadata(session_or_path) -> dict[str, str]:
    """The file's fetometry metadata (role, config JSON, model info JSON)."""
    if isinstance(session_or_path, (str, Path)):
        import onnx

        proto = onnx.load(str(session_or_path), load_external_data=False)
        return {entry.key: entry.value for entry in proto.metadata_props}
    return dict(session_or_path.get_modelmeta().custom_metadata_map)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 logistic function, without overflow warnings for large |logits|."""
    return (0.5 * (np.tanh(0.5 * logits) + 1.0)).astype(np.float32)


class OnnxPredictor(Predictor):
    """The ``Predictor`` over a feed-forward ONNX graph (images (B, 1, H, W) float32 in
    [0, 1] -> logits (B, 1, H, W)), run by onnxruntime in float32 without PyTorch.
    ``model`` is the session."""

    def _ready(self, model):
        return model  # an onnxruntime session: nothing to switch to inference mode

    @classmethod
    def from_file(cls, path: str | Path, *, threads: int | None = None, **kwargs) -> "OnnxPredictor":
        """A feed-forward export, configured from its metadata (canvas, threshold, HC offset,
        quality gate, second look). Raises OnnxModelError for any other file."""
        session = create_session(path, threads=threads)
        metadata = read_metadata(session)
        if metadata.get(ROLE_KEY) != SEGMENTER:
            raise OnnxModelError(
                f"{path}: not a feed-forward fetometry export (role {metadata.get(ROLE_KEY)!r}); "
                "create it with `fetometry export`"
            )
        config = WeightsConfig.from_dict(json.loads(metadata[CONFIG_KEY]), source=f"{path} metadata")
        if config.canvas_hw is None:
            raise OnnxModelError(f"{path}: its metadata has no canvas_hw; export it with `fetometry export`")
        kwargs.setdefault("threshold", config.threshold)
        config = config.replace(backend="onnxruntime", onnx_path=str(path))
        return cls(session, canvas_hw=config.canvas_hw, config=config, **kwargs)

    def _probabilities(self, canvases: np.ndarray) -> np.ndarray:
        """(B, h, w) canvases -> (B, h, w) foreground probabilities, float32."""
        prob = self._run(canvases)
        if self.tta:
            # Horizontal flip TTA: the flipped prediction is flipped back and averaged.
            prob = 0.5 * (prob + self._run(canvases[:, :, ::-1])[:, :, ::-1])
        return prob

    def _run(self, canvases: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(canvases[:, None], dtype=np.float32)
        return _sigmoid(self.model.run(None, {INPUT_NAME: images})[0][:, 0])


class OnnxPlaneClassifier:
    """A plane-classifier export on onnxruntime: images (B, 1, h, w) float32 in the
    classifier's convention -> (logits (B, n_labels), embedding (B, D)), as the PyTorch
    ``PlaneClassifierNetwork.classify`` computes them in float32. Its labels and input
    size come from the file's metadata."""

    kind = PLANE_CLASSIFIER

    def __init__(self, session, *, source: str = "the session"):
        metadata = read_metadata(session)
        if metadata.get(ROLE_KEY) != PLANE_CLASSIFIER:
            raise OnnxModelError(f"{source}: not a plane-classifier export (role {metadata.get(ROLE_KEY)!r})")
        info = json.loads(metadata[MODEL_INFO_KEY])
        self.session = session
        self.labels = tuple(info["labels"])
        self.head_labels = tuple(info["head_labels"])
        self.background_label = info["background_label"]
        self.input_hw = tuple(info["input_hw"])

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})
        return logits, embedding
