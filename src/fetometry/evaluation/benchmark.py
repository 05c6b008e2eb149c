"""The model comparison table: every trained model scored on one protocol.

    fetometry benchmark --data ../shared/data/hc18 [--models a,b,...] [--tta] --out DIR

Protocol (the same for every row): the subject-grouped validation split of the models'
recipes (all rows must share it; the command refuses otherwise), each image at its
original resolution, the model's own calibrated HC offset, largest-component ellipse
fit, optional flip TTA. Per model: Dice, IoU, recall, precision, mAP, Hausdorff (mm),
HC absolute error (mean and SD, mm), within-subject HC repeatability, parameters, GMACs
and CPU latency at 256x256, and how long the model trained on which hardware (from its
weights' config; never re-timed here).

Within-subject repeatability: HC18 has several images of some subjects (``010_HC``,
``010_2HC``). For each such subject, the mean absolute HC difference over all pairs of
its images; then the mean over subjects. Computed for the model's HCs and, next to it,
for the sonographers' own reference HCs from the CSV on the same images, so the two are
comparable (the images of one subject may be different planes, so neither is zero).

Two Dice columns: "Dice" scores the segmentation mask itself; "Dice ellipse" scores the
filled fitted ellipse, the region the product measures and draws (the HC18 references
are filled ellipses too). Images without an ellipse score the mask in that column.

Writes DIR/benchmark.json, DIR/benchmark.csv, DIR/benchmark.md and DIR/benchmark.png.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fetometry.data.loaders import load_datasets
from fetometry.data.splits import model_split, subject_id
from fetometry.evaluation.metrics import SegmentationMetrics, dice
from fetometry.formatting import fmt, markdown_table

log = logging.getLogger(__name__)

#: Columns of benchmark.csv / the Markdown table, in order.
COLUMNS = [
    "model",
    "variant",
    "tta",
    "n",
    "dice",
    "dice_ellipse",
    "iou",
    "recall",
    "precision",
    "map",
    "hausdorff_mm",
    "hc_mae_mm",
    "hc_sd_mm",
    "hc_measured",
    "repeatability_model_mm",
    "repeatability_reference_mm",
    "params_m",
    "gmacs_256",
    "cpu_ms_256",
    "train_minutes",
    "train_hardware",
]


def model_validation_split(samples, predictor) -> list:
    """The validation split a model was kept away from: its recorded recipe re-applied
    to ``samples`` (``model_split(..., source="recipe")``, fixed split or k-fold fold). An
    ensemble's members must all share it: a member validated on another split has trained
    on some of these images (fold ensembles are scored on held-out data sets, not here)."""
    split = model_split(predictor.config, source="recipe")
    if not split.members_agree:
        raise ValueError(
            f"{predictor.name}: its members were validated on different splits, so some of them trained on these validation images"
        )
    return split.validation(samples)


def model_spec(name: str) -> str:
    """A benchmark model name as Predictor.from_weights takes it: ``a+b`` (an ensemble, so
    that it can sit in a comma-separated list of rows) becomes ``a,b``."""
    return name.replace("+", ",")


def within_subject_repeatability(
    names: Sequence[str], hcs: Sequence[float | None], *, subjects: Sequence[str] | None = None
) -> dict:
    """Mean over subjects of the mean |HC_i - HC_j| over pairs of one subject's images.

    Subjects come from the HC18 file names unless given. Images without an HC (None) are
    left out; subjects with fewer than two HCs are too.
    """
    subjects = subjects if subjects is not None else [subject_id(name) for name in names]
    by_subject: dict[str, list[float]] = defaultdict(list)
    for subject, hc in zip(subjects, hcs):
        if hc is not None:
            by_subject[subject].append(float(hc))
    per_subject = [
        np.mean([abs(a - b) for a, b in itertools.combinations(values, 2)])
        for values in by_subject.values()
        if len(values) > 1
    ]
    return {
        "mean_abs_difference_mm": float(np.mean(per_subject)) if per_subject else None,
        "subjects": len(per_subject),
    }


def score_predictor(predictor, samples, *, tta: bool = False, progress: bool = True) -> dict:
    """Segment, fit and measure every sample; segmentation and HC metrics over all of them."""
    from fetometry.pipeline import ImageInput, predict_images

    predictor.tta = tta
    started = time.perf_counter()
    # No quality gate: the HC18 protocol scores every image (refusals are counted elsewhere).
    results = predict_images(predictor, [ImageInput.from_sample(s) for s in samples], progress=progress, gate=False)
    seconds = time.perf_counter() - started
    metrics = SegmentationMetrics()
    statuses: dict[str, int] = defaultdict(int)
    ellipse_dice: list[float] = []
    for sample, result in zip(samples, results):
        statuses[result.status] += 1
        hc = result.measurement.hc_mm if result.measurement else None
        mask = result.prediction.mask if result.prediction is not None else None
        score = result.prediction.confidence if result.prediction is not None else None
        truth = sample.load_mask()
        metrics.add(sample.name, mask, truth, sample.pixel_size_mm, hc, sample.hc_mm, score)
        ellipse_dice.append(_ellipse_dice(result, mask, truth))
    summary = metrics.summary()
    rows = metrics.rows()
    hc_abs = [r["hc_abs_difference_mm"] for r in rows if r["hc_abs_difference_mm"] is not None]
    names = [r["name"] for r in rows]
    subjects = [s.subject for s in samples]
    flat = {name: stats["mean"] for name, stats in summary["metrics"].items()}
    flat.update(
        n=len(samples),
        statuses=dict(statuses),
        map=summary["map"],
        dice_ellipse=float(np.mean(ellipse_dice)) if ellipse_dice else None,
        hc_measured=len(hc_abs),
        hc_mae_mm=float(np.mean(hc_abs)) if hc_abs else None,
        hc_sd_mm=float(np.std(hc_abs, ddof=1)) if len(hc_abs) > 1 else None,
        repeatability_model=within_subject_repeatability(names, [r["pred_hc_mm"] for r in rows], subjects=subjects),
        repeatability_reference=within_subject_repeatability(names, [r["ref_hc_mm"] for r in rows], subjects=subjects),
        per_source=_per_source(samples, rows),
        seconds_per_image=seconds / max(1, len(samples)),
        tta=tta,
    )
    return {"summary": flat, "rows": rows}


def _ellipse_dice(result, mask: np.ndarray | None, truth: np.ndarray) -> float:
    """Dice of the filled fitted ellipse against the reference (the mask's own Dice when
    there is no ellipse; an empty prediction when there is neither)."""
    truth = truth > 0
    if result.ellipse is not None:
        region = result.ellipse.to_mask(truth.shape)
    else:
        region = mask if mask is not None else np.zeros_like(truth)
    return dice(region, truth)


def _per_source(samples, rows: list[dict]) -> dict[str, dict]:
    """Dice and HC error per data set (multi-centre validation), when there are several."""
    sources = sorted({s.source for s in samples})
    if len(sources) < 2:
        return {}
    out = {}
    for source in sources:
        mine = [r for s, r in zip(samples, rows) if s.source == source]
        hc = [r["hc_abs_difference_mm"] for r in mine if r["hc_abs_difference_mm"] is not None]
        out[source] = {
            "n": len(mine),
            "dice": float(np.mean([r["dice"] for r in mine])),
            "hc_mae_mm": float(np.mean(hc)) if hc else None,
            "hc_measured": len(hc),
        }
    return out


def model_cost(predictor, *, repeats: int = 5) -> dict:
    """Parameters, GMACs and median CPU latency of one 256x256 image (see complexity.py)."""
    from fetometry.evaluation.complexity import Inference, count_gmacs, count_parameters, cpu_latency_ms

    inference = Inference(predictor.model)
    return {
        "params": count_parameters(predictor.model),
        "gmacs_256": count_gmacs(inference),
        "cpu_ms_256": cpu_latency_ms(inference, repeats=repeats),
        "inference": inference.description,
    }


def benchmark_row(predictor, samples, *, tta: bool, progress: bool = True, repeats: int = 5) -> dict:
    """One table row (flat keys of COLUMNS) plus the raw scores and per-image rows."""
    scored = score_predictor(predictor, samples, tta=tta, progress=progress)
    s = scored["summary"]
    cost = model_cost(predictor, repeats=repeats)
    training = predictor.config.training
    row = {
        "model": predictor.name,
        "variant": predictor.config.variant or "",
        "tta": "flip" if tta else "none",
        "n": s["n"],
        "dice": s["dice"],
        "dice_ellipse": s["dice_ellipse"],
        "iou": s["iou"],
        "recall": s["recall"],
        "precision": s["precision"],
        "map": s["map"],
        "hausdorff_mm": s["hausdorff_mm"],
        "hc_mae_mm": s["hc_mae_mm"],
        "hc_sd_mm": s["hc_sd_mm"],
        "hc_measured": s["hc_measured"],
        "repeatability_model_mm": s["repeatability_model"]["mean_abs_difference_mm"],
        "repeatability_reference_mm": s["repeatability_reference"]["mean_abs_difference_mm"],
        "params_m": cost["params"] / 1e6,
        "gmacs_256": cost["gmacs_256"],
        "cpu_ms_256": cost["cpu_ms_256"],
        "train_minutes": total_training_minutes(training),
        "train_hardware": training_hardware(training),
    }
    return {"row": row, "summary": s, "cost": cost, "per_image": scored["rows"]}


def training_hardware(training: dict) -> str:
    """What trained the model ("AMD EPYC, 2 threads", or the GPU: "NVIDIA H200 GPU");
    an ensemble lists its members' kinds."""
    if "members" in training:
        return "; ".join(dict.fromkeys(training_hardware(member) for member in training["members"]))
    hardware = training.get("hardware", {})
    if not hardware:
        return "unknown"
    if "gpu" in hardware:
        return f"{hardware['gpu']} GPU"
    return f"{hardware.get('cpu', '?')}, {hardware.get('threads', '?')} threads"


