"""The trainer really learns, records what it did, and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, Killed, killed_after_second_epoch
from safetensors.torch import load_file

from fetometry.data.hc18 import load_hc18
from fetometry.training.config import TrainConfig
from fetometry.training.trainer import Trainer
from fetometry.weights_config import WeightsConfig


def test_tiny_training_lowers_the_loss_and_learns(tiny_run):
    history = [json.loads(json.dumps(r)) for r in _read_log(tiny_run / "log.csv")]
    assert float(history[-1]["train_loss"]) < 0.6 * float(history[0]["train_loss"])
    assert max(float(r["val_dice"]) for r in history) > 0.7


def test_run_writes_manifest_split_and_weights_folder(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    for key in ("config", "split", "git_commit", "hardware", "wall_time_s", "best_val_dice_canvas"):
        assert key in manifest
    split = json.loads((tiny_run / "split.json").read_text())
    subjects = lambda names: {n.split("_")[0] for n in names}  # noqa: E731
    assert not subjects(split["train"]) & subjects(split["val"]), "a subject is in both splits"
    config = json.loads((tiny_run / "model" / "config.json").read_text())
    assert config["canvas_hw"] == [64, 96]
    # Phantom masks are exact: the calibrated offset must be near 0 px (the boundary
    # of a pixel mask lies half a pixel outside the outermost pixel centres at most).
    assert abs(config["hc_offset_px"]) < 0.75


def _read_log(path):
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def one_thread():
    """Exact comparisons of two runs train on one thread: a 16-core machine (torch 2.11)
    gave two runs that differed in the last bits where 2 cores gave identical ones, as
    its kernels split reductions between threads in a varying order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_killed_run_resumes_to_the_same_weights(phantom_hc18, tmp_path, one_thread):
    samples = load_hc18(phantom_hc18)
    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 4, "augment_strength": 0.5})
    from fetometry.data.augment import Augmenter

    Trainer(config, tmp_path / "straight", progress=False).fit(samples, augment=Augmenter(strength=0.5))
    with pytest.raises(Killed):
        killed_after_second_epoch()(config, tmp_path / "resumed", progress=False).fit(
            samples, augment=Augmenter(strength=0.5)
        )
    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed.fit(samples, augment=Augmenter(strength=0.5))
    assert resumed.start_epoch == 2
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_a_corrupt_image_is_skipped_by_name(phantom_hc18, tmp_path):
    import shutil

    root = tmp_path / "hc18"
    shutil.copytree(phantom_hc18, root)
    victim = sorted((root / "training_set").glob("*HC.png"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    from fetometry.training.dataset import SegmentationDataset

    dataset = SegmentationDataset(load_hc18(root), (64, 96), progress=False)
    assert [name for name, _ in dataset.skipped] == [victim.name]
    assert len(dataset) == len(load_hc18(phantom_hc18)) - 1


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epochz": 3})


def test_shipped_recipe_parses():
    from conftest import REPO

    config = TrainConfig.from_file(REPO / "configs" / "attention-unet.toml")
    assert config.model == "attention-unet" and config.bf16 and config.channels_last
    assert np.isclose(config.val_fraction, 0.2)


def test_exported_weights_have_a_model_card(tiny_run):
    card = (tiny_run / "model" / "MODEL_CARD.md").read_text()
    config = json.loads((tiny_run / "model" / "config.json").read_text())
    assert config["data"]["images"] == len(load_hc18(config["data"]["path"]))
    assert json.loads((tiny_run / "model" / "split.json").read_text()) == json.loads(
        (tiny_run / "split.json").read_text()
    )
    for needed in ("## Data", "## Recipe", "## Hardware", "## Metrics", "CC BY 4.0", "decision support"):
        assert needed in card, needed


def test_training_on_two_data_sets_keeps_their_subjects_apart(tmp_path):
    from fetometry.data.synthetic import write_phantom_dataset
    from fetometry.training.run import train_and_export

    centres = [
        write_phantom_dataset(tmp_path / name, 8, seed=seed, size=(128, 192))
        for name, seed in (("clinic", 21), ("hc18", 22))
    ]
    recipe = {**TINY_RECIPE, "epochs": 1, "max_steps": 2}
    folder = train_and_export(TrainConfig.from_dict(recipe), centres, tmp_path / "run", progress=False)
    config = json.loads((folder / "config.json").read_text())
    assert config["data"]["path"] == [str(c) for c in centres] and config["data"]["images"] == 16
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    names = split["train"] + split["val"]
    assert len(names) == 16 and {n.split("/")[0] for n in names} == {"clinic", "hc18"}


def test_tensorboard_logs_hold_the_csv_rows(phantom_hc18, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 2, "tensorboard": True})
    Trainer(config, tmp_path / "run", progress=False).fit(load_hc18(phantom_hc18))
    rows = _read_log(tmp_path / "run" / "log.csv")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = events.Scalars("val_dice")
    assert [e.step for e in logged] == [int(r["step"]) for r in rows]
    assert [round(e.value, 5) for e in logged] == [round(float(r["val_dice"]), 5) for r in rows]
    assert {"train_loss", "lr", "wall_time_s"} <= set(events.Tags()["scalars"])


def test_init_from_starts_from_the_given_weights(tiny_run, phantom_hc18, tmp_path):
    """A run initialised from trained weights validates like them before its first step;
    provenance (earlier epochs and time) reaches the exported config and card."""
    from fetometry.training.run import train_and_export

    before = float(_read_log(tiny_run / "log.csv")[-1]["val_dice"])
    config = TrainConfig.from_dict(
        {**TINY_RECIPE, "epochs": 1, "max_steps": 1, "lr": 1e-6, "init_from": str(tiny_run / "model")}
    )
    folder = train_and_export(config, phantom_hc18, tmp_path / "continued", progress=False)
    after = float(_read_log(tmp_path / "continued" / "log.csv")[0]["val_dice"])
    assert after > 0.9 * before and after > 0.6  # a random start scores far lower (test above: the first epoch)
    initial = json.loads((folder / "config.json").read_text())["training"]["initialised_from"]
    assert initial["epochs_run"] == len(_read_log(tiny_run / "log.csv"))
    assert "Initialised from" in (folder / "MODEL_CARD.md").read_text()


def test_init_from_refuses_weights_that_saw_our_validation_images(tiny_run, phantom_hc18, tmp_path):
    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 1, "split_seed": 7, "init_from": str(tiny_run / "model")})
    with pytest.raises(ValueError, match="validation images"):
        Trainer(config, tmp_path / "leaky", progress=False).fit(load_hc18(phantom_hc18))


