"""fetometry.exam: one exam composed from reading, the model, biometry, clinical context,
explanation and report; shared by `fetometry measure` and `fetometry serve`.

Most tests use an *oracle* predictor that returns a phantom's true mask, so every
number has an exact expected value; the shipped default model runs on a bundled HC18
sample where the test is about the real path (model, Grad-CAM, CLI).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from datetime import date

import cv2
import numpy as np
import pytest
from helpers import pdf_text

from fetometry import DISCLAIMER
from fetometry.biometry.measures import ramanujan_perimeter
from fetometry.cli import measure as measure_verb
from fetometry.data.hc18 import load_hc18
from fetometry.data.synthetic import make_phantom
from fetometry.exam import ExamInputError, measure_exam
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes, ultrasound_region
from fetometry.io.images import ImageReadError
from fetometry.io.uploads import UnsupportedFileTypeError, safe_filename
from fetometry.pipeline import CSV_COLUMNS
from fetometry.resources import SAMPLES_DIR
from fetometry.weights_config import WeightsConfig

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
#: With the phantom's 110 x 88 px semi-axes: HC about 106 mm, mid-range for 14-15 weeks.
PHANTOM_PIXEL_MM = 0.17


class OraclePredictor:
    """Stands in for Predictor: returns the phantom's true mask and counts its calls."""

    name = "oracle"
    hc_offset_px = 0.0
    config = WeightsConfig()

    def boundary_offset_px(self, prediction) -> float:
        return self.hc_offset_px

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.calls = 0

    def predict(self, image: np.ndarray) -> Prediction:
        assert image.shape == self.mask.shape, "the exam must pass the image on its own grid"
        self.calls += 1
        return Prediction(self.mask.astype(np.float32), self.mask.copy(), 1.0)

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        return [self.predict(image) for image in images]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(
        height=300,
        width=400,
        rng_or_seed=7,
        semi_major_px=110,
        semi_minor_px=88,
        angle_rad=0.3,
        center=(200.0, 150.0),
        pixel_size_mm=PHANTOM_PIXEL_MM,
    )


@pytest.fixture()
def oracle(phantom):
    return OraclePredictor(phantom.mask)


@pytest.fixture(scope="module")
def default_predictor() -> Predictor:
    return Predictor.from_weights()


def _reference_hc(name: str) -> float:
    return next(s.hc_mm for s in load_hc18(SAMPLES_DIR) if s.name == name)


def _true_hc_mm(phantom, pixel_size_mm: float) -> float:
    return ramanujan_perimeter(phantom.semi_major_px, phantom.semi_minor_px) * pixel_size_mm


def _png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.round(image * 255).astype(np.uint8))
    assert ok
    return encoded.tobytes()


# ---------------------------------------------------------------------- the real model


def test_bundled_sample_measured_like_the_reference(default_predictor):
    exam = measure_exam(SAMPLE, predictor=default_predictor, pixel_size_mm=0.130960682505)
    row = exam.to_json()
    assert row["status"] == "ok" and row["filename"] == SAMPLE.name
    assert abs(row["hc_mm"] - _reference_hc(SAMPLE.name)) < 5.0, row["hc_mm"]
    assert set(CSV_COLUMNS) <= set(row)
    assert row["disclaimer"] == DISCLAIMER and row["model"] == default_predictor.name and row["version"]
    assert date.fromisoformat(row["date"]) and row["pixel_size_source"] == "stated"
    # HC alone: GA estimates (14-40 weeks for a 165 mm head), no centile keys at all.
    assert 17 < row["ga_hadlock_weeks"] < 22 and 17 < row["ga_intergrowth_weeks"] < 22
    assert not [k for k in row if k.endswith(("_z", "_centile"))]
    json.dumps(row, allow_nan=False)  # strict JSON: no NaN anywhere


