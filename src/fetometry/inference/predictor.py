"""The one predictor for every feed-forward model.

Resizing is this module's private business: images are letterboxed onto the model's
canvas, logits become probabilities, optional flip test-time augmentation averages the
probabilities, and the map is returned on the ORIGINAL image grid with the mask and a
confidence score (mean foreground probability inside the mask).

PyTorch is imported where a PyTorch network runs, not with this module: the predictor on
onnxruntime (``inference.onnx_session.OnnxPredictor``) starts without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fetometry.data.transforms import Letterbox, letterbox, unletterbox
from fetometry.resources import resolve_weights
from fetometry.weights_config import SEGMENTER, WeightsConfig, WeightsConfigError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """probability: (H, W) float32 in [0, 1]; mask: (H, W) bool; both on the input grid.
    threshold: the level that cut ``mask`` from ``probability`` (None: not known).
    canvas_scale: canvas pixels per input pixel of the network pass that drew the head
    (the second look's, where it looked again; None: not known), which sets the boundary
    offset in input pixels (``Predictor.boundary_offset_px``)."""

    probability: np.ndarray
    mask: np.ndarray
    confidence: float
    threshold: float | None = None
    canvas_scale: float | None = None


def _is_onnx(path: Path) -> bool:
    """An exported file, or a folder holding a MedSegDiff-V2 export (condition.onnx)."""
    return path.suffix == ".onnx" or (path.is_dir() and (path / "condition.onnx").is_file())


#: The frame every shipped model's ``hc_offset_px`` was calibrated on: an 800x540 HC18
#: image, segmented whole (the first look). The offset is in its pixels.
OFFSET_REFERENCE_HW = (540, 800)


def offset_reference_scale(canvas_hw: tuple[int, int]) -> float:
    """Canvas pixels per input pixel of an 800x540 frame segmented whole on ``canvas_hw``:
    the pass ``hc_offset_px`` holds for."""
    return Letterbox(*OFFSET_REFERENCE_HW, *canvas_hw).scale


#: The second look's settings when a weights config turns it on without its own.
DEFAULT_SECOND_LOOK = {"margin": 1.5, "max_window": 0.8}


def head_window(
    mask: np.ndarray, canvas_hw: tuple[int, int], *, margin: float = 1.5, max_window: float = 0.8
) -> tuple[slice, slice] | None:
    """(rows, cols) of a window of the canvas's aspect ratio around the largest component
    of ``mask``, ``margin`` times its box, inside the frame; None when there is no
    component or the window would cover ``max_window`` or more of the frame's height or width."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    aspect = canvas_hw[1] / canvas_hw[0]
    win_h = margin * max(h, w / aspect)
    win_w = win_h * aspect
    frame_h, frame_w = mask.shape
    if win_h >= max_window * frame_h or win_w >= max_window * frame_w:
        return None
    top = int(round(min(max(y + h / 2 - win_h / 2, 0), frame_h - win_h)))
    left = int(round(min(max(x + w / 2 - win_w / 2, 0), frame_w - win_w)))
    return slice(top, top + int(round(win_h))), slice(left, left + int(round(win_w)))


def _inside_window(mask: np.ndarray, window: tuple[slice, slice], frame_shape: tuple[int, int]) -> bool:
    """Whether the largest component of ``mask`` (the window's) keeps off every edge of
    the window that lies inside the frame (an edge on the frame's border may be touched:
    the first look would see no more of the head there)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return False
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    rows, cols = window
    height, width = mask.shape
    touches = {
        "top": y == 0 and rows.start > 0,
        "bottom": y + h == height and rows.start + height < frame_shape[0],
        "left": x == 0 and cols.start > 0,
        "right": x + w == width and cols.start + width < frame_shape[1],
    }
    return not any(touches.values())


class Predictor:
    """Wraps a network that maps (B, 1, h, w) images to (B, 1, h, w) logits."""

    def __init__(
        self,
        model: "nn.Module",
        *,
        canvas_hw: tuple[int, int],
        threshold: float = 0.5,
        tta: bool = False,
        config: WeightsConfig | dict | None = None,
        batch_size: int = 4,
    ):
        self.model = self._ready(model)
        self.canvas_hw = tuple(canvas_hw)
        self.threshold = threshold
        self.tta = tta
        #: What the weights folder says about the model (empty for a network built in
        #: memory; a dict is read as a config.json would be).
        self.config = config if isinstance(config, WeightsConfig) else WeightsConfig.from_dict(config or {})
        self.batch_size = batch_size
        #: {"margin", "max_window"} of the second look at small heads, or None (off).
        self.second_look = self.config.second_look

    def _ready(self, model: "nn.Module") -> "nn.Module":
        """The network as the predictor keeps it: a PyTorch module in inference mode."""
        return model.eval()

    @classmethod
    def from_weights(cls, name_or_path: str | Path | None = None, **kwargs) -> "Predictor":
        """Load a shipped model by name, a weights folder (model.safetensors + config.json),
        or an ONNX export (``*.onnx``, or a MedSegDiff-V2 export folder), run by onnxruntime."""
        if name_or_path is not None and "," in str(name_or_path):
            return cls.from_ensemble(str(name_or_path).split(","), **kwargs)
        if name_or_path is not None and _is_onnx(Path(name_or_path)):
            from fetometry.inference.onnx_backend import load_onnx_predictor

            return load_onnx_predictor(name_or_path, **kwargs)
        from fetometry.models import create_model
        from fetometry.models.weights import load_weights

        folder = resolve_weights(name_or_path)
        config = WeightsConfig.read(folder)
        if config.kind != SEGMENTER:
            raise WeightsConfigError(f"{folder}: a {config.kind}, not a head segmenter")
        model = create_model(config.model, config.variant, **config.model_kwargs)
        load_weights(model, folder / "model.safetensors")
        kwargs.setdefault("threshold", config.threshold)
        return cls(model, canvas_hw=config.canvas_hw, config=config, **kwargs)

    @classmethod
    def from_ensemble(cls, names_or_paths: list[str | Path], **kwargs) -> "Predictor":
        """Average the probabilities of several weights folders (e.g. the k folds of one
        recipe, nnU-Net style). They must share the canvas; the HC offset is their mean
        (each was calibrated on its own training split)."""
        if len(names_or_paths) < 2:
            raise ValueError("an ensemble needs at least two models")
        members = [cls.from_weights(name) for name in names_or_paths]
        canvases = {m.canvas_hw for m in members}
        if len(canvases) > 1:
            raise ValueError(f"ensemble members use different canvases {sorted(canvases)}; train them with one recipe")
        first = members[0].config
        folders = [m.config.weights_dir or m.name for m in members]
        config = first.replace(
            weights_dir=None,
            display_name="ensemble(" + ", ".join(m.name for m in members) + ")",
            hc_offset_px=float(np.mean([m.hc_offset_px for m in members])),
            members=tuple(folders),
            # Each member's own training record: the benchmark checks that all of them were
            # validated on the same split (or the ensemble has seen its validation images)
            # and adds up their training time.
            training={
                "recipe": first.recipe or None,
                "hardware": first.training.get("hardware", {}),
                "members": [m.config.training for m in members],
            },
        )
        # The quality gate's limits: the ensemble's own, chosen on its training split
        # (weights/ensembles.json), else, for an ensemble nobody calibrated, per limit the
        # most lenient of the members' blocks.
        from fetometry.biometry.quality import QualityThresholds
        from fetometry.resources import calibrated_ensemble

        key, entry = calibrated_ensemble([m.config.weights_dir for m in members])
        if entry is not None:
            config = config.replace(
                quality=QualityThresholds.from_config(entry),  # a bad stored block fails here, by name
                quality_calibration={**entry.get("quality_calibration", {}), "ensemble": key, "calibrated": True},
            )
        else:
            lenient = QualityThresholds.most_lenient([m.config.thresholds for m in members])
            uncalibrated = [folder for folder, m in zip(folders, members) if m.config.quality is None]
            config = config.replace(
                quality=lenient,
                quality_calibration={
                    "calibrated": False,
                    "rule": "not calibrated as an ensemble: per limit, the most lenient of the members' quality blocks",
                    "uncalibrated_members": uncalibrated,
                },
            )
            log.warning(
                "ensemble %s is not calibrated (not in weights/ensembles.json): its quality gate takes, per limit, "
                "the most lenient of its members' limits%s; calibrate it with "
                "benchmarks/quality_gate.py --model a,b,c --write-config",
                config.display_name,
                f" (members without a calibrated block, on the defaults: {uncalibrated})" if uncalibrated else "",
            )
        kwargs.setdefault("threshold", first.threshold)
        from fetometry.inference.ensemble import ProbabilityEnsemble

        return cls(
            ProbabilityEnsemble([m.model for m in members]), canvas_hw=members[0].canvas_hw, config=config, **kwargs
        )

    @property
    def name(self) -> str:
        return self.config.display_name or self.config.model or "model"

    def boundary_offset_px(self, prediction: Prediction) -> float:
        """The HC boundary offset in ``prediction``'s input pixels.

        The network draws the head's boundary a fixed distance off the reference ellipse in
        pixels of the canvas it sees, wherever the canvas came from: for each set of the
        default's weights, its medians stay within 0.15 canvas px of each other over HC18
        frames resampled from 0.35x to 1.5x and over full-screen captures of any size, while
        in input pixels they vary fourfold (benchmarks/resolution.py; results/resolution_*.md).
        So the offset, which
        ``hc_offset_px`` gives in pixels of an 800x540 frame segmented whole, scales with
        the canvas pixels per input pixel of the pass that drew the head: twice as many
        input pixels in a frame of twice the resolution, fewer for a head the second look
        magnified. Without the pass's scale, ``hc_offset_px`` as it stands (docs/BENCHMARKS.md,
        "The boundary offset follows the network's resolution")."""
        return self.offset_at(prediction.canvas_scale)

    def offset_at(self, canvas_scale: float | None, offset_px: float | None = None) -> float:
        """``offset_px`` (default ``hc_offset_px``, pixels of an 800x540 frame segmented
        whole) in input pixels of a pass at ``canvas_scale`` (None: as it stands)."""
        offset_px = self.hc_offset_px if offset_px is None else offset_px
        if canvas_scale is None:
            return offset_px
        return offset_px * (self.offset_reference_scale / canvas_scale)

    @property
    def offset_reference_scale(self) -> float:
        """``offset_reference_scale`` of this predictor's canvas."""
        return offset_reference_scale(self.canvas_hw)

    @property
    def hc_offset_px(self) -> float:
        """The calibrated boundary offset (biometry.calibrate_offset_px), in pixels of an
        800x540 frame segmented whole; ``boundary_offset_px`` gives it for a prediction."""
        return self.config.hc_offset_px

    def _probabilities(self, canvases: np.ndarray) -> np.ndarray:
        """(B, h, w) canvases -> (B, h, w) foreground probabilities."""
        import torch

        x = torch.from_numpy(canvases)[:, None].contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            prob = self._forward_proba(x)
            if self.tta:
                # Horizontal flip TTA: the flipped prediction is flipped back and averaged.
                flipped = self._forward_proba(torch.flip(x, dims=[-1]))
                prob = 0.5 * (prob + torch.flip(flipped, dims=[-1]))
        return prob[:, 0].numpy()

    def _forward_proba(self, x: "torch.Tensor") -> "torch.Tensor":
        """A sampled model's diffusion sampler (its default steps and ensemble); else a
        ``SegmentationNetwork``'s ``predict_proba`` or the sigmoid of the logits. The
        sampler is built per call: it reads the model's settings (``noise_seed``) then."""
        from fetometry.inference.diffusion import DiffusionSampler
        from fetometry.models.base import foreground_probability, is_sampled

        if is_sampled(self.model):
            return DiffusionSampler(self.model).predict_proba(x).float()
        return foreground_probability(self.model, x)

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        """images: list of (H_i, W_i) float32 in [0, 1] -> predictions on each image's grid."""
        if not images:
            return []
        boxes: list[Letterbox] = []
        canvases = []
        for image in images:
            if image.ndim != 2:
                raise ValueError(f"expected a 2D grayscale image, got shape {image.shape}")
            canvas, box = letterbox(image, self.canvas_hw)
            canvases.append(canvas)
            boxes.append(box)
        probs = self._probabilities(np.stack(canvases))
        maps = [np.clip(unletterbox(prob, box), 0.0, 1.0) for prob, box in zip(probs, boxes)]
        scales = [box.scale for box in boxes]
        if self.second_look is not None:
            maps, scales = self._second_look(images, maps, scales)
        return [self._prediction(full, scale) for full, scale in zip(maps, scales)]

    def _prediction(self, full: np.ndarray, canvas_scale: float) -> Prediction:
        mask = full >= self.threshold
        confidence = float(full[mask].mean()) if mask.any() else 0.0
        return Prediction(full, mask, confidence, self.threshold, canvas_scale)

    def next_window(self, prediction: Prediction) -> tuple[slice, slice] | None:
        """The second look's window around ``prediction``'s head, for ``predict_in_window``
        on the next frames of a loop; None when the second look is off or does not apply."""
        if self.second_look is None:
            return None
        return head_window(prediction.mask, self.canvas_hw, **self.second_look)

    def predict_in_window(self, images: list[np.ndarray], window: tuple[slice, slice]) -> list[Prediction | None]:
        """The second look alone, at a window carried from an earlier frame: one network
        pass per image instead of two. The map is the window's, zero outside it. None for
        an image whose head is not inside the window (no component, or the largest one
        touches an edge of the window that is not an edge of the frame): it needs
        ``predict_batch``. Used by ``fetometry stream``, where the head moves a few pixels
        between frames (``fetometry.stream.processor``)."""
        if not images:
            return []
        crops = [image[window] for image in images]
        canvases, boxes = zip(*(letterbox(crop, self.canvas_hw) for crop in crops))
        probs = self._probabilities(np.stack(canvases))
        predictions: list[Prediction | None] = []
        for image, prob, box in zip(images, probs, boxes):
            inside = np.clip(unletterbox(prob, box), 0.0, 1.0)
            if not _inside_window(inside >= self.threshold, window, image.shape):
                predictions.append(None)
                continue
            full = np.zeros(image.shape, dtype=np.float32)
            full[window] = inside
            predictions.append(self._prediction(full, box.scale))
        return predictions

    def _second_look(
        self, images: list[np.ndarray], maps: list[np.ndarray], scales: list[float]
    ) -> tuple[list[np.ndarray], list[float]]:
        """Segment small heads again at a higher resolution: a window around the first
        look's largest component, ``margin`` times its box and of the canvas's shape, is
        letterboxed onto the whole canvas, and its map replaces the first one inside the
        window. A head already filling most of the frame (window >= ``max_window`` of the
        frame's height or width) keeps its first map. Returns the maps and each one's
        canvas scale at the head (the window's where it looked again)."""
        windows = [head_window(m >= self.threshold, self.canvas_hw, **self.second_look) for m in maps]
        todo = [i for i, w in enumerate(windows) if w is not None]
        if not todo:
            return maps, scales
        crops = [images[i][windows[i]] for i in todo]
        canvases, boxes = zip(*(letterbox(crop, self.canvas_hw) for crop in crops))
        probs = self._probabilities(np.stack(canvases))
        maps, scales = list(maps), list(scales)
        for i, prob, box in zip(todo, probs, boxes):
            refined = maps[i].copy()
            refined[windows[i]] = np.clip(unletterbox(prob, box), 0.0, 1.0)
            maps[i], scales[i] = refined, box.scale
        return maps, scales

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]
