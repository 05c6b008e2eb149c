"""The benchmark's reference row: MONAI's stock AttentionUnet with a plain recipe."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from fetometry.models import available_models, create_model, get_spec
from fetometry.training.config import TrainConfig


def test_reference_is_registered_but_not_one_of_the_five():
    assert get_spec("monai-attention-unet", "reference").reference
    assert "monai-attention-unet" not in {s.name for s in available_models()}
    assert "monai-attention-unet" in {s.name for s in available_models(include_reference=True)}


def test_reference_is_monai_stock_attention_unet():
    monai_nets = pytest.importorskip("monai.networks.nets")
    model = create_model("monai-attention-unet", "reference")
    assert type(model.net) is monai_nets.AttentionUnet
    stock = monai_nets.AttentionUnet(
        spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)
    )
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in stock.parameters())
    out = model(torch.zeros(2, 1, 64, 96))
    assert out.shape == (2, 1, 64, 96)


def test_reference_recipe_is_the_plain_one():
    config = TrainConfig.from_file(REPO / "configs" / "reference-monai-attention-unet.toml")
    assert (config.model, config.variant) == ("monai-attention-unet", "reference")
    assert (config.canvas_h, config.canvas_w, config.epochs) == (224, 320, 20)
    assert config.augmentation == "flips"
    assert config.lr == config.min_lr  # a constant rate: no warm-up, no cosine
    assert config.bce_weight == 1.0  # Dice + cross-entropy, equal weights
    # Same subject-grouped split as the five, so they share one validation set.
    shipped = TrainConfig.from_file(REPO / "configs" / "attention-unet.toml")
    assert (config.val_fraction, config.split_seed) == (shipped.val_fraction, shipped.split_seed)


def test_reference_recipe_file_and_code_agree():
    from fetometry.models.reference import REFERENCE_RECIPE

    from_file = TrainConfig.from_file(REPO / "configs" / "reference-monai-attention-unet.toml")
    assert from_file == TrainConfig.from_dict(REFERENCE_RECIPE)


def test_benchmark_trains_and_scores_the_reference_row(phantom_hc18, tmp_path, monkeypatch):
    """--train-reference trains the reference recipe (train_reference_row) and the
    benchmark scores its folder (shrunk here to seconds: the recipe itself is tested above)."""
    pytest.importorskip("monai")
    import fetometry.models.reference as reference
    from fetometry.evaluation.benchmark import run_benchmark
    from fetometry.training.run import train_reference_row

    tiny = {
        **reference.REFERENCE_RECIPE,
        "canvas_h": 64,
        "canvas_w": 96,
        "epochs": 1,
        "max_steps": 2,
        "val_fraction": 0.25,
    }
    monkeypatch.setattr(reference, "REFERENCE_RECIPE", tiny)
    row = train_reference_row(phantom_hc18, tmp_path / "bench" / "reference-monai-attention-unet", progress=False)
    report = run_benchmark([str(row)], phantom_hc18, tmp_path / "bench", progress=False, repeats=1)
    rows = [entry["row"] for entry in report["models"]]
    assert [r["model"] for r in rows] == ["monai-attention-unet"]
    from fetometry.data.hc18 import load_hc18
    from fetometry.data.splits import recipe_split

    assert rows[0]["n"] == len(recipe_split(load_hc18(phantom_hc18), tiny)["val"]) > 0
    assert rows[0]["train_minutes"] is not None
    assert (tmp_path / "bench" / "reference-monai-attention-unet" / "model" / "MODEL_CARD.md").is_file()