def total_training_minutes(training: dict) -> float | None:
    """Wall minutes of all training legs: a run started from earlier weights (``init_from``)
    adds the minutes that trained those; an ensemble adds up its members."""
    if "members" in training:
        minutes = [total_training_minutes(member) for member in training["members"]]
        return None if None in minutes else sum(minutes)
    if not training.get("wall_time_s"):
        return None
    earlier = (training.get("initialised_from") or {}).get("wall_time_s") or 0
    return (training["wall_time_s"] + earlier) / 60


#: The results table: (column, row key, decimals); None decimals = the value as it is.
RESULTS_COLUMNS = (
    ("model", "model", None),
    ("variant", "variant", None),
    ("TTA", "tta", None),
    ("n", "n", None),
    ("Dice", "dice", 4),
    ("Dice ellipse", "dice_ellipse", 4),
    ("IoU", "iou", 4),
    ("recall", "recall", 4),
    ("mAP", "map", 4),
    ("HD mm", "hausdorff_mm", 2),
    ("HC MAE mm", "hc_mae_mm", 2),
    ("HC SD mm", "hc_sd_mm", 2),
    ("repeat. model mm", "repeatability_model_mm", 2),
    ("repeat. sonographer mm", "repeatability_reference_mm", 2),
    ("params M", "params_m", 2),
    ("GMACs", "gmacs_256", 2),
    ("CPU ms", "cpu_ms_256", 0),
    ("trained min", "train_minutes", 0),
    ("hardware", "train_hardware", None),
)


