"""fetometry.report.pdf and .charts: the PDF holds what the dict holds; the chart is right."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from helpers import pdf_text
from PIL import Image

from fetometry import DISCLAIMER
from fetometry.clinical import growth
from fetometry.clinical.assess import clinical_summary
from fetometry.data.synthetic import make_phantom
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.pipeline import result_from_prediction
from fetometry.report.charts import CHART_CENTILES, POINT_COLOR, centile_curves, growth_chart_png
from fetometry.report.figures import draw_overlay
from fetometry.report.pdf import ReportError, chart_points, format_ga, measurement_rows, write_pdf_report

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def phantom_exam():
    """A phantom measured from its true mask (no model): image, ImageResult, report dict."""
    phantom = make_phantom(height=120, width=180, rng_or_seed=3, pixel_size_mm=0.9)
    prediction = Prediction(phantom.mask.astype(np.float32), phantom.mask, confidence=0.93)
    stand_in = Predictor(torch.nn.Identity(), canvas_hw=(120, 180), config={"display_name": "attention-unet"})
    result = result_from_prediction(
        stand_in, "phantom_001.png", prediction, phantom.pixel_size_mm, gate=False
    )  # the gate is not under test
    report = result.to_dict()
    report.update(
        clinical_summary(hc_mm=report["hc_mm"], bpd_mm=report["bpd_mm"], ga_weeks=17.0, ga_source="lmp")
    )  # HC of the phantom (about 130 mm) is plausible at 17 weeks
    report.update(
        disclaimer=DISCLAIMER,
        version="0.1.0",
        date="2030-01-02",
        hc_sd_mm=1.7,
        hc_interval_mm=[report["hc_mm"] - 3.3, report["hc_mm"] + 3.3],
        explain_method="gradcam",
    )
    return phantom, result, report


def _red_pixels(png: np.ndarray) -> np.ndarray:
    target = np.array(POINT_COLOR) * 255
    return np.all(np.abs(png[..., :3].astype(float) - target) < 40, axis=-1)


# --------------------------------------------------------------------------- chart


def test_centile_curves_are_the_intergrowth_values():
    curves = centile_curves("hc", np.array([14.0, 20.0, 40.0]))
    assert set(curves) == set(CHART_CENTILES)
    # Published check value: HC mean at 40+0 weeks = 333.9 mm (INTERGROWTH-21st tables).
    assert curves[50.0][2] == pytest.approx(333.9, abs=0.1)
    for centile in CHART_CENTILES:
        assert curves[centile][1] == pytest.approx(growth.value_at_centile("hc", 20.0, centile))
    assert np.all(curves[3.0] < curves[10.0]) and np.all(curves[90.0] < curves[97.0])


def test_chart_png_draws_the_points_where_they_belong(tmp_path):
    early = growth_chart_png("hc", [(20.0, growth.value_at_centile("hc", 20.0, 50))], tmp_path / "early.png")
    late = growth_chart_png("hc", [(38.0, growth.value_at_centile("hc", 38.0, 50))], tmp_path / "late.png")
    empty = growth_chart_png("hc", [], tmp_path / "empty.png")
    images = {
        name: np.asarray(Image.open(p).convert("RGB"))
        for name, p in (("early", early), ("late", late), ("empty", empty))
    }
    assert images["empty"].shape[0] > 300 and images["empty"].shape[1] > 500
    assert not _red_pixels(images["empty"]).any()
    early_y, early_x = np.nonzero(_red_pixels(images["early"]))
    late_y, late_x = np.nonzero(_red_pixels(images["late"]))
    assert early_x.size > 10 and late_x.size > 10
    assert late_x.mean() > early_x.mean() + 100  # later GA -> further right
    assert late_y.mean() < early_y.mean() - 50  # larger HC -> higher up


def test_chart_leaves_out_points_outside_the_standard(tmp_path):
    path = growth_chart_png("bpd", [(10.0, 20.0), (45.0, 100.0), (float("nan"), 50.0)], io.BytesIO())
    path.seek(0)
    png = np.asarray(Image.open(path).convert("RGB"))
    assert not _red_pixels(png).any()


def test_chart_rejects_an_unknown_measure(tmp_path):
    with pytest.raises(ValueError, match="unknown measure"):
        growth_chart_png("crl", [], tmp_path / "x.png")


# --------------------------------------------------------------------------- table and points


def test_measurement_rows_show_values_and_dashes(phantom_exam):
    _, result, report = phantom_exam
    rows = {row[0]: row[1:] for row in measurement_rows(report)}
    hc_text = rows["Head circumference (HC)"][0]
    assert hc_text.startswith(f"{result.measurement.hc_mm:.1f} mm") and "SD 1.7" in hc_text
    assert rows["Head circumference (HC)"][2] == f"{report['hc_centile']:.1f}"
    assert rows["Occipitofrontal diameter (OFD)"][1:] == ["-", "-"]  # no OFD centile requested
    assert rows["Gestational age given"][0] == "17w 0d (17.0 weeks), from lmp"


def test_nothing_is_invented_without_a_pixel_size():
    report = {
        "filename": "x.png",
        "status": "no_pixel_size",
        "hc_mm": None,
        "bpd_mm": None,
        "ofd_mm": None,
        "hc_sd_mm": 2.0,
    }
    values = [cell for row in measurement_rows(report)[1:] for cell in row[1:]]
    assert set(values) <= {"-", ""}
    assert chart_points(report) == []


def test_format_ga():
    assert format_ga(20.43) == "20w 3d (20.4 weeks)"
    assert format_ga(39.99) == "40w 0d (40.0 weeks)"
    assert format_ga(None) == "-" and format_ga(float("nan")) == "-"


def test_chart_points_use_only_independent_gas():
    report = {
        "hc_mm": 280.0,
        "ga_weeks": None,
        "ga_hadlock_weeks": 30.5,
        "visits": [{"ga_weeks": 24.0, "hc_mm": 220.0}, {"ga_weeks": None, "hc_mm": 250.0}],
    }
    assert chart_points(report) == [(24.0, 220.0)]
    report["ga_weeks"] = 31.0
    assert chart_points(report) == [(24.0, 220.0), (31.0, 280.0)]


# --------------------------------------------------------------------------- PDF


def test_pdf_holds_the_measurements_chart_and_disclaimer(tmp_path, phantom_exam):
    phantom, result, report = phantom_exam
    overlay = draw_overlay(phantom.image, result)
    explanation = cv2.applyColorMap(np.round(phantom.mask * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].copy()
    path = write_pdf_report(
        tmp_path / "out" / "report.pdf",
        report,
        image=phantom.image,
        overlay_rgb=overlay,
        explanation_rgb=explanation,
        label="pregnancy-17",
    )
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    text = pdf_text(data)
    assert DISCLAIMER in text
    assert f"{result.measurement.hc_mm:.1f} mm" in text and f"{result.measurement.bpd_mm:.1f} mm" in text
    assert f"{report['hc_centile']:.1f}" in text and f"{report['hc_z']:.2f}" in text
    for needle in (
        "model attention-unet",
        "fetometry 0.1.0",
        "analysed 2030-01-02",
        "Image: phantom_001.png",
        "Label: pregnancy-17",
        "Explanation (gradcam)",
        "HC uncertainty: SD 1.70 mm",
        "Fitted ellipse",
    ):
        assert needle in text, needle
    assert data.count(b"/Subtype /Image") >= 4  # image, overlay, chart, explanation


def test_pdf_shows_only_what_the_user_chooses(tmp_path, phantom_exam):
    phantom, result, report = phantom_exam
    path = write_pdf_report(
        tmp_path / "r.pdf",
        report,
        image=phantom.image,
        overlay_rgb=draw_overlay(phantom.image, result),
        show_filename=False,
    )
    text = pdf_text(path.read_bytes())
    assert "phantom_001" not in text and "Label:" not in text
    assert "Explanation: not requested" not in text  # the dict names a method: it is reported


def test_pdf_of_a_failed_measurement_says_why_and_invents_nothing(tmp_path):
    image = np.zeros((64, 96), np.float32)
    report = {
        "filename": "blank.png",
        "status": "no_head",
        "detail": "no head found: nothing above 0.5",
        "hc_mm": None,
        "model": "unext",
        "confidence": 0.01,
        "flags": [],
        "notes": ["no independent gestational age given"],
    }
    path = write_pdf_report(tmp_path / "r.pdf", report, image=image, overlay_rgb=np.zeros((64, 96, 3), np.uint8))
    text = pdf_text(path.read_bytes())
    assert "No measurement (no_head): no head found: nothing above 0.5" in text
    assert " mm" not in text.split("Pixel size")[0].split("Measure Value")[-1]  # no mm value in the table
    assert "is not placed on the chart" in text and DISCLAIMER in text
    assert "Explanation: not requested" in text


def test_pdf_rejects_malformed_images(tmp_path, phantom_exam):
    phantom, _, report = phantom_exam
    with pytest.raises(ReportError, match="overlay_rgb"):
        write_pdf_report(tmp_path / "r.pdf", report, image=phantom.image, overlay_rgb=np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ReportError, match="report must be"):
        write_pdf_report(tmp_path / "r.pdf", [report], image=phantom.image, overlay_rgb=np.zeros((10, 10, 3), np.uint8))


def test_pdf_chart_gets_the_visits_and_this_exam(tmp_path, phantom_exam, monkeypatch):
    from fetometry.report import charts

    drawn = []

    def recording_chart(measure, points, path, **kwargs):
        drawn.append((measure, list(points)))
        return real_chart(measure, points, path, **kwargs)

    real_chart = charts.growth_chart_png
    monkeypatch.setattr(charts, "growth_chart_png", recording_chart)
    phantom, result, report = phantom_exam
    with_visits = dict(report, visits=[{"ga_weeks": 22.0, "hc_mm": 200.0}, {"ga_weeks": 26.0, "hc_mm": 240.0}])
    write_pdf_report(
        tmp_path / "r.pdf", with_visits, image=phantom.image, overlay_rgb=draw_overlay(phantom.image, result)
    )
    assert drawn == [("hc", [(22.0, 200.0), (26.0, 240.0), (17.0, report["hc_mm"])])]
