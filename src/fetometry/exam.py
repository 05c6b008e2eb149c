"""One exam, composed: the code path shared by ``fetometry measure``, ``serve`` and ``pacs watch``.

    image / DICOM / array -> pixels + pixel size (explicit > DICOM calibration > none)
        -> pipeline.measure (plane check, ellipse, gate, HC/BPD/OFD in mm)
        -> clinical_summary (GA from HC; centiles ONLY with a GA from LMP or a known date)
        -> optional explanation map and HC uncertainty -> JSON / PDF report

Every input is checked BEFORE the model runs, so bad input costs nothing and nothing is
computed (or stored) half-way. No millimetre value exists without a pixel size, no
centile without an independent GA.

Importing this module is cheap (numpy and the clinical formulas): torch, OpenCV and the
rest load when an exam runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fetometry import DISCLAIMER, __version__
from fetometry.clinical import dating
from fetometry.explain.methods import MAP_METHODS
from fetometry.formatting import json_safe
from fetometry.io.uploads import UnsupportedFileTypeError, safe_filename, sniff_kind

if TYPE_CHECKING:
    from fetometry.inference.predictor import Predictor
    from fetometry.pipeline import ImageResult

__all__ = ["ExamImage", "ExamInputError", "ExamResult", "UnsupportedFileTypeError", "measure_exam", "read_exam_image"]

log = logging.getLogger(__name__)


class ExamInputError(ValueError):
    """An exam input (source, frame, explanation method) is invalid; the message says how to fix it."""


# ----------------------------------------------------------------------------- reading


@dataclass
class ExamImage:
    """Pixels ready for the predictor and where their pixel size came from.

    pixels: (H, W) float32 in [0, 1]. ``calibration`` says in words where the pixel
    size came from or why there is none (a DICOM file's ultrasound regions, ...).
    """

    pixels: np.ndarray
    filename: str
    pixel_size_mm: float | None = None
    calibration: str = ""
    kind: str = "image"
    frames: int = 1
    dicom: object | None = field(default=None, repr=False)

    def calibrated_at(self, x_px: float, y_px: float) -> tuple[float | None, str]:
        """DICOM: the pixel size of the ultrasound region holding (x, y), e.g. the head centre."""
        if self.dicom is None:
            return self.pixel_size_mm, self.calibration
        at = self.dicom.at_point(x_px, y_px)
        return at.pixel_size_mm, f"DICOM: {at.calibration}"


def _from_dicom(source: bytes | Path, name: str, frame: int) -> ExamImage:
    from fetometry.io.dicom import read_dicom

    image = read_dicom(source)
    count = int(image.frames.shape[0])
    if not 0 <= frame < count:
        raise ExamInputError(f"{name}: frame {frame} does not exist; the file has {count} frame(s) (0-{count - 1})")
    calibration = image.calibration or ("calibrated" if image.pixel_size_mm else "uncalibrated")
    pixels = np.ascontiguousarray(image.frames[frame], dtype=np.float32)
    return ExamImage(pixels, name, image.pixel_size_mm, f"DICOM: {calibration}", "dicom", count, dicom=image)


def _from_array(pixels: np.ndarray, name: str) -> ExamImage:
    from fetometry.io.images import MAX_SIDE_PX, MIN_SIDE_PX

    if pixels.ndim != 2:
        raise ExamInputError(f"expected a 2-D grayscale array (H, W), got shape {pixels.shape}")
    if min(pixels.shape) < MIN_SIDE_PX or max(pixels.shape) > MAX_SIDE_PX:
        raise ExamInputError(
            f"array is {pixels.shape[1]}x{pixels.shape[0]} px; sides must be {MIN_SIDE_PX}-{MAX_SIDE_PX} px"
        )
    pixels = np.asarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise ExamInputError("the array holds NaN or infinite values; give intensities scaled to [0, 1]")
    return ExamImage(np.clip(pixels, 0.0, 1.0), name, kind="array")


def read_exam_image(
    source: str | Path | bytes | np.ndarray, *, filename: str | None = None, frame: int = 0
) -> ExamImage:
    """A path, uploaded bytes or a 2-D float array -> ExamImage (raises ValueError subclasses).

    Files are recognised by their content, not their name: PNG, JPEG, BMP, TIFF or
    DICOM (``frame`` picks one frame of a cine loop). Unsupported bytes raise
    UnsupportedFileTypeError; undecodable ones ImageReadError (or DicomError).
    """
    from fetometry.io.dicom import is_dicom
    from fetometry.io.images import ImageReadError, decode_image, read_image

    if isinstance(source, np.ndarray):
        return _from_array(source, safe_filename(filename, default="array"))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = safe_filename(filename)
        if not data:
            raise ImageReadError(f"{name}: the upload is empty (0 bytes)")
        kind = sniff_kind(data)
        if kind == "dicom":
            return _from_dicom(data, name, frame)
        if kind is None:
            raise UnsupportedFileTypeError(
                f"{name}: not a supported file; upload a PNG, JPEG, BMP or TIFF image or a DICOM file"
            )
        return ExamImage(decode_image(data, source=name), name)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if is_dicom(path):
        return _from_dicom(path, path.name, frame)
    return ExamImage(read_image(path), path.name)


def _check_method(explain: str | None) -> str | None:
    if explain is None or explain == "":
        return None
    method = explain.strip().lower()
    if method not in MAP_METHODS:
        raise ExamInputError(f"unknown explanation method {explain!r}; choose one of {', '.join(MAP_METHODS)}")
    return method


# ------------------------------------------------------------------------------- result


@dataclass
class ExamResult:
    """Everything one exam produced; ``to_json`` is the ``measure --json`` object."""

    result: ImageResult
    image: np.ndarray = field(repr=False)
    exam_date: date
    pixel_size_source: str | None = None
    ga_weeks: float | None = None
    ga_source: str | None = None
    clinical: dict = field(default_factory=dict)
    explain_method: str | None = None
    explanation: np.ndarray | None = field(default=None, repr=False)
    uncertainty: dict | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    analysed_on: date = field(default_factory=date.today)
    #: True when a sonographer moved the ellipse: ``result`` then holds the corrected values
    #: and ``automatic`` the model's own, kept beside them for the report, the SR and the audit.
    corrected_by_user: bool = False
    automatic: ImageResult | None = field(default=None, repr=False)

    @property
    def measured(self) -> bool:
        from fetometry.pipeline import OK

        return self.result.status == OK and self.result.measurement is not None

    def to_json(self) -> dict:
        """ImageResult keys + provenance + clinical keys + uncertainty + disclaimer, JSON-ready."""
        row = self.result.to_dict()
        row.update(
            pixel_size_source=self.pixel_size_source,
            exam_date=self.exam_date.isoformat(),
            ga_weeks=self.ga_weeks,
            ga_source=self.ga_source,
        )
        for key, value in self.clinical.items():
            if key in row or key == "notes":
                continue  # never let a summary overwrite a measurement
            if self.ga_weeks is None and key.endswith(("_z", "_centile")):
                continue  # the contract: centile keys only when a GA was given
            row[key] = value
        row.update(self._uncertainty_keys())
        row["explain_method"] = self.explain_method
        row["corrected_by_user"] = self.corrected_by_user
        row["automatic"] = self._automatic_values()
        row["notes"] = list(self.clinical.get("notes", [])) + self.notes
        row.update(
            disclaimer=DISCLAIMER, model=self.result.model, version=__version__, date=self.analysed_on.isoformat()
        )
        return json_safe(row)

    def _automatic_values(self) -> dict | None:
        """The model's own ellipse and measures when the user corrected them, else None."""
        if not self.corrected_by_user or self.automatic is None:
            return None
        keys = ("status", "center_x_px", "center_y_px", "semi_axes_a_px", "semi_axes_b_px", "angle_rad")
        keys += ("hc_mm", "bpd_mm", "ofd_mm", "cephalic_index")
        automatic = self.automatic.to_dict()
        return {key: automatic.get(key) for key in keys}

    def _uncertainty_keys(self) -> dict:
        if not self.uncertainty:
            return {}
        interval = self.uncertainty.get("interval_mm")
        return {
            "hc_sd_mm": self.uncertainty.get("hc_sd_mm"),
            "hc_interval_mm": list(interval) if interval is not None else None,
            "hc_interval_coverage": self.uncertainty.get("coverage"),
            "uncertainty_confidence": self.uncertainty.get("confidence"),
        }

    def overlay_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8: the image with the fitted ellipse and its numbers."""
        from fetometry.report.figures import draw_overlay

        return draw_overlay(self.image, self.result)

    def explanation_rgb(self) -> np.ndarray | None:
        """(H, W, 3) uint8: the explanation map blended over the image, or None."""
        from fetometry.report.figures import blend_map

        return None if self.explanation is None else blend_map(self.image, self.explanation)

    def uncertainty_rgb(self) -> np.ndarray | None:
        """(H, W, 3) uint8: the per-pixel spread of the uncertainty samples, or None."""
        spread = (self.uncertainty or {}).get("spread_map")
        if spread is None:
            return None
        spread = np.asarray(spread, dtype=np.float32)
        peak = float(spread.max()) if spread.size else 0.0
        from fetometry.report.figures import blend_map

        return blend_map(self.image, spread / peak if peak > 0 else spread)

    def report_dict(self, *, visits: list[dict] | None = None) -> dict:
        """The dict the PDF renderer takes: the JSON plus, optionally, earlier visits."""
        report = self.to_json()
        if visits:
            report["visits"] = visits
        return report

    def write_report(
        self,
        path: str | Path,
        *,
        visits: list[dict] | None = None,
        label: str | None = None,
        show_filename: bool = True,
    ) -> Path:
        """Write the PDF report (image, ellipse, table, GA/centiles, chart, maps, disclaimer).

        ``visits``: earlier exams of this pregnancy, ``[{"ga_weeks", "hc_mm"}]``, drawn on
        the growth chart; ``label``: shown in the header (e.g. an opaque pregnancy id);
        ``show_filename=False`` leaves the file name (which may identify a patient) out.
        """
        from fetometry.report import pdf

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pdf.write_pdf_report(
            path,
            self.report_dict(visits=visits),
            image=self.image,
            overlay_rgb=self.overlay_rgb(),
            explanation_rgb=self.explanation_rgb(),
            uncertainty_rgb=self.uncertainty_rgb(),
            label=label,
            show_filename=show_filename,
        )
        return path


# ------------------------------------------------------------------------- composition


def _pixel_size(explicit: float | None, read: ExamImage) -> tuple[float | None, str | None, list[str]]:
    """Explicit pixel size > DICOM calibration > none; notes say what was chosen and why."""
    from fetometry.io.pixel_size import validate_pixel_size

    notes: list[str] = []
    if explicit is not None:
        mm = validate_pixel_size(explicit, source="pixel size")
        if read.pixel_size_mm is not None and abs(read.pixel_size_mm - mm) > 0.01 * mm:
            notes.append(f"the stated pixel size {mm:g} mm overrides the DICOM calibration {read.pixel_size_mm:g} mm")
        return mm, "stated", notes
    if read.pixel_size_mm is not None:
        return validate_pixel_size(read.pixel_size_mm, source=read.calibration or "DICOM"), read.calibration, notes
    if read.kind == "dicom":
        notes.append(f"no pixel size ({read.calibration}); give one to get mm values")
    return None, None, notes


def _measure(
    read: ExamImage, predictor: Predictor, explicit_mm: float | None, plane_check
) -> tuple[ImageResult, str | None, list[str]]:
    """Segment, check the plane, fit and measure (pipeline.measure); a DICOM is
    calibrated by the region that holds the head."""
    from fetometry.io.pixel_size import validate_pixel_size
    from fetometry.pipeline import measure, plane_checker_for, result_from_prediction

    mm, source, notes = _pixel_size(explicit_mm, read)
    result = measure(
        predictor,
        read.pixels,
        filename=read.filename,
        pixel_size_mm=mm,
        pixel_size_problem=_no_size_reason(read),
        plane_checker=plane_checker_for(plane_check),
    )
    if explicit_mm is None and read.dicom is not None and result.ellipse is not None:
        head_mm, head_source = read.calibrated_at(result.ellipse.center_x_px, result.ellipse.center_y_px)
        if head_mm is not None and head_mm != mm:
            # Several regions: the one under the head's centre calibrates the head.
            mm, source = validate_pixel_size(head_mm, source=head_source), head_source
            result = result_from_prediction(
                predictor, read.filename, result.prediction, mm, plane=result.plane, image=read.pixels
            )
    return result, source, notes


def _clinical(result: ImageResult, ga_weeks: float | None, ga_source: str | None, notes: list[str]) -> dict:
    """clinical_summary on the measured head; empty (with a note) when nothing was measured."""
    if result.measurement is None:
        if ga_weeks is not None:
            notes.append("no head measured in mm: no GA estimate and no centile")
        return {}
    from fetometry.clinical import assess

    m = result.measurement
    return assess.clinical_summary(
        hc_mm=m.hc_mm, bpd_mm=m.bpd_mm, ofd_mm=m.ofd_mm, ga_weeks=ga_weeks, ga_source=ga_source
    )


def _explain(
    predictor: Predictor, pixels: np.ndarray, method: str, result: ImageResult, notes: list[str]
) -> np.ndarray | None:
    """The explanation map of the predicted head region (None, with a note, when there is none)."""
    if result.prediction is None or not result.prediction.mask.any():
        notes.append(f"no head region was predicted: no {method} map to show")
        return None
    from fetometry.explain import cam

    heat = np.asarray(cam.explain_image(predictor, pixels, method, prediction=result.prediction), dtype=np.float32)
    if heat.shape != pixels.shape:
        raise RuntimeError(f"explain_image returned a {heat.shape} map for a {pixels.shape} image")
    return heat


def _uncertainty(predictor: Predictor, pixels: np.ndarray, result: ImageResult, notes: list[str]) -> dict:
    """Spread of the HC over test-time augmentation (or samples); in mm only with a pixel size."""
    from fetometry.explain import uncertainty as module

    if result.pixel_size_mm is None:
        notes.append("no pixel size: the HC uncertainty has no mm value (the spread map is shown)")
    return module.hc_uncertainty(predictor, pixels, result.pixel_size_mm, prediction=result.prediction)


def measure_exam(
    source: str | Path | bytes | np.ndarray,
    *,
    predictor: Predictor,
    pixel_size_mm: float | None = None,
    ga_weeks: float | None = None,
    lmp: date | str | None = None,
    exam_date: date | str | None = None,
    ga_source: str | None = None,
    explain: str | None = None,
    uncertainty: bool = False,
    filename: str | None = None,
    frame: int = 0,
    plane_check="on",
) -> ExamResult:
    """Measure one image and put it in clinical context (see the module docstring).

    source: a file path, uploaded bytes, or a (H, W) float array in [0, 1].
    plane_check: "on" (the shipped plane classifier), "off", or a ``PlaneChecker``.
    Raises ValueError subclasses for bad input, before the model runs.
    """
    method = _check_method(explain)
    ga, ga_source = dating.exam_dating(ga_weeks=ga_weeks, lmp=lmp, exam_date=exam_date, ga_source=ga_source)
    exam_day = date.today() if exam_date is None else dating.as_date(exam_date, "exam date")
    read = read_exam_image(source, filename=filename, frame=frame)
    result, mm_source, notes = _measure(read, predictor, pixel_size_mm, plane_check)
    if read.frames > 1:
        notes.append(f"cine loop of {read.frames} frames: frame {frame} measured")
    exam = ExamResult(
        result,
        read.pixels,
        exam_day,
        pixel_size_source=mm_source,
        ga_weeks=ga,
        ga_source=ga_source,
        explain_method=method,
        notes=notes,
    )
    exam.clinical = _clinical(result, ga, ga_source, notes)
    if method is not None:
        exam.explanation = _explain(predictor, read.pixels, method, result, notes)
    if uncertainty:
        exam.uncertainty = _uncertainty(predictor, read.pixels, result, notes)
    return exam


def _no_size_reason(read: ExamImage) -> str:
    if read.kind == "dicom":
        return f"no pixel size ({read.calibration}); give the pixel size in mm; no mm value without it"
    return "no pixel size: give the pixel size in mm; no mm value without it"
