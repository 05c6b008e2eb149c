"""Training recipes: a dataclass, read from and written to TOML/JSON files in configs/."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


AUGMENTATIONS = (
    "ultrasound",
    "scanners",
    "scanners-beam",
    "scanners-cut",
    "scanners-walls",
    "scanners-walls-wide",
    "flips",
)


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in its manifest)."""

    model: str = "attention-unet"
    variant: str = "compact"
    model_kwargs: dict = field(default_factory=dict)
    canvas_h: int = 256
    canvas_w: int = 384
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    bce_weight: float = 0.5
    #: Weight of the boundary loss (Kervadec et al. 2019; ``losses.boundary_loss``, distances
    #: in canvas px) added to Dice + BCE; 0 = off.
    boundary_weight: float = 0.0
    #: Teachers (shipped model names or weights folders; several are averaged) whose
    #: probability on each training canvas is blended into the target with the share
    #: ``distill_weight`` (``training.distill``); empty = no distillation.
    distill_from: list[str] = field(default_factory=list)
    distill_weight: float = 0.5
    augment_strength: float = 1.0
    #: "ultrasound" (flips, affine, intensity, speckle, blur, shadow; scaled by
    #: augment_strength), "scanners" (that, then other scanners' physics and capture
    #: styles: fetometry.data.scanner_styles), "scanners-beam" (that, then a coarser
    #: lateral resolution: scanner_styles.BeamWidthAugmenter), "scanners-cut" (that, then a
    #: scan sector's side across the head: scanner_styles.SectorCutAugmenter),
    #: "scanners-walls" (that, then the skull's side walls lost:
    #: scanner_styles.WallLossAugmenter), "scanners-walls-wide" (the same, wider ranges:
    #: scanner_styles.WideWallLossAugmenter) or "flips"
    #: (the plain recipe of the benchmark's reference row).
    augmentation: str = "ultrasound"
    val_fraction: float = 0.2
    split_seed: int = 0
    seed: int = 0
    #: Mixed precision: bf16 autocast on the CPU (AMX/AVX-512 BF16) and on GPUs that
    #: support bf16; fp16 autocast with a gradient scaler on older GPUs.
    bf16: bool = True
    channels_last: bool = True
    #: "auto" (a CUDA GPU when PyTorch sees one, else the CPU), "cpu" or "cuda". Several
    #: processes on one node take GPU LOCAL_RANK each.
    device: str = "auto"
    #: Stop after this many optimizer steps in total (tests, smoke runs); 0 = no limit.
    max_steps: int = 0
    #: Stop at the first epoch end past this many minutes of training (as Lightning's
    #: max_time), for a machine held for a fixed slot. The schedule still spans ``epochs``, so
    #: choose ``epochs`` to fit; 0 = no limit.
    max_minutes: float = 0.0
    #: DataLoader worker processes for augmentation (a GPU outruns one CPU core). The
    #: augmentation is a function of (seed, epoch, index): any number gives the same run.
    num_workers: int = 0
    #: Exponential moving average of the weights (e.g. 0.999); 0 = off. With it, validation,
    #: the best checkpoint and the exported weights use the averaged weights.
    ema_decay: float = 0.0
    #: Stop when validation Dice has not improved for this many epochs; 0 = never.
    early_stopping_patience: int = 0
    #: Which weights the run exports: "best" (the epoch of the highest validation Dice) or
    #: "last" (the final weights; with EMA the averaged ones). Domain-generalising
    #: augmentation is judged out of domain, which the in-domain validation Dice cannot
    #: see: its best epoch can be the first, before the augmentation has taught anything.
    export_checkpoint: str = "best"
    #: Subject-grouped k-fold cross-validation: train fold ``fold`` of ``folds`` (its
    #: validation subjects are 1/folds of all); 0 = the fixed split of ``val_fraction``.
    folds: int = 0
    fold: int = 0
    #: Start from these weights (a weights folder or a .safetensors file) instead of a
    #: random initialisation: fine-tuning, or continuing a run with a fresh schedule. A
    #: folder's split.json is checked: none of our validation images may have trained it.
    init_from: str = ""
    #: Where the exported model's HC offset comes from, both on the training split:
    #: "masks" (the reference masks' fitted ellipses against the reference HC) or
    #: "predictions" (the exported model's own fitted ellipses, ``calibrate_on_predictions``;
    #: the mask offset stays beside it as ``hc_offset_px_masks``). docs/TRAINING.md says
    #: what each does on the validation split.
    hc_offset_from: str = "masks"
    #: Also write the log rows as TensorBoard scalars under <run>/tensorboard
    #: (needs the tensorboard package); log.csv is always written.
    tensorboard: bool = False

    @property
    def canvas_hw(self) -> tuple[int, int]:
        return (self.canvas_h, self.canvas_w)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.from_dict({**data, **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; valid: {sorted(known)}")
        config = cls(**data)
        if config.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device={config.device!r}: use 'auto', 'cpu' or 'cuda'")
        if config.export_checkpoint not in ("best", "last"):
            raise ValueError(f"export_checkpoint={config.export_checkpoint!r}: use 'best' or 'last'")
        if config.hc_offset_from not in ("masks", "predictions"):
            raise ValueError(f"hc_offset_from={config.hc_offset_from!r}: use 'masks' or 'predictions'")
        if not config.boundary_weight >= 0:
            raise ValueError(f"boundary_weight={config.boundary_weight}: use 0 (off) or a positive weight")
        check_distill_weight(config.distill_weight)
        if isinstance(config.distill_from, str):
            raise ValueError(f"distill_from={config.distill_from!r}: give a list of model names or folders")
        if config.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation={config.augmentation!r}: use one of {', '.join(AUGMENTATIONS)}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def check_distill_weight(weight: float) -> float:
    """The teacher's share of a distilled target (``training.distill``), from 0 to 1."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight={weight}: give the teacher's share of the target, from 0 to 1")
    return float(weight)
