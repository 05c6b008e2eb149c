"""One input file of ``fetometry predict`` -> pixels and, for a DICOM, its own pixel size.

``predict`` reads image files and single-frame DICOM files alike; the file's content,
not its name, says which it is. A DICOM's pixel size comes from its ultrasound regions
(the largest 2D-tissue region, ``fetometry.io.dicom``); ``fetometry measure`` goes one
step further and calibrates by the region under the head's centre. A multi-frame DICOM
(a cine loop) is refused with a reason: which frame to measure is a choice ``predict``
cannot make for the user (``fetometry stream`` measures every frame, ``fetometry measure
--frame K`` one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetometry.io.images import IMAGE_SUFFIXES, ImageReadError, read_image

#: DICOM files are recognised by content; these suffixes only decide what a folder listing keeps.
DICOM_SUFFIXES = (".dcm", ".dicom")
#: What ``predict`` picks up from a folder: images and DICOM files.
INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


@dataclass(frozen=True)
class InputPixels:
    """pixels: (H, W) float32 in [0, 1]; pixel_size_mm: the DICOM calibration, or None."""

    pixels: np.ndarray
    pixel_size_mm: float | None = None
    calibration: str = ""
    kind: str = "image"


def read_input(path: str | Path) -> InputPixels:
    """An image or a single-frame DICOM file -> InputPixels; raises ImageReadError saying why not."""
    from fetometry.io.dicom import DicomError, is_dicom, read_dicom

    path = Path(path)
    if not is_dicom(path):
        return InputPixels(read_image(path))
    try:
        image = read_dicom(path)
    except DicomError as error:
        raise ImageReadError(str(error)) from None
    if image.n_frames > 1:
        raise ImageReadError(
            f"{path.name}: a multi-frame DICOM ({image.n_frames} frames); predict measures single images: "
            "`fetometry stream` measures every frame, `fetometry measure --frame K` one"
        )
    calibration = image.calibration or ("calibrated" if image.pixel_size_mm else "uncalibrated")
    pixels = np.ascontiguousarray(image.frames[0], dtype=np.float32)
    return InputPixels(pixels, image.pixel_size_mm, calibration, "dicom")
