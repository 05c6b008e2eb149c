"""One exam -> a DICOM Comprehensive SR (TID 5000 OB-GYN Ultrasound Procedure Report), via highdicom.

The SR joins the study of the image it was measured on (Study Instance UID and the
patient and study modules copied from the source), in a new series, and references the
source image by SOP Class / SOP Instance UID three times: in the Image Library (TID 5000
rows 5-6), as each measurement's "Source of Measurement" (TID 300 / TID 320) and in the
CurrentRequestedProcedureEvidenceSequence. The observer is a device: the algorithm
(TID 1001 / 1004, with TID 4019 Algorithm Identification on every automatic value).

Content tree (PS3.16; the rows cited next to each code below)::

    CONTAINER (125000, DCM, "OB-GYN Ultrasound Procedure Report")      TID 5000 row 1
      HAS OBS CONTEXT   device observer = the model                      TID 5000 row 3 -> TID 1001
      CONTAINS CONTAINER (111028, DCM, "Image Library") > IMAGE source   TID 5000 rows 5-6
      CONTAINS CONTAINER (121111, DCM, "Summary")                        TID 5002 (only with dating)
        CONTAINS CONTAINER (125008, DCM, "Fetus Summary")                TID 5003
          CONTAINS NUM GA by LMP / GA (days), TEXT Comment: its source
      CONTAINS CONTAINER (125002, DCM, "Fetal Biometry")                 TID 5005 (only with mm)
        CONTAINS CONTAINER (125005, DCM, "Biometry Group") per HC/BPD/OFD TID 5008
          CONTAINS NUM HC|BPD|OFD (mm)                                   TID 5008 row 2 -> TID 300
          [corrected: the user's value has Selection Status = "User chosen value"
           (TID 310, CID 224); the model's value is kept beside it as a sibling NUM
           carrying TID 4019 Algorithm Identification; a TEXT Comment says so]
          CONTAINS NUM Gestational Age (d) + INFERRED FROM its equation   TID 5008 rows 3-4 (HC only)
          CONTAINS NUM Growth Percentile Rank (%) / Growth Z-score (1)    TID 5008 rows 7-8 (only with dating)
      CONTAINS CONTAINER (125001, DCM, "Fetal Biometry Ratios")          TID 5004 (only with mm)
        CONTAINS NUM Cephalic Index ({ratio})                            TID 300
      CONTAINS TEXT (121071, DCM, "Finding")   why nothing was measured in mm (when so)
      CONTAINS TEXT (121106, DCM, "Comment")   the calibration used; the disclaimer

Choices (documented here because a reader of the SR will meet them):

- **Refused or unmeasured exams still give an SR** (no exception): no biometry
  containers, and a TEXT "Finding" stating ``not measured: <status>: <detail>``. A
  pixel-only result (no pixel size) is never reported, in mm or otherwise. The PACS
  watcher does not store such SRs; ``measure --sr`` still answers. The only errors are
  ``SRSourceError`` (a ValueError): the source is not a DICOM image with study / SOP
  identifiers, or ``frame`` is not one of its frames.
- **GA estimates from the HC** are reported whenever ``exam.clinical`` holds them (they
  need no dating, exactly as in ``measure --json``); **centiles and z-scores only with
  an independent GA** (``exam.ga_weeks``), which then also appears in the Fetus Summary.
- **Cephalic index** is BPD / OFD as a ratio (UCUM ``{ratio}``, e.g. 0.78), not the
  x100 number of ``measure --json`` (78): CID 12004 items are ratios.
- **Corrected exams** (``exam.corrected_by_user``): the values of ``exam.result`` are
  the user's and are flagged "User chosen value"; ``exam.automatic`` (the model's own
  result) is kept beside them, so a reader sees both. No person observer is recorded:
  fetometry does not know the sonographer's name, which TID 1003 requires.

Not confirmed from the text of PS3.16 reachable while writing this (said here, never
guessed silently): the exact rows of TID 5002 / 5003 (the containers' codes are
confirmed), the unit TID 5004 prescribes for ratios ({ratio} is the UCUM ratio unit of
CID 7181), and whether TID 5008 rows 3 and 7 allow more than one item (VM 1 in the
edition read): the INTERGROWTH-21st GA and the z-score are added beside the Hadlock GA
and the percentile as extensions (TID 5008 is extensible), and INTERGROWTH-21st, absent
from CID 12013 / 12015, is cited as TEXT (121421, DCM, "Equation Citation").

Code sources: "pydicom concepts" is pydicom 3's ``pydicom.sr`` dictionary, generated
from PS3.16 (it lists each code's meaning and the CIDs holding it); the DICOM (DCM)
codes are PS3.16 Annex D; the LOINC (LN) codes are PS3.16's CIDs, which take them from
LOINC.

Privacy: nothing here logs; patient attributes travel only from the source into the SR
(the place they belong), never into a message.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import highdicom as hd
import pydicom
from highdicom.sr import CodedConcept, RelationshipTypeValues
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from fetometry import DISCLAIMER

# ------------------------------------------------------------------------------- codes


def _dcm(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator="DCM", meaning=meaning)


def _ln(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator="LN", meaning=meaning)


def _ucum(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


#: Document title: TID 5000 row 1, BCID 12024 (pydicom concepts: 125000 in CID 12024).
OBGYN_REPORT = _dcm("125000", "OB-GYN Ultrasound Procedure Report")
#: TID 5000 row 5: DT (111028, DCM, "Image Library").
IMAGE_LIBRARY = _dcm("111028", "Image Library")
#: TID 5000 row 6 names no concept; (260753009, SCT, "Source") as highdicom's TID 1600 entries
#: (pydicom concepts: SCT 260753009 "Source (attribute)").
LIBRARY_ENTRY = CodedConcept(value="260753009", scheme_designator="SCT", meaning="Source")
#: TID 5002 OB-GYN Procedure Summary Section container (PS3.16 Annex D; pydicom concepts).
SUMMARY = _dcm("121111", "Summary")
#: TID 5003 OB-GYN Fetus Summary container (PS3.16 Annex D; pydicom concepts).
FETUS_SUMMARY = _dcm("125008", "Fetus Summary")
#: TID 5004 Fetal Biometry Ratio Section container (PS3.16 Annex D; pydicom concepts).
FETAL_BIOMETRY_RATIOS = _dcm("125001", "Fetal Biometry Ratios")
#: TID 5005 Fetal Biometry Section container (PS3.16 Annex D; pydicom concepts).
FETAL_BIOMETRY = _dcm("125002", "Fetal Biometry")
#: TID 5008 row 1: DT (125005, DCM, "Biometry Group").
BIOMETRY_GROUP = _dcm("125005", "Biometry Group")

#: CID 12005 Fetal Biometry Measurement (LOINC; pydicom concepts list CIDs 12005, 12279).
HEAD_CIRCUMFERENCE = _ln("11984-2", "Head Circumference")
BIPARIETAL_DIAMETER = _ln("11820-8", "Biparietal Diameter")
OCCIPITAL_FRONTAL_DIAMETER = _ln("11851-3", "Occipital-Frontal Diameter")
#: CID 12004 Fetal Biometry Ratio (LOINC; pydicom concepts list CIDs 12004, 12279).
CEPHALIC_INDEX = _ln("11823-2", "Cephalic Index")

#: TID 5008 row 3: EV (18185-9, LN, "Gestational Age"), units EV (d, UCUM, "days");
#: also CID 12019 OB-GYN Fetus Summary (TID 5003).
GESTATIONAL_AGE = _ln("18185-9", "Gestational Age")
#: CID 12019 OB-GYN Fetus Summary / CID 12013 (pydicom concepts: 11885-1).
GESTATIONAL_AGE_BY_LMP = _ln("11885-1", "Gestational Age by LMP")
#: TID 5008 row 4 concept name, CID 228 Equation or Table (pydicom concepts: 121420).
EQUATION = _dcm("121420", "Equation")
#: CID 228 Equation or Table (pydicom concepts: 121421); holds a citation as TEXT.
EQUATION_CITATION = _dcm("121421", "Equation Citation")
#: CID 12013 Gestational Age Equation/Table (pydicom concepts: 11932-1, CIDs 12012, 12013).
HC_HADLOCK_1984 = _ln("11932-1", "HC, Hadlock 1984")
#: CID 12017 Growth Distribution Rank (TID 5008 row 7; pydicom concepts).
GROWTH_PERCENTILE_RANK = _dcm("125012", "Growth Percentile Rank")
GROWTH_Z_SCORE = _dcm("125013", "Growth Z-score")

#: TID 310 Measurement Properties: Selection Status (121404, DCM), value from CID 224
#: Selection Method: (121410, DCM, "User chosen value") (pydicom concepts).
USER_CHOSEN_VALUE = _dcm("121410", "User chosen value")
SELECTION_STATUS = _dcm("121404", "Selection Status")
#: TID 300 row "Source of Measurement" (121112, DCM), written by highdicom's SourceImageForMeasurement.
SOURCE_OF_MEASUREMENT = _dcm("121112", "Source of Measurement")
#: TID 4019 Algorithm Name / Version (PS3.16 Annex D), written by highdicom.
ALGORITHM_NAME = _dcm("111001", "Algorithm Name")
#: (121106, DCM, "Comment") and (121071, DCM, "Finding"): PS3.16 Annex D (pydicom concepts).
COMMENT = _dcm("121106", "Comment")
FINDING = _dcm("121071", "Finding")
#: TID 1002 Observer Type = (121007, DCM, "Device") (CID 270).
DEVICE = _dcm("121007", "Device")

#: UCUM units (pydicom concepts, CID 7181 and others); "days" is TID 5008 row 3's meaning.
MM = _ucum("mm", "mm")
DAYS = _ucum("d", "days")
PERCENT = _ucum("%", "Percent")
NO_UNITS = _ucum("1", "no units")
RATIO = _ucum("{ratio}", "ratio")

#: What the reader returns for, and the measurement key of ``HeadMeasurement`` behind, each code.
BIOMETRY = (
    (HEAD_CIRCUMFERENCE, "hc_mm", "hc"),
    (BIPARIETAL_DIAMETER, "bpd_mm", "bpd"),
    (OCCIPITAL_FRONTAL_DIAMETER, "ofd_mm", "ofd"),
)
MEASUREMENT_CODES = (HEAD_CIRCUMFERENCE.value, BIPARIETAL_DIAMETER.value, OCCIPITAL_FRONTAL_DIAMETER.value)
INTERGROWTH_GA_CITATION = "INTERGROWTH-21st: Papageorghiou et al., Ultrasound Obstet Gynecol 2016;48:719-726"
INTERGROWTH_GROWTH_CITATION = "INTERGROWTH-21st Fetal Growth Standards: Papageorghiou et al., Lancet 2014;384:869-879"
CORRECTED_COMMENT = "corrected by user"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
_UID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
#: Type 2 attributes highdicom reads from the source; absent ones are passed empty.
_TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


class SRSourceError(ValueError):
    """The source is not a DICOM image an SR can reference (or ``frame`` is not one of its frames)."""


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: Filters and warnings filters are process-wide state: one quiet build at a time.
_QUIET_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_dicom():
    """Drop highdicom's and pydicom's log records and warnings for the duration.

    highdicom logs the source's SOP Instance UID and the attributes it copies (at INFO /
    DEBUG); pydicom's warnings can quote element values. A report must log nothing that
    could identify a patient, so none of it is shown (a filter on each of their loggers:
    a filter on a parent does not see its children's records)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("highdicom", "pydicom")]
    loggers = [logging.getLogger(n) for n in ("highdicom", "pydicom", *names)]
    drop = _Drop()
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


# ---------------------------------------------------------------------------- building


def build_sr(
    exam,
    source: Dataset,
    *,
    model_name: str,
    model_version: str,
    weights_sha256: str,
    series_number: int = 9001,
    instance_number: int = 1,
    frame: int = 0,
) -> hd.sr.ComprehensiveSR:
    """The exam as a Comprehensive SR in the source image's study (see the module docstring).

    ``source``: the DICOM image the exam measured (pixel data not needed); ``frame``:
    the measured frame of a multi-frame source (0-based, as ``measure --frame``).
    ``model_name`` / ``model_version`` / ``weights_sha256`` identify the algorithm
    (TID 4019; the digest is ``fetometry.resources.weights_digest``). Raises
    SRSourceError when the source cannot be referenced.
    """
    header = _source_header(source)
    frames = _referenced_frames(header, frame)
    algorithm = hd.sr.AlgorithmIdentification(
        name=model_name,
        version=model_version,
        parameters=[f"weights sha256 {weights_sha256}"],
    )
    source_ref = hd.sr.SourceImageForMeasurement(header.SOPClassUID, header.SOPInstanceUID, frames)
    root = hd.sr.ContainerContentItem(name=OBGYN_REPORT, template_id="5000")
    content = [*_observation_context(model_name, model_version, weights_sha256), _image_library(header, frames)]
    if exam.ga_weeks is not None:
        content.append(_summary(exam))
    measured = exam.result.measurement is not None
    if measured:
        content.extend(_biometry_sections(exam, algorithm, source_ref))
    else:
        content.append(_text(FINDING, _not_measured(exam.result)))
    if measured and exam.pixel_size_source:
        content.append(_text(COMMENT, f"pixel size {exam.result.pixel_size_mm:.5g} mm from {exam.pixel_size_source}"))
    content.append(_text(COMMENT, DISCLAIMER))
    root.ContentSequence = hd.sr.ContentSequence(content)
    with quiet_dicom():
        sr = hd.sr.ComprehensiveSR(
            evidence=[header],
            content=root,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer="fetometry",
            is_complete=True,
            is_final=False,  # PreliminaryFlag PRELIMINARY: decision support until a clinician accepts it
            is_verified=False,
        )
    sr.SeriesDescription = "fetometry head biometry (decision support)"
    return sr


def write_sr(exam, source: str | Path | Dataset, out_path: str | Path, **ids) -> Path:
    """``build_sr`` on a source file or dataset, written to ``out_path`` (folders made).

    ``ids``: the keyword arguments of ``build_sr`` (model_name, model_version,
    weights_sha256, series_number, instance_number, frame)."""
    return write_derived(build_sr, exam, source, out_path, **ids)


def write_derived(build, exam, source: str | Path | Dataset, out_path: str | Path, **ids) -> Path:
    """``build(exam, source_header, **ids)`` (the SR or the Secondary Capture) written to ``out_path``."""
    if not isinstance(source, Dataset):
        source = _read_header(Path(source))
    dataset = build(exam, source, **ids)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_dicom():
        dataset.save_as(out, enforce_file_format=True)
    return out


def _read_header(path: Path) -> Dataset:
    from fetometry.io.dicom import is_dicom

    if not is_dicom(path):
        raise SRSourceError(f"{path.name}: not a DICOM file; an SR belongs to a DICOM image's study")
    try:
        with quiet_dicom():
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many types on corrupt input
        raise SRSourceError(f"{path.name}: unreadable DICOM ({type(error).__name__})") from None


def _source_header(source: Dataset) -> Dataset:
    """A pixel-free copy of the source with the Type 2 attributes highdicom reads present."""
    if not isinstance(source, Dataset):
        raise SRSourceError(f"the source must be a pydicom Dataset, got {type(source).__name__}")
    missing = [k for k in ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID") if not source.get(k)]
    if missing:
        raise SRSourceError(f"the source has no {', '.join(missing)}: it is not a DICOM image an SR can reference")
    header = Dataset()
    for element in source:
        if element.keyword != "PixelData":
            header.add(copy.deepcopy(element))
    if hasattr(source, "file_meta"):
        header.file_meta = copy.deepcopy(source.file_meta)
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _referenced_frames(header: Dataset, frame: int) -> list[int] | None:
    count = int(header.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < count:
        raise SRSourceError(f"frame {frame} does not exist; the source has {count} frame(s)")
    return [frame + 1] if count > 1 else None  # DICOM frame numbers start at 1


def _observation_context(model_name: str, model_version: str, weights_sha256: str) -> hd.sr.ObservationContext:
    """TID 1001 with the device observer (TID 1004) = the algorithm; a stable UID per weights."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["fetometry", model_name, model_version, weights_sha256]),
        name=model_name,
        manufacturer_name="fetometry",
        model_name=f"{model_name} {model_version}",
    )
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(DEVICE, device))


def _image_library(header: Dataset, frames: list[int] | None) -> hd.sr.ContainerContentItem:
    """TID 5000 rows 5-6: the Image Library holding the source image.

    Row 6 names no concept; highdicom needs one, so the entry is named as highdicom's own
    Image Library entries are, (260753009, SCT, "Source")."""
    library = hd.sr.ContainerContentItem(name=IMAGE_LIBRARY, relationship_type=RelationshipTypeValues.CONTAINS)
    image = hd.sr.ImageContentItem(
        name=LIBRARY_ENTRY,
        referenced_sop_class_uid=header.SOPClassUID,
        referenced_sop_instance_uid=header.SOPInstanceUID,
        referenced_frame_numbers=frames,
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    library.ContentSequence = hd.sr.ContentSequence([image])
    return library


def _summary(exam) -> hd.sr.ContainerContentItem:
    """TID 5002 > TID 5003: the independent GA the centiles were placed at, with its source."""
    by_lmp = exam.ga_source == "lmp"
    ga = _num(GESTATIONAL_AGE_BY_LMP if by_lmp else GESTATIONAL_AGE, exam.ga_weeks * 7.0, DAYS)
    source = exam.ga_source or "not stated"
    ga[0].ContentSequence = hd.sr.ContentSequence(
        [
            _text(
                COMMENT,
                f"gestational age {exam.ga_weeks:.2f} weeks, source: {source}; dated independently of this scan",
                RelationshipTypeValues.HAS_PROPERTIES,
            )
        ]
    )
    fetus = _container(FETUS_SUMMARY, ga)
    return _container(SUMMARY, [fetus])


def _biometry_sections(exam, algorithm, source_ref) -> list[hd.sr.ContainerContentItem]:
    corrected = bool(getattr(exam, "corrected_by_user", False))
    automatic = getattr(exam, "automatic", None) if corrected else None
    auto_m = automatic.measurement if automatic is not None else None
    m = exam.result.measurement
    clinical = exam.clinical or {}
    dated = exam.ga_weeks is not None
    groups = []
    for code, key, measure in BIOMETRY:
        items = _values(code, getattr(m, key), MM, corrected, getattr(auto_m, key, None), algorithm, source_ref)
        if code is HEAD_CIRCUMFERENCE:
            items.extend(_ga_estimates(clinical))
        if dated:
            items.extend(_growth_rank(clinical.get(f"{measure}_centile"), clinical.get(f"{measure}_z")))
        if corrected:
            items.append(_text(COMMENT, _corrected_text(code, getattr(auto_m, key, None), "mm")))
        groups.append(_container(BIOMETRY_GROUP, items))
    ratio = m.bpd_mm / m.ofd_mm
    auto_ratio = auto_m.bpd_mm / auto_m.ofd_mm if auto_m is not None else None
    ratios = _values(CEPHALIC_INDEX, ratio, RATIO, corrected, auto_ratio, algorithm, source_ref, digits=4)
    return [_container(FETAL_BIOMETRY, groups, template="5005"), _container(FETAL_BIOMETRY_RATIOS, ratios, "5004")]


def _values(code, value, unit, corrected, automatic_value, algorithm, source_ref, *, digits: int = 2) -> list:
    """TID 300 NUM(s): the reported value, and when corrected, the model's value beside it."""
    if not corrected:
        return [_measurement(code, value, unit, source_ref, algorithm=algorithm, digits=digits)]
    properties = hd.sr.MeasurementProperties(selection_status=USER_CHOSEN_VALUE)
    items = [_measurement(code, value, unit, source_ref, properties=properties, digits=digits)]
    if automatic_value is not None:
        items.append(_measurement(code, automatic_value, unit, source_ref, algorithm=algorithm, digits=digits))
    return items


def _measurement(code, value, unit, source_ref, *, algorithm=None, properties=None, digits: int = 2):
    measurement = hd.sr.Measurement(
        name=code,
        value=round(float(value), digits),
        unit=unit,
        algorithm_id=algorithm,
        properties=properties,
        referenced_images=[source_ref],
    )
    measurement[0].RelationshipType = RelationshipTypeValues.CONTAINS.value
    return measurement[0]


def _corrected_text(code: CodedConcept, automatic_value: float | None, unit: str) -> str:
    text = f"{code.meaning}: {CORRECTED_COMMENT} (the sonographer edited the fitted ellipse)"
    if automatic_value is None:
        return text + "; the model's own value was not kept"
    return text + f"; the model's own value, {automatic_value:.2f} {unit}, is reported beside it"


def _ga_estimates(clinical: dict) -> list:
    """TID 5008 rows 3-4: GA from the HC, Hadlock (coded) and INTERGROWTH-21st (cited)."""
    items = []
    for key, reference in (
        ("ga_hadlock_weeks", hd.sr.CodeContentItem(EQUATION, HC_HADLOCK_1984, RelationshipTypeValues.INFERRED_FROM)),
        (
            "ga_intergrowth_weeks",
            _text(EQUATION_CITATION, INTERGROWTH_GA_CITATION, RelationshipTypeValues.INFERRED_FROM),
        ),
    ):
        weeks = clinical.get(key)
        if weeks is None:
            continue
        item = _num(GESTATIONAL_AGE, float(weeks) * 7.0, DAYS)
        item[0].ContentSequence = hd.sr.ContentSequence([reference])
        items.append(item[0])
    return items


def _growth_rank(centile: float | None, z: float | None) -> list:
    """TID 5008 rows 7-8: percentile and z-score on INTERGROWTH-21st (cited: not in CID 12015)."""
    items = []
    for name, value, unit in ((GROWTH_PERCENTILE_RANK, centile, PERCENT), (GROWTH_Z_SCORE, z, NO_UNITS)):
        if value is None:
            continue
        item = _num(name, float(value), unit)
        item[0].ContentSequence = hd.sr.ContentSequence(
            [_text(EQUATION_CITATION, INTERGROWTH_GROWTH_CITATION, RelationshipTypeValues.INFERRED_FROM)]
        )
        items.append(item[0])
    return items


def _not_measured(result) -> str:
    if result.status == "no_pixel_size":
        return f"not measured in mm: {result.status}: {result.detail}"
    return f"not measured: {result.status}: {result.detail or 'no head measurement'}"


def _num(name, value: float, unit, digits: int = 2) -> hd.sr.ContentSequence:
    item = hd.sr.NumContentItem(
        name=name, value=round(value, digits), unit=unit, relationship_type=RelationshipTypeValues.CONTAINS
    )
    return hd.sr.ContentSequence([item])


def _text(name, value: str, relationship=RelationshipTypeValues.CONTAINS) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=relationship)


def _container(name, items: Iterable, template: str | None = None) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=name, template_id=template, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(list(items))
    return container


# ----------------------------------------------------------------------------- reading


def read_sr_measurements(sr: str | Path | Dataset) -> dict:
    """Walk an SR written by ``build_sr``: its head biometry, GA and centiles as plain numbers.

    ``{"11984-2": {"value": 165.6, "unit": "mm", "corrected": False, "automatic": None,
    "centile": 17.7, "z": -0.93}, "11820-8": ..., "11851-3": ..., "11823-2": {...,
    "unit": "{ratio}"}, "ga_estimates": [{"value": 134.8, "unit": "d", "method":
    "HC, Hadlock 1984"}, ...], "ga": {"value": 140.0, "unit": "d", "code": "11885-1"}}``;
    ``automatic`` is ``{"value", "unit"}`` beside a corrected value. Keys are absent
    when the SR holds no such item (no mm, no dating).
    """
    dataset = sr if isinstance(sr, Dataset) else pydicom.dcmread(sr)
    out: dict = {}
    values: dict[str, list[tuple[float, str, bool]]] = {}
    for item, parents in _walk(dataset.get("ContentSequence", [])):
        if item.ValueType != "NUM" or "ConceptNameCodeSequence" not in item:
            continue
        code = item.ConceptNameCodeSequence[0].CodeValue
        value, unit = _num_value(item)
        names = [p.ConceptNameCodeSequence[0].CodeValue for p in parents if "ConceptNameCodeSequence" in p]
        if code in (*MEASUREMENT_CODES, CEPHALIC_INDEX.value):
            values.setdefault(code, []).append((value, unit, _is_user_chosen(item)))
        elif code == GESTATIONAL_AGE.value and BIOMETRY_GROUP.value in names:
            out.setdefault("ga_estimates", []).append({"value": value, "unit": unit, "method": _method(item)})
        elif code in (GESTATIONAL_AGE.value, GESTATIONAL_AGE_BY_LMP.value) and FETUS_SUMMARY.value in names:
            out["ga"] = {"value": value, "unit": unit, "code": code}
        elif code in (GROWTH_PERCENTILE_RANK.value, GROWTH_Z_SCORE.value):
            measure = _group_measure(parents)
            if measure is not None:
                key = "centile" if code == GROWTH_PERCENTILE_RANK.value else "z"
                out.setdefault(measure, {})[key] = value
    for code, found in values.items():
        chosen = [v for v in found if v[2]]
        others = [v for v in found if not v[2]]
        if len(chosen) > 1 or len(others) > 1 or not found:
            raise ValueError(f"{code}: {len(found)} values; build_sr writes one, or a user's and the model's")
        reported = chosen[0] if chosen else others[0]
        automatic = others[0] if chosen and others else None
        out.setdefault(code, {}).update(
            value=reported[0],
            unit=reported[1],
            corrected=bool(chosen),
            automatic=None if automatic is None else {"value": automatic[0], "unit": automatic[1]},
        )
    return out


def read_sr_texts(sr: str | Path | Dataset) -> dict[str, list[str]]:
    """Every TEXT item of the SR by its concept's meaning: ``{"Finding": [...], "Comment": [...]}``."""
    dataset = sr if isinstance(sr, Dataset) else pydicom.dcmread(sr)
    texts: dict[str, list[str]] = {}
    for item, _ in _walk(dataset.get("ContentSequence", [])):
        if item.ValueType == "TEXT":
            meaning = item.ConceptNameCodeSequence[0].CodeMeaning
            texts.setdefault(meaning, []).append(str(item.TextValue))
    return texts


def _walk(sequence, parents: tuple = ()):
    for item in sequence:
        yield item, parents
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence, (*parents, item))


def _num_value(item) -> tuple[float, str]:
    measured = item.MeasuredValueSequence[0]
    return float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def _is_user_chosen(item) -> bool:
    for child in item.get("ContentSequence", []):
        if (
            child.ValueType == "CODE"
            and child.ConceptNameCodeSequence[0].CodeValue == SELECTION_STATUS.value
            and child.ConceptCodeSequence[0].CodeValue == USER_CHOSEN_VALUE.value
        ):
            return True
    return False


def _method(item) -> str | None:
    for child in item.get("ContentSequence", []):
        if child.ValueType == "CODE":
            return str(child.ConceptCodeSequence[0].CodeMeaning)
        if child.ValueType == "TEXT":
            return str(child.TextValue)
    return None


def _group_measure(parents) -> str | None:
    """The measurement code of the Biometry Group holding a growth rank item."""
    group = parents[-1] if parents else None
    if group is None or group.ConceptNameCodeSequence[0].CodeValue != BIOMETRY_GROUP.value:
        return None
    for child in group.ContentSequence:
        if child.ValueType == "NUM" and child.ConceptNameCodeSequence[0].CodeValue in MEASUREMENT_CODES:
            return str(child.ConceptNameCodeSequence[0].CodeValue)
    return None
