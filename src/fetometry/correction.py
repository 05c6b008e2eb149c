"""A sonographer's correction of the fitted head ellipse -> a new, marked ExamResult.

The user's ellipse is the MEASURED outline (the outer skull edge as the sonographer sees
it), in pixels of the ORIGINAL image grid (x = column, y = row, origin at the centre of
the top-left pixel, angle of the first axis from +x towards +y). It is measured with
``biometry.measures.measure_ellipse`` at the exam's own pixel size and with no boundary
offset by default: the model's calibrated offset (``hc_offset_px``) corrects where the
network's masks lie, not where a person draws. The page therefore shows the model's
ellipse with that offset already taken off (``editable_ellipse``), so accepting it
unchanged gives the automatic values back.

The result keeps the automatic ImageResult in ``automatic``, sets ``corrected_by_user``
and re-runs ``clinical_summary`` with the exam's own GA (never one sent by a client).
"""

from __future__ import annotations

import dataclasses
import math

from fetometry.biometry.ellipse import Ellipse
from fetometry.biometry.measures import measure_ellipse
from fetometry.exam import ExamResult

__all__ = ["CORRECTABLE_STATUSES", "CorrectionError", "correct_exam", "editable_ellipse", "ellipse_from_fields"]

#: Statuses whose ellipse a user may correct. A frame the plane check refused
#: (not a head plane, out of distribution) stays refused: a new ellipse does not make it one.
CORRECTABLE_STATUSES = ("ok", "no_pixel_size", "refused")

CORRECTION_NOTE = (
    "corrected by user: the sonographer edited the fitted ellipse; the automatic values are kept beside it"
)


class CorrectionError(ValueError):
    """The corrected ellipse is absurd for this image, or the exam cannot be corrected."""


def ellipse_from_fields(
    center_x_px: float, center_y_px: float, semi_axes_a_px: float, semi_axes_b_px: float, angle_rad: float
) -> Ellipse:
    """Five numbers from a client -> Ellipse (axes in any order, any angle); CorrectionError if absurd."""
    values = (center_x_px, center_y_px, semi_axes_a_px, semi_axes_b_px, angle_rad)
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CorrectionError(f"the ellipse needs five numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise CorrectionError("the ellipse's numbers must be finite")
    if values[2] <= 0 or values[3] <= 0:
        raise CorrectionError(f"semi-axes must be positive, got {values[2]:g} and {values[3]:g} px")
    return Ellipse.from_axes(*values)


def check_ellipse(ellipse: Ellipse, image_shape: tuple[int, ...]) -> None:
    """CorrectionError unless the centre lies on the image and no diameter exceeds its diagonal."""
    height, width = int(image_shape[0]), int(image_shape[1])
    if not (-0.5 <= ellipse.center_x_px <= width - 0.5 and -0.5 <= ellipse.center_y_px <= height - 0.5):
        raise CorrectionError(
            f"the ellipse's centre ({ellipse.center_x_px:.1f}, {ellipse.center_y_px:.1f}) px lies outside "
            f"the {width}x{height} px image"
        )
    diagonal = math.hypot(width, height)
    if 2 * ellipse.semi_major_px > diagonal:
        raise CorrectionError(
            f"the ellipse's long axis {2 * ellipse.semi_major_px:.0f} px is longer than the image's diagonal "
            f"{diagonal:.0f} px"
        )
    if ellipse.semi_minor_px < 1.0:
        raise CorrectionError(f"the ellipse's short semi-axis {ellipse.semi_minor_px:.2f} px is under one pixel")


def editable_ellipse(exam: ExamResult, offset_px: float) -> dict | None:
    """The model's ellipse minus its boundary offset (what its HC measures), for the editor; None without one."""
    ellipse = exam.result.ellipse
    if ellipse is None:
        return None
    a, b = ellipse.semi_major_px - offset_px, ellipse.semi_minor_px - offset_px
    if b <= 0:
        a, b = ellipse.semi_major_px, ellipse.semi_minor_px
    return {
        "center_x_px": ellipse.center_x_px,
        "center_y_px": ellipse.center_y_px,
        "semi_axes_a_px": a,
        "semi_axes_b_px": b,
        "angle_rad": ellipse.angle_rad,
    }


def correct_exam(exam: ExamResult, ellipse: Ellipse, *, offset_px: float = 0.0) -> ExamResult:
    """A new ExamResult measured on ``ellipse`` (see the module docstring); ``exam`` is not changed.

    ``exam`` should be the AUTOMATIC exam: a corrected one is corrected again from its
    own ``automatic`` result, so ``automatic`` always holds the model's values.
    Raises CorrectionError for an absurd ellipse or an exam whose status cannot be corrected.
    """
    from fetometry.pipeline import NO_PIXEL_SIZE, OK

    automatic = exam.automatic if exam.corrected_by_user and exam.automatic is not None else exam.result
    if automatic.status not in CORRECTABLE_STATUSES or automatic.ellipse is None:
        raise CorrectionError(
            f"this exam cannot be corrected ({automatic.status}): " + (automatic.detail or "no ellipse was fitted")
        )
    check_ellipse(ellipse, exam.image.shape)
    mm = automatic.pixel_size_mm
    result = dataclasses.replace(automatic, ellipse=ellipse, quality=None, measurement=None)
    if mm is None:
        result.status = NO_PIXEL_SIZE
        result.detail = "corrected by user; no pixel size: the ellipse is in pixels only, no mm value"
    else:
        try:
            result.measurement = measure_ellipse(ellipse, mm, offset_px=offset_px)
        except ValueError as error:
            raise CorrectionError(str(error)) from None
        result.status, result.detail = OK, "corrected by user"
    clinical = {}
    notes = [n for n in exam.notes if n != CORRECTION_NOTE] + [CORRECTION_NOTE]
    if result.measurement is not None:
        from fetometry.clinical import assess

        m = result.measurement
        clinical = assess.clinical_summary(
            hc_mm=m.hc_mm, bpd_mm=m.bpd_mm, ofd_mm=m.ofd_mm, ga_weeks=exam.ga_weeks, ga_source=exam.ga_source
        )
    if exam.uncertainty:
        notes.append("the HC uncertainty belongs to the automatic ellipse and is not shown for the corrected one")
    return dataclasses.replace(
        exam,
        result=result,
        clinical=clinical,
        uncertainty=None,
        notes=notes,
        corrected_by_user=True,
        automatic=automatic,
    )
