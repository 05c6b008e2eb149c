"""The PDF exam report (reportlab), rendered from the ``measure --json`` dict.

Sections, top to bottom: header (model, version, dates), the image and the fitted
ellipse, the measurement table (HC/BPD/OFD/CI with INTERGROWTH-21st z-scores and
centiles, GA estimates), flags, the growth chart, the explanation and uncertainty
panel, notes; the decision-support disclaimer is the footer of every page.

What is printed is exactly what the dict holds: a missing value is shown as "-" and
never filled in. Patient identifiers are not part of the dict; the file name is shown
only when ``show_filename`` is true, and ``label`` (e.g. a pregnancy id) only when the
user gives one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fetometry import DISCLAIMER
from fetometry.formatting import finite_number as _number
from fetometry.formatting import fmt

MISSING = "-"
#: Measures with a row in the table: (key prefix, label, unit).
TABLE_MEASURES = (
    ("hc", "Head circumference (HC)", "mm"),
    ("bpd", "Biparietal diameter (BPD)", "mm"),
    ("ofd", "Occipitofrontal diameter (OFD)", "mm"),
)


class ReportError(ValueError):
    """The report cannot be drawn from these inputs (the message says which one is wrong)."""


# --------------------------------------------------------------------------- formatting


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    return fmt(value, digits, unit=unit, missing=MISSING)


def format_ga(weeks) -> str:
    """20.43 -> '20w 3d (20.4 weeks)'; missing -> '-'."""
    number = _number(weeks)
    if number is None:
        return MISSING
    days_total = round(number * 7)
    return f"{days_total // 7}w {days_total % 7}d ({number:.1f} weeks)"


def _escape(text) -> str:
    """Plain text for a reportlab Paragraph (which reads a little XML)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- content


def measurement_rows(report: dict) -> list[list[str]]:
    """The measurement table as text: header + one row per quantity."""
    rows = [["Measure", "Value", "z-score", "Centile"]]
    for key, label, unit in TABLE_MEASURES:
        value = _fmt(report.get(f"{key}_mm"), 1, unit)
        if key == "hc" and _number(report.get("hc_sd_mm")) is not None and value != MISSING:
            value += f" (SD {_fmt(report['hc_sd_mm'], 1)})"
        rows.append([label, value, _fmt(report.get(f"{key}_z"), 2), _fmt(report.get(f"{key}_centile"), 1)])
    rows.append(["Cephalic index (BPD/OFD)", _fmt(report.get("cephalic_index"), 1), "", ""])
    automatic = report.get("automatic") if report.get("corrected_by_user") else None
    if isinstance(automatic, dict):  # a corrected exam: the model's own values stay beside the user's
        for key, label, unit in TABLE_MEASURES:
            if f"{key}_mm" in automatic:
                rows.append(
                    [f"{label}, automatic (before correction)", _fmt(automatic.get(f"{key}_mm"), 1, unit), "", ""]
                )
    rows.append(["Pixel size", _fmt(report.get("pixel_size_mm"), 4, "mm"), "", ""])
    rows.append(["Gestational age given", _ga_given(report), "", ""])
    rows.append(["GA from HC, Hadlock 1984", format_ga(report.get("ga_hadlock_weeks")), "", ""])
    rows.append(["GA from HC, INTERGROWTH-21st", format_ga(report.get("ga_intergrowth_weeks")), "", ""])
    return rows


def _ga_given(report: dict) -> str:
    text = format_ga(report.get("ga_weeks"))
    source = report.get("ga_source")
    return f"{text}, from {source}" if text != MISSING and source else text


def chart_points(report: dict) -> list[tuple[float, float]]:
    """HC points for the chart: earlier visits plus this exam, each at an INDEPENDENT GA.

    This exam is placed only at ``ga_weeks`` (given, never the GA estimated from its own
    HC, which would always sit on the 50th centile).
    """
    points = []
    for visit in report.get("visits") or []:
        ga, hc = _number(visit.get("ga_weeks")), _number(visit.get("hc_mm"))
        if ga is not None and hc is not None:
            points.append((ga, hc))
    ga, hc = _number(report.get("ga_weeks")), _number(report.get("hc_mm"))
    if ga is not None and hc is not None and (ga, hc) not in points:
        points.append((ga, hc))
    return points


