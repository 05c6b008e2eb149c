"""One exam, composed: the code path shared by ``fetometry measure`` and ``fetometry serve``.

    image / DICOM / array -> pixels + pixel size (explicit > DICOM calibration > none)
        -> pipeline.measure (plane check, ellipse, gate, HC/BPD/OFD in mm)
        -> clinical_summary (GA from HC; centiles ONLY with a GA from LMP or a known date)
        -> optional explanation map and HC uncertainty -> JSON / PDF report

Every input is checked BEFORE the model runs, so bad input costs nothing and nothing is
computed (or stored) half-way. No millimetre value exists without a pixel size, no
centile without an independent GA. Modules written by other parts of the project
(clinical, DICOM, PDF, explain) are imported when a feature needs them; when one is
missing, only that feature fails, with ``FeatureUnavailableError`` naming the module.

Importing this module is cheap (numpy only): the CLI's parser uses
``add_measure_arguments``; torch, OpenCV and the rest load when an exam runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from fetometry import DISCLAIMER, __version__

if TYPE_CHECKING:
    from fetometry.inference.predictor import Predictor
    from fetometry.pipeline import ImageResult

log = logging.getLogger(__name__)

#: The explanation methods of fetometry.explain.cam (the API agreed with its authors).
EXPLAIN_METHODS = ("gradcam", "gradcampp", "hirescam", "occlusion")
#: Gestational ages the growth standards cover; the clinical module's own constant wins.
DEFAULT_GA_RANGE_WEEKS = (14.0, 40.0)
#: Magic numbers of the raster formats fetometry.io.images decodes (by content, never by
#: name); anything else is refused as an unsupported type before any decoder sees it.
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)


class FeatureUnavailableError(RuntimeError):
    """A feature needs a fetometry module that this installation does not have."""


class ExamInputError(ValueError):
    """An exam input (GA, LMP, date, source, frame, method) is invalid; the message says how to fix it."""


class UnsupportedFileTypeError(ValueError):
    """The bytes are neither a supported raster image nor DICOM (refused before any decoder)."""


def _feature(module_name: str, feature: str) -> ModuleType:
    """Import ``module_name`` or fail loudly for this feature only."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise FeatureUnavailableError(f"{feature} needs {module_name}, which this installation lacks") from error
        raise


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


def safe_filename(name: str | None, *, default: str = "upload") -> str:
    """A display name with no directories, control characters or shell surprises.

    The name only labels results: it is never used to open or write a file.
    ``../../etc/passwd.png`` -> ``passwd.png``; ``C:\\x\\a b.png`` -> ``a_b.png``.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return cleaned or default


def sniff_kind(data: bytes) -> str | None:
    """'dicom', 'png', 'jpeg', 'bmp', 'tiff' or None, from the bytes alone."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    for signature, suffix in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return suffix
    return None


def _from_dicom(source: bytes | Path, name: str, frame: int) -> ExamImage:
    dicom = _feature("fetometry.io.dicom", "DICOM input")
    image = dicom.read_dicom(source)
    count = int(image.frames.shape[0])
    if not 0 <= frame < count:
        raise ExamInputError(f"{name}: frame {frame} does not exist; the file has {count} frame(s) (0-{count - 1})")
    calibration = image.calibration or ("calibrated" if image.pixel_size_mm else "uncalibrated")
    pixels = np.ascontiguousarray(image.frames[frame], dtype=np.float32)
    return ExamImage(pixels, name, image.pixel_size_mm, f"DICOM: {calibration}", "dicom", count, dicom=image)


