"""The one trainer for every model (the diffusion model brings its loss through a hook).

CPU-first: bf16 autocast (AMX) and channels_last; on a CUDA GPU, bf16 (or fp16 with a
gradient scaler where bf16 is missing). Each epoch writes a checkpoint that
resumes the run exactly (model, EMA, optimizer, epoch; data order and augmentation are
functions of (seed, epoch)). The best epoch by validation Dice is kept as
``best.safetensors``; ``export_model`` turns it into a shippable weights folder.
Optional: an exponential moving average of the weights, early stopping, and
data-parallel training over several processes (see ``distributed.py``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fetometry.data.sample import Sample
from fetometry.data.splits import recipe_split
from fetometry.machine import hardware_description
from fetometry.models import available_models, create_model
from fetometry.models.base import SegmentationNetwork
from fetometry.models.weights import load_weights, save_weights
from fetometry.resources import resolve_weights
from fetometry.training.config import TrainConfig
from fetometry.training.dataset import SegmentationDataset
from fetometry.training.distill import blend_teacher_targets
from fetometry.training.distributed import (
    DistributedContext,
    average_gradients,
    barrier,
    broadcast_buffers,
    broadcast_parameters,
)
from fetometry.training.losses import segmentation_loss

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_val_dice: float
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    history: list[dict]


def git_commit() -> str | None:
    """The commit of the code that trains: FETOMETRY_GIT_COMMIT when set (a copied working
    tree may carry a .git that names another commit than the code it holds), else the
    checkout's."""
    if os.environ.get("FETOMETRY_GIT_COMMIT"):
        return os.environ["FETOMETRY_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _batch_dice(prob: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image Dice of (prob >= 0.5) against (target > 0.5); 1 when both are empty."""
    pred = prob.float() >= 0.5
    truth = target > 0.5
    inter = (pred & truth).flatten(1).sum(1).float()
    total = pred.flatten(1).sum(1) + truth.flatten(1).sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(inter)).tolist()


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, *, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.dist = DistributedContext.from_environment()
        self.device = resolve_device(config.device)
        self.dist.initialise(backend="nccl" if self.device.type == "cuda" else "gloo")
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be a multiple of the {self.dist.world_size} processes"
            )
        self.amp_dtype = (
            torch.bfloat16 if self.device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
        )
        # fp16 gradients underflow without loss scaling; bf16 has float32's range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.bf16 and self.amp_dtype == torch.float16)
        torch.manual_seed(config.seed)
        self.model = create_model(config.model, config.variant, **config.model_kwargs)
        if not isinstance(self.model, SegmentationNetwork):
            names = ", ".join(sorted({s.name for s in available_models(include_reference=True)}))
            raise ValueError(
                f"{config.model}/{config.variant} is a {self.model.kind}, not a segmenter; train one of: {names}"
            )
        if config.init_from:
            load_weights(self.model, initial_weights_file(config.init_from))
        self.model = self.model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.dist.enabled:
            broadcast_parameters(self.model)
        self.ema = _copy_model(self.model) if config.ema_decay > 0 else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.start_epoch = 0
        self.step = 0
        self.best_val_dice = -1.0
        self.best_epoch = -1
        self.history: list[dict] = []
        self.commit = git_commit()  # the code that trains, recorded before anything changes
        self.stopped_by: str | None = None  # "early_stopping" or "time_limit"
        self._tensorboard = None

    # ---- checkpoints -------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.model, self.ckpt_dir / "last.safetensors")
        if self.ema is not None:
            save_weights(self.ema, self.ckpt_dir / "last_ema.safetensors")
        write_optimizer_state(
            self.optimizer,
            self.ckpt_dir / "last_state",
            {
                "epoch": epoch,
                "step": self.step,
                "best_val_dice": self.best_val_dice,
                "best_epoch": self.best_epoch,
                "history": self.history,
                # fp16 loss scaling's current scale and growth count (empty when off)
                "grad_scaler": self.scaler.state_dict(),
            },
        )

    def try_resume(self) -> bool:
        state_path = self.ckpt_dir / "last_state.json"
        weights_path = self.ckpt_dir / "last.safetensors"
        if not (state_path.is_file() and weights_path.is_file()):
            return False
        load_weights(self.model, weights_path)
        if self.ema is not None:
            load_weights(self.ema, self.ckpt_dir / "last_ema.safetensors")
        state = read_optimizer_state(self.optimizer, self.ckpt_dir / "last_state")
        self.start_epoch = int(state["epoch"]) + 1
        self.step = int(state["step"])
        self.best_val_dice = float(state["best_val_dice"])
        self.best_epoch = int(state["best_epoch"])
        self.history = state["history"]
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        log.info("resumed after epoch %d of %d (step %d)", self.start_epoch, self.config.epochs, self.step)
        return True

    # ---- loops -----------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.config.bf16)

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.to(memory_format=torch.channels_last) if self.config.channels_last else images

    def train_epoch(self, loader: DataLoader, epoch: int, total_steps: int, warmup_steps: int) -> float:
        self.model.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.progress, leave=False)
        for images, masks in bar:
            if self.config.max_steps and self.step >= self.config.max_steps:
                break
            for group in self.optimizer.param_groups:
                group["lr"] = _lr_at(self.step, total_steps, warmup_steps, self.config)
            with self._autocast():
                loss = self._loss(self._to_input(images), masks.to(self.device, non_blocking=True))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.dist.enabled:
                average_gradients(self.model, self.dist.world_size)
            self.scaler.step(self.optimizer)  # a plain optimizer.step() unless fp16 scaling is on
            self.scaler.update()
            if self.dist.enabled:
                broadcast_buffers(self.model)  # BatchNorm statistics: rank 0's on every rank, as DDP does
            self._update_ema()
            self.step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.config.ema_decay
        for averaged, current in zip(self.ema.parameters(), self.model.parameters()):
            averaged.lerp_(current, 1.0 - decay)
        for averaged, current in zip(self.ema.buffers(), self.model.buffers()):
            averaged.copy_(current)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and exported: the EMA when enabled."""
        return self.ema if self.ema is not None else self.model

    def _loss(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The model's own ``training_loss`` (a sampled model) or Dice + BCE (+ the boundary
        loss when ``boundary_weight`` is set) on its logits."""
        own_loss = self.model.training_loss  # None for a feed-forward net (SegmentationNetwork)
        if own_loss is not None:
            return own_loss(images, masks)
        return segmentation_loss(
            self.model(images), masks, bce_weight=self.config.bce_weight, boundary_weight=self.config.boundary_weight
        )

    def _probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) probabilities: the sigmoid of the logits, or a sampled model's sampler."""
        return self.eval_model.predict_proba(images).float()

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> float:
        self.eval_model.eval()
        scores: list[float] = []
        for images, masks in loader:
            with self._autocast():
                prob = self._probabilities(self._to_input(images))
            scores.extend(_batch_dice(prob, masks.to(self.device)))
        return float(np.mean(scores)) if scores else float("nan")

    def fit(self, samples: list[Sample], *, augment=None) -> TrainResult:
        config = self.config
        splits = training_splits(samples, config)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            (self.run_dir / "split.json").write_text(
                json.dumps({k: sorted(s.name for s in v) for k, v in splits.items()}, indent=1)
            )
        if not splits["train"]:
            raise ValueError("the training split is empty: give more images or a smaller val_fraction")
        if config.init_from:
            check_no_validation_leak(config.init_from, splits["val"])
        train_set = SegmentationDataset(
            splits["train"], config.canvas_hw, augment=augment, seed=config.seed, progress=self.progress
        )
        if config.distill_from:
            for teacher in config.distill_from:
                check_no_validation_leak(resolve_weights(teacher), splits["val"], role="teacher")
            blend_teacher_targets(train_set, config.distill_from, config.distill_weight, progress=self.progress)
        val_set = (
            SegmentationDataset(splits["val"], config.canvas_hw, progress=self.progress) if splits["val"] else None
        )
        rank_batch = config.batch_size // self.dist.world_size  # the global batch is config.batch_size
        steps_per_epoch = math.ceil(len(self.dist.shard(list(range(len(train_set))))) / rank_batch)
        total_steps = steps_per_epoch * config.epochs
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
        self.try_resume()
        started = time.perf_counter()
        previous_wall = self.history[-1]["wall_time_s"] if self.history else 0.0
        for epoch in range(self.start_epoch, config.epochs):
            if config.max_steps and self.step >= config.max_steps:
                break
            train_loss = self.train_epoch(
                self._epoch_loader(train_set, epoch, rank_batch), epoch, total_steps, warmup_steps
            )
            val_dice = (
                self.validate(DataLoader(val_set, batch_size=config.batch_size, **self._loader_options()))
                if val_set
                else float("nan")
            )
            if val_set is None or val_dice > self.best_val_dice:
                self.best_val_dice, self.best_epoch = val_dice, epoch
                if self.dist.is_main:
                    self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                    save_weights(self.eval_model, self.ckpt_dir / "best.safetensors")
            row = {
                "epoch": epoch + 1,
                "step": self.step,
                "train_loss": train_loss,
                "val_dice": val_dice,
                "lr": self.optimizer.param_groups[0]["lr"],
                "wall_time_s": previous_wall + time.perf_counter() - started,
            }
            self.history.append(row)
            self._log_row(row)
            self.save_checkpoint(epoch)
            barrier(self.dist)
            log.info("epoch %d: loss %.4f, val Dice %.4f", epoch + 1, train_loss, val_dice)
            if self._should_stop_early():
                log.info(
                    "early stopping: no better validation Dice for %d epochs (best: epoch %d)",
                    config.early_stopping_patience,
                    self.best_epoch + 1,
                )
                self.stopped_by = "early_stopping"
                break
            if config.max_minutes and row["wall_time_s"] >= 60 * config.max_minutes:
                log.warning(
                    "time limit: %.1f min reached after epoch %d of %d", config.max_minutes, epoch + 1, config.epochs
                )
                self.stopped_by = "time_limit"
                break
        wall = self.history[-1]["wall_time_s"] if self.history else 0.0
        result = TrainResult(
            self.run_dir, self.best_val_dice, self.best_epoch + 1, len(self.history), wall, self.history
        )
        self._write_manifest(result, splits, skipped=train_set.skipped + (val_set.skipped if val_set else []))
        if self._tensorboard is not None:
            self._tensorboard.close()
        return result

    def _epoch_loader(self, train_set: SegmentationDataset, epoch: int, rank_batch: int) -> DataLoader:
        """Data order is a function of (seed, epoch): a resumed run replays it exactly; each
        process of a distributed run takes its own shard of that one order."""
        train_set.set_epoch(epoch)
        order = torch.Generator().manual_seed(self.config.seed * 100003 + epoch)
        indices = self.dist.shard(torch.randperm(len(train_set), generator=order).tolist())
        # Workers are not persistent: each epoch's are forked after set_epoch, so they
        # augment for this epoch.
        return DataLoader(
            train_set,
            batch_size=rank_batch,
            sampler=indices,
            drop_last=len(indices) > rank_batch,
            **self._loader_options(),
        )

    def _loader_options(self) -> dict:
        # PyTorch gives each worker one torch thread. OpenCV's own threads are left
        # alone: cv2.setNumThreads inside a forked worker can deadlock; a
        # caller that wants single-threaded OpenCV sets it before training starts.
        return {"num_workers": self.config.num_workers, "pin_memory": self.device.type == "cuda"}

    def _should_stop_early(self) -> bool:
        patience = self.config.early_stopping_patience
        return patience > 0 and len(self.history) - 1 - self.best_epoch >= patience

    def _log_row(self, row: dict) -> None:
        if not self.dist.is_main:
            return
        path = self.run_dir / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.config.tensorboard:
            self._tensorboard_scalars(row)

    def _tensorboard_scalars(self, row: dict) -> None:
        """One scalar per log column, at the optimizer step; the writer is opened lazily,
        so a run without the option never imports tensorboard."""
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "tensorboard = true needs the tensorboard package: pip install tensorboard"
                ) from error
            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        for key in ("train_loss", "val_dice", "lr"):
            if row[key] == row[key]:  # NaN (no validation split) is left out
                self._tensorboard.add_scalar(key, row[key], global_step=row["step"])
        self._tensorboard.add_scalar("wall_time_s", row["wall_time_s"], global_step=row["step"])
        self._tensorboard.flush()

    def _write_manifest(self, result: TrainResult, splits: dict, skipped: list) -> None:
        if not self.dist.is_main:
            return
        manifest = {
            "config": self.config.to_dict(),
            "split": {k: len(v) for k, v in splits.items()},
            "split_file": "split.json",
            "skipped_samples": skipped,
            "git_commit": self.commit,
            "hardware": hardware_description(self.device),
            "wall_time_s": result.wall_time_s,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_val_dice_canvas": result.best_val_dice,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "processes": self.dist.world_size,
            "stopped_early": self.stopped_by == "early_stopping",
            "stopped_by": self.stopped_by,
            "date": time.strftime("%Y-%m-%d"),
        }
        (self.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def resolve_device(requested: str) -> torch.device:
    """The training device of a recipe's ``device``; under torchrun/SLURM each process of
    a node takes the GPU of its local rank."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device = 'cuda', but this PyTorch ({torch.__version__}) sees no CUDA GPU; use device = 'auto' or 'cpu'"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def initial_weights_file(init_from: str | Path) -> Path:
    """The safetensors file named by ``init_from``: the file itself or a weights folder's."""
    path = Path(init_from)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: {init_from} is neither a .safetensors file nor a weights folder with model.safetensors"
        )
    return path


