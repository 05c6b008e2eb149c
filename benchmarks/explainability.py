"""Explainability benchmark: faithfulness, sanity and uncertainty calibration per model.

One model per run (CPU is scarce; each writes its own JSON):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explainability.py --model unext
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explainability.py --model medsegdiff-v2 --network denoiser

then the docs table from every JSON in the results folder:

    .venv/bin/python benchmarks/explainability.py --markdown   # rewrites docs/EXPLAINABILITY.md's tables

Per model, on ``--limit`` (50) images spread evenly over the validation split of the
model's own recipe (``weights/<name>/split.json``): localisation, deletion / insertion
AUC, cascading-randomisation rank correlation and seconds per map for Grad-CAM,
Grad-CAM++, HiResCAM (all images) and occlusion (the first ``--occlusion-images``), plus
the HC uncertainty interval's nominal vs observed coverage (its residual, fitted on up
to ``--calibration-images`` other validation images, is cached under
results/calibration_cache/, so the denoiser run reuses the condition run's fit).
``--figures`` also writes docs/images/explain_<model>.png (the maps of one image) and
explain_<model>_sanity.png (its randomisation cascade and deletion / insertion curves).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = REPO / "docs" / "EXPLAINABILITY.md"
TABLE_MARKERS = ("<!-- explain-table:start -->", "<!-- explain-table:end -->")
CALIBRATION_MARKERS = ("<!-- calibration-table:start -->", "<!-- calibration-table:end -->")
FIGURE_MARKERS = ("<!-- explain-figures:start -->", "<!-- explain-figures:end -->")
#: Folder (under --out) of residual fits shared between runs; see cached_residual_fit.
CALIBRATION_CACHE = "calibration_cache"


def run_model(args) -> Path:
    from fetometry.explain.jobs import evaluate_dataset, model_tag
    from fetometry.inference.predictor import Predictor
    from fetometry.training.trainer import hardware_description

    started = time.perf_counter()
    # One scratch folder per run: two runs at once (condition and denoiser) must not share it.
    with_tmp = Path(args.out) / f"tmp_explain_{Path(str(args.model)).name}_{args.network or 'default'}"
    report, paths = evaluate_dataset(
        args.data,
        with_tmp,
        model=args.model,
        limit=args.limit,
        network=args.network,
        steps=args.steps,
        stages=args.stages,
        occlusion_images=args.occlusion_images,
    )
    report.update(
        date=time.strftime("%Y-%m-%d"),
        hardware=hardware_description(),
        torch_threads=torch.get_num_threads(),
        wall_time_s=time.perf_counter() - started,
        settings={
            "limit": args.limit,
            "steps": args.steps,
            "stages": args.stages,
            "occlusion_images": args.occlusion_images,
            "network": args.network,
        },
    )
    predictor = Predictor.from_weights(args.model)
    calibrate(predictor, args, report)
    out = Path(args.out) / f"explain_{model_tag(predictor, args.network)}.json"
    out.write_text(json.dumps(report, indent=1, sort_keys=True, default=float))
    for path in paths.values():
        path.unlink(missing_ok=True)
    with_tmp.rmdir()
    if args.figures:
        figures(predictor, args, report["residual_calibration"]["residual_fraction"])
    print(f"wrote {out} in {report['wall_time_s'] / 60:.1f} min")
    return out


def calibrate(predictor, args, report: dict) -> None:
    """Fit the residual relative HC error on the validation images NOT evaluated (up to
    ``--calibration-images``), then the coverage of the evaluated ones with it."""
    from fetometry.explain.jobs import validation_samples
    from fetometry.explain.quality import calibration

    evaluated = {row["filename"] for row in report["rows"]}
    held_out = [s for s in validation_samples(args.data, predictor, limit=None) if s.name not in evaluated]
    held_out = held_out[: args.calibration_images]
    fit = cached_residual_fit(predictor, held_out, Path(args.out) / CALIBRATION_CACHE)
    report["residual_calibration"] = fit
    rows = [row["uncertainty"] for row in report["rows"] if "uncertainty" in row]
    report["summary"]["uncertainty_calibrated"] = calibration(rows, residual_fraction=fit["residual_fraction"])


def calibration_key(predictor, held_out) -> str | None:
    """A hash of everything the residual fit depends on: the weights file, the weights
    config (HC offset, threshold, canvas, ...), the images with their reference HC and
    pixel size, and fetometry's code. None for a predictor without a weights folder
    (an ensemble or an ONNX export): nothing to key on, so it is never cached."""
    import fetometry

    folder = predictor.config.weights_dir
    if not folder or not (Path(folder) / "model.safetensors").is_file():
        return None
    digest = hashlib.sha256((Path(folder) / "model.safetensors").read_bytes())
    digest.update(json.dumps(predictor.config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(json.dumps([(s.name, s.pixel_size_mm, s.hc_mm) for s in held_out]).encode())
    for source in sorted(Path(fetometry.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:24]


def cached_residual_fit(predictor, held_out, cache: Path) -> dict:
    """``calibrate_residual(predictor, held_out)``, fitted once per ``calibration_key``.

    MedSegDiff-V2's two runs (condition and denoiser network) fit the same residual on the
    same images with the same seeded sampler (16 CPU minutes each, identical results):
    the second one reads the first one's fit from ``cache``. A lock per key makes a run
    started at the same time wait for the other's fit instead of repeating it."""
    import fcntl

    from fetometry.explain.uncertainty import calibrate_residual

    key = calibration_key(predictor, held_out)
    if key is None:
        return calibrate_residual(predictor, held_out)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{key}.json"
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.is_file():
            print(f"residual calibration: reusing {path} (same weights, config, images and code)")
            return json.loads(path.read_text())
        fit = calibrate_residual(predictor, held_out)
        partial = path.with_suffix(".partial")  # an interrupted write must not leave a half file under the key
        partial.write_text(json.dumps(fit, indent=1))
        partial.replace(path)
    return fit


