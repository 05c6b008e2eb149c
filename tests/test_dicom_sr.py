"""fetometry.report.dicom_sr and .secondary_capture: an exam as a DICOM SR (TID 5000) and SC.

A bundled HC18 sample, written as a synthetic calibrated ultrasound DICOM (one 2D tissue
region, phantom patient), is measured once per module by the shipped default model;
every other exam (uncalibrated, refused, corrected, undated) is derived from that one
without running the model again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fetometry import DISCLAIMER
from fetometry.biometry.measures import measure_ellipse
from fetometry.exam import measure_exam
from fetometry.inference.predictor import Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes, write_ultrasound_dicom
from fetometry.io.images import read_image
from fetometry.report.dicom_sr import (
    COMPREHENSIVE_SR,
    SRSourceError,
    build_sr,
    read_sr_measurements,
    read_sr_texts,
    write_sr,
)
from fetometry.report.secondary_capture import build_secondary_capture, write_secondary_capture
from fetometry.resources import SAMPLES_DIR, weights_digest

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
PIXEL_MM = 0.130960682505  # the sample's pixel size in the HC18 CSV
PATIENT = dict(patient_name="PHANTOM^SYNTHETIC^SR", patient_id="SYNTH-SR-4711")
HC, BPD, OFD, CI = "11984-2", "11820-8", "11851-3", "11823-2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image(SAMPLE)


@pytest.fixture(scope="module")
def source_bytes(image) -> bytes:
    return ultrasound_dicom_bytes(image, pixel_size_mm=PIXEL_MM, **PATIENT)


@pytest.fixture(scope="module")
def source(source_bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(source_bytes))


@pytest.fixture(scope="module")
def dated(predictor, source_bytes):
    exam = measure_exam(source_bytes, predictor=predictor, ga_weeks=20.0, ga_source="lmp", exam_date="2026-03-01")
    assert exam.measured, exam.result.detail
    return exam


@pytest.fixture(scope="module")
def undated(predictor, source_bytes):
    return measure_exam(source_bytes, predictor=predictor, exam_date="2026-03-01")


@pytest.fixture(scope="module")
def ids(predictor) -> dict:
    return dict(
        model_name=predictor.name, model_version="0.1.0", weights_sha256=weights_digest(predictor.config.weights_dir)
    )


def corrected_exam(exam, predictor, *, grow_px: float = 6.0):
    """What serve makes of a sonographer's edit: the edited ellipse's values in
    ``result``, the model's own result kept in ``automatic``."""
    automatic = exam.result
    ellipse = dataclasses.replace(automatic.ellipse, semi_major_px=automatic.ellipse.semi_major_px + grow_px)
    measurement = measure_ellipse(ellipse, automatic.pixel_size_mm, offset_px=predictor.hc_offset_px)
    result = dataclasses.replace(automatic, ellipse=ellipse, measurement=measurement)
    if {"corrected_by_user", "automatic"} <= {f.name for f in dataclasses.fields(exam)}:
        return dataclasses.replace(exam, result=result, corrected_by_user=True, automatic=automatic)
    corrected = dataclasses.replace(exam, result=result)
    corrected.corrected_by_user, corrected.automatic = True, automatic
    return corrected


def _roundtrip(dataset, tmp_path, name="out.dcm") -> pydicom.Dataset:
    path = tmp_path / name
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return pydicom.dcmread(path)


def _walk(sequence):
    for item in sequence:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _units(sr) -> set[str]:
    return {
        item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "NUM"
    }


# ---------------------------------------------------------------------------------- SR


def test_sr_holds_the_hc_in_the_source_study(dated, source, ids, tmp_path):
    sr = _roundtrip(build_sr(dated, source, **ids), tmp_path)
    m = dated.result.measurement
    assert sr.Modality == "SR" and sr.SOPClassUID == COMPREHENSIVE_SR
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SeriesNumber == 9001
    assert sr.SOPInstanceUID != source.SOPInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "5000"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "125000"
    values = read_sr_measurements(sr)
    assert values[HC]["unit"] == "mm" and values[HC]["value"] == pytest.approx(m.hc_mm, abs=0.1)
    assert values[BPD]["value"] == pytest.approx(m.bpd_mm, abs=0.1)
    assert values[OFD]["value"] == pytest.approx(m.ofd_mm, abs=0.1)
    assert values[CI] == {
        "value": pytest.approx(m.bpd_mm / m.ofd_mm, abs=1e-3),
        "unit": "{ratio}",
        "corrected": False,
        "automatic": None,
    }
    assert not values[HC]["corrected"] and values[HC]["automatic"] is None
    assert DISCLAIMER in read_sr_texts(sr)["Comment"]


def test_sr_references_the_source_image(dated, source, ids, tmp_path):
    sr = _roundtrip(build_sr(dated, source, **ids), tmp_path)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    sop = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    images = [item for item in _walk(sr.ContentSequence) if item.ValueType == "IMAGE"]
    assert images and all(
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID for item in images
    )
    # the Image Library (TID 5000 rows 5-6) and each measurement's source (TID 300)
    assert {item.ConceptNameCodeSequence[0].CodeValue for item in images} == {"260753009", "121112"}


