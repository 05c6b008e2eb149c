"""Quality gate: refuse to report a measurement that the segmentation does not support.

A measurement is only as good as the head outline under it. Before HC, BPD and OFD are
reported, ``assess_quality`` checks the prediction and its fitted ellipse against a few
rules, in this order, and names the first one that refuses the frame:

``no_head``         no ellipse (no head component, or no ellipse could be fitted).
``low_confidence``  the mean foreground probability inside the mask (the predictor's
                    ``confidence``) is below ``min_confidence``: the network is unsure.
``axis_ratio``      semi-minor / semi-major below ``min_axis_ratio``. A transverse head
                    section is nearly round: the cephalic index BPD/OFD is normally
                    about 0.74-0.83 (Hadlock et al., AJR 137, 1981); a much flatter
                    ellipse is a partial or oblique outline, not a head.
``head_size``       with a pixel size, the ellipse perimeter in mm (the HC before the
                    boundary offset) outside ``hc_range_mm``: a "head" of 15 mm or of
                    600 mm is a wrong segmentation or a wrong pixel size.
``head_extent``     the ellipse's area as a fraction of the image outside
                    ``extent_range`` (checked with or without a pixel size): a speck or a
                    frame-filling blob is not a head on a biometry plane.
``clipped``         more than ``max_clipped_fraction`` of the ellipse's perimeter lies
                    outside the image: the fit extrapolates a head the image cuts off.
``outside_scan``    with the image given, more than ``max_outside_scan_fraction`` of the
                    outline lies at or past the edge of the scanned area (the fan; see
                    ``biometry.field_of_view``): the sector cuts the head, and the fit
                    rounds off the part the image shows.
``mask_fit``        intersection over union between the segmented head component and
                    the fitted ellipse below ``min_mask_fit_iou``: the outline is not an
                    ellipse, so the ellipse's axes measure nothing real.

The default thresholds were chosen on TRAINING-split predictions of the shipped default
model on HC18 (``benchmarks/quality_gate.py``; the rules, thresholds and the refusal
rates on the validation split are in ``docs/QUALITY.md``).

``score`` (0..1) summarises quality in one number for display and ranking, NOT for the
decision: confidence x mask-fit IoU x (1 - clipped fraction); 0 without a head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from fetometry.biometry.ellipse import Ellipse, HeadComponent, largest_component
from fetometry.biometry.field_of_view import cut_on_opposite_sides, outside_scan_fraction, scanned_area, unseen_outline
from fetometry.biometry.measures import ramanujan_perimeter

#: Rule names in the order they are checked (the first failing one is reported).
RULES = ("no_head", "low_confidence", "axis_ratio", "head_size", "head_extent", "clipped", "outside_scan", "mask_fit")


@dataclass(frozen=True)
class QualityThresholds:
    """The limits of the gate (see the module docstring for what each one guards)."""

    min_confidence: float = 0.95
    min_axis_ratio: float = 0.59
    hc_range_mm: tuple[float, float] = (44.0, 422.0)
    extent_range: tuple[float, float] = (0.028, 0.739)
    max_clipped_fraction: float = 0.10
    min_mask_fit_iou: float = 0.90
    #: Chosen as max_clipped_fraction is, on the default model's training split
    #: (benchmarks/outside_scan.py; docs/QUALITY.md).
    max_outside_scan_fraction: float = 0.14

    def __post_init__(self) -> None:
        for name in (
            "min_confidence",
            "min_axis_ratio",
            "max_clipped_fraction",
            "min_mask_fit_iou",
            "max_outside_scan_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: use a fraction between 0 and 1")
        for name in ("hc_range_mm", "extent_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low < high:
                raise ValueError(f"{name}={(low, high)}: give (low, high) with 0 <= low < high")

    @classmethod
    def from_config(cls, config: dict | None) -> "QualityThresholds":
        """The ``"quality"`` block of a weights config.json (limits chosen for THAT model,
        e.g. by benchmarks/quality_gate.py), else the defaults. Missing keys keep their
        default; unknown keys raise."""
        block = dict((config or {}).get("quality") or {})
        unknown = set(block) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown quality thresholds {sorted(unknown)} in the config; valid: {sorted(cls.__dataclass_fields__)}"
            )
        for name in ("hc_range_mm", "extent_range"):
            if name in block:
                block[name] = tuple(block[name])
        return cls(**block)

    @classmethod
    def most_lenient(cls, limits: "list[QualityThresholds]") -> "QualityThresholds":
        """Per limit, the most lenient of several blocks (an ensemble nobody calibrated)."""
        return cls(
            min_confidence=min(q.min_confidence for q in limits),
            min_axis_ratio=min(q.min_axis_ratio for q in limits),
            hc_range_mm=(min(q.hc_range_mm[0] for q in limits), max(q.hc_range_mm[1] for q in limits)),
            extent_range=(min(q.extent_range[0] for q in limits), max(q.extent_range[1] for q in limits)),
            max_clipped_fraction=max(q.max_clipped_fraction for q in limits),
            min_mask_fit_iou=min(q.min_mask_fit_iou for q in limits),
            max_outside_scan_fraction=max(q.max_outside_scan_fraction for q in limits),
        )

    def to_config(self) -> dict:
        """The ``"quality"`` block of a config.json (ranges as lists)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


