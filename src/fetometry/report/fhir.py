"""One exam -> an HL7 FHIR R4 Bundle (type ``collection``) of Observations, as plain JSON.

One Observation per head measurement measured in mm: HC (LOINC 11984-2), BPD
(11820-8), OFD (11851-3), each ``valueQuantity`` in UCUM ``mm``, and the cephalic index
(11823-2) as the ratio BPD / OFD (UCUM ``{ratio}``), the same codes and units as the
DICOM SR (``report.dicom_sr``). No pixel size, or a refused image: no Observation at
all (an empty collection), never a pixel value dressed as millimetres. With an
independent GA (``exam.ga_weeks``), each of HC, BPD and OFD carries its INTERGROWTH-21st
percentile and z-score as components coded with DICOM's CID 12017 (system
``http://dicom.nema.org/resources/ontology/DCM``, the URI FHIR registers for DICOM
codes).

Choices, with their source:

- ``status`` is ``preliminary``. FHIR R4 ObservationStatus (hl7.org/fhir/R4/valueset-
  observation-status.html): *preliminary* "This is an initial or interim observation:
  data may be incomplete or unverified"; *final* "The observation is complete and there
  are no further actions needed". A decision-support value no clinician has accepted is
  not final. *amended* and *corrected* both mean "subsequent to being Final", so they
  do not fit a value a sonographer corrected before anyone accepted it either: a
  corrected value stays ``preliminary``, says "corrected by user" in its ``note`` and
  ``method``, and names the model's own Observation (kept in the bundle, also
  ``preliminary``, with a note that it was superseded) in ``derivedFrom``.
- ``method`` is text: the model's name and version (no code system names fetometry).
- ``derivedFrom`` the image. ``image_reference``: a literal FHIR reference (anything
  with a ``/`` or a ``urn:`` / ``http`` prefix, e.g. ``"ImagingStudy/123"`` or
  ``"Media/abc"``), used as it is; or a bare DICOM UID, taken as the image's SOP
  Instance UID and written as a logical reference to a Media resource,
  ``{"type": "Media", "identifier": {"system": "urn:dicom:uid", "value":
  "urn:oid:<uid>"}}`` (R4 Media is the resource for one image; urn:dicom:uid is the
  identifier system R4 uses for DICOM UIDs); None: no ``derivedFrom`` (a file name
  could identify a patient, so none is written).
- ``category`` imaging (http://terminology.hl7.org/CodeSystem/observation-category).
- No ``subject``: fetometry holds no patient identity (it is optional in R4); the
  system that stores the bundle links it to its patient. No patient identifier, file
  name or DICOM patient attribute is ever written here.
- ``note``: the disclaimer, on every Observation.

Validation: ``validate_bundle`` parses the bundle with ``fhir.resources.R4B`` (fhir.resources
8.x: its top-level models are R5; R4B is wire-compatible with R4 for Bundle and
Observation, the only resources written here) and checks the status codes against the
R4 value set, which the models do not enforce.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

from fetometry import DISCLAIMER

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: FHIR R4 ObservationStatus (http://hl7.org/fhir/ValueSet/observation-status, 4.0.1).
R4_OBSERVATION_STATUSES = (
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
)
STATUS = "preliminary"
#: (LOINC code, text, HeadMeasurement key, clinical key); codes: DICOM CID 12005 / 12004 (PS3.16), from LOINC.
MEASURES = (
    ("11984-2", "Head circumference (fetal, ultrasound)", "hc_mm", "hc"),
    ("11820-8", "Biparietal diameter (fetal, ultrasound)", "bpd_mm", "bpd"),
    ("11851-3", "Occipital-frontal diameter (fetal, ultrasound)", "ofd_mm", "ofd"),
)
CEPHALIC_INDEX = ("11823-2", "Cephalic index (fetal, ultrasound): BPD / OFD")
MM = {"unit": "mm", "system": UCUM, "code": "mm"}
RATIO = {"unit": "ratio", "system": UCUM, "code": "{ratio}"}
#: CID 12017 Growth Distribution Rank (PS3.16; DCM codes 125012, 125013).
PERCENTILE = ("125012", "Growth Percentile Rank", {"unit": "%", "system": UCUM, "code": "%"})
Z_SCORE = ("125013", "Growth Z-score", {"unit": "1", "system": UCUM, "code": "1"})
INTERGROWTH = "INTERGROWTH-21st Fetal Growth Standards (Papageorghiou et al., Lancet 2014)"
_DICOM_UID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


class FhirValidationError(ValueError):
    """The bundle does not parse as FHIR R4(B), or uses a status outside the R4 value set."""


def exam_to_fhir_bundle(exam, *, model_name: str, model_version: str, image_reference: str | None = None) -> dict:
    """The exam's head biometry as a FHIR R4 ``collection`` Bundle (see the module docstring)."""
    entries: list[dict] = []
    measurement = exam.result.measurement
    if measurement is not None:
        corrected = bool(getattr(exam, "corrected_by_user", False))
        automatic = getattr(exam, "automatic", None) if corrected else None
        auto_m = automatic.measurement if automatic is not None else None
        derived = _image_reference(image_reference)
        common = dict(exam=exam, model=f"{model_name} {model_version}", derived=derived, corrected=corrected)
        for code, text, key, measure in MEASURES:
            entries += _observations(
                code, text, getattr(measurement, key), MM, getattr(auto_m, key, None), measure=measure, **common
            )
        ratio = measurement.bpd_mm / measurement.ofd_mm
        auto_ratio = auto_m.bpd_mm / auto_m.ofd_mm if auto_m is not None else None
        entries += _observations(*CEPHALIC_INDEX, ratio, RATIO, auto_ratio, measure=None, digits=4, **common)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "entry": entries,
    }