def results_table(rows: Sequence[dict]) -> str:
    """The benchmark's Markdown table: one row per model (and TTA mode)."""
    cells = [
        [r.get(key) if digits is None else fmt(r.get(key), digits) for _, key, digits in RESULTS_COLUMNS] for r in rows
    ]
    return markdown_table([name for name, _, _ in RESULTS_COLUMNS], cells)


def write_outputs(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """benchmark.json (everything), .csv and .md (the table), .png (HC error vs latency)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [entry["row"] for entry in report["models"]]
    paths = {
        "json": out / "benchmark.json",
        "csv": out / "benchmark.csv",
        "md": out / "benchmark.md",
        "png": out / "benchmark.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True, default=float))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    protocol = report["protocol"]
    paths["md"].write_text(
        f"Date {report['date']}; scored on {report['hardware']['cpu']} ({report['hardware']['threads']} threads), "
        f"torch {report['hardware']['torch']}.\n\nProtocol: {protocol}\n\n{results_table(rows)}\n{_per_source_table(report)}"
    )
    _plot(rows, paths["png"])
    return paths


def _per_source_table(report: dict) -> str:
    """Metrics per data set (multi-centre validation); empty for a single data set."""
    rows = [
        [entry["row"]["model"], entry["row"]["tta"], source, m["n"], fmt(m["dice"], 4), fmt(m["hc_mae_mm"], 2)]
        for entry in report["models"]
        for source, m in entry["summary"].get("per_source", {}).items()
    ]
    if not rows:
        return ""
    table = markdown_table(["model", "TTA", "source", "n", "Dice", "HC MAE mm"], rows)
    return f"\nPer data set:\n\n{table}\n"


def _plot(rows: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        if r["hc_mae_mm"] is None:
            continue
        ax.scatter(r["cpu_ms_256"], r["hc_mae_mm"], s=30 + 200 * (r["dice"] or 0) ** 8)
        ax.annotate(
            f"{r['model']} ({r['tta']})",
            (r["cpu_ms_256"], r["hc_mae_mm"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("CPU latency per 256x256 image (ms, median)")
    ax.set_ylabel("HC mean absolute error (mm)")
    ax.set_title("fetometry benchmark (marker size ~ Dice)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_benchmark(
    models: Sequence[str],
    data: str | Path | list,
    out_dir: str | Path,
    *,
    tta_modes: Sequence[bool] = (False,),
    progress: bool = True,
    repeats: int = 5,
) -> dict:
    """Load each shipped model (name or weights folder), score it on the shared split."""
    from fetometry.inference.predictor import Predictor
    from fetometry.machine import hardware_description

    samples = load_datasets(data)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "data": [str(d) for d in data] if isinstance(data, (list, tuple)) else str(data),
        "models": [],
    }
    split_names: list[str] | None = None
    for name in models:
        predictor = Predictor.from_weights(name)
        val = model_validation_split(samples, predictor)
        names = sorted(s.name for s in val)
        if split_names is not None and names != split_names:
            raise ValueError(
                f"{name}: its recipe's validation split differs from the first model's; the table needs one protocol"
            )
        split_names = names
        for tta in tta_modes:
            log.info("benchmark: %s (tta=%s) on %d validation images", name, tta, len(val))
            report["models"].append(benchmark_row(predictor, val, tta=tta, progress=progress, repeats=repeats))
    recipe = predictor.config.recipe
    report["protocol"] = (
        f"subject-grouped validation split (val_fraction {recipe['val_fraction']}, split_seed {recipe['split_seed']}, "
        f"{len(split_names or [])} images of {len({subject_id(n) for n in split_names or []})} subjects), original resolution, "
        "largest component, robust ellipse fit, HC offset calibrated on the training split; latency: one 256x256 image, "
        "bf16 autocast + channels_last, median of repeated runs in this process"
    )
    report["paths"] = {k: str(v) for k, v in write_outputs(report, out_dir).items()}
    return report