def test_sr_patient_module_is_the_sources(dated, source, ids, tmp_path):
    sr = _roundtrip(build_sr(dated, source, **ids), tmp_path)
    assert str(sr.PatientName) == PATIENT["patient_name"] and sr.PatientID == PATIENT["patient_id"]
    assert sr.StudyDate == source.StudyDate


def test_sr_names_the_algorithm_and_its_weights(dated, source, ids, tmp_path):
    texts = read_sr_texts(_roundtrip(build_sr(dated, source, **ids), tmp_path))
    assert texts["Device Observer Name"] == [ids["model_name"]]
    assert set(texts["Algorithm Name"]) == {ids["model_name"]} and set(texts["Algorithm Version"]) == {"0.1.0"}
    assert f"weights sha256 {ids['weights_sha256']}" in texts["Algorithm Parameters"]


def test_ga_estimate_always_centiles_only_with_dating(dated, undated, source, ids, tmp_path):
    with_dating = read_sr_measurements(_roundtrip(build_sr(dated, source, **ids), tmp_path, "dated.dcm"))
    assert with_dating["ga"] == {"value": pytest.approx(140.0), "unit": "d", "code": "11885-1"}  # by LMP
    assert with_dating[HC]["centile"] == pytest.approx(dated.clinical["hc_centile"])
    assert with_dating[HC]["z"] == pytest.approx(dated.clinical["hc_z"])
    assert {"centile", "z"} <= set(with_dating[BPD]) and "centile" not in with_dating[CI]
    methods = [g["method"] for g in with_dating["ga_estimates"]]
    assert methods[0] == "HC, Hadlock 1984" and "INTERGROWTH-21st" in methods[1]
    assert with_dating["ga_estimates"][0]["value"] == pytest.approx(dated.clinical["ga_hadlock_weeks"] * 7, abs=0.01)

    without = read_sr_measurements(_roundtrip(build_sr(undated, source, **ids), tmp_path, "undated.dcm"))
    assert "ga" not in without
    assert not [
        key for entry in without.values() if isinstance(entry, dict) for key in entry if key in ("centile", "z")
    ]
    assert len(without["ga_estimates"]) == 2  # from the HC alone, as in measure --json


def test_uncalibrated_dicom_gives_no_mm_and_says_why(predictor, image, ids, tmp_path):
    data = ultrasound_dicom_bytes(image, **PATIENT)  # no ultrasound region, no PixelSpacing
    exam = measure_exam(data, predictor=predictor, filename="MUSTERMANN_ERIKA.dcm")
    assert exam.result.status == "no_pixel_size" and exam.result.ellipse is not None
    sr = _roundtrip(build_sr(exam, pydicom.dcmread(io.BytesIO(data)), **ids), tmp_path)
    assert b"MUSTERMANN" not in (tmp_path / "out.dcm").read_bytes()  # a file name may identify a patient
    assert "mm" not in _units(sr) and read_sr_measurements(sr) == {}
    finding = read_sr_texts(sr)["Finding"]
    assert len(finding) == 1 and finding[0].startswith("not measured in mm: no_pixel_size")
    assert "pixel size" in finding[0]


def test_refused_exam_gives_a_not_measured_finding(dated, source, ids, tmp_path):
    refused = dataclasses.replace(
        dated,
        result=dataclasses.replace(dated.result, status="refused", detail="low confidence 0.61", measurement=None),
        clinical={},
    )
    sr = _roundtrip(build_sr(refused, source, **ids), tmp_path)
    assert read_sr_measurements(sr) == {"ga": {"value": pytest.approx(140.0), "unit": "d", "code": "11885-1"}}
    assert read_sr_texts(sr)["Finding"] == ["not measured: refused: low confidence 0.61"]
    assert DISCLAIMER in read_sr_texts(sr)["Comment"]


def test_corrected_exam_reports_both_values(dated, predictor, source, ids, tmp_path):
    corrected = corrected_exam(dated, predictor)
    sr = _roundtrip(build_sr(corrected, source, **ids), tmp_path)
    values = read_sr_measurements(sr)
    user, model = corrected.result.measurement, corrected.automatic.measurement
    assert values[HC]["corrected"] and values[HC]["value"] == pytest.approx(user.hc_mm, abs=0.1)
    assert values[HC]["automatic"] == {"value": pytest.approx(model.hc_mm, abs=0.1), "unit": "mm"}
    assert abs(user.hc_mm - model.hc_mm) > 1.0
    assert values[CI]["corrected"] and values[CI]["automatic"]["unit"] == "{ratio}"
    comments = read_sr_texts(sr)["Comment"]
    assert any(text.startswith("Head Circumference: corrected by user") for text in comments)
    # the user's value carries no algorithm identification; the model's does
    selection = [i for i in _walk(sr.ContentSequence) if "ConceptCodeSequence" in i and i.ValueType == "CODE"]
    assert sum(i.ConceptCodeSequence[0].CodeValue == "121410" for i in selection) == 4  # HC, BPD, OFD, CI


