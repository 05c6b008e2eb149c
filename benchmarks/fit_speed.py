"""The fit, gate and measurement on saved probability maps: time per image, and the same results as another checkout.

    .venv/bin/python benchmarks/fit_speed.py [--baseline-src /path/to/other/checkout/src] [--repeats 2]
        [--styles hc18,capture,combined,large-head]

The default model's probability maps of its HC18 validation split (../shared; else the
bundled images), and with ``--styles`` of the same heads rendered in other capture styles
(``evaluation.cross_scanner``), are computed once and saved. Then ``pipeline.result_from_prediction``
(ellipse fit, quality gate, HC with the model's offset; no plane check) runs on them in a
fresh process per checkout: this one, and with ``--baseline-src`` another checkout's
``src`` first on the path (e.g. a ``git worktree`` of an earlier commit), alternately
``--repeats`` times. Reports the median ms per image of each, and how far the results of
the two are apart: statuses, ellipses (every parameter, exactly) and quality scores that
differ, and the largest |HC difference|.
Writes benchmarks/results/fit_speed.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "hc18"


def save_maps(folder: Path, styles: tuple[str, ...] = ("hc18",)) -> None:
    """The default model's maps of its validation heads as .npy, with their pixel sizes,
    in each of ``styles`` (``evaluation.cross_scanner``: "hc18" is the image as it is)."""
    from fetometry.data import load
    from fetometry.data.splits import model_split
    from fetometry.evaluation.cross_scanner import render
    from fetometry.inference.backend import build_predictor
    from fetometry.resources import SAMPLES_DIR

    predictor = build_predictor(None, "auto")
    samples = load(SHARED) if (SHARED / "training_set").is_dir() else load(SAMPLES_DIR)
    validation = model_split(predictor.config).validation(samples) or samples
    meta = []
    for style in styles:
        for sample in validation:
            image, _, pixel_size_mm = render(style, sample.load_image(), sample.load_mask(), sample.pixel_size_mm)
            name = f"{style}_{sample.name}"
            np.save(folder / f"{name}.npy", predictor.predict(image).probability)
            meta.append({"name": name, "pixel_size_mm": pixel_size_mm})
    (folder / "meta.json").write_text(json.dumps(meta))


def fit_maps(folder: Path) -> dict:
    """Run in the checkout under test: every saved map through result_from_prediction."""
    from fetometry.inference.backend import build_predictor
    from fetometry.inference.predictor import Prediction
    from fetometry.pipeline import result_from_prediction

    predictor = build_predictor(None, "auto")
    rows, seconds = [], []
    for entry in json.loads((folder / "meta.json").read_text()):
        probability = np.load(folder / f"{entry['name']}.npy")
        mask = probability >= predictor.threshold
        confidence = float(probability[mask].mean()) if mask.any() else 0.0
        try:  # as the Predictor makes it: the mask's threshold travels with it
            prediction = Prediction(probability, mask, confidence, predictor.threshold)
        except TypeError:  # a checkout whose Prediction does not carry its threshold
            prediction = Prediction(probability, mask, confidence)
        start = time.perf_counter()
        result = result_from_prediction(predictor, entry["name"], prediction, entry["pixel_size_mm"])
        seconds.append(time.perf_counter() - start)
        rows.append(
            {
                "status": result.status,
                "hc_mm": None if result.measurement is None else result.measurement.hc_mm,
                "quality_score": None if result.quality is None else result.quality.score,
                "ellipse": None if result.ellipse is None else list(dataclasses.astuple(result.ellipse)),
            }
        )
    return {"ms_median": 1000 * statistics.median(seconds), "rows": rows}


def run_checkout(folder: Path, src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        [sys.executable, __file__, "--fit-maps", str(folder)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def agreement(a: list[dict], b: list[dict]) -> dict:
    both = [(x["hc_mm"], y["hc_mm"]) for x, y in zip(a, b) if x["hc_mm"] is not None and y["hc_mm"] is not None]
    return {
        "images": len(a),
        "statuses_differ": sum(x["status"] != y["status"] for x, y in zip(a, b)),
        "hc_abs_difference_max_mm": max((abs(x - y) for x, y in both), default=None),
        "ellipses_differ": sum(x.get("ellipse") != y.get("ellipse") for x, y in zip(a, b)),
        "quality_scores_differ": sum(x.get("quality_score") != y.get("quality_score") for x, y in zip(a, b)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", help="another checkout's src folder, run alternately as 'baseline'")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--styles",
        default="hc18",
        help="comma-separated renderings of the validation heads (evaluation.cross_scanner), e.g. "
        "hc18,capture,combined,large-head; the timing is over all of them",
    )
    parser.add_argument("--fit-maps", type=Path, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fit_speed.json")
    args = parser.parse_args(argv)
    if args.fit_maps:
        print(json.dumps(fit_maps(args.fit_maps)))
        return 0
    trees = {"this": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    with tempfile.TemporaryDirectory() as scratch:
        save_maps(Path(scratch), tuple(args.styles.split(",")))
        runs: dict[str, list[dict]] = {tree: [] for tree in trees}
        for _ in range(args.repeats):
            for tree, src in trees.items():
                runs[tree].append(run_checkout(Path(scratch), src))
    report = {
        "date": date.today().isoformat(),
        "baseline_src": args.baseline_src,
        "styles": args.styles.split(","),
        "ms_per_image": {tree: [round(r["ms_median"], 2) for r in results] for tree, results in runs.items()},
    }
    if args.baseline_src:
        report["agreement_with_baseline"] = agreement(runs["this"][0]["rows"], runs["baseline"][0]["rows"])
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
