"""correction.correct_exam: a user's ellipse re-measured with biometry.measures, marked, the model's kept."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from helpers import pdf_text

from fetometry.biometry.ellipse import Ellipse
from fetometry.biometry.measures import measure_ellipse
from fetometry.clinical.assess import clinical_summary
from fetometry.correction import CorrectionError, correct_exam, editable_ellipse, ellipse_from_fields
from fetometry.exam import ExamResult
from fetometry.pipeline import ImageResult

MM = 0.13
SHAPE = (540, 800)
MODEL_ELLIPSE = Ellipse(400.0, 270.0, 200.0, 160.0, 0.3)


def make_exam(pixel_size_mm: float | None = MM, status: str = "ok", ga_weeks: float | None = 24.0) -> ExamResult:
    measurement = measure_ellipse(MODEL_ELLIPSE, pixel_size_mm, offset_px=1.4) if pixel_size_mm else None
    result = ImageResult(
        "345_HC.png", status, pixel_size_mm=pixel_size_mm, ellipse=MODEL_ELLIPSE, measurement=measurement, model="m"
    )
    return ExamResult(
        result,
        np.full(SHAPE, 0.5, np.float32),
        date(2026, 1, 31),
        ga_weeks=ga_weeks,
        ga_source="lmp" if ga_weeks else None,
        uncertainty={"hc_sd_mm": 1.0},
    )


def test_correct_exam_equals_measure_ellipse_and_keeps_the_automatic_result():
    exam = make_exam()
    user = ellipse_from_fields(410, 260, 150, 190, 0.1)  # axes in either order: sorted by Ellipse.from_axes
    corrected = correct_exam(exam, user)
    expected = measure_ellipse(user, MM)
    assert corrected.result.measurement == expected and corrected.result.ellipse == user
    assert user.semi_major_px == 190 and math.isclose(user.angle_rad, 0.1 + math.pi / 2)
    assert corrected.corrected_by_user and corrected.automatic is exam.result and not exam.corrected_by_user
    assert corrected.result.status == "ok" and corrected.result.quality is None
    assert corrected.clinical == clinical_summary(
        hc_mm=expected.hc_mm, bpd_mm=expected.bpd_mm, ofd_mm=expected.ofd_mm, ga_weeks=24.0, ga_source="lmp"
    )
    row = corrected.to_json()
    assert row["corrected_by_user"] and row["hc_mm"] == pytest.approx(expected.hc_mm)
    assert row["automatic"]["hc_mm"] == pytest.approx(exam.result.measurement.hc_mm)
    assert corrected.uncertainty is None and any("corrected by user" in n for n in row["notes"])
    # Correcting again starts from the model's result, not from the first correction.
    again = correct_exam(corrected, ellipse_from_fields(400, 270, 170, 150, 0.0))
    assert again.automatic is exam.result


def test_the_editable_ellipse_gives_the_automatic_values_back():
    exam = make_exam()
    fields = editable_ellipse(exam, 1.4)
    corrected = correct_exam(exam, ellipse_from_fields(**fields))
    assert corrected.result.measurement.hc_mm == pytest.approx(exam.result.measurement.hc_mm, abs=1e-9)


def test_without_a_pixel_size_only_pixels():
    corrected = correct_exam(make_exam(pixel_size_mm=None, status="no_pixel_size"), Ellipse(400, 270, 180, 150, 0))
    assert corrected.result.measurement is None and corrected.result.status == "no_pixel_size"
    assert corrected.clinical == {} and corrected.result.ellipse.semi_major_px == 180


@pytest.mark.parametrize(
    "fields, reason",
    [
        ((400, 270, 0, 150, 0), "positive"),
        ((400, 270, -5, 150, 0), "positive"),
        ((400, 270, float("nan"), 150, 0), "finite"),
        ((400, 270, "big", 150, 0), "five numbers"),
        ((900, 270, 180, 150, 0), "outside"),
        ((400, -40, 180, 150, 0), "outside"),
        ((400, 270, 600, 150, 0), "diagonal"),
        ((400, 270, 180, 0.4, 0), "under one pixel"),
    ],
)
def test_absurd_ellipses_are_refused(fields, reason):
    with pytest.raises(CorrectionError, match=reason):
        correct_exam(make_exam(), ellipse_from_fields(*fields))


def test_a_frame_the_plane_check_refused_stays_refused():
    with pytest.raises(CorrectionError, match="cannot be corrected"):
        correct_exam(make_exam(status="not_a_head_plane"), Ellipse(400, 270, 180, 150, 0))


def test_the_report_of_a_corrected_exam_says_so_and_shows_the_automatic_values(tmp_path):
    exam = make_exam()
    corrected = correct_exam(exam, Ellipse(400, 270, 185, 150, 0.2))
    text = pdf_text(corrected.write_report(tmp_path / "corrected.pdf").read_bytes())
    assert "corrected by user" in text and "automatic (before correction)" in text
    assert f"{exam.result.measurement.hc_mm:.1f}" in text and f"{corrected.result.measurement.hc_mm:.1f}" in text
    plain = pdf_text(exam.write_report(tmp_path / "automatic.pdf").read_bytes())
    assert "corrected by user" not in plain and "before correction" not in plain
