"""A weights folder's ``config.json``, typed and checked in one place.

Every surface that needs to know what a model is (its architecture, canvas, threshold,
calibrated HC offset, quality limits, second look, plane rule) reads a ``WeightsConfig``
instead of the raw JSON: a misspelt or mistyped key fails when the folder is read, by
name, not as a ``KeyError`` deep inside a run. Keys this version does not read (the
plane classifier's label list, provenance notes) are kept in ``extra`` and written back
by ``to_dict``.

Two kinds share the file (``kind``): a ``"segmenter"`` (the default: a head-segmentation
network) and a ``"plane-classifier"`` (SonoNet, ``fetometry.inference.plane``). It is
torch-free, so that listing and inspecting weights stays light.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetometry.biometry.quality import DEFAULT_THRESHOLDS, QualityThresholds

SEGMENTER = "segmenter"
PLANE_CLASSIFIER = "plane-classifier"
KINDS = (SEGMENTER, PLANE_CLASSIFIER)

#: The keys each kind must have in its config.json to be built and run.
REQUIRED = {SEGMENTER: ("model", "variant", "canvas_hw"), PLANE_CLASSIFIER: ("model", "variant")}


class WeightsConfigError(ValueError):
    """A config.json that cannot describe a model: the message names the key."""


@dataclass(frozen=True)
class WeightsConfig:
    """What a weights folder says about its model (module docstring).

    A predictor built in memory (tests, a network handed over directly) has an empty
    one: every field has the default that means "not recorded"."""

    kind: str = SEGMENTER
    #: Registry name and variant (``fetometry.models.create_model``) and its arguments.
    model: str | None = None
    variant: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    #: The folder it was read from (set by ``read``, never stored in the file).
    weights_dir: str | None = None
    #: Segmenter: the (height, width) canvas images are letterboxed onto.
    canvas_hw: tuple[int, int] | None = None
    threshold: float = 0.5
    #: Boundary offset added to the fitted ellipse's semi-axes, in pixels
    #: (``biometry.calibrate_offset_px``), and the images it was calibrated on.
    hc_offset_px: float = 0.0
    hc_offset_px_masks: float | None = None
    calibration_images: int = 0
    #: The model's own quality-gate limits (``quality`` block); None: the defaults.
    quality: QualityThresholds | None = None
    quality_calibration: Mapping[str, Any] | None = None
    #: {"margin", "max_window"} of the second look at small heads, or None (off).
    second_look: Mapping[str, float] | None = None
    #: Relative HC spread not explained by sampling (``explain.uncertainty``).
    hc_residual_fraction: float = 0.0
    #: An ensemble's member folders (``Predictor.from_ensemble``).
    members: tuple[str, ...] = ()
    #: "torch" or "onnxruntime", and the graph the latter runs.
    backend: str = "torch"
    onnx_path: str | None = None
    #: Records: the training recipe and hardware, the data set; ``status`` heads the
    #: model card of an undertrained model or a reference baseline.
    training: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    status: str | None = None
    #: Plane classifier: its decision limits (``inference.plane.PlaneRule``).
    plane_rule: Mapping[str, Any] | None = None
    #: Keys this version does not read, written back unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "config") -> "WeightsConfig":
        """A parsed config.json (or an ONNX export's metadata) -> a checked config.
        Raises WeightsConfigError naming the key that is wrong."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: _checked(key, value, source) for key, value in raw.items() if key in known}
        extra = {key: value for key, value in raw.items() if key not in known}
        kind = values.get("kind", SEGMENTER)
        if kind not in KINDS:
            raise WeightsConfigError(f"{source}: kind {kind!r} is not one of {', '.join(KINDS)}")
        return cls(**values, extra=extra)

    @classmethod
    def read(cls, folder: str | Path, *, complete: bool = True) -> "WeightsConfig":
        """A weights folder's config.json, with the keys its kind needs to build the model
        (``complete=False``: whatever it records, for a folder read for its training
        record only)."""
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder}: no config.json (a weights folder needs model.safetensors + config.json)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise WeightsConfigError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(raw, dict):
            raise WeightsConfigError(f"{path}: expected a JSON object")
        config = cls.from_dict(raw, source=str(path))
        missing = [key for key in REQUIRED[config.kind] if getattr(config, key) is None]
        if missing and complete:
            raise WeightsConfigError(f"{path}: a {config.kind} needs {', '.join(missing)}")
        return config.replace(weights_dir=str(folder))

    def replace(self, **changes: Any) -> "WeightsConfig":
        return dataclasses.replace(self, **changes)

    @property
    def thresholds(self) -> QualityThresholds:
        """The quality gate's limits: the model's own block, else the defaults."""
        return self.quality or DEFAULT_THRESHOLDS

    @property
    def recipe(self) -> Mapping[str, Any]:
        """The training recipe it records (empty when none is)."""
        return self.training.get("recipe") or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object again: every field that is recorded (not None or empty),
        ``weights_dir`` left out (it is where the file is), then ``extra``."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("extra", "weights_dir") or value is None or value in ((), {}):
                continue
            out[item.name] = _plain(value)
        return {**out, **self.extra}


def _plain(value: Any) -> Any:
    if isinstance(value, QualityThresholds):
        return value.to_config()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


_TEXT = ("kind", "model", "variant", "display_name", "weights_dir", "backend", "onnx_path", "status")
_NUMBERS = ("threshold", "hc_offset_px", "hc_offset_px_masks", "hc_residual_fraction")
_BLOCKS = ("model_kwargs", "quality_calibration", "second_look", "training", "data", "plane_rule")


def _checked(key: str, value: Any, source: str) -> Any:
    """One known key's value, checked and converted to its field's type."""
    if value is None:
        return None
    if key in _TEXT:
        if not isinstance(value, str):
            raise WeightsConfigError(f"{source}: {key!r} must be text, got {value!r}")
        return value
    if key in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WeightsConfigError(f"{source}: {key!r} must be a number, got {value!r}")
        return float(value)
    if key == "calibration_images":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise WeightsConfigError(f"{source}: 'calibration_images' must be a count, got {value!r}")
        return value
    if key in _BLOCKS:
        if not isinstance(value, Mapping):
            raise WeightsConfigError(f"{source}: {key!r} must be a JSON object, got {value!r}")
        return dict(value)
    if key == "canvas_hw":
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_positive_int(v) for v in value)):
            raise WeightsConfigError(f"{source}: 'canvas_hw' must be [height, width] in pixels, got {value!r}")
        return (int(value[0]), int(value[1]))
    if key == "members":
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise WeightsConfigError(f"{source}: 'members' must be a list of weights folders, got {value!r}")
        return tuple(value)
    if key == "quality":
        if isinstance(value, QualityThresholds):
            return value
        try:
            return QualityThresholds.from_config({"quality": value})
        except (TypeError, ValueError) as error:
            raise WeightsConfigError(f"{source}: 'quality': {error}") from None
    raise AssertionError(f"no check for {key}")  # every known field has a branch above


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