def calibrate_only(args) -> Path:
    """Add the residual calibration to an existing results JSON."""
    from fetometry.explain.jobs import model_tag
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights(args.model)
    path = Path(args.out) / f"explain_{model_tag(predictor, args.network)}.json"
    report = json.loads(path.read_text())
    calibrate(predictor, args, report)
    path.write_text(json.dumps(report, indent=1, sort_keys=True, default=float))
    print(f"residual {report['residual_calibration']}; updated {path}")
    return path


def figures_only(args) -> None:
    from fetometry.explain.jobs import model_tag
    from fetometry.inference.predictor import Predictor

    predictor = Predictor.from_weights(args.model)
    path = Path(args.out) / f"explain_{model_tag(predictor, args.network)}.json"
    residual = (
        json.loads(path.read_text()).get("residual_calibration", {}).get("residual_fraction")
        if path.is_file()
        else None
    )
    figures(predictor, args, residual)


def figures(predictor, args, residual_fraction: float | None = None) -> None:
    """The maps of the first evaluated image and its sanity checks, for the docs; the HC
    interval uses the residual fitted by ``calibrate`` (the config's when None)."""
    from fetometry.explain.cam import Explainer
    from fetometry.explain.figures import save_panel_grid
    from fetometry.explain.jobs import describe_hc, model_tag, validation_samples
    from fetometry.explain.uncertainty import hc_uncertainty
    from fetometry.pipeline import result_from_prediction

    sample = validation_samples(args.data, predictor, limit=args.limit)[0]
    image = sample.load_image()
    prediction = predictor.predict(image)
    ellipse = result_from_prediction(predictor, sample.name, prediction, sample.pixel_size_mm).ellipse
    explainer = Explainer(predictor, network=args.network)
    maps = explainer.explain(image, prediction=prediction)
    # HiResCAM: Grad-CAM's channel-mean weights cannot follow the signed band target
    # (docs/EXPLAINABILITY.md), HiResCAM's element-wise ones can.
    boundary = Explainer(predictor, network=args.network, target="boundary").explain(
        image, ["hirescam"], prediction=prediction
    )["hirescam"]
    u = hc_uncertainty(
        predictor, image, sample.pixel_size_mm, prediction=prediction, residual_fraction=residual_fraction
    )
    panels = [
        {"image": image, "saliency": e.saliency, "ellipse": ellipse, "title": f"{m} ({e.cpu_seconds:.2f} CPU s)"}
        for m, e in maps.items()
    ]
    panels.append(
        {"image": image, "saliency": boundary.saliency, "ellipse": ellipse, "title": "hirescam, boundary target"}
    )
    panels.append(
        {
            "image": image,
            "saliency": np.clip(2 * u["spread_map"], 0, 1),
            "ellipse": ellipse,
            "title": "uncertainty (2 x SD of members)\n" + describe_hc(u).replace(", confidence", "\nconfidence"),
        }
    )
    tag = model_tag(predictor, args.network)
    where = f"{args.network} network, " if args.network else ""
    title = f"{predictor.name}: {where}{sample.name} (reference HC {sample.hc_mm:.1f} mm), layer {explainer.layer}"
    save_panel_grid(REPO / "docs" / "images" / f"explain_{tag}.png", panels, columns=3, title=title)
    canvas_maps = {m: e.canvas_map for m, e in maps.items()}
    sanity_figure(
        explainer,
        explainer.canvas(image, prediction),
        canvas_maps,
        REPO / "docs" / "images" / f"explain_{tag}_sanity.png",
        sample.name,
    )