def test_flips_only_augmentation_is_a_recipe_choice():
    from fetometry.data.augment import FlipAugmenter

    with pytest.raises(ValueError, match="augmentation"):
        TrainConfig.from_dict({"augmentation": "everything"})
    image = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    seen = set()
    for seed in range(20):
        out, mask = FlipAugmenter()(image, image > 0.5, np.random.default_rng(seed))
        assert np.array_equal(out > 0.5, mask > 0.5)  # image and mask flip together
        seen.add(out.tobytes())
    assert len(seen) == 4  # none, left-right, up-down, both


def test_device_is_checked():
    from fetometry.training.trainer import resolve_device

    with pytest.raises(ValueError, match="device"):
        TrainConfig.from_dict({"device": "tpu"})
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_weights_status_heads_its_model_card(tiny_run, tmp_path):
    import shutil

    from fetometry.training.model_card import write_model_card

    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    config["status"] = "Undertrained: not for measurement"
    (folder / "config.json").write_text(json.dumps(config))
    card = write_model_card(folder).read_text()
    assert card.index("Undertrained: not for measurement") < card.index("## What it does")


def test_every_shipped_recipe_parses_and_names_a_registered_model():
    from conftest import REPO

    from fetometry.models import get_spec

    recipes = sorted((REPO / "configs").glob("*.toml"))
    assert len(recipes) >= 6
    for path in recipes:
        config = TrainConfig.from_file(path)
        get_spec(config.model, config.variant)  # raises for an unknown model or variant