def test_multiframe_source_names_the_measured_frame(dated, image, ids, tmp_path):
    loop = pydicom.dcmread(io.BytesIO(ultrasound_dicom_bytes(np.stack([image] * 3), pixel_size_mm=PIXEL_MM)))
    sr = _roundtrip(build_sr(dated, loop, frame=1, **ids), tmp_path)
    images = [i for i in _walk(sr.ContentSequence) if i.ValueType == "IMAGE"]
    assert {int(i.ReferencedSOPSequence[0].ReferencedFrameNumber) for i in images} == {2}  # numbered from 1
    with pytest.raises(SRSourceError, match="frame 3 does not exist"):
        build_sr(dated, loop, frame=3, **ids)


def test_write_sr_from_a_path_and_bad_sources(dated, image, ids, tmp_path):
    source_path = write_ultrasound_dicom(tmp_path / "scan.dcm", image, pixel_size_mm=PIXEL_MM, **PATIENT)
    out = write_sr(dated, source_path, tmp_path / "reports" / "sr.dcm", **ids)
    assert out.is_file() and pydicom.dcmread(out).StudyInstanceUID == pydicom.dcmread(source_path).StudyInstanceUID
    png = tmp_path / "scan.png"
    png.write_bytes(SAMPLE.read_bytes())
    with pytest.raises(SRSourceError, match="not a DICOM file"):
        write_sr(dated, png, tmp_path / "x.dcm", **ids)
    with pytest.raises(SRSourceError, match="SOPInstanceUID"):
        build_sr(dated, pydicom.Dataset(), **ids)


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dcmtk_reads_the_sr_without_complaint(dated, predictor, source, ids, tmp_path):
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, build_sr(corrected_exam(dated, predictor), source, **ids), enforce_file_format=True)
    run = subprocess.run(["dsrdump", "-v", str(path)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "error" not in run.stderr.lower() and "warn" not in run.stderr.lower(), run.stderr
    assert "OB-GYN Ultrasound Procedure Report" in run.stdout and "Head Circumference" in run.stdout


def test_nothing_is_logged(dated, source, ids, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    write_sr(dated, source, tmp_path / "sr.dcm", **ids)
    write_secondary_capture(dated, source, tmp_path / "sc.dcm")
    assert caplog.records == []


def test_weights_digest_is_the_files_sha256(predictor):
    folder = Path(predictor.config.weights_dir)
    expected = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert weights_digest(folder) == expected == weights_digest(folder.name)  # by shipped name too


# ---------------------------------------------------------------------------------- SC


def test_secondary_capture_is_the_burned_in_overlay(dated, source, tmp_path):
    sc = _roundtrip(build_secondary_capture(dated, source), tmp_path)
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SeriesNumber == 9002
    assert sc.PhotometricInterpretation == "RGB" and sc.BitsAllocated == 8 and sc.SamplesPerPixel == 3
    assert sc.BurnedInAnnotation == "YES"
    assert str(sc.PatientName) == PATIENT["patient_name"] and sc.PatientID == PATIENT["patient_id"]
    ref = sc.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    pixels = sc.pixel_array
    height, width = dated.image.shape
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (width, 3) and pixels.shape[0] > height
    assert pixels[height:].max() == 255  # the disclaimer band holds text
    green = (pixels[:height, :, 1] > 200) & (pixels[:height, :, 0] < 80) & (pixels[:height, :, 2] < 80)
    assert green.sum() > 500  # the fitted ellipse


def test_measure_verb_writes_the_sr_and_the_fhir_bundle(tmp_path, image, capsys):
    """``fetometry measure exam.dcm --sr --fhir``: the SR's HC equals the printed HC to 0.1 mm."""
    import json

    from fetometry.cli import main
    from fetometry.report.fhir import validate_bundle

    dicom_path = write_ultrasound_dicom(tmp_path / "exam.dcm", image[None], pixel_size_mm=PIXEL_MM, **PATIENT)
    sr_path, fhir_path = tmp_path / "out" / "report.dcm", tmp_path / "out" / "bundle.json"
    args = ["-q", "measure", str(dicom_path), "--json", "--sr", str(sr_path), "--fhir", str(fhir_path)]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok"
    assert read_sr_measurements(sr_path)[HC]["value"] == pytest.approx(row["hc_mm"], abs=0.1)
    bundle = json.loads(fhir_path.read_text())
    validate_bundle(bundle)
    source_uid = str(pydicom.dcmread(dicom_path, stop_before_pixels=True).SOPInstanceUID)
    assert source_uid in fhir_path.read_text() and PATIENT["patient_id"] not in fhir_path.read_text()

    png = tmp_path / "exam.png"
    shutil.copy(SAMPLE, png)
    assert main(["-q", "measure", str(png), "--sr", str(tmp_path / "no.dcm")]) == 1
    assert "--sr needs a DICOM input" in capsys.readouterr().err and not (tmp_path / "no.dcm").exists()
