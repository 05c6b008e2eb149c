"""Calibrate and measure the plane check (SonoNet-16 + out-of-distribution distance).

    .venv/bin/python benchmarks/plane_check.py [--data ../shared/data/hc18] [--calibrate]
        [--models attention-unet,unext,...] [--out benchmarks/results/plane_check.json]

1. ``--calibrate`` (TRAINING split of the default model only, ``weights/attention-unet/
   split.json``): the embeddings of the training heads, each also re-rendered once as
   another scanner's screen capture (``data.out_of_domain.screen_capture``: the
   statistics must cover other capture styles, not only HC18's crops), give the mean
   and a shrunk covariance (10% towards its mean variance, which keeps the 64x64
   inverse stable) -> ``weights/sononet-16/head_embedding.safetensors``. The OOD limit
   is the largest training distance widened by 25%, the rule the quality gate uses for
   its ranges (docs/QUALITY.md). Written into ``weights/sononet-16/config.json``.
2. The authors' 13 example frames (their crop) must get their labels.
3. Every HC18 head: SonoNet's most probable label by reference HC band, and the heads
   a named non-head call would refuse without the size limit (why the limit exists).
   HC18 VALIDATION heads: what the plane check alone refuses, by HC band; then every
   model of ``--models`` (shipped names or comma-free ``a+b`` ensembles) measures them
   through the one measurement path with its own gate and the plane check: measured
   fraction per model.
4. Inputs that must yield no HC (``data.out_of_domain``): SonoNet's 11 non-brain
   example frames (their crop and the whole frame), 7 kinds of non-ultrasound images,
   and 5 corruptions of validation heads; measured with the default model and a pixel
   size, so an HC COULD come out. Plus heads that must still be measured: validation
   heads re-rendered as screen captures, and SonoNet's two brain frames.
5. The confidence out of its depth: AUROC of the OOD distance (and, for comparison, of
   the segmenter's confidence) for validation heads vs the inputs of 4; Spearman rank
   correlation of each score with |HC error| on the validation heads.
6. Cost: plane check per image on ONE thread (median of repeats), onnxruntime float32 as shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy_file
from scipy.stats import spearmanr

from fetometry.data import out_of_domain as ood
from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.formatting import json_safe
from fetometry.inference.plane import DEFAULT_PLANE_MODEL, PlaneChecker
from fetometry.inference.predictor import Predictor
from fetometry.io.images import read_image
from fetometry.machine import hardware_description
from fetometry.pipeline import OK, result_from_prediction
from fetometry.resources import resolve_weights

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
from convert_sononet import EXAMPLE_CROP, EXAMPLE_LABELS, classify_examples  # noqa: E402

SHRINKAGE = 0.10
RANGE_MARGIN = 0.25
HC_BANDS_MM = ((0, 100), (100, 250), (250, 1000))
DEFAULT_MODELS = "attention-unet"
#: The pixel size given to inputs that carry none, so that an HC COULD be reported.
PROBE_PIXEL_MM = 0.15


def _split(model: str = "attention-unet") -> dict:
    return json.loads((resolve_weights(model) / "split.json").read_text())


def calibrate(checker: PlaneChecker, samples: dict, folder: Path) -> dict:
    """Head-embedding statistics and the OOD limit from the TRAINING split (module doc)."""
    train = [samples[name] for name in _split()["train"]]
    images = []
    for index, sample in enumerate(train):
        image = sample.load_image()
        images += [image, ood.screen_capture(image, index)[0]]
    embeddings = np.concatenate([checker.scores(images[i : i + 16])[1] for i in range(0, len(images), 16)]).astype(
        np.float64
    )
    mean = embeddings.mean(0)
    covariance = np.cov(embeddings, rowvar=False)
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / len(mean) * np.eye(len(mean))
    precision = np.linalg.inv(shrunk)
    save_numpy_file({"mean": mean, "precision": precision}, str(folder / "head_embedding.safetensors"))
    checker.head_mean, checker.head_precision = mean, precision
    distances = checker.ood_distance(embeddings)
    limit = math.ceil(float(distances.max()) * (1 + RANGE_MARGIN) * 10) / 10
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["plane_rule"] = {**config.get("plane_rule", {}), "max_ood_distance": limit}
    config["plane_calibration"] = {
        **config.get("plane_calibration", {}),
        "images": len(images),
        "split": "weights/attention-unet/split.json train (each also as a screen capture)",
        "shrinkage": SHRINKAGE,
        "largest_training_distance": round(float(distances.max()), 3),
        "rule": "largest training distance x 1.25, rounded up to 0.1",
        "precision": "float32 (onnxruntime, as the plane check runs)",
        "date": date.today().isoformat(),
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return {"max_ood_distance": limit, **config["plane_calibration"]}


def _auroc(positives: list[float], negatives: list[float]) -> float:
    """P(score of a negative > score of a positive), ties half: higher = more out of its depth."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    return float(np.mean([(n > pos).mean() + 0.5 * (n == pos).mean() for n in neg]))


