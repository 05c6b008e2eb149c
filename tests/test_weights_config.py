"""WeightsConfig: a weights folder's config.json, typed and checked in one place."""

from __future__ import annotations

import json

import pytest
import torch

from fetometry.biometry.quality import DEFAULT_THRESHOLDS
from fetometry.inference.predictor import Predictor
from fetometry.resources import resolve_weights, shipped_models
from fetometry.weights_config import PLANE_CLASSIFIER, SEGMENTER, WeightsConfig, WeightsConfigError


@pytest.mark.parametrize("name", shipped_models(kind=None))
def test_every_shipped_config_reads_and_writes_back_what_it_holds(name):
    folder = resolve_weights(name)
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = WeightsConfig.read(folder)
    assert config.weights_dir == str(folder) and config.model == raw["model"]
    written = config.to_dict()
    for key, value in raw.items():
        if key == "quality":  # filled in with the defaults of the limits it leaves out
            assert {k: written[key][k] for k in value} == value
        elif value in ({}, [], None):  # empty: not recorded, left out
            assert key not in written
        else:
            assert written[key] == value, key
    assert WeightsConfig.from_dict(written).replace(weights_dir=config.weights_dir) == config


def test_the_kinds_and_what_each_needs(tmp_path):
    assert WeightsConfig.read(resolve_weights("sononet-16")).kind == PLANE_CLASSIFIER
    assert WeightsConfig.read(resolve_weights("unext")).kind == SEGMENTER
    (tmp_path / "config.json").write_text(json.dumps({"model": "unext", "variant": "compact"}))
    with pytest.raises(WeightsConfigError, match="a segmenter needs canvas_hw"):
        WeightsConfig.read(tmp_path)
    assert WeightsConfig.read(tmp_path, complete=False).canvas_hw is None  # read for its records only
    with pytest.raises(WeightsConfigError, match="kind 'detector'"):
        WeightsConfig.from_dict({"kind": "detector"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("threshold", "0.5", "'threshold' must be a number"),
        ("hc_offset_px", True, "'hc_offset_px' must be a number"),
        ("canvas_hw", [256], r"'canvas_hw' must be \[height, width\]"),
        ("canvas_hw", [256, 0], r"'canvas_hw' must be \[height, width\]"),
        ("calibration_images", -3, "'calibration_images' must be a count"),
        ("second_look", 1.3, "'second_look' must be a JSON object"),
        ("members", "a,b", "'members' must be a list"),
        ("quality", {"min_confidance": 0.9}, "unknown quality thresholds"),
        ("model", 7, "'model' must be text"),
    ],
)
def test_a_wrong_value_fails_by_name_when_the_folder_is_read(tmp_path, key, value, message):
    raw = {"model": "unext", "variant": "compact", "canvas_hw": [256, 384], key: value}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsConfigError, match=message):
        WeightsConfig.read(tmp_path)


def test_a_file_that_is_not_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        WeightsConfig.read(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsConfigError, match="not valid JSON"):
        WeightsConfig.read(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(WeightsConfigError, match="a JSON object"):
        WeightsConfig.read(tmp_path)


def test_unknown_keys_are_kept_and_defaults_mean_not_recorded():
    config = WeightsConfig.from_dict({"model": "m", "labels": ["a", "b"], "quality": {"min_confidence": 0.8}})
    assert config.extra == {"labels": ["a", "b"]} and config.to_dict()["labels"] == ["a", "b"]
    assert config.thresholds.min_confidence == 0.8
    empty = WeightsConfig()
    assert empty.thresholds == DEFAULT_THRESHOLDS and empty.recipe == {} and empty.members == ()
    assert "quality" not in empty.to_dict() and "weights_dir" not in WeightsConfig(weights_dir="/x").to_dict()


def test_the_predictor_reads_one_and_refuses_a_plane_classifier():
    network = torch.nn.Conv2d(1, 1, 1)
    from_dict = Predictor(network, canvas_hw=(32, 32), config={"display_name": "a", "hc_offset_px": 1})
    assert isinstance(from_dict.config, WeightsConfig) and from_dict.name == "a" and from_dict.hc_offset_px == 1.0
    with pytest.raises(WeightsConfigError, match="not a head segmenter"):
        Predictor.from_weights("sononet-16")