def test_workers_give_the_same_run_as_the_main_process(phantom_hc18, tmp_path, one_thread):
    """Augmentation is a function of (seed, epoch, index), so worker processes change
    nothing but speed."""
    from fetometry.data.augment import Augmenter

    samples = load_hc18(phantom_hc18)
    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 2, "augment_strength": 0.5})
    Trainer(config, tmp_path / "main", progress=False).fit(samples, augment=Augmenter(strength=0.5))
    workers = TrainConfig.from_dict({**config.to_dict(), "num_workers": 2})
    Trainer(workers, tmp_path / "workers", progress=False).fit(samples, augment=Augmenter(strength=0.5))
    a = load_file(str(tmp_path / "main" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "workers" / "checkpoints" / "last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_time_limit_stops_at_an_epoch_end_and_says_so(phantom_hc18, tmp_path):
    samples = load_hc18(phantom_hc18)
    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 5, "max_minutes": 1e-6})
    result = Trainer(config, tmp_path / "run", progress=False).fit(samples)
    assert result.epochs_run == 1  # the limit is checked after each epoch, never inside one
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stopped_by"] == "time_limit" and not manifest["stopped_early"]
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()


def test_the_fp16_loss_scale_is_checkpointed(phantom_hc18, tmp_path):
    """fp16 training (GPUs without bf16) scales the loss; a resumed run must continue
    with the scale and growth count the killed one had, not start over."""
    samples = load_hc18(phantom_hc18)
    config = TrainConfig.from_dict({**TINY_RECIPE, "epochs": 1})
    first = Trainer(config, tmp_path, progress=False)
    first.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)  # stands in for the GPU's
    first.fit(samples)
    resumed = Trainer(TrainConfig.from_dict({**config.to_dict(), "epochs": 2}), tmp_path, progress=False)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=3)
    assert resumed.try_resume()
    assert resumed.scaler.state_dict() == first.scaler.state_dict()
    assert first.scaler.get_scale() > 1024.0  # it grew during the epoch: the state is not the initial one


def test_the_recipe_chooses_the_exported_checkpoint():
    from fetometry.training.run import exported_checkpoint

    assert exported_checkpoint(TrainConfig()) == "best.safetensors"
    assert exported_checkpoint(TrainConfig.from_dict({"export_checkpoint": "last"})) == "last.safetensors"
    ema = TrainConfig.from_dict({"export_checkpoint": "last", "ema_decay": 0.99})
    assert exported_checkpoint(ema) == "last_ema.safetensors"
    with pytest.raises(ValueError, match="export_checkpoint"):
        TrainConfig.from_dict({"export_checkpoint": "median"})


def test_prediction_offset_follows_the_models_boundary(monkeypatch):
    """A model whose boundary lies 3 px outside the reference masks' gets an offset 3 px
    above the mask offset: the calibration reads the model's own fitted ellipses."""
    import cv2

    from fetometry.inference.predictor import Prediction, Predictor
    from fetometry.resources import SAMPLES_DIR
    from fetometry.training.run import calibrate_on, calibrate_on_predictions

    samples = load_hc18(SAMPLES_DIR)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    # calibrate_on_predictions segments the samples in their order
    grown = iter(cv2.dilate(s.load_mask().astype(np.uint8), disc).astype(np.float32) for s in samples)

    def predict_batch(images):
        return [Prediction(probability=p, mask=p > 0.5, confidence=1.0) for p in (next(grown) for _ in images)]

    predictor = Predictor.from_weights()
    monkeypatch.setattr(predictor, "predict_batch", predict_batch)
    from_masks = calibrate_on(samples, progress=False)["hc_offset_px"]
    from_predictions = calibrate_on_predictions(predictor, samples)
    assert from_predictions["calibration_images"] == len(samples)
    assert from_predictions["hc_offset_px"] - from_masks == pytest.approx(3.0, abs=0.3)


def test_model_card_names_where_the_offset_comes_from():
    from fetometry.training.model_card import _calibration_line

    masks = _calibration_line(WeightsConfig(hc_offset_px=1.4, calibration_images=600))
    assert "reference masks" in masks and "fitted ellipses" not in masks
    own = _calibration_line(WeightsConfig(hc_offset_px=1.1, hc_offset_px_masks=1.4, calibration_images=600))
    assert "own fitted ellipses" in own and "0.30 px inside" in own
    wider = _calibration_line(WeightsConfig(hc_offset_px=1.9, hc_offset_px_masks=1.4, calibration_images=600))
    assert "0.50 px outside" in wider


