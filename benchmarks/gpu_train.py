"""Train several models at once on a GPU machine for a fixed slot of time, with the
project's one trainer and each model's own recipe (configs/NAME.toml), and bring the
runs back to be exported and scored here on the CPU against the original images.

The GPU machine this script is written for sees only a copy of the repository, not
../shared, and bounds the size of what travels each way. So the data set travels as the trainer's own input: each
image and mask letterboxed onto the recipe's canvas and stored as the uint8 the trainer
keeps in memory (SegmentationDataset), as lossless PNG (33 MB for HC18 at 256x384).
Training from the pack is bit-identical to training from the original files
(``check`` proves it), the split is the same (by subject, from the same names), and
calibration, export and scoring happen here, on the original images.

    # here: pack the canvases (ignored by git) and check the pack
    .venv/bin/python benchmarks/gpu_train.py pack --data ../shared/data/hc18 --out gpu_data
    .venv/bin/python benchmarks/gpu_train.py check --data ../shared/data/hc18 --pack gpu_data
    # on the GPU (benchmarks/gpu_train.sh does this and the CUDA tests)
    python3 benchmarks/gpu_train.py train --pack gpu_data --models attention-unet,unext \\
        --seconds 330 --runs gpu_runs
    # here: calibrate on the training split's original masks and write weights folders
    .venv/bin/python benchmarks/gpu_train.py export --data ../shared/data/hc18 --runs gpu_runs

The slot is split by measurement, not guesswork: each model first trains two epochs
alongside the others, and its epoch count is what the rest of the slot holds at the
second epoch's pace (capped at --max-epochs). The cosine schedule then spans exactly
those epochs; ``max_minutes`` stops a run that falls behind at an epoch end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fetometry.data.sample import Sample
from fetometry.io.images import read_image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CanvasSample(Sample):
    """A packed sample: image and soft mask already on the canvas, as the trainer keeps them."""

    def load_mask(self) -> np.ndarray:
        return read_image(self.mask_path)  # the letterboxed soft mask, float in [0, 1]


# ---- here: pack and check ---------------------------------------------------------
def pack(data: str, out: Path, canvas_hw: tuple[int, int]) -> None:
    import cv2

    from fetometry.training.dataset import SegmentationDataset
    from fetometry.training.run import load_datasets

    samples = load_datasets(data)
    dataset = SegmentationDataset(samples, canvas_hw)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in samples}
    records = []
    for name, image, mask in zip(dataset.names, dataset.images, dataset.masks):
        for folder, pixels in (("images", image), ("masks", mask)):
            if not cv2.imwrite(str(out / folder / name), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
                raise OSError(f"could not write {out / folder / name}")
        sample = by_name[name]
        records.append(
            {
                "name": name,
                "subject": sample.subject,
                "pixel_size_mm": sample.pixel_size_mm,
                "hc_mm": sample.hc_mm,
                "source": sample.source,
            }
        )
    (out / "samples.json").write_text(
        json.dumps({"data": str(data), "canvas_hw": list(canvas_hw), "samples": records}, indent=1)
    )
    print(f"packed {len(records)} samples ({len(dataset.skipped)} unreadable skipped) into {out}")


def load_pack(pack_dir: Path) -> tuple[list[CanvasSample], tuple[int, int]]:
    index = json.loads((pack_dir / "samples.json").read_text())
    samples = [
        CanvasSample(
            name=r["name"],
            image_path=pack_dir / "images" / r["name"],
            subject=r["subject"],
            mask_path=pack_dir / "masks" / r["name"],
            pixel_size_mm=r["pixel_size_mm"],
            hc_mm=r["hc_mm"],
            source=r["source"],
        )
        for r in index["samples"]
    ]
    return samples, tuple(index["canvas_hw"])


def check(data: str, pack_dir: Path) -> None:
    """The trainer's in-memory arrays from the pack equal those from the original files."""
    from fetometry.training.dataset import SegmentationDataset
    from fetometry.training.run import load_datasets

    packed, canvas_hw = load_pack(pack_dir)
    original = SegmentationDataset(load_datasets(data), canvas_hw, progress=False)
    repacked = SegmentationDataset(packed, canvas_hw, progress=False)
    assert original.names == repacked.names, "the pack lists other images"
    for name, a, b, ma, mb in zip(original.names, original.images, repacked.images, original.masks, repacked.masks):
        if not (np.array_equal(a, b) and np.array_equal(ma, mb)):
            raise SystemExit(f"{name}: the packed canvas differs from the trainer's")
    print(f"pack identical to the trainer's arrays for all {len(original.names)} images")


# ---- the GPU: train several models in one time slot ---------------------------------
def gpu_recipe(model: str, workers: int, device: str = "cuda"):
    """The model's own recipe on the given device ("cpu" only for a dry run of this script)."""
    from fetometry.training.config import TrainConfig

    return TrainConfig.from_file(REPO / "configs" / f"{model}.toml", device=device, num_workers=workers)


def epochs_for(seconds_left: float, epoch_s: float, max_epochs: int, safety: float = 0.9) -> int:
    """How many epochs at ``epoch_s`` fit in ``seconds_left`` (with a margin)."""
    return max(1, min(max_epochs, math.floor(safety * seconds_left / epoch_s)))


