"""MedSegDiff-V2 sampler settings: accuracy vs time, to choose the defaults.

    .venv/bin/python benchmarks/medsegdiff_sampler.py [--train-steps 1200]
    .venv/bin/python benchmarks/medsegdiff_sampler.py --weights medsegdiff-v2 [--images 60]

Phantom mode (the default): the compact variant is trained briefly on synthetic phantoms (64x96) and its
DDIM samples are scored (Dice of the fused probability >= 0.5) on held-out phantoms at
each (steps, ensemble). Time: median latency of `sample` for ONE 256x384 image at each
setting (bf16 autocast, channels_last, as the predictor runs it). Phantoms, not HC18:
this ranks settings, it does not claim clinical accuracy.

HC18 mode (``--weights``): the trained weights on the first ``--images`` images of their
recipe's subject-grouped VALIDATION split, scored on the network canvas (Dice of the
fused probability >= 0.5 against the letterboxed reference mask); the same latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fetometry.data.synthetic import make_phantom
from fetometry.models import create_model
from fetometry.training.trainer import hardware_description

SETTINGS = [(1, 1), (2, 5), (5, 1), (5, 5), (10, 1), (10, 5), (20, 5), (50, 5)]


def phantoms(seeds, hw=(64, 96)):
    items = [make_phantom(height=hw[0], width=hw[1], rng_or_seed=s, speckle=0.7) for s in seeds]
    images = torch.from_numpy(np.stack([p.image for p in items]))[:, None]
    masks = torch.from_numpy(np.stack([p.mask for p in items]).astype(np.float32))[:, None]
    return images, masks


def dice(prob: torch.Tensor, mask: torch.Tensor) -> float:
    pred, truth = prob >= 0.5, mask > 0.5
    inter = (pred & truth).flatten(1).sum(1).float()
    return float((2 * inter / (pred.flatten(1).sum(1) + truth.flatten(1).sum(1)).clamp(min=1)).mean())


def train(model, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    images, masks = phantoms(range(48))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (8,))
        loss = model.training_loss(images[idx], masks[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def latency_ms(model, steps, ensemble, repeats=3) -> float:
    x = torch.rand(1, 1, 256, 384).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.sample(x, steps=steps, ensemble=ensemble)
        if i:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def hc18_validation(weights: str, count: int, data: str):
    """(model, canvases (N,1,H,W), masks (N,1,H,W)) for the first ``count`` validation images."""
    from fetometry.data.hc18 import load_hc18
    from fetometry.evaluation.benchmark import validation_split
    from fetometry.inference.predictor import Predictor
    from fetometry.training.dataset import SegmentationDataset

    predictor = Predictor.from_weights(weights)
    val = validation_split(load_hc18(data), predictor.config.recipe)[:count]
    dataset = SegmentationDataset(val, predictor.config.canvas_hw, progress=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    masks = torch.stack([dataset[i][1] for i in range(len(dataset))])
    return predictor.model.eval(), images, masks


def score_settings(model, images, masks, settings, *, bf16: bool) -> list[dict]:
    """Dice, mean spread and single-image latency at each (steps, ensemble), seeded."""
    rows = []
    for steps, ensemble in settings:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prob, spread = model.sample(
                images, steps=steps, ensemble=ensemble, generator=torch.Generator().manual_seed(0)
            )
        rows.append(
            {
                "steps": steps,
                "ensemble": ensemble,
                "dice": dice(prob.float(), masks),
                "mean_spread": float(spread.float().mean()),
                "ms_256x384": latency_ms(model, steps, ensemble),
            }
        )
        print(rows[-1], flush=True)
    return rows


def publish(report: dict, out: str, filename: str, dice_label: str, digits: int) -> None:
    """Write the JSON and print the Markdown table for docs/MODELS.md."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / filename).write_text(json.dumps(report, indent=2))
    print(f"| steps | ensemble | {dice_label} | mean spread | ms per 256x384 image |\n|---|---|---|---|---|")
    for r in report["rows"]:
        print(
            f"| {r['steps']} | {r['ensemble']} | {r['dice']:.{digits}f} | {r['mean_spread']:.3f} | {r['ms_256x384']:.0f} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=1200)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--weights", help="HC18 mode: trained MedSegDiff-V2 weights (name or folder)")
    parser.add_argument("--images", type=int, default=60, help="HC18 mode: validation images to score")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hc18"))
    args = parser.parse_args(argv)
    if args.weights:
        return main_hc18(args)
    torch.manual_seed(0)
    model = train(create_model("medsegdiff-v2", "compact"), args.train_steps)
    test_images, test_masks = phantoms(range(1000, 1024))
    with torch.no_grad():
        condition_dice = dice(torch.sigmoid(model(test_images)), test_masks)
    rows = score_settings(model, test_images, test_masks, SETTINGS, bf16=False)  # Dice in float32, as first published
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "train_steps": args.train_steps,
        "condition_net_dice": condition_dice,
        "rows": rows,
    }
    print(f"condition network alone: Dice {condition_dice:.3f}")
    publish(report, args.out, "medsegdiff_sampler.json", "Dice (phantoms)", 3)
    return 0


def main_hc18(args) -> int:
    model, images, masks = hc18_validation(args.weights, args.images, args.data)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        condition_dice = dice(torch.sigmoid(model(images).float()), masks)
    rows = score_settings(model, images, masks, SETTINGS[:-1], bf16=True)  # 50 steps: too slow for the gain
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "weights": args.weights,
        "images": len(images),
        "condition_net_dice": condition_dice,
        "rows": rows,
    }
    print(f"condition network alone: Dice {condition_dice:.4f} on {len(images)} HC18 validation images")
    publish(report, args.out, "medsegdiff_sampler_hc18.json", "Dice (HC18 val, canvas)", 4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