def test_the_recipe_can_calibrate_the_offset_on_the_models_own_ellipses(tiny_run, phantom_hc18, tmp_path, monkeypatch):
    """hc_offset_from = "predictions": the exported folder's offset comes from its own
    fitted ellipses on the training split, the mask offset kept beside it (also when
    written twice); a model that fits no training head keeps the mask offset."""
    import shutil

    from fetometry.inference.predictor import Prediction, Predictor
    from fetometry.training.run import _frame_scale_ratio, calibrate_and_export, write_prediction_offset

    with pytest.raises(ValueError, match="hc_offset_from"):
        TrainConfig.from_dict({"hc_offset_from": "guess"})
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("model"))
    samples = load_hc18(phantom_hc18)
    data = {"path": str(phantom_hc18), "layout": "hc18", "images": len(samples)}
    masks_only = WeightsConfig.read(calibrate_and_export(run_dir, TrainConfig.from_dict(TINY_RECIPE), samples, data))
    config = TrainConfig.from_dict({**TINY_RECIPE, "hc_offset_from": "predictions"})
    folder = calibrate_and_export(run_dir, config, samples, data, progress=False)
    own = WeightsConfig.read(folder)
    training = len(json.loads((run_dir / "split.json").read_text())["train"])
    assert own.hc_offset_px_masks == masks_only.hc_offset_px and 0 < own.calibration_images <= training
    # The offsets are in pixels of an 800x540 frame; in the phantoms' own pixels, a few at most.
    in_frame_px = own.hc_offset_px / _frame_scale_ratio(samples[0].load_image().shape, config.canvas_hw)
    assert own.hc_offset_px != masks_only.hc_offset_px and abs(in_frame_px) < 3
    assert "own fitted ellipses" in (folder / "MODEL_CARD.md").read_text()
    write_prediction_offset(folder, {"hc_offset_px": 0.25, "calibration_images": 3})
    assert WeightsConfig.read(folder).hc_offset_px_masks == masks_only.hc_offset_px  # not the first prediction offset

    def nothing(self, images):
        return [Prediction(np.zeros(i.shape, np.float32), np.zeros(i.shape, bool), 0.0) for i in images]

    monkeypatch.setattr(Predictor, "predict_batch", nothing)
    kept = WeightsConfig.read(calibrate_and_export(run_dir, config, samples, data, progress=False))
    assert kept.hc_offset_px == masks_only.hc_offset_px and kept.hc_offset_px_masks is None


def test_distilled_targets_blend_the_mask_and_the_teachers_probability(tiny_run, phantom_hc18):
    """training.distill: each target becomes (1 - w) mask + w teacher probability on the
    same canvas; w = 0 leaves the masks as they are."""
    from fetometry.inference.predictor import Predictor
    from fetometry.training.dataset import SegmentationDataset
    from fetometry.training.distill import blend_teacher_targets

    samples = load_hc18(phantom_hc18)[:6]
    canvas = (TINY_RECIPE["canvas_h"], TINY_RECIPE["canvas_w"])
    dataset = SegmentationDataset(samples, canvas, progress=False)
    masks = [m.copy() for m in dataset.masks]
    teacher = str(tiny_run / "model")
    blend_teacher_targets(dataset, [teacher], 0.0, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(masks, dataset.masks))

    blend_teacher_targets(dataset, [teacher], 0.25, progress=False)
    probability = Predictor.from_weights(teacher).predict(dataset.images[0].astype(np.float32) / 255).probability
    expected = np.round(np.clip(0.75 * masks[0] / 255 + 0.25 * probability, 0, 1) * 255)
    assert np.abs(dataset.masks[0].astype(int) - expected).max() <= 1
    assert not np.array_equal(dataset.masks[0], masks[0])  # a teacher unsure at the edge softens it


def test_distillation_is_checked_in_the_recipe(tiny_run, phantom_hc18, tmp_path):
    with pytest.raises(ValueError, match="teacher's share"):
        TrainConfig.from_dict({**TINY_RECIPE, "distill_weight": 1.5})
    with pytest.raises(ValueError, match="list of model names"):
        TrainConfig.from_dict({**TINY_RECIPE, "distill_from": "unext-gpu"})
    # A teacher that trained on this run's validation images would leak them into its targets.
    leaky = TrainConfig.from_dict(
        {**TINY_RECIPE, "epochs": 1, "split_seed": 7, "distill_from": [str(tiny_run / "model")]}
    )
    with pytest.raises(ValueError, match="teacher .* validation images"):
        Trainer(leaky, tmp_path / "leaky", progress=False).fit(load_hc18(phantom_hc18))
