"""Segmentation -> ellipse -> head biometry (HC, BPD, OFD, cephalic index) in mm."""

from fetometry.biometry.ellipse import (
    Ellipse,
    EllipseFitError,
    NoHeadError,
    ellipse_from_probability,
    fit_ellipse,
    largest_component,
    subpixel_boundary,
)
from fetometry.biometry.measures import (
    HC18_COLUMNS,
    HeadMeasurement,
    calibrate_offset_px,
    hc18_row,
    measure_ellipse,
    offset_for_reference_px,
    ramanujan_perimeter,
)

__all__ = [
    "HC18_COLUMNS",
    "Ellipse",
    "EllipseFitError",
    "HeadMeasurement",
    "NoHeadError",
    "calibrate_offset_px",
    "ellipse_from_probability",
    "fit_ellipse",
    "hc18_row",
    "largest_component",
    "measure_ellipse",
    "offset_for_reference_px",
    "ramanujan_perimeter",
    "subpixel_boundary",
]
