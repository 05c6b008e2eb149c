"""Plane recognition: is this image a fetal head plane, and is it like anything we know?

``PlaneChecker`` wraps a plane classifier (``fetometry.models.base.PlaneClassifierNetwork``,
shipped: SonoNet-16, ``weights/sononet-16``) as ``Predictor`` wraps a segmenter: it owns
the resizing and the intensity convention of the released weights and returns, per
image, the most probable plane, its probability, the probability of a head plane and a
distance to the training heads' embeddings (out-of-distribution score).

The decision (``PlaneResult.decide``; limits in ``PlaneRule``, read from the weights'
config.json; the OOD limit chosen by ``benchmarks/plane_check.py --calibrate`` on the
HC18 TRAINING split of the default model only), in this order:

1. ``out_of_distribution``: the Mahalanobis distance of the image's embedding to the
   HC18 training heads' embeddings (mean and shrunk covariance stored in the weights
   folder) exceeds ``max_ood_distance``: a photograph, noise, a screen full of text.
2. ``not_a_head_plane``: a NAMED non-head standard plane (not SonoNet's "Background")
   holds at least ``min_other_plane_probability`` while the head planes hold less than
   ``max_head_probability_for_other``, and the candidate head measures at least
   ``min_trusted_head_mm`` (or there is no pixel size to tell). SonoNet was trained on
   18-22-week scans: it calls many first-trimester heads "Lips", "Abdominal" or
   "Background", and many large third-trimester heads "Background". So "Background"
   never refuses a head, and a named call on a head under 100 mm is not trusted; the
   segmentation's own quality gate decides those.
3. Otherwise a head plane.

The classifier runs on onnxruntime in float32 (``OnnxPlaneClassifier``, over a graph
exported once from the weights and cached as the segmenters' are; ``backend="torch"``
runs the PyTorch port in float32, with the same numbers to about 1e-5), so checking a
plane needs no PyTorch.

Intensity convention of the released SonoNet weights (the authors' example script,
confirmed on their 13 example frames): grayscale, resized to 224x288 (H x W),
standardised per image (minus its mean, over its standard deviation) and multiplied by
255. fetometry's images are BT.601 luma rather than the mean over RGB; on gray
ultrasound they are the same.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from safetensors.numpy import load_file as load_numpy_file

from fetometry.inference.onnx_session import OnnxPlaneClassifier
from fetometry.resources import resolve_weights
from fetometry.weights_config import WeightsConfig

if TYPE_CHECKING:
    import torch

    from fetometry.models.base import PlaneClassifierNetwork

log = logging.getLogger(__name__)

DEFAULT_PLANE_MODEL = "sononet-16"
#: Statuses of the plane check (the `plane_status` column).
HEAD_PLANE = "head_plane"
NOT_A_HEAD_PLANE = "not_a_head_plane"
OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass(frozen=True)
class PlaneRule:
    """The limits of the plane decision (module docstring)."""

    min_other_plane_probability: float = 0.5
    max_head_probability_for_other: float = 0.1
    #: A named non-head call is trusted only for a candidate head at least this large:
    #: SonoNet was trained on 18-22-week scans, and heads under 100 mm (about 14 weeks;
    #: INTERGROWTH-21st HC mean at 14+0 weeks 97.9 mm, Papageorghiou et al., Lancet 2014)
    #: are first-trimester, where it calls many heads "Lips" or "Abdominal".
    min_trusted_head_mm: float = 100.0
    max_ood_distance: float = math.inf
    #: Ultrasound has speckle everywhere in the fan: an image whose content is flat in more
    #: than this share of its 7x7 windows (``flat_fraction``) is a drawing, a rendered
    #: shape or a blurred-away frame, whatever SonoNet's embedding says. 1.0 = off.
    max_flat_fraction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_other_plane_probability", "max_head_probability_for_other"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: use a probability between 0 and 1")
        if not 0.0 < self.max_flat_fraction <= 1.0:
            raise ValueError(f"max_flat_fraction={self.max_flat_fraction}: use a share in (0, 1]")
        if not self.max_ood_distance > 0 or not self.min_trusted_head_mm >= 0:
            raise ValueError("max_ood_distance must be positive and min_trusted_head_mm non-negative")

    @classmethod
    def from_config(cls, config: WeightsConfig) -> "PlaneRule":
        block = dict(config.plane_rule or {})
        unknown = set(block) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown plane_rule keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**block)


@dataclass
class PlaneResult:
    """One image's plane scores and verdict.

    ``label``/``probability``: the most probable plane; ``head_probability``: the head
    planes together; ``other_label``/``other_probability``: the most probable NAMED
    non-head plane; ``ood_distance``: Mahalanobis distance to the training heads (NaN
    without statistics). ``status`` is HEAD_PLANE, NOT_A_HEAD_PLANE or
    OUT_OF_DISTRIBUTION (``decide``); ``detail`` says why."""

    label: str
    probability: float
    head_probability: float
    other_label: str
    other_probability: float
    ood_distance: float
    model: str
    rule: PlaneRule = field(repr=False, default_factory=PlaneRule)
    #: Share of the image's content windows without texture (``flat_fraction``).
    flat_fraction: float = 0.0
    status: str = HEAD_PLANE
    detail: str = ""

    @property
    def head_plane(self) -> bool:
        return self.status == HEAD_PLANE

    def decide(self, head_size_mm: float | None = None) -> "PlaneResult":
        """The verdict (module docstring), given the candidate head's ellipse perimeter
        in mm when a pixel size is known (None: SonoNet's call is taken as it is)."""
        rule = self.rule
        if math.isfinite(self.ood_distance) and self.ood_distance > rule.max_ood_distance:
            detail = (
                f"the image is unlike the fetal head planes the models were trained on (distance "
                f"{self.ood_distance:.1f}, at most {rule.max_ood_distance:.1f}; the closest plane "
                f"{self.label}, {self.probability:.2f}): nothing is measured"
            )
            return replace(self, status=OUT_OF_DISTRIBUTION, detail=detail)
        if self.flat_fraction > rule.max_flat_fraction:
            detail = (
                f"{self.flat_fraction:.0%} of the image is flat, without the speckle of ultrasound (at most "
                f"{rule.max_flat_fraction:.0%}): a drawing or a blurred-away frame, not a scan; nothing is measured"
            )
            return replace(self, status=OUT_OF_DISTRIBUTION, detail=detail)
        named_other = (
            self.other_probability >= rule.min_other_plane_probability
            and self.head_probability < rule.max_head_probability_for_other
        )
        if named_other and (head_size_mm is None or head_size_mm >= rule.min_trusted_head_mm):
            detail = (
                f"this looks like a {self.other_label} plane (probability {self.other_probability:.2f}; head planes "
                f"{self.head_probability:.2f}), not a fetal head plane: nothing is measured"
            )
            return replace(self, status=NOT_A_HEAD_PLANE, detail=detail)
        if named_other:
            detail = (
                f"{self.model} calls it {self.other_label} ({self.other_probability:.2f}), but the head measures "
                f"{head_size_mm:.0f} mm, under {rule.min_trusted_head_mm:.0f} mm: first trimester, outside the "
                "classifier's 18-22-week training scans, so its call is not trusted"
            )
            return replace(self, status=HEAD_PLANE, detail=detail)
        return replace(self, status=HEAD_PLANE, detail=f"head plane ({self.label}, {self.probability:.2f})")

    def to_dict(self) -> dict:
        values = asdict(self)
        values.pop("rule")
        values["head_plane"] = self.head_plane
        return values


def flat_fraction(image: np.ndarray, *, window: int = 7, tolerance: float = 2.0 / 255) -> float:
    """Share of the 7x7 windows lying wholly in the image's content (pixels above 0.02:
    black outside the fan does not count) whose intensity SD is under 2 grey levels of
    255. Measured (``benchmarks/plane_check.py``): HC18 images 0.15 median, 0.63 at most;
    full-screen captures up to 0.75; SonoNet's 13 frames up to 0.26; rendered shapes,
    gradients, checkerboards, text pages, constants and a blurred-away head 0.97-1.0."""
    pixels = np.asarray(image, dtype=np.float32)
    mean = cv2.blur(pixels, (window, window))
    # SD < tolerance, compared as variance < tolerance^2: the same verdict without a
    # square root per pixel (a negative rounding residue counts as flat either way).
    flat = cv2.blur(pixels * pixels, (window, window)) - mean * mean < np.float32(tolerance) ** 2
    # A window lies wholly in the content where the erosion of the content mask keeps it.
    kernel = np.ones((window, window), np.uint8)
    content = cv2.erode((pixels > 0.02).view(np.uint8), kernel).view(bool)
    inside = np.count_nonzero(content)
    if inside == 0:
        return 1.0
    return np.count_nonzero(flat & content) / inside


def preprocess(image: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float image -> (h, w) float32 in SonoNet's convention (module docstring)."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2D grayscale image, got shape {image.shape}")
    height, width = input_hw
    resized = cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    spread = float(resized.std())
    # A constant image has no structure; it stays zero (and is far from every head).
    standardised = (resized - resized.mean()) / spread if spread > 1e-8 else np.zeros_like(resized)
    return (standardised * 255.0).astype(np.float32)


class PlaneChecker:
    """Plane label, head-plane probability and OOD distance for 2D grayscale images."""

    def __init__(
        self,
        model: "PlaneClassifierNetwork | OnnxPlaneClassifier",
        *,
        rule: PlaneRule,
        head_mean: np.ndarray | None = None,
        head_precision: np.ndarray | None = None,
        name: str = DEFAULT_PLANE_MODEL,
        batch_size: int = 8,
    ):
        """``model``: the classifier on onnxruntime, or a PyTorch ``PlaneClassifierNetwork``
        (run in float32); both give ``labels``, ``head_labels``, ``background_label``,
        ``input_hw`` and ``classify``."""
        if model.kind != "plane-classifier":
            raise ValueError(
                f"{type(model).__name__} is a {model.kind}; give a plane classifier (e.g. {DEFAULT_PLANE_MODEL})"
            )
        self.model = model if isinstance(model, OnnxPlaneClassifier) else model.eval().float()
        self.rule = rule
        self.head_mean = head_mean
        self.head_precision = head_precision
        self.name = name
        self.batch_size = batch_size
        labels = list(model.labels)
        self._head_index = [labels.index(label) for label in model.head_labels]
        self._other_index = [
            i for i, label in enumerate(labels) if label not in model.head_labels and label != model.background_label
        ]

    @classmethod
    def from_weights(cls, name_or_path: str | Path | None = None, *, backend: str = "onnx", **kwargs) -> "PlaneChecker":
        """A shipped plane model by name (default ``sononet-16``) or its weights folder, on
        onnxruntime (``backend="onnx"``, the graph exported once and cached) or PyTorch
        (``"torch"``, float32)."""
        folder = resolve_weights(name_or_path or DEFAULT_PLANE_MODEL)
        config = WeightsConfig.read(folder)
        if backend == "onnx":
            from fetometry.inference.backend import cached_onnx
            from fetometry.inference.onnx_session import create_session
            from fetometry.threads import beside_threads

            graph = cached_onnx(folder)
            # It runs beside the segmenter (pipeline.measure_batch), on half the cores.
            model = OnnxPlaneClassifier(create_session(graph, threads=beside_threads()), source=str(graph))
        elif backend == "torch":
            from fetometry.models import create_model
            from fetometry.models.weights import load_weights

            model = create_model(config.model, config.variant, **config.model_kwargs)
            load_weights(model, folder / "model.safetensors")
        else:
            raise ValueError(f"backend {backend!r}: choose onnx or torch")
        mean = precision = None
        stats_path = folder / "head_embedding.safetensors"
        if stats_path.is_file():
            stats = load_numpy_file(str(stats_path))
            mean, precision = stats["mean"].astype(np.float64), stats["precision"].astype(np.float64)
        return cls(
            model,
            rule=PlaneRule.from_config(config),
            head_mean=mean,
            head_precision=precision,
            name=config.display_name or folder.name,
            **kwargs,
        )

    def scores(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """images -> (probabilities (N, n_labels), embeddings (N, D)), in float32."""
        if not images:
            count = len(self.model.labels)
            return np.zeros((0, count), np.float32), np.zeros((0, 0), np.float32)
        batch = np.stack([preprocess(image, self.model.input_hw) for image in images])[:, None]
        logits, embedding = self._classify(batch)
        logits = logits.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32), embedding.astype(np.float32)

    def _classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, h, w) float32 -> (logits, embedding) as NumPy, float32 on either backend."""
        if isinstance(self.model, OnnxPlaneClassifier):
            return self.model.classify(batch)
        import torch

        with torch.no_grad():
            logits, embedding = self.model.classify(torch.from_numpy(batch))
        return logits.numpy(), embedding.numpy()

    def ood_distance(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each embedding (N, D) to the training heads (inf-free;
        NaN when the weights carry no head statistics)."""
        if self.head_mean is None or self.head_precision is None:
            return np.full(len(embeddings), np.nan)
        centred = embeddings.astype(np.float64) - self.head_mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.head_precision, centred), 0.0))

    def check_batch(self, images: list[np.ndarray]) -> list[PlaneResult]:
        """Plane scores of every image, decided without a head size (``decide`` again
        once the segmentation measured the head)."""
        results: list[PlaneResult] = []
        labels = self.model.labels
        for start in range(0, len(images), self.batch_size):
            probabilities, embeddings = self.scores(images[start : start + self.batch_size])
            batch = images[start : start + self.batch_size]
            for image, probs, distance in zip(batch, probabilities, self.ood_distance(embeddings)):
                best = int(np.argmax(probs))
                other = max(self._other_index, key=lambda i: probs[i])
                result = PlaneResult(
                    label=labels[best],
                    probability=float(probs[best]),
                    head_probability=float(probs[self._head_index].sum()),
                    other_label=labels[other],
                    other_probability=float(probs[other]),
                    ood_distance=float(distance),
                    model=self.name,
                    rule=self.rule,
                    flat_fraction=flat_fraction(image),
                )
                results.append(result.decide())
        return results

    def check(self, image: np.ndarray) -> PlaneResult:
        return self.check_batch([image])[0]


