"""Choose the quality gate's thresholds on TRAINING predictions; report validation rates.

    .venv/bin/python benchmarks/quality_gate.py [--data ../shared/data/hc18] [--model attention-unet] [--write-config]
    .venv/bin/python benchmarks/quality_gate.py --model attention-unet,unext,transunet,duck-net --write-config

Every model is calibrated by the same rule, on ITS OWN training split (a model's
probabilities are its own: MedSegDiff-V2's mean foreground probability sits at
0.92-0.95, the compact U-Nets' at 0.97-0.99, so one fixed limit cannot serve them all):

1. Runs the model (a shipped name or weights folder, or ``a,b,c``: the ensemble
   ``Predictor.from_ensemble`` builds) on every HC18 image of its own subject-grouped
   split (the weights folder's split.json: the split it was trained with; for an
   ensemble the members' split.json, which must be identical, else only the images in
   every member's training split train and those in every member's validation split
   validate) and records, per image, the quality features
   (``fetometry.biometry.quality.quality_features``), the predicted and reference HC.
   Cached per model in --cache (default /tmp/fetometry_quality_rows_<model>.json; rerun
   with --reuse to skip the predictions; a cache of another model is refused).
2. A frame is CORRECT when an ellipse was fitted and |HC error| <= 5% of the reference
   HC (our choice: about twice the model's mean validation error, see docs/QUALITY.md).
3. Thresholds from the CORRECT TRAINING frames only (validation never tunes anything):
   - lower limits (confidence, axis ratio, mask-fit IoU): as far below the 0.5th
     percentile as the median lies above it (the "mirror" of the central half of the
     tail), rounded DOWN to 0.01: for a normal distribution about median - 5 SD;
   - the clipped fraction is 0 for over 99.5% of frames (no percentile says anything):
     the largest training value widened by 25%, rounded UP to 0.01;
   - ranges (head perimeter in mm, image extent): the training extremes widened by 25%
     (every training head, from the first to the third trimester, fits with room);
   - ``max_outside_scan_fraction`` is not chosen here: it is one limit for every model,
     chosen by benchmarks/outside_scan.py with the clipped fraction's rule on the default
     model's training split (docs/QUALITY.md, "A head the scan sector cuts", says where
     that falls short: a model that outlines past the sector's edge would choose more).
4. Refusal rates (per rule and overall) of correct and incorrect frames on train and
   validation, with the CHOSEN thresholds (``gate``) and, for comparison, with
   ``fetometry.biometry.quality.DEFAULT_THRESHOLDS`` (``gate_defaults``); the
   validation MEASURED fraction (frames the chosen gate lets through, of all validation
   heads) is the number the project's target (>= 98%) is about.
5. HC18 holds almost no real failures of the default model, so frames that SHOULD be
   refused are made from the validation images: ``cut`` keeps the image right of the
   reference head's centre (half the head leaves the frame), ``background`` keeps the
   largest strip beside the reference head (no head at all, at least 96 px each way).

Writes benchmarks/results/quality_gate_<model>.json (an ensemble: quality_gate_ensemble_
<sorted members joined by +>.json; the default model also keeps quality_gate.json, the
same report). With --write-config the chosen block is stored where the predictor reads
it: the ``"quality"`` block of the model's config.json (nothing else in it changes),
with how it was chosen next to it under ``"quality_calibration"`` (``"quality"`` itself
takes thresholds only: QualityThresholds.from_config refuses unknown keys); an
ensemble's goes into weights/ensembles.json under its sorted member names, where
``Predictor.from_ensemble`` looks it up.
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
from fetometry.biometry.quality import (
    DEFAULT_THRESHOLDS,
    QualityThresholds,
    quality_features,
    refusing_rule,
    run_checks,
)
from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.inference.predictor import Predictor
from fetometry.resources import DEFAULT_MODEL, file_sha256, weights_root
from fetometry.training.trainer import git_commit, hardware_description

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
    features = quality_features(prediction, ellipse, pixel_size_mm=pixel_size_mm, image_shape=image.shape, image=image)
    hc = (
        measure_ellipse(ellipse, pixel_size_mm, offset_px=predictor.boundary_offset_px(prediction)).hc_mm
        if ellipse and pixel_size_mm
        else None
    )
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
            rows.append(
                dict(name=sample.name, kind=kind, shape=list(frame.shape), has_head=has_head, features=features)
            )
    return rows


def stress_rates(rows: list[dict], thresholds: QualityThresholds) -> dict:
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        rules = [verdict(r, thresholds) for r in rows if r["kind"] == kind]
        by_rule: dict[str, int] = {}
        for rule in rules:
            key = rule or "passed"
            by_rule[key] = by_rule.get(key, 0) + 1
        out[kind] = {
            "n": len(rules),
            "refused": sum(r is not None for r in rules),
            "refusal_rate": sum(r is not None for r in rules) / len(rules),
            "by_rule": by_rule,
        }
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
    for label, subset in (
        ("correct", [r for r in rows if r["correct"]]),
        ("incorrect", [r for r in rows if not r["correct"]]),
    ):
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


RULE = (
    "correct TRAINING frames only (ellipse fitted, |HC error| <= 5% of the reference HC); "
    "min_confidence, min_axis_ratio, min_mask_fit_iou: 0.5th percentile - (median - 0.5th percentile), rounded down to 0.01; "
    "max_clipped_fraction: largest value x 1.25, rounded up to 0.01; "
    "hc_range_mm, extent_range: smallest x 0.75 and largest x 1.25 (rounded out to 1 mm, 0.001)"
)
#: Where ensembles' calibrated blocks live (keyed by the sorted member folder names).
ENSEMBLES_FILE = "ensembles.json"


def member_names(model: str) -> list[str]:
    """``a,b,c`` -> [a, b, c]; one model -> [model]."""
    return [name.strip() for name in str(model).split(",") if name.strip()]


def ensemble_key(names) -> str:
    """The key of an ensemble in weights/ensembles.json: its member folder names, sorted."""
    return ",".join(sorted(Path(name).name for name in names))


def model_slug(model: str) -> str:
    """File-name part of the results: the folder name, or ensemble_<sorted members joined by +>."""
    names = member_names(model)
    if len(names) == 1:
        return Path(names[0]).name
    return "ensemble_" + ensemble_key(names).replace(",", "+")


def weights_folders(predictor: Predictor) -> list[Path]:
    """The weights folder(s) behind a predictor (an ensemble's members)."""
    if predictor.config.members:
        return [Path(m) for m in predictor.config.members]
    return [Path(predictor.config.weights_dir)]


def split_assignment(folders: list[Path]) -> tuple[dict[str, str], str]:
    """name -> "train" / "val" from the folders' split.json (``fetometry.data.model_split``),
    and how it was formed.

    One folder, or identical splits: that split. Different splits: "train" = in every
    member's training split, "val" = in every member's validation split (an image one
    member trained on is no validation image of the ensemble), the rest left out."""
    split = model_split(folders, source="split.json")
    if split.members_agree:
        how = "split.json train list" if len(folders) == 1 else "the members' split.json (identical) train list"
    else:
        how = "images in EVERY member's split.json train list (the members' splits differ)"
    return split.names(), how


def thresholds_block(thresholds: QualityThresholds) -> dict:
    """The ``"quality"`` block as JSON (tuples as lists), in the dataclass's field order."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(thresholds).items()}


def measured(rows: list[dict], thresholds: QualityThresholds) -> dict:
    """How many frames the gate lets through (of all, correct or not), and the refusals by rule."""
    rules = [verdict(r, thresholds) for r in rows]
    by_rule: dict[str, int] = {}
    for rule in rules:
        if rule is not None:
            by_rule[rule] = by_rule.get(rule, 0) + 1
    passed = sum(rule is None for rule in rules)
    return {
        "images": len(rows),
        "measured": passed,
        "measured_fraction": passed / len(rows) if rows else None,
        "refused_by_rule": by_rule,
        "refused_names": {r["name"]: rule for r, rule in zip(rows, rules) if rule is not None},
    }


def _write_json_keeping_format(path: Path, data: dict, original: str) -> None:
    """Write ``data`` as the file was written (indent 2, ASCII or not, final newline or not)."""
    ensure_ascii = json.dumps(json.loads(original), indent=2) == original.rstrip("\n")
    text = json.dumps(data, indent=2, ensure_ascii=ensure_ascii)
    path.write_text(text + ("\n" if original.endswith("\n") else ""))


def write_model_config(folder: Path, block: dict, provenance: dict) -> Path:
    """Set ``"quality"`` and ``"quality_calibration"`` in folder/config.json; every other
    key keeps its value and place (checked: the file minus those two keys is unchanged)."""
    path = folder / "config.json"
    original = path.read_text()
    config = json.loads(original)
    before = {k: v for k, v in config.items() if k not in ("quality", "quality_calibration")}
    config["quality"] = block
    config["quality_calibration"] = provenance
    _write_json_keeping_format(path, config, original)
    after = json.loads(path.read_text())
    if {k: v for k, v in after.items() if k not in ("quality", "quality_calibration")} != before:
        raise RuntimeError(f"{path}: writing the quality block changed other keys")
    return path


def write_ensemble_entry(root: Path, names: list[str], block: dict, provenance: dict) -> Path:
    """Store an ensemble's block in ROOT/ensembles.json under its sorted member names."""
    path = root / ENSEMBLES_FILE
    original = path.read_text() if path.is_file() else ""
    data = json.loads(original) if original else {}
    data.setdefault(
        "note",
        "Quality-gate thresholds of ensembles (Predictor.from_ensemble), keyed by the sorted names "
        "of their member weights folders; chosen on the members' training split by "
        "benchmarks/quality_gate.py --model a,b,c --write-config (docs/QUALITY.md). An ensemble "
        "not listed here gates with the most lenient of its members' limits, with a warning.",
    )
    ensembles = data.setdefault("ensembles", {})
    ensembles[ensemble_key(names)] = {
        "members": sorted(Path(n).name for n in names),
        "quality": block,
        "quality_calibration": provenance,
    }
    data["ensembles"] = dict(sorted(ensembles.items()))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="a shipped name, a weights folder, or a,b,c (an ensemble)"
    )
    parser.add_argument(
        "--cache", default=None, help="per-image rows (default /tmp/fetometry_quality_rows_<model>.json)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the cached per-image rows")
    parser.add_argument("--out", default=None, help="report (default benchmarks/results/quality_gate_<model>.json)")
    parser.add_argument(
        "--write-config",
        action="store_true",
        help="store the chosen block in the model's config.json (an ensemble: weights/ensembles.json)",
    )
    args = parser.parse_args(argv)
    names = member_names(args.model)
    slug = model_slug(args.model)
    predictor = Predictor.from_weights(args.model)
    folders = weights_folders(predictor)
    split_of, split_rule = split_assignment(folders)
    cache = Path(args.cache or f"/tmp/fetometry_quality_rows_{slug}.json")
    samples = [s for s in load_hc18(args.data) if s.name in split_of]
    if args.reuse and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("model", slug) != slug:
            raise SystemExit(
                f"{cache} holds the rows of {cached['model']!r}, not {slug!r}: give --cache or drop --reuse"
            )
        if {r["name"] for r in cached["rows"]} != set(split_of):
            raise SystemExit(f"{cache}: its images are not {slug}'s split; rerun without --reuse")
    else:
        cached = {"model": slug, "rows": collect(predictor, samples, split_of)}
        cache.write_text(json.dumps(cached))
    if "stress" not in cached:
        cached["stress"] = collect_stress(predictor, [s for s in samples if split_of[s.name] == "val"])
        cache.write_text(json.dumps(cached))
    rows, stress = cached["rows"], cached["stress"]
    for row in rows:  # the split as the weights say now (a cache keeps the names, not the part)
        row["split"] = split_of[row["name"]]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    chosen = choose_thresholds(train)
    date = time.strftime("%Y-%m-%d")
    commit = git_commit()
    hardware = hardware_description()
    out = Path(args.out or REPO / "benchmarks" / "results" / f"quality_gate_{slug}.json")
    train_measured, val_measured = measured(train, chosen), measured(val, chosen)
    report = {
        "date": date,
        "git_commit": commit,
        "hardware": hardware,
        "model": args.model,
        "members": [f.name for f in folders] if len(names) > 1 else None,
        "split": split_rule,
        "correct_relative_error": CORRECT_RELATIVE_ERROR,
        "quantile": QUANTILE,
        "range_margin": RANGE_MARGIN,
        "rule": RULE,
        "chosen_on_train": asdict(chosen),
        "config_quality_before": predictor.config.quality and predictor.config.quality.to_config(),
        "shipped_defaults": asdict(DEFAULT_THRESHOLDS),
        "defaults_match_choice": chosen == DEFAULT_THRESHOLDS,
        "train": {
            **_summary(train),
            "correct_fraction": sum(r["correct"] for r in train) / max(1, len(train)),
            "measured": {k: v for k, v in train_measured.items() if k != "refused_names"},
            "gate": rates(train, chosen),
            "gate_defaults": rates(train, DEFAULT_THRESHOLDS),
        },
        "val": {
            **_summary(val),
            "measured": val_measured,
            "gate": rates(val, chosen),
            "gate_defaults": rates(val, DEFAULT_THRESHOLDS),
        },
        "val_stress": stress_rates(stress, chosen),
        "val_stress_defaults": stress_rates(stress, DEFAULT_THRESHOLDS),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    written = [out]
    if len(names) == 1 and args.out is None and folders[0].name == DEFAULT_MODEL:
        legacy = REPO / "benchmarks" / "results" / "quality_gate.json"
        legacy.write_text(json.dumps(report, indent=2, sort_keys=True))
        written.append(legacy)
    if args.write_config:
        provenance = {
            "script": "benchmarks/quality_gate.py",
            "rule": RULE,
            "split": split_rule,
            "train_images": len(train),
            "correct_train_images": sum(r["correct"] for r in train),
            "date": date,
            "git_commit": commit,
            "hardware": f"{hardware['cpu']}, {hardware['threads']} threads, torch {hardware['torch']}",
            "results": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
            # Reported, never used to choose: the validation split's measured fraction.
            "validation": {k: v for k, v in val_measured.items() if k != "refused_names"},
        }
        if len(names) == 1:
            provenance["weights_sha256"] = file_sha256(folders[0] / "model.safetensors")
            written.append(write_model_config(folders[0], thresholds_block(chosen), provenance))
        else:
            roots = {f.resolve().parent for f in folders}
            if roots != {weights_root().resolve()}:
                raise SystemExit(
                    f"--write-config for an ensemble stores it in {weights_root() / ENSEMBLES_FILE}: its members must be folders there, got {[str(f) for f in folders]}"
                )
            provenance["weights_sha256"] = {f.name: file_sha256(f / "model.safetensors") for f in folders}
            written.append(
                write_ensemble_entry(weights_root(), [f.name for f in folders], thresholds_block(chosen), provenance)
            )
    print(json.dumps({k: report[k] for k in ("chosen_on_train", "defaults_match_choice")}, indent=2))
    print('its config.json "quality" block (--write-config stores it): ' + json.dumps(thresholds_block(chosen)))
    for part in ("train", "val"):
        gate = report[part]["gate"]
        print(
            f"{part}: n={report[part]['n']} correct={report[part]['correct']}; refused correct "
            f"{gate['correct']['refused']}/{gate['correct']['n']} {gate['correct']['by_rule']}, incorrect "
            f"{gate['incorrect']['refused']}/{gate['incorrect']['n']} {gate['incorrect']['by_rule']}"
        )
    print(
        f"val measured {val_measured['measured']}/{val_measured['images']} ({val_measured['measured_fraction']:.1%}) refused {val_measured['refused_names']}"
    )
    for kind, rate in report["val_stress"].items():
        print(f"val stress '{kind}': refused {rate['refused']}/{rate['n']} {rate['by_rule']}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
