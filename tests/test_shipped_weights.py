"""Every shipped weights folder is complete: weights under 25 MB, a config whose HC
offset was calibrated, the split that trained it, and a model card with the data's
attribution, the hardware it trained on and its validation metrics."""

from __future__ import annotations

import json

import pytest

from fetometry.inference.predictor import Predictor
from fetometry.resources import resolve_weights, shipped_models

SHIPPED = shipped_models()


def test_the_five_architectures_and_the_reference_ship():
    models = {json.loads((resolve_weights(name) / "config.json").read_text())["model"] for name in SHIPPED}
    assert {"medsegdiff-v2", "duck-net", "attention-unet", "unext", "transunet"} <= models
    assert "reference-monai-attention-unet" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_weights_folder_is_complete(name):
    folder = resolve_weights(name)
    for file in folder.iterdir():
        assert file.stat().st_size < 25 * 1024 * 1024, file
    config = json.loads((folder / "config.json").read_text())
    assert 1.0 < config["hc_offset_px"] < 1.8 and config["calibration_images"] > 500
    split = json.loads((folder / "split.json").read_text())
    assert len(split["train"]) > 500 and len(split["val"]) > 100
    card = (folder / "MODEL_CARD.md").read_text()
    assert "CC BY 4.0" in card and "10.5281/zenodo.1327317" in card
    hardware = config["training"]["hardware"]
    assert hardware["cpu"] in card and hardware.get("gpu", "") in card
    assert "Scored" in card and "VALIDATION split" in card  # the card carries its metrics
    Predictor.from_weights(name)  # loads: the weights match the architecture