def train_one(
    model: str, pack_dir: Path, run_dir: Path, deadline: float, max_epochs: int, workers: int, device: str
) -> None:
    import cv2
    import torch

    from fetometry.training.trainer import train

    cv2.setNumThreads(1)  # before any worker is forked: the workers are the parallelism
    torch.set_num_threads(2)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    samples, canvas_hw = load_pack(pack_dir)
    recipe = gpu_recipe(model, workers, device)
    if recipe.canvas_hw != canvas_hw:
        raise SystemExit(f"{model}: recipe canvas {recipe.canvas_hw} but the pack is {canvas_hw}")
    probe = train(replace(recipe, epochs=2), samples, run_dir.parent / f"{model}-probe", progress=False)
    epoch_s = probe.history[1]["wall_time_s"] - probe.history[0]["wall_time_s"]
    seconds_left = deadline - time.time()
    epochs = epochs_for(seconds_left, epoch_s, max_epochs)
    print(
        json.dumps({"model": model, "probe_epoch_s": epoch_s, "seconds_left": seconds_left, "epochs": epochs}),
        flush=True,
    )
    result = train(replace(recipe, epochs=epochs, max_minutes=seconds_left / 60), samples, run_dir, progress=False)
    print(
        json.dumps(
            {
                "model": model,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "best_val_dice_canvas": result.best_val_dice,
                "wall_time_s": result.wall_time_s,
            }
        ),
        flush=True,
    )


def train_all(
    models: list[str], pack_dir: Path, runs: Path, seconds: float, max_epochs: int, workers: int, device: str
) -> None:
    """One process per model, all sharing the GPU; each log goes to RUNS/NAME.log."""
    runs.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + seconds
    processes = {}
    for model in models:
        log = (runs / f"{model}.log").open("w")
        command = [
            sys.executable,
            __file__,
            "train-one",
            "--model",
            model,
            "--pack",
            str(pack_dir),
            "--runs",
            str(runs),
            "--deadline",
            str(deadline),
            "--max-epochs",
            str(max_epochs),
            "--workers",
            str(workers),
            "--device",
            device,
        ]
        processes[model] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    failed = []
    for model, process in processes.items():
        code = process.wait()
        print(f"{model}: exit {code}", flush=True)
        if code:
            failed.append(model)
    if failed:  # the others' runs are kept; say which to look at (RUNS/NAME.log)
        raise SystemExit(f"failed: {', '.join(failed)}")


# ---- here: export what came back ------------------------------------------------------
def export(data: str, runs: Path, models: list[str] | None) -> None:
    from fetometry.training.config import TrainConfig
    from fetometry.training.run import calibrate_and_export, load_datasets

    samples = load_datasets(data)
    for run_dir in sorted(
        p for p in runs.iterdir() if (p / "manifest.json").is_file() and not p.name.endswith("-probe")
    ):
        if models and run_dir.name not in models:
            continue
        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        description = {
            "path": data,
            "layout": samples[0].source or "folder",
            "images": len(samples),
            "note": "trained on a GPU from benchmarks/gpu_train.py's pack of these images: the trainer's own uint8 canvases, bit-identical",
        }
        folder = calibrate_and_export(run_dir, config, samples, description)
        print(f"{run_dir.name}: exported {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="write the trainer's canvases of a data set (here)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--canvas", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    c = commands.add_parser("check", help="prove the pack equals the trainer's arrays (here)")
    c.add_argument("--data", required=True)
    c.add_argument("--pack", type=Path, required=True)
    t = commands.add_parser("train", help="train the models side by side in one time slot (GPU)")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--models", required=True, help="comma-separated; each trains with configs/NAME.toml")
    t.add_argument("--runs", type=Path, required=True)
    t.add_argument("--seconds", type=float, required=True, help="the slot, from now to the last epoch's end")
    t.add_argument("--max-epochs", type=int, default=300)
    t.add_argument("--workers", type=int, default=3, help="DataLoader workers per model")
    t.add_argument("--device", default="cuda", help="cpu: a dry run of this script on phantoms")
    o = commands.add_parser("train-one", help=argparse.SUPPRESS)
    o.add_argument("--model", required=True)
    o.add_argument("--pack", type=Path, required=True)
    o.add_argument("--runs", type=Path, required=True)
    o.add_argument("--deadline", type=float, required=True)
    o.add_argument("--max-epochs", type=int, required=True)
    o.add_argument("--workers", type=int, required=True)
    o.add_argument("--device", required=True)
    e = commands.add_parser("export", help="calibrate and write weights folders from returned runs (here)")
    e.add_argument("--data", required=True)
    e.add_argument("--runs", type=Path, required=True)
    e.add_argument("--models", default="", help="comma-separated; default: every run")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.data, args.out, tuple(args.canvas))
    elif args.command == "check":
        check(args.data, args.pack)
    elif args.command == "train":
        train_all(
            args.models.split(","), args.pack, args.runs, args.seconds, args.max_epochs, args.workers, args.device
        )
    elif args.command == "train-one":
        train_one(
            args.model, args.pack, args.runs / args.model, args.deadline, args.max_epochs, args.workers, args.device
        )
    else:
        export(args.data, args.runs, [m for m in args.models.split(",") if m] or None)


if __name__ == "__main__":
    main()
