"""Score one shipped model with flip TTA on its recipe's validation split (the benchmark's
protocol, TTA on, no gate) and write benchmarks/results/<model>_flip_tta.json.

    .venv/bin/python benchmarks/tta_score.py --model medsegdiff-v2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fetometry.data.hc18 import load_hc18
from fetometry.evaluation.benchmark import score_predictor, validation_split
from fetometry.inference.predictor import Predictor

KEYS = ("n", "dice", "dice_ellipse", "iou", "recall", "hausdorff_mm", "hc_mae_mm", "hc_sd_mm", "hc_measured", "map", "seconds_per_image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hc18"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    predictor = Predictor.from_weights(args.model)
    val = validation_split(load_hc18(args.data), predictor.config["training"]["recipe"])
    summary = score_predictor(predictor, val, tta=True)["summary"]
    report = {key: summary[key] for key in KEYS}
    report.update(model=args.model, tta="flip", date=time.strftime("%Y-%m-%d"), threads=torch.get_num_threads())
    path = args.out / f"{Path(args.model).name}_flip_tta.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