def uncertainty_lines(report: dict) -> list[str]:
    """The explanation and uncertainty panel's text."""
    lines = [f"Model confidence (mean foreground probability): {_fmt(report.get('confidence'), 3)}"]
    if _number(report.get("hc_sd_mm")) is not None:
        lines.append(f"HC uncertainty: SD {_fmt(report['hc_sd_mm'], 2, 'mm')}")
    interval = report.get("hc_interval_mm")
    if isinstance(interval, Sequence) and len(interval) == 2 and all(_number(v) is not None for v in interval):
        lines.append(f"HC interval: {_fmt(interval[0], 1)} to {_fmt(interval[1], 1)} mm")
    if _number(report.get("uncertainty_confidence")) is not None:
        lines.append(f"Agreement of the uncertainty samples: {_fmt(report['uncertainty_confidence'], 3)}")
    method = report.get("explain_method")
    lines.append(
        f"Explanation: {method} map (red = pixels that drove the segmentation)"
        if method
        else "Explanation: not requested"
    )
    return lines


# --------------------------------------------------------------------------- drawing


def _rgb_image(pixels: np.ndarray, width_pt: float, what: str):
    """(H, W) float [0, 1] or (H, W, 3) uint8 -> a reportlab Image flowable of ``width_pt``."""
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    array = np.asarray(pixels)
    if array.ndim == 2:
        array = np.round(np.clip(np.nan_to_num(array), 0, 1) * 255).astype(np.uint8)
    if (
        array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] != 3)
        or array.dtype != np.uint8
        or min(array.shape[:2]) < 1
    ):
        raise ReportError(
            f"{what} must be an (H, W) float image or an (H, W, 3) uint8 RGB image; got {array.shape} {array.dtype}"
        )
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    height, width = array.shape[:2]
    return Image(buffer, width=width_pt, height=width_pt * height / width)


def _captioned(flowable, caption: str, styles):
    from reportlab.platypus import Paragraph, Table

    return Table([[flowable], [Paragraph(_escape(caption), styles["Caption"])]])


def _styles():
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    styles = getSampleStyleSheet()
    styles.add(ParagraphStyle("Caption", parent=styles["Normal"], fontSize=8, leading=10, alignment=1))
    styles.add(ParagraphStyle("Small", parent=styles["Normal"], fontSize=8, leading=10))
    styles.add(ParagraphStyle("Alert", parent=styles["Normal"], textColor="#b00020"))
    return styles


def _header(report: dict, styles, *, show_filename: bool, label: str | None) -> list:
    from reportlab.platypus import Paragraph

    from fetometry import __version__

    facts = [
        f"fetometry {report.get('version') or __version__}",
        f"model {report.get('model') or MISSING}",
        f"analysed {report.get('date') or MISSING}",
    ]
    if report.get("exam_date"):
        facts.append(f"exam date {report['exam_date']}")
    parts = [
        Paragraph("Fetal head biometry report", styles["Title"]),
        Paragraph(_escape(" | ".join(facts)), styles["Normal"]),
    ]
    if label:
        parts.append(Paragraph(_escape(f"Label: {label}"), styles["Normal"]))
    if show_filename and report.get("filename"):
        parts.append(Paragraph(_escape(f"Image: {report['filename']}"), styles["Normal"]))
    if report.get("corrected_by_user"):
        parts.append(
            Paragraph(
                _escape(
                    "Values corrected by user: the sonographer edited the fitted ellipse; "
                    "the automatic (model) values are listed below the table."
                ),
                styles["Alert"],
            )
        )
    if report.get("status") != "ok":
        parts.append(
            Paragraph(
                _escape(f"No measurement ({report.get('status') or 'unknown status'}): {report.get('detail') or ''}"),
                styles["Alert"],
            )
        )
    return parts


def _measurement_table(report: dict):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(measurement_rows(report), colWidths=[190, 150, 60, 60], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f1f3f5")]),
            ]
        )
    )
    return table


def _chart(report: dict, styles, width_pt: float) -> list:
    from reportlab.platypus import Image, Paragraph

    from fetometry.report.charts import growth_chart_png

    points = chart_points(report)
    buffer = io.BytesIO()
    growth_chart_png("hc", points, buffer)
    buffer.seek(0)
    parts = [Image(buffer, width=width_pt, height=width_pt * 4.2 / 6.4)]
    if not points:
        parts.append(
            Paragraph(
                "No independent gestational age was given, so this fetus is not placed on the chart "
                "(a GA estimated from the same HC would always sit on the 50th centile).",
                styles["Small"],
            )
        )
    return parts


