"""One exam -> a DICOM Secondary Capture image: the overlay a PACS viewer can show beside the SR.

The picture is ``report.figures.draw_overlay`` (the image, the fitted ellipse, HC / BPD /
OFD or the status) with a band below it in which the decision-support disclaimer (and,
for a corrected exam, "corrected by user") is burned in; hence BurnedInAnnotation YES.
RGB, 8 bits, in the source's study (patient and study modules copied from the source by
highdicom), a new series, and a SourceImageSequence item naming the source image.

Orientation: an ultrasound frame has no patient orientation to copy; the SC's Patient
Orientation (Type 2C) is then written empty rather than invented. The SC carries no
pixel spacing: the band changes the geometry, and the image is for reading, not for
measuring (the SR holds the numbers).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from fetometry import DISCLAIMER
from fetometry.report.dicom_sr import SRSourceError, _referenced_frames, _source_header, quiet_dicom, write_derived
from fetometry.report.figures import draw_overlay

#: Text colour (white) on the band (black) below the image, and its font.
TEXT_RGB = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_with_disclaimer(exam) -> np.ndarray:
    """(H + band, W, 3) uint8 RGB: the overlay with the disclaimer burned in below it."""
    overlay = draw_overlay(exam.image, exam.result)
    height, width = overlay.shape[:2]
    scale = max(0.3, 0.45 * width / 800)
    text = DISCLAIMER
    if getattr(exam, "corrected_by_user", False):
        text = "Ellipse corrected by user. " + text
    lines = _wrap(text, width - 12, scale)
    (_, char_h), baseline = cv2.getTextSize("Mg", FONT, scale, 1)
    step = char_h + baseline + 4
    band = np.zeros((step * len(lines) + 8, width, 3), dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (6, 4 + char_h + i * step), FONT, scale, TEXT_RGB, 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([overlay, band], axis=0))


def _wrap(text: str, max_width_px: int, scale: float) -> list[str]:
    """Greedy word wrap by rendered width (a word longer than a line gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, FONT, scale, 1)[0][0] <= max_width_px:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def build_secondary_capture(
    exam, source: Dataset, *, series_number: int = 9002, instance_number: int = 1, frame: int = 0
) -> hd.sc.SCImage:
    """The overlay of ``exam`` as an RGB Secondary Capture in ``source``'s study (new series).

    ``frame``: the measured frame of a multi-frame source (0-based), named in the
    SourceImageSequence. Raises SRSourceError (a ValueError) when the source is not a
    DICOM image with study and SOP identifiers.
    """
    header = _source_header(source)
    frames = _referenced_frames(header, frame)
    pixels = overlay_with_disclaimer(exam)
    orientation = tuple(header.get("PatientOrientation") or ())
    with quiet_dicom():  # highdicom logs the source's UID; warnings may quote patient data
        image = hd.sc.SCImage(
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=header.StudyInstanceUID,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer="fetometry",
            patient_id=header.PatientID,
            patient_name=header.PatientName,
            patient_birth_date=header.PatientBirthDate,
            patient_sex=header.PatientSex,
            accession_number=header.AccessionNumber,
            study_id=header.StudyID,
            study_date=header.StudyDate,
            study_time=header.StudyTime,
            referring_physician_name=header.ReferringPhysicianName,
            patient_orientation=orientation if len(orientation) == 2 else ("A", "F"),
            transfer_syntax_uid="1.2.840.10008.1.2.1",  # explicit VR little endian
            specific_character_set=header.get("SpecificCharacterSet"),
        )
        image.copy_patient_and_study_information(header)  # the rest of the patient and study modules
    if len(orientation) != 2:
        image.PatientOrientation = None  # Type 2C: unknown, written empty (the placeholder above is dropped)
    image.BurnedInAnnotation = "YES"
    image.SeriesDescription = "fetometry overlay (decision support)"
    image.DerivationDescription = "fetometry: fitted head ellipse and measurements drawn over the source image"
    reference = Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if frames:
        reference.ReferencedFrameNumber = frames
    image.SourceImageSequence = [reference]
    return image


def write_secondary_capture(exam, source: str | Path | Dataset, out_path: str | Path, **ids) -> Path:
    """``build_secondary_capture`` on a source file or dataset, written to ``out_path`` (folders made)."""
    return write_derived(build_secondary_capture, exam, source, out_path, **ids)


__all__ = ["SRSourceError", "build_secondary_capture", "overlay_with_disclaimer", "write_secondary_capture"]