#: Chosen on TRAINING-split predictions of the default model (docs/QUALITY.md).
DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass
class QualityReport:
    """The gate's verdict. ``rule`` names the refusing rule (None when passed);
    ``detail`` says why in words; ``checks`` maps each rule to its value, limit and
    outcome (``passed`` None = not checked, e.g. ``head_size`` without a pixel size)."""

    passed: bool
    score: float
    rule: str | None
    detail: str
    checks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return asdict(self)


# ---------------------------------------------------------------------------- features


def clipped_fraction(ellipse: Ellipse, image_shape: tuple[int, int], *, samples: int = 720) -> float:
    """Fraction of the ellipse's perimeter (by arc length) outside the image.

    The image covers x in [-0.5, W - 0.5] and y in [-0.5, H - 0.5] (pixel centres at
    integers, see ``biometry.ellipse``).
    """
    height, width = image_shape
    points = ellipse.points(samples)
    segments = np.roll(points, -1, axis=0) - points
    lengths = np.hypot(segments[:, 0], segments[:, 1])
    middle = points + 0.5 * segments
    outside = (
        (middle[:, 0] < -0.5) | (middle[:, 0] > width - 0.5) | (middle[:, 1] < -0.5) | (middle[:, 1] > height - 0.5)
    )
    return float(lengths[outside].sum() / lengths.sum())


def clipped_sides(ellipse: Ellipse, image_shape: tuple[int, int], *, samples: int = 720) -> tuple[str, ...]:
    """The image edges the ellipse's outline runs past, of ("top", "bottom", "left",
    "right"), in that order (the image as ``clipped_fraction`` bounds it)."""
    height, width = image_shape
    x, y = ellipse.points(samples).T
    past = {"top": y < -0.5, "bottom": y > height - 0.5, "left": x < -0.5, "right": x > width - 0.5}
    return tuple(side for side, outside in past.items() if outside.any())


def clipped_advice(sides: tuple[str, ...]) -> str:
    """What the sonographer can do about a clipped head: a head cut on two opposite edges
    is larger than the image wherever it is put, so moving it does not help."""
    opposite = {"top", "bottom"} <= set(sides) or {"left", "right"} <= set(sides)
    if opposite:
        return "the head is larger than the image: zoom out or increase the depth until the whole skull is in view"
    if not sides:
        return "center the head in the frame"
    return f"move the head away from the {' and '.join(sides)} edge{'s' if len(sides) > 1 else ''}"


