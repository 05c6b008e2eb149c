"""How much the MedSegDiff-V2 sampler's noise moves the headline numbers.

    .venv/bin/python benchmarks/medsegdiff_seeds.py --weights medsegdiff-v2 [--seeds 3] [--tta]

The predictor starts every image from seeded noise (``MedSegDiffV2.noise_seed``; 0 is
the shipped default), so one seed gives one reproducible score. This scores the weights
on their recipe's whole subject-grouped validation split (the `fetometry benchmark`
protocol: original resolution, calibrated HC offset, no quality gate) once per seed
0..N-1 and reports each seed's Dice, Dice ellipse and HC MAE, with their range: the
part of a difference between two MedSegDiff-V2 scores that is sampler noise.

Writes benchmarks/results/medsegdiff_seeds[_tta].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fetometry.evaluation.benchmark import model_validation_split, score_predictor
from fetometry.inference.predictor import Predictor
from fetometry.training.run import load_datasets
from fetometry.training.trainer import hardware_description

KEYS = ("dice", "dice_ellipse", "hausdorff_mm", "hc_mae_mm")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="medsegdiff-v2", help="MedSegDiff-V2 weights (name or folder)")
    parser.add_argument("--seeds", type=int, default=3, help="score with noise seeds 0..N-1")
    parser.add_argument("--tta", action="store_true", help="with flip TTA")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hc18"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    predictor = Predictor.from_weights(args.weights)
    if not hasattr(predictor.model, "noise_seed"):
        raise SystemExit(f"{args.weights}: not a diffusion model (it has no sampler noise)")
    val = model_validation_split(load_datasets(args.data), predictor)
    runs = []
    for seed in range(args.seeds):
        predictor.model.noise_seed = seed
        started = time.perf_counter()
        summary = score_predictor(predictor, val, tta=args.tta, progress=True)["summary"]
        runs.append({"noise_seed": seed, "minutes": (time.perf_counter() - started) / 60, **{k: summary[k] for k in KEYS}})
        print(json.dumps(runs[-1]), flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "weights": predictor.config.get("weights_dir", args.weights),
        "tta": args.tta,
        "n": len(val),
        "runs": runs,
        "range": {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in KEYS},
        "mean": {k: statistics.mean(r[k] for r in runs) for k in KEYS},
    }
    out = Path(args.out) / f"medsegdiff_seeds{'_tta' if args.tta else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"range over {args.seeds} seeds: " + ", ".join(f"{k} {lo:.4f}-{hi:.4f}" for k, (lo, hi) in report["range"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
