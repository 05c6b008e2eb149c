"""Shared fixtures: phantom data sets, a tiny model trained on them, ../shared if present."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# Exported ONNX graphs (fetometry.inference.backend.cached_onnx) go to a folder of this
# test session, not to the user's cache.
os.environ.setdefault("FETOMETRY_CACHE", tempfile.mkdtemp(prefix="fetometry-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_HC18 = REPO.parent / "shared" / "data" / "hc18"

#: A recipe small enough for a test: 64x96 canvas, a few epochs on 16 phantoms.
TINY_RECIPE = dict(
    model="attention-unet",
    variant="compact",
    canvas_h=64,
    canvas_w=96,
    epochs=24,
    batch_size=4,
    lr=5e-3,
    min_lr=1e-4,
    warmup_epochs=0.5,
    augment_strength=0.0,
    val_fraction=0.25,
    seed=0,
    split_seed=0,
)


@pytest.fixture(scope="session")
def shared_hc18() -> Path:
    if not (SHARED_HC18 / "training_set").is_dir():
        pytest.skip("../shared/data/hc18 is not present")
    return SHARED_HC18


@pytest.fixture(scope="session")
def phantom_hc18(tmp_path_factory) -> Path:
    """An HC18-layout folder of 24 small phantoms (filled masks, exact HC in the CSV)."""
    from fetometry.data.synthetic import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "hc18", 24, seed=0, size=(128, 192))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, phantom_hc18) -> Path:
    """A run folder of a tiny Attention U-Net trained on the phantoms (a few seconds)."""
    from fetometry.training.config import TrainConfig
    from fetometry.training.run import train_and_export

    run_dir = tmp_path_factory.mktemp("tiny_run")
    folder = train_and_export(TrainConfig.from_dict(TINY_RECIPE), phantom_hc18, run_dir, progress=False)
    # A model trained for seconds is less sure than a real one: its mean foreground
    # probability sits near the gate's 0.95 and varies between machines. Its own gate
    # threshold (the weights config's "quality" block, as any model may carry) keeps the
    # plumbing tests that use it independent of that; the gate has its own tests.
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["quality"] = {"min_confidence": 0.5}
    config_path.write_text(json.dumps(config, indent=2))
    return run_dir


@pytest.fixture(scope="session")
def tiny_weights(tiny_run) -> Path:
    return tiny_run / "model"


class Killed(RuntimeError):
    """Raised by killed_after_second_epoch: a run ended mid-way, as by a kill."""


def killed_after_second_epoch():
    """A Trainer subclass that dies right after saving its second epoch's checkpoint,
    for the exact-resume tests (CPU: test_training.py, GPU: test_cuda.py)."""
    from fetometry.training.trainer import Trainer

    class KilledAfterSecondEpoch(Trainer):
        def save_checkpoint(self, epoch: int) -> None:
            super().save_checkpoint(epoch)
            if epoch == 1:
                raise Killed

    return KilledAfterSecondEpoch
