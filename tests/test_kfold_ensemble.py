"""Subject-grouped k-fold training and fold ensembles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY_RECIPE

from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import subject_id
from fetometry.inference.predictor import Predictor
from fetometry.training.config import TrainConfig
from fetometry.training.trainer import training_splits


def test_k_fold_splits_validate_every_subject_exactly_once(phantom_hc18):
    samples = load_hc18(phantom_hc18)
    seen: list[str] = []
    for fold in range(3):
        splits = training_splits(samples, TrainConfig.from_dict({**TINY_RECIPE, "folds": 3, "fold": fold}))
        train_subjects = {subject_id(s.name) for s in splits["train"]}
        val_subjects = {subject_id(s.name) for s in splits["val"]}
        assert not train_subjects & val_subjects  # subject-grouped
        assert len(splits["train"]) + len(splits["val"]) == len(samples)
        seen += sorted(val_subjects)
    assert sorted(seen) == sorted({subject_id(s.name) for s in samples})


def test_a_fold_that_does_not_exist_is_refused(phantom_hc18):
    with pytest.raises(ValueError, match="fold 3 does not exist"):
        training_splits(load_hc18(phantom_hc18), TrainConfig.from_dict({**TINY_RECIPE, "folds": 3, "fold": 3}))


def test_an_ensemble_averages_member_probabilities(tiny_weights, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(tiny_weights, twin)
    config = json.loads((twin / "config.json").read_text())
    config["hc_offset_px"] = config["hc_offset_px"] + 1.0
    (twin / "config.json").write_text(json.dumps(config))
    single = Predictor.from_weights(tiny_weights)
    pair = Predictor.from_weights(f"{tiny_weights},{twin}")
    image = np.random.default_rng(0).random((128, 192)).astype(np.float32)
    np.testing.assert_allclose(pair.predict(image).probability, single.predict(image).probability, atol=1e-6)
    assert pair.hc_offset_px == pytest.approx(single.hc_offset_px + 0.5)
    assert pair.name.startswith("ensemble(")


def test_ensemble_members_must_share_the_canvas(tiny_weights, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_weights, other)
    config = json.loads((other / "config.json").read_text())
    config["canvas_hw"] = [32, 48]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different canvases"):
        Predictor.from_weights(f"{tiny_weights},{other}")


def test_model_split_finds_the_fold_a_k_fold_run_validated_on(phantom_hc18):
    """``fetometry.data.recipe_split`` (what model_split applies to a weights folder's
    recorded recipe) gives the trainer's own split, fold by fold."""
    from fetometry.data.splits import model_split, recipe_split

    samples = load_hc18(phantom_hc18)
    for fold in range(3):
        recipe = {**TINY_RECIPE, "folds": 3, "fold": fold}
        trained = training_splits(samples, TrainConfig.from_dict(recipe))
        assert recipe_split(samples, recipe) == trained
        assert model_split({"training": {"recipe": recipe}}, source="recipe").validation(samples) == trained["val"]
    with pytest.raises(ValueError, match="fold 3 does not exist"):
        recipe_split(samples, {**TINY_RECIPE, "folds": 3, "fold": 3})