def mask_fit_iou(mask: np.ndarray, ellipse: Ellipse, *, head: HeadComponent | None = None) -> float:
    """IoU between the largest head component of ``mask`` (holes filled) and the ellipse,
    both restricted to the image.

    ``head``: that component when the ellipse fit found it already
    (``biometry.ellipse.head_from_probability`` at the threshold that made ``mask``):
    the same IoU without finding it again. Otherwise it is computed on the box holding
    every mask pixel and the ellipse: the same components and holes as on the whole image
    (outside the box there is only background), at a fraction of the cost.
    """
    mask = np.asarray(mask, dtype=bool)
    if head is not None:
        return _component_fit_iou(head, ellipse, mask.shape)
    x0, y0, x1, y1 = _ellipse_box(ellipse, *mask.shape)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        x0, y0 = min(x0, int(cols[0])), min(y0, int(rows[0]))
        x1, y1 = max(x1, int(cols[-1]) + 1), max(y1, int(rows[-1]) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    component = largest_component(mask[y0:y1, x0:x1])
    y, x = np.ogrid[y0:y1, x0:x1]
    inside = ellipse.normalised_radius(x.astype(float), y.astype(float)) <= 1.0
    union = np.count_nonzero(inside | component)
    return float(np.count_nonzero(inside & component) / union) if union else 0.0


def _component_fit_iou(head: HeadComponent, ellipse: Ellipse, image_shape: tuple[int, int]) -> float:
    """``mask_fit_iou`` from the component itself: |inside & head| counted where the
    ellipse's box and the component's window overlap, the union as |inside| + |head| - that."""
    x0, y0, x1, y1 = _ellipse_box(ellipse, *image_shape)
    y, x = np.ogrid[y0:y1, x0:x1]
    inside = ellipse.normalised_radius(x.astype(float), y.astype(float)) <= 1.0
    row0, col0 = head.origin
    height, width = head.pixels.shape
    top, bottom = max(y0, row0), min(y1, row0 + height)
    left, right = max(x0, col0), min(x1, col0 + width)
    both = 0
    if top < bottom and left < right:
        both = np.count_nonzero(
            inside[top - y0 : bottom - y0, left - x0 : right - x0]
            & head.pixels[top - row0 : bottom - row0, left - col0 : right - col0]
        )
    union = np.count_nonzero(inside) + np.count_nonzero(head.pixels) - both
    return float(both / union) if union else 0.0


def _ellipse_box(ellipse: Ellipse, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer box holding the ellipse, clipped to the image."""
    cos_a, sin_a = math.cos(ellipse.angle_rad), math.sin(ellipse.angle_rad)
    a, b = ellipse.semi_major_px, ellipse.semi_minor_px
    half_w, half_h = math.hypot(a * cos_a, b * sin_a), math.hypot(a * sin_a, b * cos_a)
    x0 = max(0, math.floor(ellipse.center_x_px - half_w))
    y0 = max(0, math.floor(ellipse.center_y_px - half_h))
    x1 = min(width, math.ceil(ellipse.center_x_px + half_w) + 1)
    y1 = min(height, math.ceil(ellipse.center_y_px + half_h) + 1)
    return x0, y0, x1, y1


def quality_features(
    prediction,
    ellipse: Ellipse | None,
    *,
    pixel_size_mm: float | None,
    image_shape: tuple[int, int],
    image: np.ndarray | None = None,
    head: HeadComponent | None = None,
) -> dict:
    """The numbers the rules look at (None where they cannot be computed).

    prediction: a ``fetometry.inference.Prediction`` on the image grid (H, W); image: the
    (H, W) grayscale image itself, for ``outside_scan_fraction`` (None: not computed);
    head: the component ``ellipse`` was fitted to, when it is the prediction mask's
    largest (``mask_fit_iou``).
    Keys: confidence, axis_ratio, perimeter_mm, extent, clipped_fraction,
    outside_scan_fraction, mask_fit_iou.
    """
    image_shape = _check_shape(prediction, image_shape)
    features = dict.fromkeys(
        ("axis_ratio", "perimeter_mm", "extent", "clipped_fraction", "outside_scan_fraction", "mask_fit_iou")
    )
    features["confidence"] = float(prediction.confidence)
    if ellipse is None:
        return features
    area_px = math.pi * ellipse.semi_major_px * ellipse.semi_minor_px
    features.update(
        axis_ratio=ellipse.axis_ratio,
        extent=area_px / (image_shape[0] * image_shape[1]),
        clipped_fraction=clipped_fraction(ellipse, image_shape),
        mask_fit_iou=mask_fit_iou(np.asarray(prediction.mask, dtype=bool), ellipse, head=head),
    )
    if image is not None:
        if np.shape(image) != image_shape:
            raise ValueError(f"the image is {np.shape(image)}, the prediction {image_shape}: give the measured image")
        features["outside_scan_fraction"] = outside_scan_fraction(ellipse, scanned_area(image))
    if pixel_size_mm is not None:
        # Ramanujan II (1914), as biometry.measures; before the boundary offset, which
        # changes HC by under 10 mm and does not matter for a plausibility range.
        features["perimeter_mm"] = ramanujan_perimeter(ellipse.semi_major_px, ellipse.semi_minor_px) * float(
            pixel_size_mm
        )
    return features


def _check_shape(prediction, image_shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) with H, W >= 1, got {image_shape}")
    if tuple(np.shape(prediction.mask)) != shape:
        raise ValueError(
            f"the prediction's mask is {np.shape(prediction.mask)} but image_shape is {shape}; "
            "pass the ORIGINAL image's (H, W), the grid the Predictor returns"
        )
    return shape


# ------------------------------------------------------------------------------- rules


def _lower(value: float | None, limit: float) -> dict:
    return {"value": value, "limit": f">= {limit:g}", "passed": None if value is None else bool(value >= limit)}


def _upper(value: float | None, limit: float) -> dict:
    return {"value": value, "limit": f"<= {limit:g}", "passed": None if value is None else bool(value <= limit)}


def _within(value: float | None, low: float, high: float) -> dict:
    return {
        "value": value,
        "limit": f"{low:g}..{high:g}",
        "passed": None if value is None else bool(low <= value <= high),
    }


def run_checks(
    features: dict, *, has_head: bool, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> dict[str, dict]:
    """Every rule's {"value", "limit", "passed"} (passed None = not checked), from the
    output of ``quality_features``; ``has_head``: an ellipse was fitted."""
    limits = thresholds
    return {
        "no_head": {"value": has_head, "limit": "an ellipse was fitted", "passed": has_head},
        "low_confidence": _lower(features["confidence"], limits.min_confidence),
        "axis_ratio": _lower(features["axis_ratio"], limits.min_axis_ratio),
        "head_size": _within(features["perimeter_mm"], *limits.hc_range_mm),
        "head_extent": _within(features["extent"], *limits.extent_range),
        "clipped": _upper(features["clipped_fraction"], limits.max_clipped_fraction),
        "outside_scan": _upper(features.get("outside_scan_fraction"), limits.max_outside_scan_fraction),
        "mask_fit": _lower(features["mask_fit_iou"], limits.min_mask_fit_iou),
    }


def refusing_rule(checks: dict[str, dict]) -> str | None:
    """The first rule (in ``RULES`` order) whose check failed; None when all passed."""
    return next((rule for rule in RULES if checks[rule]["passed"] is False), None)


_REASONS = {
    "no_head": "no head was found, so there is nothing to measure",
    "low_confidence": "the model is unsure of the head (mean probability {value:.3f}, needs {limit})",
    "axis_ratio": "the ellipse is too flat for a head section (axis ratio {value:.2f}, needs {limit}); "
    "scan a transverse plane through the thalami",
    "head_size": "the head's circumference would be {value:.0f} mm (plausible {limit} mm); "
    "check the pixel size or the segmentation",
    "head_extent": "the head covers {value:.1%} of the image (plausible {limit} of the image area); {advice}",
    "clipped": "{value:.0%} of the head's outline lies outside the image (at most {limit}); {advice}",
    "outside_scan": "{value:.0%} of the head's outline lies at or past the edge of the scanned area "
    "(at most {limit}), where the image cannot show it; {advice}",
    "mask_fit": "the segmented outline is not an ellipse (IoU with the fitted ellipse {value:.3f}, needs {limit})",
}


def _advice(
    rule: str,
    value: float,
    thresholds: QualityThresholds,
    ellipse: Ellipse | None,
    image_shape: tuple[int, int],
    image: np.ndarray | None,
) -> str:
    """What to change at the scanner, for the rules whose refusal the view explains (only
    refused frames get here, so the scanned area is found again rather than kept)."""
    if rule == "clipped":
        return clipped_advice(clipped_sides(ellipse, image_shape))
    if rule == "outside_scan":
        if cut_on_opposite_sides(*unseen_outline(ellipse, scanned_area(image))):
            return "the head is larger than the scanned area: zoom out or increase the depth until all of it is in view"
        return "move the head into the middle of the sector"
    if rule == "head_extent":
        if value < thresholds.extent_range[0]:
            return "zoom in or reduce the depth until the head fills more of the image"
        return "zoom out or increase the depth until the whole skull is in view with room around it"
    return ""


def assess_quality(
    prediction,
    ellipse: Ellipse | None,
    *,
    pixel_size_mm: float | None,
    image_shape: tuple[int, int],
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    image: np.ndarray | None = None,
    head: HeadComponent | None = None,
) -> QualityReport:
    """Check one frame; ``passed`` False means: do not report a measurement for it.

    prediction: the Predictor's output on the image grid; ellipse: the head ellipse
    fitted to it, or None when none was found; pixel_size_mm: mm per pixel or None
    (then ``head_size`` is not checked); image_shape: (H, W) of the original image;
    image: that image (None: ``outside_scan`` is not checked); head: the component the
    ellipse was fitted to, at the threshold of ``prediction.mask`` (None: found again).
    """
    features = quality_features(
        prediction, ellipse, pixel_size_mm=pixel_size_mm, image_shape=image_shape, image=image, head=head
    )
    checks = run_checks(features, has_head=ellipse is not None, thresholds=thresholds)
    failed = refusing_rule(checks)
    score = 0.0
    if ellipse is not None:
        score = features["confidence"] * features["mask_fit_iou"] * (1.0 - features["clipped_fraction"])
    if failed is None:
        return QualityReport(True, float(np.clip(score, 0.0, 1.0)), None, "all quality checks passed", checks)
    check = checks[failed]
    advice = _advice(failed, check["value"], thresholds, ellipse, image_shape, image)
    reason = _REASONS[failed].format(value=check["value"], limit=check["limit"], advice=advice)
    detail = f"refused by rule '{failed}': " + reason
    return QualityReport(False, float(np.clip(score, 0.0, 1.0)), failed, detail, checks)