def _flags(report: dict, styles) -> list:
    from reportlab.platypus import Paragraph

    flags = [f for f in report.get("flags") or [] if isinstance(f, dict)]
    if not flags:
        return [Paragraph("Flags: none raised.", styles["Normal"])]
    return [Paragraph("Flags", styles["Heading3"])] + [
        Paragraph(_escape(f"[{f.get('severity', '?')}] {f.get('code', '')}: {f.get('message', '')}"), styles["Normal"])
        for f in flags
    ]


def _explanation_panel(report: dict, styles, explanation_rgb, uncertainty_rgb, width_pt: float) -> list:
    from reportlab.platypus import Paragraph, Table

    parts = [Paragraph("Explanation and uncertainty", styles["Heading3"])]
    parts += [Paragraph(_escape(line), styles["Normal"]) for line in uncertainty_lines(report)]
    maps = []
    if explanation_rgb is not None:
        maps.append(
            _captioned(
                _rgb_image(explanation_rgb, width_pt, "explanation_rgb"),
                f"Explanation ({report.get('explain_method') or 'map'})",
                styles,
            )
        )
    if uncertainty_rgb is not None:
        maps.append(
            _captioned(
                _rgb_image(uncertainty_rgb, width_pt, "uncertainty_rgb"), "Uncertainty (spread of the samples)", styles
            )
        )
    if maps:
        parts.append(Table([maps], hAlign="LEFT"))
    return parts


def _notes(report: dict, styles) -> list:
    from reportlab.platypus import Paragraph

    notes = [str(n) for n in report.get("notes") or []]
    if not notes:
        return []
    return [Paragraph("Notes", styles["Heading3"])] + [
        Paragraph(_escape(f"- {note}"), styles["Small"]) for note in notes
    ]


def _footer(disclaimer: str, styles):
    from reportlab.platypus import Paragraph

    def draw(canvas, document) -> None:
        paragraph = Paragraph(_escape(disclaimer), styles["Small"])
        _, height = paragraph.wrap(document.width, document.bottomMargin)
        paragraph.drawOn(canvas, document.leftMargin, document.bottomMargin - height - 6)
        canvas.setFont("Helvetica", 8)
        canvas.drawRightString(document.leftMargin + document.width, 20, f"page {document.page}")

    return draw


def write_pdf_report(
    path: str | Path,
    report: dict,
    *,
    image: np.ndarray,
    overlay_rgb: np.ndarray,
    explanation_rgb: np.ndarray | None = None,
    uncertainty_rgb: np.ndarray | None = None,
    show_filename: bool = True,
    label: str | None = None,
) -> Path:
    """Write the exam report to ``path`` (A4 PDF) and return the path.

    ``report``: the ``measure --json`` dict (see module docstring); ``image``: (H, W)
    float [0, 1]; ``overlay_rgb``: (H, W, 3) uint8 with the fitted ellipse drawn;
    ``explanation_rgb`` / ``uncertainty_rgb``: optional (H, W, 3) uint8 maps.
    Raises ReportError for malformed images.
    """
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import KeepTogether, SimpleDocTemplate, Spacer, Table

    if not isinstance(report, dict):
        raise ReportError(f"report must be the measure --json dict, got {type(report).__name__}")
    styles = _styles()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=40,
        rightMargin=40,
        topMargin=36,
        bottomMargin=64,
        title="fetometry fetal head biometry report",
        author="fetometry",
        invariant=True,
    )
    half = (document.width - 20) / 2
    pictures = Table(
        [
            [
                _captioned(_rgb_image(image, half, "image"), "Image", styles),
                _captioned(_rgb_image(overlay_rgb, half, "overlay_rgb"), "Fitted ellipse (outer skull)", styles),
            ]
        ]
    )
    story = _header(report, styles, show_filename=show_filename, label=label)
    story += [Spacer(1, 6), pictures, Spacer(1, 6), _measurement_table(report), Spacer(1, 6)]
    # KeepTogether: a heading never ends a page without its items.
    story += [KeepTogether(_flags(report, styles)), Spacer(1, 6)]
    story += _chart(report, styles, document.width * 0.8)
    story += [
        KeepTogether(_explanation_panel(report, styles, explanation_rgb, uncertainty_rgb, half * 0.9)),
        Spacer(1, 6),
    ]
    story += [KeepTogether(_notes(report, styles))]
    footer = _footer(str(report.get("disclaimer") or DISCLAIMER), styles)
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return path