def _measured(predictor: Predictor, image: np.ndarray, plane, pixel_size_mm: float | None, name: str):
    return result_from_prediction(predictor, name, predictor.predict(image), pixel_size_mm, plane=plane)


def validation_heads(
    models: list[str], checker: PlaneChecker, samples: dict, default: Predictor
) -> tuple[dict, list[dict]]:
    """Plane check alone by HC band, and the measured fraction per model (module doc 3)."""
    val = [samples[name] for name in _split()["val"]]
    images = [s.load_image() for s in val]
    planes = checker.check_batch(images)
    rows = []
    for sample, image, plane in zip(val, images, planes):
        result = _measured(default, image, plane, sample.pixel_size_mm, sample.name)
        error = None if result.measurement is None else abs(result.measurement.hc_mm - sample.hc_mm)
        rows.append(
            dict(
                name=sample.name,
                hc_mm=sample.hc_mm,
                plane_label=plane.label,
                plane_status=result.plane.status,
                ood_distance=plane.ood_distance,
                confidence=result.prediction.confidence,
                status=result.status,
                hc_abs_error_mm=error,
            )
        )
    bands = {}
    for low, high in HC_BANDS_MM:
        band = [r for r in rows if low <= r["hc_mm"] < high]
        refused = [r["name"] for r in band if r["plane_status"] != "head_plane"]
        bands[f"{low}-{high} mm"] = {"heads": len(band), "refused_by_plane_check": len(refused), "names": refused}
    per_model = {}
    for model in models:
        own_val = {
            s.name
            for s in model_split([resolve_weights(m) for m in model.split("+")], source="split.json").validation(val)
        }
        if model == DEFAULT_MODELS:
            statuses = [r["status"] for r in rows if r["name"] in own_val]  # measured above
        else:
            predictor = Predictor.from_weights(model.replace("+", ","))
            statuses = [
                _measured(predictor, image, plane, sample.pixel_size_mm, sample.name).status
                for sample, image, plane in zip(val, images, planes)
                if sample.name in own_val
            ]
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        per_model[model] = {
            "heads": len(statuses),
            "measured": counts.get(OK, 0),
            "fraction": round(counts.get(OK, 0) / len(statuses), 4),
            "statuses": counts,
        }
        print(f"{model:45s} measured {counts.get(OK, 0)}/{len(statuses)} {counts}", flush=True)
    return {"by_hc_band": bands, "per_model": per_model}, rows


def all_heads(checker: PlaneChecker, samples: dict) -> dict:
    """SonoNet on every HC18 head, by reference HC band: its most probable label, and the
    heads its named non-head call (the rule without the size limit) would refuse."""
    ordered = list(samples.values())
    results = checker.check_batch([s.load_image() for s in ordered])
    rule = checker.rule
    bands = {}
    for low, high in HC_BANDS_MM:
        pairs = [(s, r) for s, r in zip(ordered, results) if low <= s.hc_mm < high]
        labels = [r.label for _, r in pairs]
        named = [
            dict(name=s.name, hc_mm=round(s.hc_mm, 1), label=r.other_label, probability=round(r.other_probability, 3))
            for s, r in pairs
            if r.other_probability >= rule.min_other_plane_probability
            and r.head_probability < rule.max_head_probability_for_other
        ]
        bands[f"{low}-{high} mm"] = {
            "heads": len(pairs),
            "most_probable_label": {label: labels.count(label) for label in sorted(set(labels))},
            "named_non_head_call": named,
        }
    return bands


def non_head_inputs(samples: dict) -> list[tuple[str, str, np.ndarray]]:
    """(group, name, image) of every input that must yield no HC (module doc 4)."""
    inputs = []
    frames = SHARED / "sononet" / "example_frames"
    for stem in EXAMPLE_LABELS:
        if stem.startswith("BRAIN"):
            continue
        image = read_image(frames / f"{stem}.png")
        inputs += [
            ("sononet_non_brain", f"{stem}_crop", image[EXAMPLE_CROP]),
            ("sononet_non_brain", f"{stem}_full", image),
        ]
    inputs += [("non_ultrasound", name, image) for name, image in ood.synthetic_set(5, seed=1)]
    val = [samples[name] for name in _split()["val"]][:10]
    for kind, corrupt in ood.CORRUPTIONS.items():
        inputs += [("corrupted_head", f"{kind}_{s.name}", corrupt(s.load_image(), i)) for i, s in enumerate(val)]
    return inputs


def other_style_heads(samples: dict) -> list[tuple[str, str, np.ndarray, float | None, float | None]]:
    """(group, name, image, pixel size, reference HC) of heads that must still be measured."""
    heads = []
    for i, sample in enumerate(samples[name] for name in _split()["val"]):
        screen, scale = ood.screen_capture(sample.load_image(), 10_000 + i)
        heads.append(("screen_capture_head", sample.name, screen, sample.pixel_size_mm / scale, sample.hc_mm))
    frames = SHARED / "sononet" / "example_frames"
    for stem in ("BRAIN-CB", "BRAIN-TV"):
        image = read_image(frames / f"{stem}.png")
        heads += [
            ("sononet_brain", f"{stem}_crop", image[EXAMPLE_CROP], PROBE_PIXEL_MM, None),
            ("sononet_brain", f"{stem}_full", image, PROBE_PIXEL_MM, None),
        ]
    return heads


