"""fetometry.report.fhir: an exam as a FHIR R4 collection Bundle of Observations.

Validated with fhir.resources' R4B models (wire-compatible with R4 for Bundle and
Observation). The shipped default model measures a bundled HC18 sample, written as a
synthetic calibrated ultrasound DICOM, once per module; the uncalibrated and corrected
exams are derived from it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from fetometry import DISCLAIMER
from fetometry.biometry.measures import measure_ellipse
from fetometry.exam import measure_exam
from fetometry.inference.predictor import Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes
from fetometry.io.images import read_image
from fetometry.report.fhir import (
    R4_OBSERVATION_STATUSES,
    FhirValidationError,
    exam_to_fhir_bundle,
    validate_bundle,
    write_fhir,
)
from fetometry.resources import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
PIXEL_MM = 0.130960682505
PATIENT = dict(patient_name="PHANTOM^SYNTHETIC^FHIR", patient_id="SYNTH-FHIR-0815")
MODEL = dict(model_name="attention-unet", model_version="0.1.0")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture(scope="module")
def image():
    return read_image(SAMPLE)


@pytest.fixture(scope="module")
def source_bytes(image) -> bytes:
    return ultrasound_dicom_bytes(image, pixel_size_mm=PIXEL_MM, **PATIENT)


@pytest.fixture(scope="module")
def exam(predictor, source_bytes):
    measured = measure_exam(
        source_bytes, predictor=predictor, ga_weeks=20.0, exam_date="2026-03-01", filename="MUSTERMANN_ERIKA.dcm"
    )
    assert measured.measured, measured.result.detail
    return measured


@pytest.fixture(scope="module")
def sop_uid(source_bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(source_bytes)).SOPInstanceUID)


def _observations(bundle: dict) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"]]


def _by_code(bundle: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for observation in _observations(bundle):
        found.setdefault(observation["code"]["coding"][0]["code"], []).append(observation)
    return found


def corrected_exam(exam, predictor, *, grow_px: float = 6.0):
    automatic = exam.result
    ellipse = dataclasses.replace(automatic.ellipse, semi_major_px=automatic.ellipse.semi_major_px + grow_px)
    measurement = measure_ellipse(ellipse, automatic.pixel_size_mm, offset_px=predictor.hc_offset_px)
    result = dataclasses.replace(automatic, ellipse=ellipse, measurement=measurement)
    if {"corrected_by_user", "automatic"} <= {f.name for f in dataclasses.fields(exam)}:
        return dataclasses.replace(exam, result=result, corrected_by_user=True, automatic=automatic)
    corrected = dataclasses.replace(exam, result=result)
    corrected.corrected_by_user, corrected.automatic = True, automatic
    return corrected


def test_bundle_validates_as_r4_with_loinc_codes_in_mm(exam, sop_uid):
    bundle = exam_to_fhir_bundle(exam, image_reference=sop_uid, **MODEL)
    validate_bundle(bundle)
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection" and len(parsed.entry) == 4
    m = exam.result.measurement
    observations = _by_code(bundle)
    assert set(observations) == {"11984-2", "11820-8", "11851-3", "11823-2"}
    for code, value in (("11984-2", m.hc_mm), ("11820-8", m.bpd_mm), ("11851-3", m.ofd_mm)):
        (observation,) = observations[code]
        Observation.model_validate(observation)
        assert observation["code"]["coding"][0]["system"] == LOINC
        quantity = observation["valueQuantity"]
        assert quantity["system"] == UCUM and quantity["code"] == "mm" and quantity["unit"] == "mm"
        assert quantity["value"] == pytest.approx(value, abs=0.01)
    (ratio,) = observations["11823-2"]
    assert ratio["valueQuantity"]["code"] == "{ratio}"
    assert ratio["valueQuantity"]["value"] == pytest.approx(m.bpd_mm / m.ofd_mm, abs=1e-3)


def test_every_observation_is_a_preliminary_imaging_result_with_the_disclaimer(exam, sop_uid):
    for observation in _observations(exam_to_fhir_bundle(exam, image_reference=sop_uid, **MODEL)):
        assert observation["status"] == "preliminary" and observation["status"] in R4_OBSERVATION_STATUSES
        assert observation["category"][0]["coding"][0]["code"] == "imaging"
        assert observation["note"][0]["text"] == DISCLAIMER
        assert "attention-unet 0.1.0" in observation["method"]["text"]
        assert observation["effectiveDateTime"] == "2026-03-01"
        assert observation["derivedFrom"] == [
            {"type": "Media", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{sop_uid}"}}
        ]


def test_centile_components_only_with_dating(exam):
    dated = _by_code(exam_to_fhir_bundle(exam, **MODEL))
    (hc,) = dated["11984-2"]
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in hc["component"]}
    assert components["125012"]["value"] == pytest.approx(exam.clinical["hc_centile"])
    assert components["125013"]["value"] == pytest.approx(exam.clinical["hc_z"])
    assert "component" not in dated["11823-2"][0]
    undated = dataclasses.replace(exam, ga_weeks=None, ga_source=None)
    assert not any("component" in o for o in _observations(exam_to_fhir_bundle(undated, **MODEL)))


def test_no_millimetres_without_a_pixel_size(predictor, image):
    uncalibrated = measure_exam(ultrasound_dicom_bytes(image, **PATIENT), predictor=predictor)
    assert uncalibrated.result.status == "no_pixel_size"
    bundle = exam_to_fhir_bundle(uncalibrated, **MODEL)
    validate_bundle(bundle)
    assert bundle["entry"] == [] and '"mm"' not in json.dumps(bundle)


def test_corrected_values_are_flagged_and_the_model_value_kept(exam, predictor):
    corrected = corrected_exam(exam, predictor)
    bundle = exam_to_fhir_bundle(corrected, **MODEL)
    validate_bundle(bundle)
    urls = {entry["resource"]["id"]: entry["fullUrl"] for entry in bundle["entry"]}
    automatic, user = _by_code(bundle)["11984-2"]
    assert user["valueQuantity"]["value"] == pytest.approx(corrected.result.measurement.hc_mm, abs=0.01)
    assert automatic["valueQuantity"]["value"] == pytest.approx(corrected.automatic.measurement.hc_mm, abs=0.01)
    assert any("corrected by user" in note["text"] for note in user["note"])
    assert user["method"]["text"].startswith("corrected by user")
    assert {"reference": urls[automatic["id"]], "type": "Observation"} in user["derivedFrom"]
    assert any("superseded" in note["text"] for note in automatic["note"])
    assert user["status"] == automatic["status"] == "preliminary"


def test_no_patient_identifier_or_file_name_in_the_bundle(exam, sop_uid, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = write_fhir(exam, tmp_path / "out" / "bundle.json", image_reference=sop_uid, **MODEL)
    text = path.read_text()
    validate_bundle(json.loads(text))
    for secret in (
        PATIENT["patient_name"],
        "PHANTOM",
        PATIENT["patient_id"],
        "SYNTH",
        "MUSTERMANN",
        exam.result.filename,
    ):
        assert secret not in text
    assert "subject" not in text
    assert caplog.records == []


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("ImagingStudy/abc-1", [{"reference": "ImagingStudy/abc-1"}]),
        (
            "urn:uuid:0c6e5f2a-1111-4222-8333-944445555666",
            [{"reference": "urn:uuid:0c6e5f2a-1111-4222-8333-944445555666"}],
        ),
        (None, None),
    ],
)
def test_image_reference_forms(exam, reference, expected):
    (hc, *_) = _observations(exam_to_fhir_bundle(exam, image_reference=reference, **MODEL))
    assert hc.get("derivedFrom") == expected


def test_bad_image_reference_and_bad_status_are_refused(exam):
    with pytest.raises(ValueError, match="neither a FHIR reference"):
        exam_to_fhir_bundle(exam, image_reference="scan of Erika.dcm", **MODEL)
    bundle = exam_to_fhir_bundle(exam, **MODEL)
    bundle["entry"][0]["resource"]["status"] = "accepted"
    with pytest.raises(FhirValidationError, match="not in the FHIR R4 ObservationStatus"):
        validate_bundle(bundle)
    bundle["entry"][0]["resource"]["status"] = "preliminary"
    bundle["entry"][0]["resource"]["valueQuantity"]["value"] = "many"
    with pytest.raises(FhirValidationError):
        validate_bundle(bundle)