def sanity_figure(explainer, canvas, canvas_maps: dict, path: Path, name: str) -> None:
    """Row 1: Grad-CAM of the trained model and of each cascading-randomisation stage;
    row 2: deletion and insertion curves of every method and of a random ranking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetometry.explain.cam import to_original
    from fetometry.explain.quality import PerturbationCurves, cascade_randomisation

    cascade = cascade_randomisation(explainer, canvas, {"gradcam": canvas_maps["gradcam"]}, keep_maps=True)
    fig, axes = plt.subplots(2, 1 + len(cascade), figsize=(3.2 * (1 + len(cascade)), 6.4))
    row = [("trained", canvas_maps["gradcam"], 1.0)]
    row += [
        (f"{100 * s['share']:.0f}% of layers randomised", s["maps"]["gradcam"], s["rho"]["gradcam"]) for s in cascade
    ]
    for ax, (title, canvas_map, rho) in zip(axes[0], row):
        ax.imshow(to_original(canvas_map, canvas.box), cmap="jet", vmin=0, vmax=1)
        ax.set_title(f"Grad-CAM, {title}\nrank correlation with trained {rho:.2f}", fontsize=8)
        ax.axis("off")
    curves = PerturbationCurves(explainer, canvas)
    results = {m: curves(canvas_map) for m, canvas_map in canvas_maps.items()}
    results["random ranking"] = curves.random_baseline()
    shares = curves.shares
    for ax, kind in zip(axes[1][:2], ("deletion", "insertion")):
        for method, r in results.items():
            ax.plot(
                shares,
                r[f"{kind}_curve"],
                label=f"{method} (AUC {r[f'{kind}_auc']:.2f})",
                linestyle="--" if method.startswith("random") else "-",
            )
        ax.set_xlabel(
            f"share of pixels {'deleted (set to 0)' if kind == 'deletion' else 'inserted into a blurred image'}",
            fontsize=8,
        )
        ax.set_ylabel("mean head probability in the prediction", fontsize=8)
        ax.set_title(kind, fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.suptitle(f"{explainer.predictor.name}: sanity checks on {name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(args) -> str:
    """Tables from every results/explain_*.json; rewrites them in docs/EXPLAINABILITY.md."""
    from fetometry.explain.jobs import calibration_table, explain_table
    from fetometry.explain.quality import summarise

    reports = [json.loads(p.read_text()) for p in sorted(Path(args.out).glob("explain_*.json"))]
    if not reports:
        raise SystemExit(f"no explain_*.json in {args.out}: run with --model first")
    for report in reports:  # recomputed from the rows: one definition for runs of any date
        report["summary"].update(summarise(report["rows"], list(report["summary"]["methods"])))
    order = ["attention-unet", "unext", "duck-net", "transunet", "medsegdiff-v2"]
    reports.sort(
        key=lambda r: (order.index(r["model"]) if r["model"] in order else 99, r["settings"].get("network") or "")
    )
    table, calibration = explain_table(reports), calibration_table(reports)
    stamp = ", ".join(f"{r['model']} {r['date']}" for r in reports)
    table += f"\n\nRuns: {stamp}; one CPU thread ({reports[0]['hardware']['cpu']}, shared with training: CPU seconds of the process, wall seconds in brackets)."
    figures_md = figure_links(reports)
    if DOCS.is_file():
        text = DOCS.read_text()
        for markers, body in ((TABLE_MARKERS, table), (CALIBRATION_MARKERS, calibration), (FIGURE_MARKERS, figures_md)):
            pattern = re.compile(re.escape(markers[0]) + ".*?" + re.escape(markers[1]), re.S)
            text = pattern.sub(lambda _: f"{markers[0]}\n{body}\n{markers[1]}", text)
        DOCS.write_text(text)
    return table + "\n\n" + calibration


def figure_links(reports) -> str:
    """Markdown image links for every evaluated model whose figures exist."""
    lines = []
    for report in reports:
        tag = report["model"] + ("-denoiser" if report["settings"].get("network") == "denoiser" else "")
        for suffix, what in (("", "maps"), ("_sanity", "sanity checks")):
            if (REPO / "docs" / "images" / f"explain_{tag}{suffix}.png").is_file():
                lines.append(f"![{tag}: {what}](images/explain_{tag}{suffix}.png)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="shipped model name or weights folder")
    parser.add_argument("--network", choices=("condition", "denoiser"), help="MedSegDiff-V2: which network to explain")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--occlusion-images", type=int, default=10)
    parser.add_argument(
        "--calibration-images", type=int, default=100, help="held-out val images to fit the HC residual on"
    )
    parser.add_argument(
        "--calibrate-only", action="store_true", help="only (re)fit the HC residual into an existing JSON"
    )
    parser.add_argument("--figures", action="store_true", help="also write docs/images/explain_<model>*.png")
    parser.add_argument(
        "--figures-only", action="store_true", help="only the figures (residual from the existing JSON)"
    )
    parser.add_argument("--markdown", action="store_true", help="build the docs tables from all JSONs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.markdown:
        print(markdown(args))
        return 0
    if not args.model:
        parser.error("give --model NAME (or --markdown)")
    if args.calibrate_only:
        calibrate_only(args)
        return 0
    if args.figures_only:
        figures_only(args)
        return 0
    run_model(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