def check_no_validation_leak(init_from: str | Path, val_samples: list[Sample], *, role: str = "init_from") -> None:
    """Refuse initial (or teacher, ``role="teacher"``) weights that were trained on one of
    this run's validation images: its validation scores would then be optimistic. A
    folder's split.json says which images trained it; a bare .safetensors file cannot be
    checked, which is logged."""
    split_file = Path(init_from) / "split.json" if Path(init_from).is_dir() else None
    if split_file is None or not split_file.is_file():
        log.warning(
            "%s %s has no split.json: cannot check that it never saw this run's validation images", role, init_from
        )
        return
    trained_on = set(json.loads(split_file.read_text(encoding="utf-8")).get("train", []))
    leaked = sorted(trained_on & {s.name for s in val_samples})
    if leaked:
        raise ValueError(
            f"{role} {init_from} was trained on {len(leaked)} of this run's validation images (e.g. {leaked[:3]}); use the same split"
        )


def training_splits(samples: list[Sample], config: TrainConfig) -> dict[str, list[Sample]]:
    """{"train", "val"}: fold ``config.fold`` of a subject-grouped k-fold when
    ``config.folds`` > 1, else the fixed split of ``config.val_fraction``
    (``fetometry.data.splits.recipe_split``, the one rule that ``model_split`` re-applies)."""
    recipe = {
        "folds": config.folds,
        "fold": config.fold,
        "split_seed": config.split_seed,
        "val_fraction": config.val_fraction,
    }
    return recipe_split(samples, recipe)