def _is_dicom_path(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(132)
    return sniff_kind(head) == "dicom"


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
    if _is_dicom_path(path):
        return _from_dicom(path, path.name, frame)
    return ExamImage(read_image(path), path.name)


# ----------------------------------------------------------------------- dating inputs


def ga_range_weeks() -> tuple[float, float]:
    """The growth standards' GA range (from fetometry.clinical.growth when installed)."""
    try:
        from fetometry.clinical.growth import GA_RANGE_WEEKS
    except ImportError:
        return DEFAULT_GA_RANGE_WEEKS
    return tuple(GA_RANGE_WEEKS)


def _as_date(value: date | str | None, what: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ExamInputError(f"{what}: {value!r} is not a date; write it as YYYY-MM-DD") from None


def resolve_ga(
    *,
    ga_weeks: float | None = None,
    lmp: date | str | None = None,
    exam_date: date | str | None = None,
    ga_source: str | None = None,
) -> tuple[float | None, str | None]:
    """The exam's gestational age in weeks and its source, or (None, None).

    The GA must come from outside the image: the LMP (source 'lmp') or a stated GA
    whose source is 'known' (default), 'crl', 'ivf' or 'earlier_scan'; never from the
    HC it will be compared with (fetometry.clinical.dating refuses such sources).
    Raises ExamInputError outside the growth standards' range (14-40 weeks) or when
    both a GA and an LMP are given.
    """
    exam_day = _as_date(exam_date, "exam date") or date.today()
    lmp_day = _as_date(lmp, "LMP")
    if ga_weeks is not None and lmp_day is not None:
        raise ExamInputError("give either a gestational age or an LMP date, not both")
    if ga_weeks is None and lmp_day is None:
        if ga_source:
            raise ExamInputError(f"a GA source ({ga_source}) was given without a gestational age")
        return None, None
    dating = _feature("fetometry.clinical.dating", "dating")
    if lmp_day is not None:
        if ga_source not in (None, "", "lmp"):
            raise ExamInputError(f"an LMP was given, so the GA source is 'lmp', not {ga_source!r}")
        ga_weeks, source = float(dating.ga_from_lmp(lmp_day, exam_day)), "lmp"
    else:
        source = dating.check_ga_source(ga_source or "known")
    low, high = ga_range_weeks()
    if isinstance(ga_weeks, bool) or not isinstance(ga_weeks, (int, float)) or not math.isfinite(ga_weeks):
        raise ExamInputError(f"gestational age {ga_weeks!r} is not a number of weeks")
    if not low <= ga_weeks <= high:
        raise ExamInputError(
            f"gestational age {ga_weeks:.1f} weeks (source: {source}) is outside {low:g}-{high:g} weeks, "
            "the range of the growth standards; no centile can be given"
        )
    return float(ga_weeks), source


def _check_method(explain: str | None) -> str | None:
    if explain is None or explain == "":
        return None
    method = explain.strip().lower()
    if method not in EXPLAIN_METHODS:
        raise ExamInputError(f"unknown explanation method {explain!r}; choose one of {', '.join(EXPLAIN_METHODS)}")
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
        row["notes"] = list(self.clinical.get("notes", [])) + self.notes
        row.update(
            disclaimer=DISCLAIMER, model=self.result.model, version=__version__, date=self.analysed_on.isoformat()
        )
        return _json_safe(row)

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
        return None if self.explanation is None else blend_map(self.image, self.explanation)

    def uncertainty_rgb(self) -> np.ndarray | None:
        """(H, W, 3) uint8: the per-pixel spread of the uncertainty samples, or None."""
        spread = (self.uncertainty or {}).get("spread_map")
        if spread is None:
            return None
        spread = np.asarray(spread, dtype=np.float32)
        peak = float(spread.max()) if spread.size else 0.0
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
        pdf = _feature("fetometry.report.pdf", "the PDF report")
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


def blend_map(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Gray image + a [0, 1] map of the same size -> (H, W, 3) uint8 RGB (JET colour map)."""
    import cv2

    if heat.shape != image.shape:
        raise ValueError(f"map shape {heat.shape} differs from the image's {image.shape}")
    gray = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    colour = cv2.applyColorMap(np.round(np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - alpha, colour, alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def _json_safe(value):
    """Numpy scalars -> Python; NaN/inf -> None (JSON has no NaN, and we never invent one)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
            result = result_from_prediction(predictor, read.filename, result.prediction, mm, plane=result.plane)
    return result, source, notes


def _clinical(result: ImageResult, ga_weeks: float | None, ga_source: str | None, notes: list[str]) -> dict:
    """clinical_summary on the measured head; empty (with a note) when nothing was measured."""
    if result.measurement is None:
        if ga_weeks is not None:
            notes.append("no head measured in mm: no GA estimate and no centile")
        return {}
    try:
        assess = _feature("fetometry.clinical.assess", "GA estimates and centiles")
    except FeatureUnavailableError:
        if ga_weeks is not None:
            raise  # a centile was asked for: say loudly that it cannot be given
        log.warning("fetometry.clinical is not installed: no GA estimate")
        notes.append("clinical module not installed: no GA estimate")
        return {}
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
    cam = _feature("fetometry.explain.cam", "explanation maps")
    heat = np.asarray(cam.explain_image(predictor, pixels, method, prediction=result.prediction), dtype=np.float32)
    if heat.shape != pixels.shape:
        raise RuntimeError(f"explain_image returned a {heat.shape} map for a {pixels.shape} image")
    return heat


def _uncertainty(predictor: Predictor, pixels: np.ndarray, result: ImageResult, notes: list[str]) -> dict:
    """Spread of the HC over test-time augmentation (or samples); in mm only with a pixel size."""
    module = _feature("fetometry.explain.uncertainty", "HC uncertainty")
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
    Raises ValueError subclasses for bad input (before the model runs) and
    FeatureUnavailableError when an asked-for feature's module is missing.
    """
    method = _check_method(explain)
    _require_features(ga_given=ga_weeks is not None or lmp is not None, explain=method, uncertainty=uncertainty)
    ga, ga_source = resolve_ga(ga_weeks=ga_weeks, lmp=lmp, exam_date=exam_date, ga_source=ga_source)
    exam_day = _as_date(exam_date, "exam date") or date.today()
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


def _require_features(*, ga_given: bool, explain: str | None, uncertainty: bool) -> None:
    """Fail before the model runs when an asked-for feature's module is missing."""
    if ga_given:
        _feature("fetometry.clinical.assess", "centiles for a given GA")
    if explain is not None:
        _feature("fetometry.explain.cam", "explanation maps")
    if uncertainty:
        _feature("fetometry.explain.uncertainty", "HC uncertainty")


def _no_size_reason(read: ExamImage) -> str:
    if read.kind == "dicom":
        return f"no pixel size ({read.calibration}); give the pixel size in mm; no mm value without it"
    return "no pixel size: give the pixel size in mm; no mm value without it"


# --------------------------------------------------------------------------------- CLI


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    """The exam flags of ``fetometry measure`` (beside --pixel-size, --json, --overlay, --model)."""
    dating = parser.add_mutually_exclusive_group()
    dating.add_argument("--ga-weeks", type=float, help="gestational age in weeks from dating (14-40); enables centiles")
    dating.add_argument("--lmp", help="first day of the last menstrual period, YYYY-MM-DD; enables centiles")
    parser.add_argument(
        "--ga-source",
        choices=("known", "crl", "ivf", "earlier_scan"),
        help="where --ga-weeks comes from (default: known)",
    )
    parser.add_argument("--exam-date", help="date of the scan, YYYY-MM-DD (default: today)")
    parser.add_argument("--report", type=Path, help="write a PDF report")
    parser.add_argument("--report-label", help="a label for the report header (e.g. an opaque exam id; never a name)")
    parser.add_argument(
        "--report-hide-filename", action="store_true", help="leave the image's file name out of the report"
    )
    parser.add_argument(
        "--explain",
        nargs="?",
        const="gradcam",
        choices=EXPLAIN_METHODS,
        help="add an explanation map (default method: gradcam)",
    )
    parser.add_argument(
        "--uncertainty", action="store_true", help="add the HC uncertainty (test-time augmentation spread)"
    )
    parser.add_argument("--frame", type=int, default=0, help="frame of a DICOM cine loop (default 0)")


def run_measure_cli(args: argparse.Namespace) -> int:
    """``fetometry measure``: one exam -> text or JSON on stdout, optional overlay and PDF.

    Exit status 0 when the image was analysed (the status says whether a head was
    measured), 1 when an asked-for feature is not installed; ValueErrors propagate to
    the CLI's handler, which prints them and exits 1.
    """
    from fetometry.inference.predictor import Predictor

    try:
        predictor = Predictor.from_weights(args.model, tta=getattr(args, "tta", False))
        exam = measure_exam(
            args.image,
            predictor=predictor,
            pixel_size_mm=args.pixel_size,
            ga_weeks=getattr(args, "ga_weeks", None),
            lmp=getattr(args, "lmp", None),
            ga_source=getattr(args, "ga_source", None),
            exam_date=getattr(args, "exam_date", None),
            explain=getattr(args, "explain", None),
            uncertainty=getattr(args, "uncertainty", False),
            frame=getattr(args, "frame", 0),
            plane_check=getattr(args, "plane_check", "on"),
        )
        written = _write_outputs(exam, args)
    except FeatureUnavailableError as error:
        print(f"fetometry measure: error: {error}", file=sys.stderr)
        return 1
    _print_exam(exam, as_json=args.json)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _write_outputs(exam: ExamResult, args: argparse.Namespace) -> list[Path]:
    import cv2

    written = []
    overlay = getattr(args, "overlay", None)
    if overlay:
        overlay = Path(overlay)
        images = [(overlay, exam.overlay_rgb())]
        if exam.explanation is not None:
            images.append((overlay.with_name(f"{overlay.stem}_{exam.explain_method}.png"), exam.explanation_rgb()))
        for path, rgb in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
            written.append(path)
    if getattr(args, "report", None):
        written.append(
            exam.write_report(args.report, label=args.report_label, show_filename=not args.report_hide_filename)
        )
    return written


def _print_exam(exam: ExamResult, *, as_json: bool) -> None:
    row = exam.to_json()
    if as_json:
        print(json.dumps(row, indent=2))
        return
    print(summary_line(row))
    for key, label in (
        ("ga_hadlock_weeks", "GA from HC (Hadlock)"),
        ("ga_intergrowth_weeks", "GA from HC (INTERGROWTH-21st)"),
    ):
        if row.get(key) is not None:
            print(f"  {label}: {row[key]:.1f} weeks")
    if row.get("hc_centile") is not None:
        print(
            f"  HC at {row['ga_weeks']:.1f} weeks ({row['ga_source']}): centile {row['hc_centile']:.1f}, z {row['hc_z']:+.2f}"
        )
    if row.get("hc_sd_mm") is not None:
        print(f"  HC uncertainty: +/- {row['hc_sd_mm']:.1f} mm (1 SD)")
    for flag in row.get("flags") or []:
        print(f"  [{flag.get('severity', '')}] {flag.get('message', '')}")
    for note in row.get("notes") or []:
        print(f"  note: {note}")
    print(DISCLAIMER)


def summary_line(row: dict) -> str:
    """'name: HC 165.2 mm, BPD ...' or 'name: status: detail'."""
    from fetometry.pipeline import OK

    if row.get("status") == OK and row.get("hc_mm") is not None:
        return f"{row['filename']}: HC {row['hc_mm']:.1f} mm, BPD {row['bpd_mm']:.1f} mm, OFD {row['ofd_mm']:.1f} mm, cephalic index {row['cephalic_index']:.1f}"
    return f"{row['filename']}: {row['status']}: {row['detail']}"