def test_gradcam_map_has_the_image_size(default_predictor):
    exam = measure_exam(SAMPLE, predictor=default_predictor, pixel_size_mm=0.13, explain="gradcam")
    image = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    assert exam.explanation.shape == image.shape and np.isfinite(exam.explanation).all()
    assert 0.0 <= exam.explanation.min() and exam.explanation.max() <= 1.0 and exam.explanation.max() > 0
    assert exam.explanation_rgb().shape == (*image.shape, 3)
    assert exam.to_json()["explain_method"] == "gradcam"


def test_hc_uncertainty_is_carried_to_the_json(default_predictor):
    exam = measure_exam(SAMPLE, predictor=default_predictor, pixel_size_mm=0.13, uncertainty=True)
    row = exam.to_json()
    assert 0 <= row["hc_sd_mm"] < 10 and 0 <= row["uncertainty_confidence"] <= 1
    low, high = row["hc_interval_mm"]
    assert low <= high and abs(row["hc_mm"] - (low + high) / 2) < 10  # around the measured HC
    assert exam.uncertainty_rgb().shape == (540, 800, 3)
    json.dumps(row, allow_nan=False)


def _measure_parser() -> argparse.ArgumentParser:
    """The `measure` verb's own parser (fetometry.cli.measure), as the CLI builds it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-q", "--quiet", action="store_true")
    subparsers = parser.add_subparsers(dest="verb", required=True)
    measure_verb.add_parser(subparsers)
    return _PrefixedParser(parser)


class _PrefixedParser:
    """Parses the verb's arguments as ``fetometry measure ...`` would."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        return self.parser.parse_args(["measure", *argv])


def test_measure_cli_json_report_and_overlay(tmp_path, capsys):
    args = _measure_parser().parse_args(
        [
            str(SAMPLE),
            "--pixel-size",
            "0.130960682505",
            "--ga-weeks",
            "20",
            "--json",
            "--report",
            str(tmp_path / "r.pdf"),
            "--overlay",
            str(tmp_path / "o.png"),
        ]
    )
    assert measure_verb.run(args) == 0
    row = json.loads(capsys.readouterr().out)
    for key in ("ga_hadlock_weeks", "ga_intergrowth_weeks", "hc_z", "hc_centile"):
        assert isinstance(row[key], float), key
    assert row["ga_weeks"] == 20 and row["ga_source"] == "known" and 0 < row["hc_centile"] < 100
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and f"{row['hc_mm']:.1f}" in pdf_text(pdf)
    assert cv2.imread(str(tmp_path / "o.png")).shape == (540, 800, 3)
    assert SAMPLE.name in pdf_text(pdf)  # shown by default


def test_measure_cli_report_shows_only_what_the_user_chooses(tmp_path, capsys):
    args = _measure_parser().parse_args(
        [
            str(SAMPLE),
            "--pixel-size",
            "0.13",
            "--report",
            str(tmp_path / "r.pdf"),
            "--report-hide-filename",
            "--report-label",
            "EXAM-0042",
        ]
    )
    assert measure_verb.run(args) == 0
    text = pdf_text((tmp_path / "r.pdf").read_bytes())
    assert SAMPLE.name not in text and SAMPLE.stem not in text
    assert "EXAM-0042" in text


# ----------------------------------------------------------- composition (oracle model)


def test_ga_gives_the_intergrowth_centile(phantom, oracle):
    from fetometry.clinical import growth

    exam = measure_exam(phantom.image, predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM, ga_weeks=14.5)
    row = exam.to_json()
    hc = _true_hc_mm(phantom, PHANTOM_PIXEL_MM)
    assert row["hc_mm"] == pytest.approx(hc, rel=0.01)
    assert row["hc_centile"] == pytest.approx(growth.centile("hc", row["hc_mm"], 14.5), abs=0.051)
    assert row["hc_z"] == pytest.approx(growth.zscore("hc", row["hc_mm"], 14.5), abs=0.0051)
    assert row["ga_weeks"] == 14.5 and row["ga_source"] == "known"
    assert 5 < row["hc_centile"] < 95, "the phantom should sit inside the standard's body"


