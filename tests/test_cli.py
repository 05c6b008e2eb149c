"""The CLI contract of ARCHITECTURE.md, on phantoms and a tiny model trained in the tests."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetometry.cli import main
from fetometry.pipeline import CSV_COLUMNS

HC18_COLUMNS = ["filename", "center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad"]


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_predict_hc18_folder_writes_csv_and_masks(phantom_hc18, tiny_weights, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["-q", "predict", str(phantom_hc18), "--out", str(out), "--model", str(tiny_weights)]) == 0
    rows = _rows(out / "measurements.csv")
    header = list(rows[0])
    assert header[:6] == HC18_COLUMNS
    assert {"hc_mm", "bpd_mm", "ofd_mm", "cephalic_index", "pixel_size_mm", "model", "status"} <= set(header)
    images = sorted((phantom_hc18 / "training_set").glob("*HC.png"))
    assert [r["filename"] for r in rows] == [p.name for p in images]
    for image_path in images:
        mask = cv2.imread(str(out / "masks" / f"{image_path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert mask.shape == cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED).shape[:2]
    measured = [r for r in rows if r["status"] == "ok"]
    assert measured, "the tiny model measured no phantom at all"
    for row in measured:  # pixel sizes came from the folder's CSV automatically
        assert float(row["pixel_size_mm"]) > 0 and float(row["hc_mm"]) > 0


def test_predict_without_pixel_size_leaves_mm_empty(phantom_hc18, tiny_weights, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for image in sorted((phantom_hc18 / "training_set").glob("*HC.png"))[:3]:
        shutil.copy(image, folder / image.name)
    out = tmp_path / "pred"
    # Phantoms are not ultrasound heads: the plane check calls them out of distribution
    # (tests/test_plane.py); here the pixel-size handling is under test.
    assert (
        main(["-q", "predict", str(folder), "--out", str(out), "--model", str(tiny_weights), "--plane-check", "off"])
        == 0
    )
    for row in _rows(out / "measurements.csv"):
        assert row["status"] in {"no_pixel_size", "no_head", "fit_failed", "refused"}
        assert all(row[key] == "" for key in ("hc_mm", "bpd_mm", "ofd_mm", "center_x_mm", "semi_axes_a_mm"))
        assert row["detail"]


def test_predict_batch_survives_bad_files(phantom_hc18, tiny_weights, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    shutil.copy(good, folder / good.name)
    (folder / "broken.png").write_bytes(good.read_bytes()[:200])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "empty.bmp").write_bytes(b"")
    out = tmp_path / "pred"
    assert (
        main(["-q", "predict", str(folder), "--out", str(out), "--model", str(tiny_weights), "--pixel-size", "0.1"])
        == 0
    )
    status = {r["filename"]: r["status"] for r in _rows(out / "measurements.csv")}
    assert status["broken.png"] == status["notes.jpg"] == status["empty.bmp"] == "unreadable"
    assert status[good.name] != "unreadable"


def test_predict_exits_nonzero_when_nothing_could_be_done(tiny_weights, tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("junk")
    assert main(["-q", "predict", str(folder), "--out", str(tmp_path / "o"), "--model", str(tiny_weights)]) == 1
    assert (
        main(["-q", "predict", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--model", str(tiny_weights)])
        == 1
    )
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0.001", "5", "nan"])
def test_absurd_pixel_size_is_refused(phantom_hc18, tiny_weights, tmp_path, capsys, value):
    image = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    assert main(["measure", str(image), "--pixel-size", value, "--model", str(tiny_weights)]) == 1
    assert "pixel" in capsys.readouterr().err


def test_pixel_csv_without_the_image_reports_it(phantom_hc18, tiny_weights, tmp_path):
    image = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    table = tmp_path / "sizes.csv"
    table.write_text("filename,pixel size(mm)\nother.png,0.1\n")
    out = tmp_path / "pred"
    assert (
        main(
            [
                "-q",
                "predict",
                str(image),
                "--out",
                str(out),
                "--pixel-csv",
                str(table),
                "--model",
                str(tiny_weights),
                "--plane-check",
                "off",
            ]
        )
        == 0
    )
    row = _rows(out / "measurements.csv")[0]
    assert row["hc_mm"] == "" and "not in the pixel-size CSV" in row["detail"]


def test_measure_json_has_the_contract_keys(phantom_hc18, tiny_weights, capsys):
    image = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    assert main(["measure", str(image), "--pixel-size", "0.1", "--json", "--model", str(tiny_weights)]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "hc_mm",
        "bpd_mm",
        "ofd_mm",
        "cephalic_index",
        "center_x_mm",
        "center_y_mm",
        "semi_axes_a_mm",
        "semi_axes_b_mm",
        "angle_rad",
        "status",
    ):
        assert key in result
    assert result["model"] == "attention-unet"  # the model that measured, from its config
    if result["status"] == "ok":
        assert result["bpd_mm"] <= result["ofd_mm"]
        assert result["hc_mm"] == pytest.approx(np.pi * (result["semi_axes_a_mm"] + result["semi_axes_b_mm"]), rel=0.05)


def test_measure_with_comma_separated_models_runs_their_ensemble(phantom_hc18, tiny_weights, capsys):
    image = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    assert main(["measure", str(image), "--pixel-size", "0.1", "--json", "--model", str(tiny_weights)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert (
        main(["measure", str(image), "--pixel-size", "0.1", "--json", "--model", f"{tiny_weights},{tiny_weights}"]) == 0
    )
    pair = json.loads(capsys.readouterr().out)
    assert pair["model"].startswith("ensemble(")
    assert pair["status"] == single["status"]
    if single["status"] == "ok":  # two identical members: the same measurement
        assert pair["hc_mm"] == pytest.approx(single["hc_mm"], rel=1e-4)


def test_measure_unreadable_image_fails_clearly(tmp_path, tiny_weights, capsys):
    bad = tmp_path / "scan.png"
    bad.write_text("hello")
    assert main(["measure", str(bad), "--pixel-size", "0.1", "--model", str(tiny_weights)]) == 1
    assert "not a readable image" in capsys.readouterr().err


def test_unknown_model_lists_the_shipped_ones(tmp_path, phantom_hc18, capsys):
    image = sorted((phantom_hc18 / "training_set").glob("*HC.png"))[0]
    assert main(["measure", str(image), "--model", "no-such-model"]) == 1
    assert "no model" in capsys.readouterr().err


def test_evaluate_scores_predictions(phantom_hc18, tiny_weights, tmp_path, capsys):
    out = tmp_path / "pred"
    main(["-q", "predict", str(phantom_hc18), "--out", str(out), "--model", str(tiny_weights)])
    assert main(["evaluate", "--pred", str(out), "--truth", str(phantom_hc18)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["per_case"]) == len(list((phantom_hc18 / "training_set").glob("*HC.png")))
    assert 0.0 <= summary["mean"]["dice"] <= 1.0
    assert (out / "metrics.csv").is_file()


def test_csv_columns_follow_the_contract():
    assert CSV_COLUMNS[:6] == HC18_COLUMNS
    assert CSV_COLUMNS.index("status") < CSV_COLUMNS.index("detail")


def test_every_verb_of_the_cli_contract_is_registered():
    """ARCHITECTURE.md's CLI contract: the verbs other tools call."""
    import argparse

    from fetometry.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {
        "predict",
        "measure",
        "train",
        "evaluate",
        "benchmark",
        "explain",
        "serve",
        "stream",
        "export",
        "models",
        "demo",
    } <= set(verbs)
