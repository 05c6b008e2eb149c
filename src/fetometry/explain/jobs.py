"""The explanation jobs behind ``fetometry explain``: maps for one image, or the faithfulness evaluation of a model.

    fetometry explain IMAGE --model NAME --method gradcam|gradcampp|hirescam|occlusion|uncertainty --out DIR
    fetometry explain DATA --evaluate --model NAME --out DIR [--limit 50]

One image: for each method, ``DIR/<stem>_<method>.png`` (image, predicted ellipse and
the map, blended, with a colour bar) and ``DIR/<stem>_<method>.npy`` (float32, the map
on the ORIGINAL image grid, 0..1; for ``uncertainty`` the per-pixel SD of the members'
probabilities times 2, so 1 is the largest possible disagreement).

``--evaluate``: every check of ``fetometry.explain.quality`` over the images the model
never trained on (``fetometry.data.model_split``: its ``split.json``), ``--limit``
images spread evenly over them;
writes ``DIR/explain_<model>.json`` (per-image rows and the summary), ``.csv`` and
``.md`` (the table).

The Python API is ``write_explanations`` and ``evaluate_dataset`` below; the verb
(``fetometry.cli.explain``) only parses arguments. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fetometry.explain.methods import VERB_METHODS
from fetometry.formatting import fmt, json_safe

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- API: one image


def write_explanations(
    predictor,
    image: np.ndarray,
    stem: str,
    out_dir: str | Path,
    methods: Sequence[str] = ("gradcam",),
    *,
    pixel_size_mm: float | None = None,
    target: str = "region",
    layer: str | None = None,
    network: str | None = None,
) -> list[dict]:
    """Write ``<stem>_<method>.png`` and ``.npy`` per method; returns one dict per method
    ({method, png, npy, ...}; uncertainty adds hc_mm, hc_sd_mm, interval_mm, confidence)."""
    from fetometry.explain.cam import Explainer
    from fetometry.explain.figures import save_explanation_png
    from fetometry.explain.uncertainty import hc_uncertainty
    from fetometry.pipeline import result_from_prediction

    methods = parse_methods(methods)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prediction = predictor.predict(image)
    result = result_from_prediction(predictor, stem, prediction, pixel_size_mm, image=image)
    maps: dict[str, tuple[np.ndarray, str, str, dict]] = {}
    cams = [m for m in methods if m != "uncertainty"]
    if cams:
        explainer = Explainer(predictor, layer=layer, target=target, network=network)
        for method, explanation in explainer.explain(image, cams, prediction=prediction).items():
            where = f", layer {explanation.layer}" if explanation.layer else ""
            title = f"{method} ({predictor.name}, target {target}{where})"
            maps[method] = (
                explanation.saliency,
                title,
                f"{method} (0..1)",
                {"seconds": round(explanation.seconds, 3), "cpu_seconds": round(explanation.cpu_seconds, 3)},
            )
    if "uncertainty" in methods:
        u = hc_uncertainty(predictor, image, pixel_size_mm, prediction=prediction)
        spread = np.clip(2.0 * u["spread_map"], 0.0, 1.0).astype(np.float32)
        maps["uncertainty"] = (
            spread,
            f"uncertainty ({predictor.name}): {describe_hc(u)}",
            "2 x SD of member probabilities",
            _uncertainty_summary(u),
        )
    written = []
    for method in methods:
        saliency, title, label, extra = maps[method]
        png = save_explanation_png(
            out_dir / f"{stem}_{method}.png", image, saliency, ellipse=result.ellipse, title=title, label=label
        )
        npy = out_dir / f"{stem}_{method}.npy"
        np.save(npy, saliency.astype(np.float32))
        written.append({"method": method, "png": str(png), "npy": str(npy), **extra})
    return written


def describe_hc(u: dict) -> str:
    """'HC 175.2 +/- 1.3 mm (95%: 172.6-177.8), confidence 0.97' (px without a pixel size)."""
    if u["hc_px"] is None:
        return "no head or no ellipse in the prediction, confidence 0"
    unit, value, sd, interval = (
        ("mm", u["hc_mm"], u["hc_sd_mm"], u["interval_mm"])
        if u["hc_mm"] is not None
        else ("px", u["hc_px"], u["hc_sd_px"], u["interval_px"])
    )
    if sd is None:
        return f"HC {value:.1f} {unit}, too few members with a head for a spread, confidence {u['confidence']:.2f}"
    share = round(100 * u["coverage"])
    return f"HC {value:.1f} +/- {sd:.1f} {unit} ({share}%: {interval[0]:.1f}-{interval[1]:.1f}), confidence {u['confidence']:.2f}"


def _uncertainty_summary(u: dict) -> dict:
    keys = (
        "hc_mm",
        "hc_sd_mm",
        "interval_mm",
        "hc_px",
        "hc_sd_px",
        "interval_px",
        "confidence",
        "coverage",
        "members",
        "valid_members",
        "sources",
    )
    return {k: u[k] for k in keys}


def parse_methods(methods: Sequence[str] | str) -> list[str]:
    """'gradcam,occlusion' / ['all'] -> validated method names, in the given order."""
    from fetometry.explain.cam import ExplainError

    if isinstance(methods, str):
        methods = [methods]
    names = [m.strip() for item in methods for m in item.split(",") if m.strip()]
    if "all" in names:
        return list(VERB_METHODS)
    unknown = [m for m in names if m not in VERB_METHODS]
    if unknown or not names:
        raise ExplainError(f"unknown method(s) {unknown or names}; use {', '.join(VERB_METHODS)} or all")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------- API: evaluation


def validation_samples(data_dir: str | Path, predictor, *, split: str = "val", limit: int | None = 50) -> list:
    """Annotated samples of the images the model never trained on (``fetometry.data.
    model_split``: its split.json, else its recipe's split, folds included; an ensemble:
    the images in every member's validation split), ``limit`` of them spread evenly."""
    from fetometry.data.loaders import load_annotated
    from fetometry.data.splits import model_split

    samples = load_annotated(data_dir)
    if not samples:
        raise FileNotFoundError(f"{data_dir}: no annotated images; the evaluation needs reference masks")
    if split == "val":
        samples = model_split(predictor.config).validation(samples)
    elif split != "all":
        raise ValueError(f"unknown split {split!r}; use val or all")
    if not samples:
        raise FileNotFoundError(f"{data_dir}: none of the images is in the model's validation split")
    if limit is not None and len(samples) > limit:
        samples = [samples[i * len(samples) // limit] for i in range(limit)]
    return samples


def evaluate_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    split: str = "val",
    limit: int | None = 50,
    methods: Sequence[str] | None = None,
    network: str | None = None,
    layer: str | None = None,
    steps: int = 10,
    stages: int = 4,
    occlusion_images: int | None = 10,
    progress: bool = True,
) -> tuple[dict, dict[str, Path]]:
    """`fetometry explain --evaluate`: run the checks, write JSON, CSV and Markdown."""
    from fetometry.explain.cam import METHODS
    from fetometry.explain.quality import evaluate_explanations
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights(model)
    samples = validation_samples(data_dir, predictor, split=split, limit=limit)
    methods = [m for m in parse_methods(methods or list(METHODS)) if m != "uncertainty"]
    report = evaluate_explanations(
        predictor,
        samples,
        methods=methods,
        network=network,
        layer=layer,
        steps=steps,
        stages=stages,
        occlusion_images=occlusion_images,
        progress=progress,
    )
    from fetometry.explain.cam import is_diffusion

    report["model"] = predictor.name
    report["diffusion"] = is_diffusion(predictor.model)
    report["uncertainty_sources"] = next(
        (r["uncertainty"]["sources"] for r in report["rows"] if "uncertainty" in r), []
    )
    report["weights"] = predictor.config.weights_dir
    report["split"] = split
    tag = model_tag(predictor, network)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"explain_{tag}.json",
        "csv": out_dir / f"explain_{tag}.csv",
        "md": out_dir / f"explain_{tag}.md",
    }
    paths["json"].write_text(json.dumps(json_safe(report), indent=1, sort_keys=True))
    write_rows_csv(report["rows"], paths["csv"])
    paths["md"].write_text(explain_table([report]) + "\n\n" + calibration_table([report]) + "\n")
    return report, paths


def model_tag(predictor, network: str | None) -> str:
    """File tag: the model's name, plus '-denoiser' when the denoiser is explained."""
    name = predictor.config.model or predictor.name
    return f"{name}-denoiser" if network == "denoiser" else name


def write_rows_csv(rows: Sequence[dict], path: Path) -> Path:
    """One line per image and method (plus the image's uncertainty columns)."""
    columns = [
        "filename",
        "method",
        "localisation",
        "chance_localisation",
        "deletion_auc",
        "insertion_auc",
        "random_deletion_auc",
        "random_insertion_auc",
        "randomisation_rho_final",
        "seconds",
        "cpu_seconds",
        "hc_mm",
        "hc_sd_mm",
        "reference_hc_mm",
        "confidence",
        "error",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            u = row.get("uncertainty", {})
            base = {
                "filename": row["filename"],
                "reference_hc_mm": row.get("reference_hc_mm"),
                "hc_mm": u.get("hc_mm"),
                "hc_sd_mm": u.get("hc_sd_mm"),
                "confidence": u.get("confidence"),
                "error": row.get("error", ""),
                "chance_localisation": row.get("chance_localisation"),
                "random_deletion_auc": row.get("random_curves", {}).get("deletion_auc"),
                "random_insertion_auc": row.get("random_curves", {}).get("insertion_auc"),
            }
            for method, values in (row.get("methods") or {"": {}}).items():
                rho = values.get("randomisation_rho") or [None]
                writer.writerow(
                    {
                        **base,
                        "method": method,
                        "randomisation_rho_final": rho[-1],
                        **{
                            k: values.get(k)
                            for k in ("localisation", "deletion_auc", "insertion_auc", "seconds", "cpu_seconds")
                        },
                    }
                )
    return path


# ----------------------------------------------------------------------------- tables


def _fmt(stat: dict | None, digits: int = 3) -> str:
    """The mean of a summary statistic, or '-'."""
    return fmt((stat or {}).get("mean"), digits)


def explain_table(reports: Sequence[dict]) -> str:
    """The docs table: one row per model and method (means over the images)."""
    lines = [
        "| model | network / layer | method | n | localisation (chance) | deletion AUC (random) | insertion AUC (random) | rand. rho top 25% / all | CPU s per map (wall) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        s = report["summary"]
        network = s.get("network", "condition") if report.get("diffusion") else ""
        for method, m in s["methods"].items():
            by_stage = m.get("randomisation_rho_by_stage") or []
            first = _fmt(by_stage[0], 2) if by_stage and by_stage[0].get("n") else "-"
            where = f"{network} (input)" if method == "occlusion" else f"{network} `{s.get('layer', '')}`"
            lines.append(
                f"| {report['model']} | {where.strip()} | {method} | {m['localisation']['n']} | "
                f"{_fmt(m['localisation'])} ({_fmt(m.get('chance_localisation', s['chance_localisation']))}) | "
                f"{_fmt(m['deletion_auc'])} ({_fmt(m.get('random_deletion_auc', s['random_deletion_auc']))}) | "
                f"{_fmt(m['insertion_auc'])} ({_fmt(m.get('random_insertion_auc', s['random_insertion_auc']))}) | "
                f"{first} / {_fmt(m['randomisation_rho_final'], 2)} | {_fmt(m.get('cpu_seconds'), 2)} ({_fmt(m['seconds'], 2)}) |"
            )
    return "\n".join(lines)


def calibration_table(reports: Sequence[dict]) -> str:
    """Nominal vs observed coverage of the HC interval, per model: the member spread
    alone, and (when fitted) with the residual fitted on other held-out images."""
    lines: list[str] = []
    for report in reports:
        sources = "+".join(report.get("uncertainty_sources", [])) or "-"
        variants = [("spread only", report["summary"].get("uncertainty", {}))]
        fit = report.get("residual_calibration")
        if fit and report["summary"].get("uncertainty_calibrated"):
            label = f"+ residual {100 * fit['residual_fraction']:.1f}% (fit on {fit['images']} other val images)"
            variants.append((label, report["summary"]["uncertainty_calibrated"]))
        for label, u in variants:
            coverage = u.get("coverage", [])
            if not coverage:
                continue
            if not lines:
                lines += [
                    "| model | members | interval | n | "
                    + " | ".join(f"{round(100 * c['nominal'])}%" for c in coverage)
                    + " | mean spread SD mm | mean abs error mm | rho(spread, abs error) |",
                    "|---|---|---|---|" + "---|" * len(coverage) + "---|---|---|",
                ]
            lines.append(
                f"| {report['model']} | {sources} | {label} | {u['with_reference']} | "
                + " | ".join(f"{100 * c['observed']:.0f}%" for c in coverage)
                + f" | {_fmt(u.get('hc_sd_mm'), 2)} | {_fmt(u.get('hc_abs_error_mm'), 2)} | {u.get('spearman_sd_vs_abs_error', 0):.2f} |"
            )
    return "\n".join(lines)
