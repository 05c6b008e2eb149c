"""The trainer's GPU path: bf16 autocast, fp16 with a gradient scaler, exact resume,
and weights trained on a GPU that load and measure on the CPU.

Skipped where PyTorch sees no CUDA GPU (CI, this project's CPU machines); run on a lent
GPU with benchmarks/gpu_train.sh, which keeps the log.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RECIPE
from fetometry.data.hc18 import load_hc18
from fetometry.training.config import TrainConfig
from fetometry.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU_RECIPE = {**TINY_RECIPE, "device": "cuda", "epochs": 3}


def _max_difference(folder_a, folder_b) -> float:
    a = load_file(str(folder_a / "checkpoints" / "last.safetensors"))
    b = load_file(str(folder_b / "checkpoints" / "last.safetensors"))
    return max(float((a[key].float() - b[key].float()).abs().max()) for key in a)


def test_bf16_training_on_the_gpu_learns_and_records_the_gpu(phantom_hc18, tmp_path):
    trainer = Trainer(TrainConfig.from_dict({**GPU_RECIPE, "epochs": 12}), tmp_path, progress=False)
    assert trainer.device.type == "cuda" and trainer.amp_dtype == torch.bfloat16
    assert not trainer.scaler.is_enabled()  # bf16 has float32's range: no loss scaling
    assert next(trainer.model.parameters()).is_cuda
    result = trainer.fit(load_hc18(phantom_hc18))
    losses = [row["train_loss"] for row in result.history]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    assert result.best_val_dice > 0.6
    hardware = json.loads((tmp_path / "manifest.json").read_text())["hardware"]
    assert hardware["gpu"] == torch.cuda.get_device_name() and hardware["cuda"]


def test_fp16_training_uses_the_gradient_scaler(phantom_hc18, tmp_path, monkeypatch):
    """A GPU without bf16 (before Ampere) trains in fp16, whose small gradients underflow
    without loss scaling; force that path here."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    trainer = Trainer(TrainConfig.from_dict(GPU_RECIPE), tmp_path, progress=False)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    result = trainer.fit(load_hc18(phantom_hc18))
    assert np.isfinite([row["train_loss"] for row in result.history]).all()
    assert trainer.scaler.get_scale() > 0
    weights = load_file(str(tmp_path / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(tensor.float()).all() for tensor in weights.values())


class _Killed(RuntimeError):
    pass


class _KilledAfterSecondEpoch(Trainer):
    def save_checkpoint(self, epoch: int) -> None:
        super().save_checkpoint(epoch)
        if epoch == 1:
            raise _Killed


def test_a_killed_gpu_run_resumes_to_the_same_weights(phantom_hc18, tmp_path):
    """As on the CPU (test_training.py); with cuDNN's deterministic kernels, since its
    fastest ones add in a varying order."""
    from fetometry.data.augment import Augmenter

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    samples = load_hc18(phantom_hc18)
    config = TrainConfig.from_dict({**GPU_RECIPE, "epochs": 4, "augment_strength": 0.5})
    Trainer(config, tmp_path / "straight", progress=False).fit(samples, augment=Augmenter(strength=0.5))
    with pytest.raises(_Killed):
        _KilledAfterSecondEpoch(config, tmp_path / "resumed", progress=False).fit(samples, augment=Augmenter(strength=0.5))
    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed.fit(samples, augment=Augmenter(strength=0.5))
    assert resumed.start_epoch == 2
    difference = _max_difference(tmp_path / "straight", tmp_path / "resumed")
    print(f"largest weight difference, straight vs resumed on {torch.cuda.get_device_name()}: {difference:.3g}")
    assert difference <= 1e-5


def test_weights_trained_on_the_gpu_measure_on_the_cpu(phantom_hc18, tmp_path):
    from fetometry.inference.predictor import Predictor
    from fetometry.training.run import train_and_export

    folder = train_and_export(TrainConfig.from_dict({**GPU_RECIPE, "epochs": 12}), phantom_hc18, tmp_path, progress=False)
    card = (folder / "MODEL_CARD.md").read_text()
    assert torch.cuda.get_device_name() in card
    predictor = Predictor.from_weights(folder)
    sample = load_hc18(phantom_hc18)[0]
    prediction = predictor.predict(sample.load_image())
    assert next(predictor.model.parameters()).device.type == "cpu"
    assert prediction.probability.shape == sample.load_image().shape
