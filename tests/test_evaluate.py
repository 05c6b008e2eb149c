"""evaluation.evaluate: `fetometry predict` folder vs an HC18-layout / plain truth folder."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from fetometry.evaluation.evaluate import CSV_COLUMNS, EvaluationInputError, evaluate_dirs
from fetometry.io.images import write_mask

SHAPE = (40, 48)
PRED_HEADER = (
    "filename,center_x_mm,center_y_mm,semi_axes_a_mm,semi_axes_b_mm,angle_rad,"
    "hc_mm,bpd_mm,ofd_mm,cephalic_index,pixel_size_mm,model,status,confidence"
)


def _square(col0: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[10:30, col0 : col0 + 20] = True  # 20 x 20
    return mask


def _write_image(path: Path) -> None:
    write_mask(path, np.indices(SHAPE).sum(axis=0) % 2 == 0)  # any readable gray image


def _hc18_truth(root: Path) -> Path:
    """001 (perfect prediction), 002 (prediction moved 2 px), 003 (no prediction)."""
    image_dir = root / "training_set"
    for name in ("001_HC", "002_HC", "003_HC"):
        _write_image(image_dir / f"{name}.png")
        write_mask(image_dir / f"{name}_Annotation.png", _square(10))
    (root / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n"
        "001_HC.png,0.1,100.0\n002_HC.png,0.1,100.0\n003_HC.png,0.1,100.0\n"
    )
    return root


def _predictions(root: Path, rows: list[str], masks: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True)
    (root / "measurements.csv").write_text(PRED_HEADER + "\n" + "\n".join(rows) + "\n")
    for stem, mask in masks.items():
        write_mask(root / "masks" / f"{stem}_mask.png", mask)
    return root


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    truth = _hc18_truth(tmp_path / "truth")
    pred = _predictions(
        tmp_path / "pred",
        [
            "001_HC.png,2,2,1,1,0,101.0,2,2,100,0.1,m,ok,0.9",
            "002_HC.png,2,2,1,1,0,97.0,2,2,100,0.1,m,ok,0.8",
            "999_HC.png,2,2,1,1,0,50.0,2,2,100,0.1,m,ok,0.7",  # no truth: ignored
        ],
        {"001_HC": _square(10), "002_HC": _square(12), "999_HC": _square(10)},
    )
    return pred, truth


def test_evaluate_writes_summary_and_csv(folders, caplog):
    pred, truth = folders
    with caplog.at_level(logging.WARNING):
        summary = evaluate_dirs(pred, truth)
    assert "999_HC.png" in caplog.text  # prediction without truth: warned, ignored

    written = json.loads((pred / "summary.json").read_text())  # default out_dir = pred_dir
    assert written == summary
    assert list(written) == sorted(written)
    assert {"metadata", "mean", "per_case", "summary", "map"} <= set(written)
    meta = written["metadata"]
    assert meta["n_cases"] == 3 and meta["n_missed"] == 1 and meta["n_ignored_predictions"] == 1
    assert "0.50:0.05:0.95" in meta["map_definition"]

    cases = {row["name"]: row for row in written["per_case"]}
    assert set(cases) == {"001_HC.png", "002_HC.png", "003_HC.png"}
    assert cases["001_HC.png"]["dice"] == 1.0 and cases["001_HC.png"]["hausdorff_mm"] == 0.0
    # 20x20 squares 2 columns apart: overlap 360, union 440.
    assert cases["002_HC.png"]["dice"] == pytest.approx(720 / 800)
    assert cases["002_HC.png"]["iou"] == pytest.approx(360 / 440)
    assert cases["002_HC.png"]["hausdorff_mm"] == pytest.approx(0.2)
    assert cases["002_HC.png"]["hc_difference_mm"] == pytest.approx(-3.0)
    assert cases["003_HC.png"]["status"].startswith("missing")
    assert cases["003_HC.png"]["dice"] == 0.0
    assert cases["003_HC.png"]["hausdorff_mm"] is None  # inf written as null
    assert cases["003_HC.png"]["hc_difference_mm"] is None

    assert written["mean"]["dice"] == pytest.approx((1.0 + 0.9 + 0.0) / 3)
    assert written["mean"]["hc_abs_difference_mm"] == pytest.approx(2.0)
    assert written["summary"]["hausdorff_mm"]["n_nonfinite"] == 1
    # mAP, 3 heads: 001 (IoU 1, score .9) then 002 (IoU .818, score .8): t .50-.80
    # reach recall 2/3 (67 of 101 points), t .85-.95 reach 1/3 (34 points).
    assert written["map"] == pytest.approx((7 * 67 + 3 * 34) / 1010)


def test_metrics_csv_has_one_row_per_truth_case(folders, tmp_path):
    pred, truth = folders
    out = tmp_path / "out"
    evaluate_dirs(pred, truth, out)
    with (out / "metrics.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [row["name"] for row in rows] == ["001_HC.png", "002_HC.png", "003_HC.png"]
    assert float(rows[1]["dice"]) == pytest.approx(0.9)
    assert rows[2]["hausdorff_mm"] == "inf"  # CSV keeps the infinite distance of a missed head
    assert rows[2]["status"].startswith("missing")
    assert not (pred / "metrics.csv").exists()  # out_dir respected


def test_mask_of_the_wrong_size_is_an_error(tmp_path):
    truth = _hc18_truth(tmp_path / "truth")
    pred = _predictions(tmp_path / "pred", ["001_HC.png,,,,,,,,,,,m,ok"], {"001_HC": np.ones((20, 20), bool)})
    with pytest.raises(EvaluationInputError, match="original image size"):
        evaluate_dirs(pred, truth)


def test_missing_measurements_csv_is_an_error(tmp_path):
    truth = _hc18_truth(tmp_path / "truth")
    (tmp_path / "pred").mkdir()
    with pytest.raises(EvaluationInputError, match="fetometry predict"):
        evaluate_dirs(tmp_path / "pred", truth)


def test_plain_folder_truth_without_pixel_size(tmp_path):
    pytest.importorskip("fetometry.data.folder")
    truth = tmp_path / "clinic"
    _write_image(truth / "images" / "scan1.png")
    write_mask(truth / "masks" / "scan1.png", _square(10))
    pred = _predictions(tmp_path / "pred", ["scan1.png,,,,,,,,,,,m,no pixel size"], {"scan1": _square(10)})
    summary = evaluate_dirs(pred, truth)
    (case,) = summary["per_case"]
    assert case["dice"] == 1.0
    assert case["hausdorff_mm"] is None and case["pixel_size_mm"] is None  # no mm without a pixel size
    assert summary["mean"]["hausdorff_mm"] is None
    assert not math.isnan(summary["map"])