def timing(checker: PlaneChecker, image: np.ndarray, repeats: int = 30) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # onnxruntime takes its intra-op threads from PyTorch's setting when the session is made.
        checker = PlaneChecker.from_weights(resolve_weights(DEFAULT_PLANE_MODEL))
        for _ in range(5):
            checker.check(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            checker.check(image)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {
        "threads": 1,
        "image_hw": list(image.shape),
        "median_ms": round(statistics.median(times), 2),
        "repeats": repeats,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "hc18")
    parser.add_argument(
        "--calibrate", action="store_true", help="refit the head statistics and the OOD limit (training split)"
    )
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated shipped models; a+b for an ensemble")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "plane_check.json")
    args = parser.parse_args(argv)
    samples = {s.name: s for s in load_hc18(args.data)}
    folder = resolve_weights(DEFAULT_PLANE_MODEL)
    checker = PlaneChecker.from_weights(folder)
    report: dict = {"date": date.today().isoformat(), "hardware": hardware_description(), "timing_threads": 1}
    if args.calibrate:
        report["calibration"] = calibrate(checker, samples, folder)
        checker = PlaneChecker.from_weights(folder)
    report["rule"] = checker.rule.__dict__
    examples = classify_examples(checker, SHARED / "sononet" / "example_frames")
    report["example_frames"] = {"correct": sum(r["correct"] for r in examples), "of": len(examples), "rows": examples}
    default = Predictor.from_weights(DEFAULT_MODELS)
    report["all_hc18_heads"] = all_heads(checker, samples)
    report["validation"], val_rows = validation_heads(
        [m for m in args.models.split(",") if m], checker, samples, default
    )
    negatives = []
    for group, name, image in non_head_inputs(samples):
        result = _measured(default, image, checker.check(image), PROBE_PIXEL_MM, name)
        negatives.append(
            dict(
                group=group,
                name=name,
                status=result.status,
                hc_mm=None if result.measurement is None else result.measurement.hc_mm,
                plane_label=result.plane.label,
                ood_distance=result.plane.ood_distance,
                confidence=result.prediction.confidence,
            )
        )
    positives = []
    for group, name, image, mm, reference in other_style_heads(samples):
        result = _measured(default, image, checker.check(image), mm, name)
        hc = None if result.measurement is None else result.measurement.hc_mm
        positives.append(
            dict(
                group=group,
                name=name,
                status=result.status,
                plane_status=result.plane.status,
                hc_mm=hc,
                hc_abs_error_mm=None if hc is None or reference is None else abs(hc - reference),
                ood_distance=result.plane.ood_distance,
            )
        )
    groups = sorted({n["group"] for n in negatives})
    report["non_head_inputs"] = {
        group: {
            "inputs": sum(n["group"] == group for n in negatives),
            "hc_reported": sum(n["group"] == group and n["hc_mm"] is not None for n in negatives),
            "statuses": {
                s: sum(n["group"] == group and n["status"] == s for n in negatives)
                for s in sorted({n["status"] for n in negatives})
            },
        }
        for group in groups
    }
    report["non_head_with_hc"] = [n for n in negatives if n["hc_mm"] is not None]
    report["non_head_rows"] = negatives
    report["other_style_head_rows"] = positives
    report["other_style_heads"] = {
        group: {
            "heads": sum(p["group"] == group for p in positives),
            "measured": sum(p["group"] == group and p["status"] == OK for p in positives),
            "refused_by_plane_check": sum(p["group"] == group and p["plane_status"] != "head_plane" for p in positives),
            "hc_mae_mm": _mean(
                [p["hc_abs_error_mm"] for p in positives if p["group"] == group and p["hc_abs_error_mm"] is not None]
            ),
        }
        for group in sorted({p["group"] for p in positives})
    }
    head_distances = [r["ood_distance"] for r in val_rows]
    report["confidence_auroc"] = {
        "ood_distance": round(_auroc(head_distances, [n["ood_distance"] for n in negatives]), 4),
        "segmenter_1_minus_confidence": round(
            _auroc([1 - r["confidence"] for r in val_rows], [1 - n["confidence"] for n in negatives]), 4
        ),
        "negatives": len(negatives),
        "positives": len(val_rows),
    }
    measured = [r for r in val_rows if r["hc_abs_error_mm"] is not None]
    errors = [r["hc_abs_error_mm"] for r in measured]
    report["rank_correlation_with_hc_error"] = {
        "ood_distance": round(float(spearmanr([r["ood_distance"] for r in measured], errors).statistic), 4),
        "segmenter_1_minus_confidence": round(
            float(spearmanr([1 - r["confidence"] for r in measured], errors).statistic), 4
        ),
        "images": len(measured),
    }
    report["cost"] = timing(checker, samples[_split()["val"][0]].load_image())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(report), indent=1) + "\n")
    print(json.dumps(json_safe({k: v for k, v in report.items() if k not in ("example_frames",)}), indent=1)[:6000])
    return 0


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
