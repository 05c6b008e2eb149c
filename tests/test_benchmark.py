"""`fetometry benchmark`: the comparison table on one protocol."""

from __future__ import annotations

import csv
import json

import pytest

from fetometry.cli import main
from fetometry.evaluation.benchmark import COLUMNS, within_subject_repeatability


def test_repeatability_is_the_mean_over_subjects_of_pairwise_differences():
    names = ["010_HC.png", "010_2HC.png", "010_3HC.png", "011_HC.png", "011_2HC.png", "012_HC.png"]
    hcs = [100.0, 102.0, 106.0, 200.0, 201.0, 150.0]
    result = within_subject_repeatability(names, hcs)
    # subject 010: pairs |100-102|, |100-106|, |102-106| -> mean 4; subject 011: 1; 012 has one image.
    assert result == {"mean_abs_difference_mm": pytest.approx(2.5), "subjects": 2}


def test_repeatability_leaves_out_images_without_an_hc():
    result = within_subject_repeatability(["010_HC.png", "010_2HC.png", "011_HC.png"], [100.0, None, 120.0])
    assert result == {"mean_abs_difference_mm": None, "subjects": 0}


def test_benchmark_writes_table_csv_json_and_plot(tiny_weights, phantom_hc18, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "-q",
            "benchmark",
            "--data",
            str(phantom_hc18),
            "--models",
            str(tiny_weights),
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    (entry,) = report["models"]
    row = entry["row"]
    assert row["n"] == len(entry["per_image"]) > 0
    assert 0.0 <= row["dice"] <= 1.0 and row["params_m"] > 0 and row["cpu_ms_256"] > 0
    with (out / "benchmark.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS and len(rows) == 1
    table = (out / "benchmark.md").read_text()
    assert "| HC MAE mm |" in table and "Protocol:" in table
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert "benchmark.md" in capsys.readouterr().out


def test_two_data_sets_combine_with_metrics_per_source(tiny_weights, tmp_path):
    from fetometry.data.synthetic import write_phantom_dataset
    from fetometry.evaluation.benchmark import run_benchmark
    from fetometry.training.run import load_datasets

    centre_a = write_phantom_dataset(tmp_path / "centre_a", 16, seed=11, size=(128, 192))
    centre_b = write_phantom_dataset(tmp_path / "centre_b", 16, seed=12, size=(128, 192))
    samples = load_datasets([centre_a, centre_b])
    assert {s.source for s in samples} == {"centre_a", "centre_b"}
    a_subjects = {s.subject for s in samples if s.source == "centre_a"}
    assert a_subjects and not a_subjects & {s.subject for s in samples if s.source == "centre_b"}  # centres never merge
    report = run_benchmark([str(tiny_weights)], [centre_a, centre_b], tmp_path / "out", progress=False, repeats=1)
    per_source = report["models"][0]["summary"]["per_source"]
    assert set(per_source) == {"centre_a", "centre_b"}
    assert sum(m["n"] for m in per_source.values()) == report["models"][0]["row"]["n"]
    assert "Per data set" in (tmp_path / "out" / "benchmark.md").read_text()


def test_ellipse_dice_scores_the_filled_fitted_ellipse():
    from types import SimpleNamespace

    from fetometry.biometry.ellipse import Ellipse
    from fetometry.evaluation.benchmark import _ellipse_dice

    ellipse = Ellipse.from_axes(48.0, 32.0, 30.0, 20.0, 0.3)
    truth = ellipse.to_mask((64, 96))
    ragged = truth.copy()
    ragged[::3, ::3] = False  # a mask with holes: its own Dice is lower
    assert _ellipse_dice(SimpleNamespace(ellipse=ellipse), ragged, truth) == 1.0
    mask_dice = 2 * (ragged & truth).sum() / (ragged.sum() + truth.sum())
    assert _ellipse_dice(SimpleNamespace(ellipse=None), ragged, truth) == pytest.approx(mask_dice)
    assert _ellipse_dice(SimpleNamespace(ellipse=None), None, truth) == 0.0


def test_training_minutes_add_up_the_legs_of_a_continued_run():
    from fetometry.evaluation.benchmark import total_training_minutes

    assert total_training_minutes({"wall_time_s": 600}) == 10
    assert total_training_minutes({"wall_time_s": 600, "initialised_from": {"wall_time_s": 1200}}) == 30
    assert total_training_minutes({}) is None


def _copy_weights(source, target, **training_changes):
    """A copy of a weights folder whose recorded recipe has some fields changed."""
    import shutil

    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["training"]["recipe"].update(training_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_an_ensemble_named_with_plus_is_one_row_with_the_members_training_time(tiny_weights, phantom_hc18, tmp_path):
    twin = _copy_weights(tiny_weights, tmp_path / "twin")
    out = tmp_path / "bench"
    code = main(
        [
            "-q",
            "benchmark",
            "--data",
            str(phantom_hc18),
            "--models",
            f"{tiny_weights},{tiny_weights}+{twin}",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    single, pair = (entry["row"] for entry in json.loads((out / "benchmark.json").read_text())["models"])
    assert pair["model"].startswith("ensemble(") and pair["n"] == single["n"]
    assert pair["train_minutes"] == pytest.approx(2 * single["train_minutes"])
    assert pair["dice"] == pytest.approx(single["dice"], abs=1e-6)  # identical members: the same masks


def test_an_ensemble_whose_members_saw_the_validation_images_is_refused(tiny_weights, phantom_hc18, tmp_path, capsys):
    other_split = _copy_weights(tiny_weights, tmp_path / "other_split", split_seed=1)
    code = main(
        [
            "-q",
            "benchmark",
            "--data",
            str(phantom_hc18),
            "--models",
            f"{tiny_weights}+{other_split}",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "bench"),
        ]
    )
    assert code != 0
    assert "validated on different splits" in capsys.readouterr().err
    assert not (tmp_path / "bench" / "benchmark.md").exists()


def test_training_minutes_of_an_ensemble_add_up_its_members():
    from fetometry.evaluation.benchmark import total_training_minutes

    members = [{"wall_time_s": 600}, {"wall_time_s": 300, "initialised_from": {"wall_time_s": 300}}]
    assert total_training_minutes({"members": members}) == 20
    assert total_training_minutes({"members": [{"wall_time_s": 600}, {}]}) is None


def test_an_ensembles_hardware_lists_each_kind_once():
    from fetometry.evaluation.benchmark import training_hardware

    one, two = {"hardware": {"cpu": "EPYC", "threads": 1}}, {"hardware": {"cpu": "EPYC", "threads": 2}}
    assert training_hardware(one) == "EPYC, 1 threads"
    assert training_hardware({"members": [two, one, two]}) == "EPYC, 2 threads; EPYC, 1 threads"
    assert training_hardware({}) == "unknown"
    gpu = {"hardware": {"cpu": "Xeon", "threads": 16, "gpu": "NVIDIA H200"}}
    assert training_hardware(gpu) == "NVIDIA H200 GPU"
    assert training_hardware({"members": [gpu, one]}) == "NVIDIA H200 GPU; EPYC, 1 threads"
