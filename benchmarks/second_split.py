"""Is the in-domain figure split luck? One recipe trained from scratch on two subject splits.

    .venv/bin/python benchmarks/second_split.py [--config configs/unext-scanners-split1.toml]
        [--seeds 0,1] [--runs runs/second_split] [--data ../shared/data/hc18]

The shipped default fine-tunes weights that trained on split 0, so it cannot be re-split.
This trains the from-scratch form of its recipe (``--config``; its ``split_seed`` is
replaced by each of ``--seeds``) once per split into RUNS/split_SEED (a finished run is
reused, an interrupted one resumes), then scores each model on its OWN validation split
with the foundation protocol (``benchmarks/foundation.py``'s ``accuracy``: original
resolution, every image, no gate, no TTA). The spread between the splits is the part of
a single-split figure that is split luck. Writes benchmarks/results/second_split.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.inference.predictor import Predictor
from fetometry.machine import hardware_description
from fetometry.training.config import TrainConfig
from fetometry.training.run import train_and_export

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from foundation import accuracy  # noqa: E402

KEYS = ("dice", "hausdorff_mm", "hc_abs_difference_mm", "hc_difference_mm")


def run_split(recipe: Path, seed: int, samples, runs: Path, data: str) -> dict:
    config = TrainConfig.from_file(recipe, split_seed=seed)
    run_dir = runs / f"split_{seed}"
    folder = run_dir / "model"
    started = time.perf_counter()
    if not (folder / "config.json").is_file():
        train_and_export(config, data, run_dir, samples=samples)
    predictor = Predictor.from_weights(folder)
    val = model_split(predictor.config, source="recipe").validation(samples)
    scores = accuracy(predictor, val, tta=False)
    return {
        "split_seed": seed,
        "weights": str(folder),
        "train_minutes": predictor.config.training.get("wall_time_s", 0) / 60,
        "seconds_this_run": round(time.perf_counter() - started, 1),
        **{key: scores[key] for key in ("n", "statuses", *KEYS)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "unext-scanners-split1.toml")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "second_split")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    samples = load_hc18(args.data)
    rows = [run_split(args.config, int(seed), samples, args.runs, args.data) for seed in args.seeds.split(",")]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "recipe": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "splits": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "second_split.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| split seed | n | Dice | Hausdorff mm | HC MAE mm | HC bias mm | training min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [_cell(r["dice"], ".4f"), _cell(r["hausdorff_mm"], ".2f")]
        cells += [_cell(r["hc_abs_difference_mm"], ".2f"), _cell(r["hc_difference_mm"], "+.2f")]
        print(f"| {r['split_seed']} | {r['n']} | {' | '.join(cells)} | {r['train_minutes']:.0f} |")
    return 0


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)  # None: no image of the split was measured


if __name__ == "__main__":
    raise SystemExit(main())
