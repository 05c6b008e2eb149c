"""clinical: dating, INTERGROWTH-21st growth standards, EFW, flags and growth over visits.

Decision support only: every number and flag must be reviewed by a qualified clinician.
Formulas, sources, valid ranges and flag definitions: docs/CLINICAL.md.

Errors: every public function raises only ValueError subclasses, documented in
``fetometry.clinical.inputs`` (InvalidInputError, OutOfRangeError) and next to the
others (UnknownMeasureError, CircularDatingError, VisitStoreError).

Imports flow one way: clinical uses plain numbers (mm, weeks, grams) and never imports
inference or training. ``visits`` (SQLAlchemy) is imported on demand.
"""

from fetometry.clinical.assess import clinical_summary
from fetometry.clinical.dating import (
    GA_SOURCES,
    CircularDatingError,
    ga_from_crl,
    ga_from_hc_hadlock,
    ga_from_hc_intergrowth,
    ga_from_lmp,
    weeks_days,
)
from fetometry.clinical.efw import efw_at_centile, efw_at_zscore, efw_centile, efw_zscore, hadlock_efw_g
from fetometry.clinical.flags import Flag
from fetometry.clinical.growth import (
    GA_RANGE_WEEKS,
    MEASURES,
    UnknownMeasureError,
    centile,
    mean_sd,
    value_at_centile,
    zscore,
)
from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError
from fetometry.clinical.plausibility import PLAUSIBLE_Z, assess_measure

__all__ = [
    "GA_RANGE_WEEKS",
    "GA_SOURCES",
    "MEASURES",
    "PLAUSIBLE_Z",
    "CircularDatingError",
    "Flag",
    "InvalidInputError",
    "OutOfRangeError",
    "UnknownMeasureError",
    "assess_measure",
    "centile",
    "clinical_summary",
    "efw_at_centile",
    "efw_at_zscore",
    "efw_centile",
    "efw_zscore",
    "ga_from_crl",
    "ga_from_hc_hadlock",
    "ga_from_hc_intergrowth",
    "ga_from_lmp",
    "hadlock_efw_g",
    "mean_sd",
    "value_at_centile",
    "weeks_days",
    "zscore",
]