# ------------------------------------------------------------------ released weights


def convert_sononet_npz(npz_path: str | Path, model: "PlaneClassifierNetwork") -> "dict[str, torch.Tensor]":
    """The authors' Lasagne arrays (``arr_0`` ... in layer order) -> a state dict of
    ``model`` (``fetometry.models.sononet.SonoNet``).

    Each conv + batch-norm block is five arrays: W, beta, gamma, mean, inv_std (Lasagne's
    ``batch_norm`` stores the INVERSE standard deviation, sqrt(var + eps) already
    inverted). Filters are used as stored (``flip_filters=False``: a cross-correlation,
    as PyTorch's Conv2d)."""
    import torch

    arrays = np.load(str(npz_path), allow_pickle=False)
    ordered = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if len(ordered) != 5 * len(convs):
        raise ValueError(
            f"{npz_path}: {len(ordered)} arrays, expected {5 * len(convs)} for {len(convs)} conv+BN blocks"
        )
    names = {module: name for name, module in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for index, (conv, norm) in enumerate(zip(convs, norms)):
        weight, beta, gamma, mean, inv_std = ordered[5 * index : 5 * index + 5]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ValueError(f"block {index}: array shape {weight.shape} does not fit {tuple(conv.weight.shape)}")
        variance = 1.0 / inv_std.astype(np.float64) ** 2 - norm.eps
        if (variance <= 0).any():
            raise ValueError(f"block {index}: inverse std implies a non-positive variance")
        state[f"{names[conv]}.weight"] = torch.from_numpy(weight.astype(np.float32))
        prefix = names[norm]
        state[f"{prefix}.weight"] = torch.from_numpy(gamma.astype(np.float32))
        state[f"{prefix}.bias"] = torch.from_numpy(beta.astype(np.float32))
        state[f"{prefix}.running_mean"] = torch.from_numpy(mean.astype(np.float32))
        state[f"{prefix}.running_var"] = torch.from_numpy(variance.astype(np.float32))
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    return state