def test_lmp_dates_the_exam(phantom, oracle):
    exam = measure_exam(
        phantom.image, predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM, lmp="2026-01-01", exam_date="2026-04-16"
    )
    assert exam.ga_weeks == pytest.approx(105 / 7) and exam.ga_source == "lmp"
    assert exam.to_json()["hc_centile"] is not None


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"ga_weeks": 13.9}, "outside 14-40"),
        ({"ga_weeks": 40.1}, "outside 14-40"),
        ({"ga_weeks": math.nan}, "finite number of weeks"),
        ({"ga_weeks": 20, "lmp": "2026-01-01"}, "not both"),
        ({"lmp": "2026-05-01", "exam_date": "2026-04-01"}, "before the LMP"),
        ({"lmp": "01/02/2026"}, "YYYY-MM-DD"),
        ({"lmp": "2025-01-01", "exam_date": "2026-01-01"}, "check the dates"),
        ({"ga_weeks": 20, "ga_source": "hc"}, "same head"),
        ({"explain": "saliency"}, "gradcam"),
        ({"pixel_size_mm": 5.0}, "plausible range"),
    ],
)
def test_bad_input_is_refused_before_the_model_runs(phantom, oracle, options, reason):
    options = {"pixel_size_mm": PHANTOM_PIXEL_MM, **options}
    with pytest.raises(ValueError, match=reason):
        measure_exam(phantom.image, predictor=oracle, **options)
    assert oracle.calls == 0


def test_no_pixel_size_no_millimetres(phantom, oracle):
    row = measure_exam(phantom.image, predictor=oracle, ga_weeks=20).to_json()
    assert row["status"] == "no_pixel_size" and "pixel size" in row["detail"]
    assert row["semi_axes_a_px"] > 0  # the ellipse was found ...
    assert all(row[k] is None for k in ("hc_mm", "bpd_mm", "ofd_mm", "center_x_mm"))  # ... but no mm
    assert "ga_hadlock_weeks" not in row and "hc_centile" not in row
    assert any("no GA estimate and no centile" in note for note in row["notes"])


def test_uploaded_bytes_equal_the_array_path(phantom, oracle):
    from_bytes = measure_exam(
        _png_bytes(phantom.image), predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM, filename="../../etc/passwd.png"
    )
    from_array = measure_exam(np.round(phantom.image * 255) / 255, predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM)
    assert from_bytes.result.filename == "passwd.png"
    assert from_bytes.to_json()["hc_mm"] == pytest.approx(from_array.to_json()["hc_mm"], abs=1e-9)
    np.testing.assert_allclose(from_bytes.image, from_array.image, atol=1e-6)


def test_safe_filename_keeps_only_a_label():
    assert safe_filename("../../etc/passwd.png") == "passwd.png"
    assert safe_filename("C:\\scans\\Jane Doe\\a b.png") == "a_b.png"
    assert safe_filename("..") == "upload" and safe_filename(None) == "upload"
    assert safe_filename("x\x00\n<script>.png") == "x_script_.png"