def write_fhir(exam, path: str | Path, **kw) -> Path:
    """``exam_to_fhir_bundle(exam, **kw)``, validated, written as JSON to ``path`` (folders made)."""
    bundle = exam_to_fhir_bundle(exam, **kw)
    validate_bundle(bundle)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bundle, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


def validate_bundle(bundle: dict) -> None:
    """Parse with fhir.resources.R4B (Bundle and each Observation); raise FhirValidationError."""
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.observation import Observation

    try:
        Bundle.model_validate(bundle)
        for entry in bundle.get("entry", []):
            Observation.model_validate(entry["resource"])
    except Exception as error:  # pydantic's ValidationError and friends
        raise FhirValidationError(f"not a valid FHIR R4 bundle: {error}") from None
    for entry in bundle.get("entry", []):
        status = entry["resource"].get("status")
        if status not in R4_OBSERVATION_STATUSES:
            raise FhirValidationError(
                f"Observation status {status!r} is not in the FHIR R4 ObservationStatus value set"
            )


def _observations(code, text, value, quantity, automatic_value, *, exam, model, derived, corrected, measure, digits=2):
    """The reported Observation, and for a corrected exam the model's own one before it."""
    entries = []
    derived_from = list(derived)
    if corrected and automatic_value is not None:
        auto = _observation(
            code,
            text,
            automatic_value,
            quantity,
            exam=exam,
            method=f"automatic: fetometry {model} (segmentation and ellipse fit)",
            notes=[f"automatic value of fetometry {model}, superseded: the user corrected the ellipse"],
            derived_from=derived,
            digits=digits,
        )
        entries.append(auto)
        derived_from.append({"reference": auto["fullUrl"], "type": "Observation"})
    if corrected:
        method = f"corrected by user: ellipse edited by the sonographer after fetometry {model}"
        notes = ["corrected by user: the sonographer edited the fitted ellipse; the model's value is kept beside it"]
    else:
        method, notes = f"automatic: fetometry {model} (segmentation and ellipse fit)", []
    reported = _observation(
        code, text, value, quantity, exam=exam, method=method, notes=notes, derived_from=derived_from, digits=digits
    )
    if measure is not None and exam.ga_weeks is not None:
        components = _growth_components(exam.clinical or {}, measure)
        if components:
            reported["resource"]["component"] = components
            reported["resource"]["note"].append(
                {"text": f"centile and z-score: {INTERGROWTH}, at {exam.ga_weeks:.2f} weeks ({exam.ga_source or 'GA'})"}
            )
    entries.append(reported)
    return entries


def _observation(code, text, value, quantity, *, exam, method, notes, derived_from, digits) -> dict:
    identifier = str(uuid.uuid4())
    resource = {
        "resourceType": "Observation",
        "id": identifier,
        "status": STATUS,
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": text},
        "effectiveDateTime": exam.exam_date.isoformat(),
        "valueQuantity": {"value": round(float(value), digits), **quantity},
        "method": {"text": method},
        "note": [{"text": DISCLAIMER}] + [{"text": note} for note in notes],
    }
    if derived_from:
        resource["derivedFrom"] = derived_from
    return {"fullUrl": f"urn:uuid:{identifier}", "resource": resource}


def _growth_components(clinical: dict, measure: str) -> list[dict]:
    components = []
    for (code, text, unit), key in ((PERCENTILE, f"{measure}_centile"), (Z_SCORE, f"{measure}_z")):
        value = clinical.get(key)
        if value is not None:
            components.append(
                {
                    "code": {"coding": [{"system": DICOM_DCM, "code": code, "display": text}], "text": text},
                    "valueQuantity": {"value": float(value), **unit},
                }
            )
    return components


def _image_reference(image_reference: str | None) -> list[dict]:
    if not image_reference:
        return []
    reference = str(image_reference).strip()
    if _DICOM_UID.match(reference):
        return [{"type": "Media", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{reference}"}}]
    if "/" in reference or reference.startswith(("urn:", "http")):
        return [{"reference": reference}]
    # the value is not quoted: a mistaken file name could identify a patient
    raise ValueError("image_reference is neither a FHIR reference (Type/id, urn:..., http...) nor a DICOM UID")