def write_optimizer_state(optimizer: torch.optim.Optimizer, stem: Path, extra: dict) -> None:
    """Optimizer tensors -> STEM.safetensors, everything else -> STEM.json (no pickle).

    Each file is written to a temporary name and renamed (atomic); the JSON goes last
    and names the tensors file's epoch, so a kill between the two is detected on resume.
    """
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    meta = {"epoch": str(extra["epoch"])}
    tmp = stem.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(stem.with_suffix(".safetensors"))
    document = {**extra, "param_groups": state["param_groups"], "scalars": scalars}
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(stem.with_suffix(".json"))


def read_optimizer_state(optimizer: torch.optim.Optimizer, stem: Path) -> dict:
    """Load what ``write_optimizer_state`` wrote into ``optimizer``; returns the extra fields."""
    from safetensors import safe_open

    document = json.loads(stem.with_suffix(".json").read_text())
    state: dict[int, dict] = {}
    with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as handle:
        if handle.metadata().get("epoch") != str(document["epoch"]):
            raise ValueError(
                f"{stem}: optimizer tensors and state are from different epochs; delete the checkpoints folder to restart"
            )
        for name in handle.keys():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = handle.get_tensor(name)
    for name, value in document["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": document["param_groups"]})
    _match_parameter_layouts(optimizer)
    return document


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded moment its parameter's memory layout (channels_last convolution
    weights), as the optimizer made it before the kill. Loaded contiguous, the update
    runs through another kernel that rounds differently in the last bit, which Adam
    magnifies: a resumed run then drifts from the straight one."""
    for parameter, values in optimizer.state.items():
        for key, value in values.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                values[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    averaged = copy.deepcopy(model)
    for p in averaged.parameters():
        p.requires_grad_(False)
    return averaged


def train(config: TrainConfig, samples: list[Sample], run_dir: str | Path, *, progress: bool = True) -> TrainResult:
    """Train ``config.model`` on ``samples`` (split by subject inside) into ``run_dir``."""
    from fetometry.data.augment import Augmenter, FlipAugmenter
    from fetometry.data.scanner_styles import (
        BeamWidthAugmenter,
        ScannerAugmenter,
        SectorCutAugmenter,
        WallLossAugmenter,
        WideWallLossAugmenter,
    )

    if config.augmentation == "flips":
        augment = FlipAugmenter()
    elif config.augmentation == "scanners":
        augment = ScannerAugmenter(strength=config.augment_strength)
    elif config.augmentation == "scanners-beam":
        augment = BeamWidthAugmenter(strength=config.augment_strength)
    elif config.augmentation == "scanners-cut":
        augment = SectorCutAugmenter(strength=config.augment_strength)
    elif config.augmentation == "scanners-walls":
        augment = WallLossAugmenter(strength=config.augment_strength)
    elif config.augmentation == "scanners-walls-wide":
        augment = WideWallLossAugmenter(strength=config.augment_strength)
    else:
        augment = Augmenter(strength=config.augment_strength) if config.augment_strength > 0 else None
    return Trainer(config, run_dir, progress=progress).fit(samples, augment=augment)