class _Marker:
    """Unpickling this would create a file: the test proves nothing unpickles uploads."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("kind", ["text", "pickle", "empty", "truncated_png"])
def test_bad_bytes_are_refused(phantom, oracle, tmp_path, kind):
    marker = tmp_path / "unpickled"
    data = {
        "text": b"hello, not an image",
        "pickle": pickle.dumps(_Marker(str(marker))),
        "empty": b"",
        "truncated_png": _png_bytes(phantom.image)[:300],
    }[kind]
    expected = UnsupportedFileTypeError if kind in ("text", "pickle") else ImageReadError
    with pytest.raises(expected) as caught:
        measure_exam(data, predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM, filename="up.png")
    assert "up.png" in str(caught.value)
    if kind == "truncated_png":
        assert not isinstance(caught.value, UnsupportedFileTypeError)
    assert oracle.calls == 0 and not marker.exists()


def test_array_input_is_checked(oracle):
    with pytest.raises(ExamInputError, match="2-D"):
        measure_exam(np.zeros((3, 300, 400), np.float32), predictor=oracle)
    with pytest.raises(ExamInputError, match="NaN"):
        measure_exam(np.full((300, 400), np.nan, np.float32), predictor=oracle)


# --------------------------------------------------------------------------------- DICOM


def test_dicom_calibration_gives_millimetres(phantom, oracle):
    data = ultrasound_dicom_bytes(phantom.image, pixel_size_mm=PHANTOM_PIXEL_MM)
    row = measure_exam(data, predictor=oracle, filename="scan.dcm").to_json()
    assert row["status"] == "ok" and row["pixel_size_mm"] == pytest.approx(PHANTOM_PIXEL_MM)
    assert row["pixel_size_source"].startswith("DICOM")
    assert row["hc_mm"] == pytest.approx(_true_hc_mm(phantom, PHANTOM_PIXEL_MM), rel=0.01)
    assert "PHANTOM" not in json.dumps(row) and "SYNTH" not in json.dumps(row)  # no patient fields


def test_stated_pixel_size_overrides_dicom_and_says_so(phantom, oracle):
    data = ultrasound_dicom_bytes(phantom.image, pixel_size_mm=PHANTOM_PIXEL_MM)
    row = measure_exam(data, predictor=oracle, pixel_size_mm=0.2).to_json()
    assert row["pixel_size_mm"] == 0.2 and row["pixel_size_source"] == "stated"
    assert any("overrides the DICOM calibration" in note for note in row["notes"])


def test_uncalibrated_dicom_gives_no_millimetres(phantom, oracle):
    row = measure_exam(ultrasound_dicom_bytes(phantom.image), predictor=oracle).to_json()
    assert row["status"] == "no_pixel_size" and row["hc_mm"] is None and row["pixel_size_mm"] is None
    assert "DICOM" in row["detail"]


def test_the_region_under_the_head_calibrates_it():
    # Two 2D regions: the larger (left, 0.2 mm) does not hold the head; the right one (0.1 mm) does.
    head = make_phantom(
        height=300,
        width=800,
        rng_or_seed=1,
        semi_major_px=90,
        semi_minor_px=70,
        angle_rad=0.0,
        center=(620.0, 150.0),
        pixel_size_mm=0.1,
    )
    regions = [
        ultrasound_region(0, 0, 459, 299, pixel_size_mm=0.2),
        ultrasound_region(460, 0, 799, 299, pixel_size_mm=0.1),
    ]
    row = measure_exam(
        ultrasound_dicom_bytes(head.image, regions=regions), predictor=OraclePredictor(head.mask)
    ).to_json()
    assert row["pixel_size_mm"] == pytest.approx(0.1)
    assert row["hc_mm"] == pytest.approx(_true_hc_mm(head, 0.1), rel=0.01)


def test_cine_loop_frame_choice(phantom, oracle):
    loop = ultrasound_dicom_bytes(np.stack([phantom.image] * 3), pixel_size_mm=PHANTOM_PIXEL_MM, frame_time_ms=33.0)
    row = measure_exam(loop, predictor=oracle, frame=2).to_json()
    assert row["status"] == "ok" and any("frame 2" in note for note in row["notes"])
    with pytest.raises(ExamInputError, match="3 frame"):
        measure_exam(loop, predictor=oracle, frame=3)


# ------------------------------------------------------------------ report and features


def test_report_pdf_holds_the_numbers(phantom, oracle, tmp_path):
    exam = measure_exam(phantom.image, predictor=oracle, pixel_size_mm=PHANTOM_PIXEL_MM, ga_weeks=15)
    path = exam.write_report(tmp_path / "sub" / "report.pdf", visits=[{"ga_weeks": 14.2, "hc_mm": 95.0}], label="P-7")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    assert f"{exam.result.measurement.hc_mm:.1f}" in text and "P-7" in text
    assert "decision support" in text


def test_importing_exam_is_cheap():
    # serve and pacs import it at start-up; the model's libraries load when an exam runs.
    import subprocess

    code = "import sys, fetometry.exam; print(sorted(m for m in ('torch', 'cv2', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
