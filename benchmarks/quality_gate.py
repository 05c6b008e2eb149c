"""Choose the quality gate's thresholds on TRAINING predictions; report validation rates.

    .venv/bin/python benchmarks/quality_gate.py [--data ../shared/data/hc18] [--model attention-unet]

1. Runs the model on every HC18 image of its own subject-grouped split (the weights
   folder's split.json: the split it was trained with) and records, per image, the
   quality features (``fetometry.biometry.quality.quality_features``), the predicted and
   reference HC. Cached in --cache (rerun with --reuse to skip the predictions).
2. A frame is CORRECT when an ellipse was fitted and |HC error| <= 5% of the reference
   HC (our choice: about twice the model's mean validation error, see docs/QUALITY.md).
3. Thresholds from the CORRECT TRAINING frames only (validation never tunes anything):
   - lower limits (confidence, axis ratio, mask-fit IoU): as far below the 0.5th
     percentile as the median lies above it (the "mirror" of the central half of the
     tail), rounded DOWN to 0.01: for a normal distribution about median - 5 SD;
   - the clipped fraction is 0 for over 99.5% of frames (no percentile says anything):
     the largest training value widened by 25%, rounded UP to 0.01;
   - ranges (head perimeter in mm, image extent): the training extremes widened by 25%
     (every training head, from the first to the third trimester, fits with room).
4. Refusal rates (per rule and overall) of correct and incorrect frames on train and
   validation, with the thresholds in ``fetometry.biometry.quality.DEFAULT_THRESHOLDS``
   (the script says when those differ from what it would choose).
5. HC18 holds almost no real failures of the default model, so frames that SHOULD be
   refused are made from the validation images: ``cut`` keeps the image right of the
   reference head's centre (half the head leaves the frame), ``background`` keeps the
   largest strip beside the reference head (no head at all, at least 96 px each way).
Writes benchmarks/results/quality_gate.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fetometry.biometry.ellipse import EllipseFitError, NoHeadError, ellipse_from_probability
from fetometry.biometry.measures import measure_ellipse
from fetometry.biometry.quality import DEFAULT_THRESHOLDS, QualityThresholds, quality_features, refusing_rule, run_checks
from fetometry.data.hc18 import load_hc18
from fetometry.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
#: |HC error| / reference HC at or below which a frame counts as correctly measured.
CORRECT_RELATIVE_ERROR = 0.05
QUANTILE = 0.005
RANGE_MARGIN = 0.25


def _gate_row(predictor: Predictor, image: np.ndarray, pixel_size_mm: float | None) -> tuple[dict, float | None, bool]:
    """(quality features, predicted HC in mm or None, ellipse found) for one image."""
    prediction = predictor.predict(image)
    try:
        ellipse = ellipse_from_probability(prediction.probability)
    except (NoHeadError, EllipseFitError):
        ellipse = None
    features = quality_features(prediction, ellipse, pixel_size_mm=pixel_size_mm, image_shape=image.shape)
    hc = measure_ellipse(ellipse, pixel_size_mm, offset_px=predictor.hc_offset_px).hc_mm if ellipse and pixel_size_mm else None
    return features, hc, ellipse is not None


def collect(predictor: Predictor, samples, split_of: dict[str, str]) -> list[dict]:
    """One row per image: split, features, predicted and reference HC, correctness."""
    rows = []
    for sample in tqdm(samples, desc="predicting", unit="img"):
        image = sample.load_image()
        features, hc, has_head = _gate_row(predictor, image, sample.pixel_size_mm)
        error = None if hc is None else (hc - sample.hc_mm) / sample.hc_mm
        rows.append(
            dict(
                name=sample.name,
                split=split_of[sample.name],
                shape=list(image.shape),
                pixel_size_mm=sample.pixel_size_mm,
                reference_hc_mm=sample.hc_mm,
                hc_mm=hc,
                relative_error=error,
                correct=error is not None and abs(error) <= CORRECT_RELATIVE_ERROR,
                has_head=has_head,
                features=features,
            )
        )
    return rows


#: Smallest side (px) of a ``background`` strip worth testing.
MIN_STRIP_PX = 96


def stress_frames(sample) -> dict[str, np.ndarray]:
    """Frames that should be refused, cut from one validation image (see the docstring)."""
    image, mask = sample.load_image(), sample.load_mask()
    rows, cols = np.nonzero(mask)
    frames = {"cut": image[:, int(round(cols.mean())) :]}
    strips = [image[:, : cols.min()], image[:, cols.max() + 1 :], image[: rows.min(), :], image[rows.max() + 1 :, :]]
    strips = [s for s in strips if min(s.shape) >= MIN_STRIP_PX]
    if strips:
        frames["background"] = max(strips, key=lambda s: s.size)
    return frames


def collect_stress(predictor: Predictor, samples) -> list[dict]:
    rows = []
    for sample in tqdm(samples, desc="stress frames", unit="img"):
        for kind, frame in stress_frames(sample).items():
            features, _, has_head = _gate_row(predictor, np.ascontiguousarray(frame), sample.pixel_size_mm)
            rows.append(dict(name=sample.name, kind=kind, shape=list(frame.shape), has_head=has_head, features=features))
    return rows


def stress_rates(rows: list[dict], thresholds: QualityThresholds) -> dict:
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        rules = [verdict(r, thresholds) for r in rows if r["kind"] == kind]
        by_rule: dict[str, int] = {}
        for rule in rules:
            key = rule or "passed"
            by_rule[key] = by_rule.get(key, 0) + 1
        out[kind] = {"n": len(rules), "refused": sum(r is not None for r in rules), "refusal_rate": sum(r is not None for r in rules) / len(rules), "by_rule": by_rule}
    return out


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r["features"][key] for r in rows if r["features"][key] is not None], dtype=float)


def choose_thresholds(train_rows: list[dict]) -> QualityThresholds:
    """The rule of the module docstring, on the correct training frames."""
    correct = [r for r in train_rows if r["correct"]]

    def mirrored_lower(key: str) -> float:
        values = _values(correct, key)
        tail = np.quantile(values, QUANTILE)
        return math.floor((tail - (np.median(values) - tail)) * 100) / 100

    def widened(key: str, decimals: int) -> tuple[float, float]:
        values = _values(correct, key)
        scale = 10**decimals
        low = math.floor(values.min() * (1 - RANGE_MARGIN) * scale) / scale
        high = math.ceil(values.max() * (1 + RANGE_MARGIN) * scale) / scale
        return low, high

    return QualityThresholds(
        min_confidence=mirrored_lower("confidence"),
        min_axis_ratio=mirrored_lower("axis_ratio"),
        hc_range_mm=widened("perimeter_mm", 0),
        extent_range=widened("extent", 3),
        max_clipped_fraction=widened("clipped_fraction", 2)[1],
        min_mask_fit_iou=mirrored_lower("mask_fit_iou"),
    )


def verdict(row: dict, thresholds: QualityThresholds) -> str | None:
    """The refusing rule for a cached row (None = passed): the gate's own rules on the
    stored features, exactly what ``assess_quality`` decides from the same features."""
    return refusing_rule(run_checks(row["features"], has_head=row["has_head"], thresholds=thresholds))


def rates(rows: list[dict], thresholds: QualityThresholds) -> dict:
    """Refusal counts and rates for correct and incorrect frames, per rule."""
    out = {}
    for label, subset in (("correct", [r for r in rows if r["correct"]]), ("incorrect", [r for r in rows if not r["correct"]])):
        rules = [verdict(r, thresholds) for r in subset]
        refused = [rule for rule in rules if rule is not None]
        by_rule: dict[str, int] = {}
        for rule in refused:
            by_rule[rule] = by_rule.get(rule, 0) + 1
        out[label] = {
            "n": len(subset),
            "refused": len(refused),
            "refusal_rate": len(refused) / len(subset) if subset else None,
            "by_rule": by_rule,
            "refused_names": [r["name"] for r, rule in zip(subset, rules) if rule is not None],
        }
    out["overall_refusal_rate"] = (out["correct"]["refused"] + out["incorrect"]["refused"]) / max(1, len(rows))
    return out


def _summary(rows: list[dict]) -> dict:
    errors = np.abs([r["relative_error"] for r in rows if r["relative_error"] is not None])
    return {
        "n": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "no_head": sum(not r["has_head"] for r in rows),
        "median_abs_relative_error": float(np.median(errors)) if len(errors) else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--model", default="attention-unet")
    parser.add_argument("--cache", default="/tmp/fetometry_quality_rows.json")
    parser.add_argument("--reuse", action="store_true", help="reuse the cached per-image rows")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality_gate.json"))
    args = parser.parse_args(argv)
    predictor = Predictor.from_weights(args.model)
    split = json.loads((Path(predictor.config["weights_dir"]) / "split.json").read_text())
    split_of = {name: part for part, names in split.items() for name in names}
    cache = Path(args.cache)
    samples = [s for s in load_hc18(args.data) if s.name in split_of]
    if args.reuse and cache.is_file():
        cached = json.loads(cache.read_text())
    else:
        cached = {"rows": collect(predictor, samples, split_of)}
        cache.write_text(json.dumps(cached))
    if "stress" not in cached:
        cached["stress"] = collect_stress(predictor, [s for s in samples if split_of[s.name] == "val"])
        cache.write_text(json.dumps(cached))
    rows, stress = cached["rows"], cached["stress"]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    chosen = choose_thresholds(train)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "correct_relative_error": CORRECT_RELATIVE_ERROR,
        "quantile": QUANTILE,
        "range_margin": RANGE_MARGIN,
        "chosen_on_train": asdict(chosen),
        "shipped_defaults": asdict(DEFAULT_THRESHOLDS),
        "defaults_match_choice": chosen == DEFAULT_THRESHOLDS,
        "train": {**_summary(train), "gate": rates(train, DEFAULT_THRESHOLDS)},
        "val": {**_summary(val), "gate": rates(val, DEFAULT_THRESHOLDS)},
        "val_stress": stress_rates(stress, DEFAULT_THRESHOLDS),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True))
    print(json.dumps({k: report[k] for k in ("chosen_on_train", "defaults_match_choice")}, indent=2))
    print('for another model, add to its config.json: "quality": ' + json.dumps(asdict(chosen)))
    for part in ("train", "val"):
        gate = report[part]["gate"]
        print(
            f"{part}: n={report[part]['n']} correct={report[part]['correct']}; refused correct "
            f"{gate['correct']['refused']}/{gate['correct']['n']} {gate['correct']['by_rule']}, incorrect "
            f"{gate['incorrect']['refused']}/{gate['incorrect']['n']} {gate['incorrect']['by_rule']}"
        )
    for kind, rate in report["val_stress"].items():
        print(f"val stress '{kind}': refused {rate['refused']}/{rate['n']} {rate['by_rule']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
