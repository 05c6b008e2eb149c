"""INTERGROWTH-21st fetal growth standards: HC, BPD, OFD, AC and FL for gestational age.

Source
------
Papageorghiou AT, Ohuma EO, Altman DG, et al. International standards for fetal growth
based on serial ultrasound measurements: the Fetal Growth Longitudinal Study of the
INTERGROWTH-21st Project. Lancet 2014;384(9946):869-879. doi:10.1016/S0140-6736(14)61490-2

Each measure is normally distributed at a given gestational age (GA, exact weeks) with a
mean and a standard deviation that are fractional polynomials of GA (the paper's fitted
equations for the mean and SD of each measure, as transcribed by the R packages gigs
and growthstandards; fetometry's values agree with the published tables, see below). Lengths are in mm; the standards cover 14+0 to 40+0 weeks. BPD and OFD
were measured outer-to-outer in the study, as fetometry measures them on the outer skull
ellipse.

    z = (value - mean(GA)) / sd(GA),   centile = 100 * Phi(z)

Check values (the published z-score tables, "International Fetal Growth Standards",
University of Oxford): HC at 40 weeks -3 SD / mean / +3 SD = 295.2 / 333.9 / 372.7 mm;
the tests compare every measure at 14, 20, 28, 34 and 40 weeks with those tables.

The BPD SD constant (0.101242)
------------------------------
The paper's table of equations could not be read here (no full text of the Lancet
article is reachable from this project). Two independent implementations disagree in
the fifth decimal of the constant of the BPD SD equation: 0.101242 in the R and Stata
package gigs (ropensci/gigs, ``R/ig_fet.R``, ``ig_fet_mu_sigma()``, which cites the
Lancet paper as its primary literature), in nutriverse/intergrowth and in several
independent calculators; 0.101252 in ki-tools/growthstandards (``R/standard_igfet.R``).
fetometry uses 0.101242, the value of the majority, among them gigs, whose tests check
the published tables. The published tables cannot decide between the two: the SD
differs by a factor exp(1e-5), i.e. by less than 0.0002 mm at +/-3 SD at any GA, far
below the tables' 0.1 mm rounding. Check against the paper's table when it can be read.

A centile needs a GA that was NOT estimated from the same measurement (dating comes
first): see ``fetometry.clinical.assess``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError, number

#: Measures covered by the standard (lengths in mm).
MEASURES = ("hc", "bpd", "ofd", "ac", "fl")
#: Gestational ages (exact weeks) the standard covers, both ends included.
GA_RANGE_WEEKS = (14.0, 40.0)

_STANDARD_NORMAL = NormalDist()
#: Centiles are clipped to (0, 100) exclusive when inverted; beyond these z is not useful.
_MIN_CENTILE, _MAX_CENTILE = 1e-9, 100.0 - 1e-9


__all__ = [
    "GA_RANGE_WEEKS",
    "MEASURES",
    "InvalidInputError",
    "OutOfRangeError",
    "UnknownMeasureError",
    "centile",
    "centile_to_z",
    "check_ga_weeks",
    "check_measure",
    "mean_sd",
    "value_at_centile",
    "value_at_zscore",
    "zscore",
]


class UnknownMeasureError(ValueError):
    """A measure name that the standard does not cover."""


# ---------------------------------------------------------------------------------------
# Coefficient table: (mean_mm(GA), sd_mm(GA)) per measure, GA in exact weeks.
# Papageorghiou et al., Lancet 2014 (fitted mean and SD equations); coefficients as in
# gigs R/ig_fet.R, checked against the published z-score and centile tables (tests).
# ---------------------------------------------------------------------------------------


def _hc(ga: float) -> tuple[float, float]:
    log_ga = math.log(ga)
    mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * log_ga
    sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * log_ga + 0.000976253 * ga**3 * log_ga**2
    return mean, sd


def _bpd(ga: float) -> tuple[float, float]:
    # SD constant 0.101242 (gigs; growthstandards has 0.101252): see the module docstring.
    log_ga = math.log(ga)
    mean = 5.60878 + 0.158369 * ga**2 - 0.00256379 * ga**3
    sd = math.exp(0.101242 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * log_ga + 0.0000999638 * ga**3 * log_ga**2)
    return mean, sd


def _ofd(ga: float) -> tuple[float, float]:
    log_ga = math.log(ga)
    mean = -12.4097 + 0.626342 * ga**2 - 0.148075 * ga**2 * log_ga
    sd = math.exp(-0.880034 + 0.0631165 * ga**2 - 0.0317136 * ga**2 * log_ga + 0.00408302 * ga**2 * log_ga**2)
    return mean, sd


def _ac(ga: float) -> tuple[float, float]:
    log_ga = math.log(ga)
    mean = -81.3243 + 11.6772 * ga - 0.000561865 * ga**3
    sd = -4.36302 + 0.121445 * ga**2 - 0.0130256 * ga**3 + 0.00282143 * ga**3 * log_ga
    return mean, sd


def _fl(ga: float) -> tuple[float, float]:
    mean = -39.9616 + 4.32298 * ga - 0.0380156 * ga**2
    sd = math.exp(0.605843 - 42.0014 * ga**-2 + 0.00000917972 * ga**3)
    return mean, sd


_EQUATIONS: dict[str, Callable[[float], tuple[float, float]]] = {
    "hc": _hc,
    "bpd": _bpd,
    "ofd": _ofd,
    "ac": _ac,
    "fl": _fl,
}


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def check_measure(measure: str) -> str:
    """Normalise a measure name ('HC', 'hc_mm' -> 'hc') or raise UnknownMeasureError."""
    if not isinstance(measure, str):
        raise UnknownMeasureError(
            f"a measure is named by text, got {type(measure).__name__} {measure!r}; use one of {', '.join(MEASURES)}"
        )
    name = measure.strip().lower().removesuffix("_mm")
    if name not in _EQUATIONS:
        raise UnknownMeasureError(f"unknown measure {measure!r}; use one of {', '.join(MEASURES)}")
    return name


def check_ga_weeks(
    ga_weeks: float, *, ga_range: tuple[float, float] = GA_RANGE_WEEKS, standard: str = "INTERGROWTH-21st"
) -> float:
    """Return ``ga_weeks`` as a float, or raise OutOfRangeError saying which range applies."""
    ga = number(ga_weeks, "gestational age", "weeks")
    if not (isinstance(ga_range, tuple) and len(ga_range) == 2):
        raise InvalidInputError(f"ga_range must be a (low, high) tuple of weeks, got {ga_range!r}")
    low, high = (number(end, "ga_range", "weeks") for end in ga_range)
    if not isinstance(standard, str):
        raise InvalidInputError(f"standard must be the standard's name as text, got {standard!r}")
    if not low <= ga <= high:
        raise OutOfRangeError(
            f"gestational age {ga:.2f} weeks is outside the {standard} standard ({low:g}-{high:g} weeks); "
            "no centile can be given there"
        )
    return ga


def _check_value(value_mm: float, measure: str) -> float:
    return number(value_mm, measure.upper(), "mm", positive=True)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def mean_sd(measure: str, ga_weeks: float) -> tuple[float, float]:
    """(mean_mm, sd_mm) of ``measure`` at ``ga_weeks`` (14-40 weeks)."""
    name = check_measure(measure)
    return _EQUATIONS[name](check_ga_weeks(ga_weeks))


def zscore(measure: str, value_mm: float, ga_weeks: float) -> float:
    """z-score of ``value_mm`` for ``measure`` at ``ga_weeks``: (value - mean) / sd."""
    mean, sd = mean_sd(measure, ga_weeks)
    return (_check_value(value_mm, measure) - mean) / sd


def centile(measure: str, value_mm: float, ga_weeks: float) -> float:
    """Centile (0..100) of ``value_mm``: 100 * Phi(z)."""
    return 100.0 * _STANDARD_NORMAL.cdf(zscore(measure, value_mm, ga_weeks))


def value_at_zscore(measure: str, ga_weeks: float, z: float) -> float:
    """The value (mm) with z-score ``z`` at ``ga_weeks``: mean + z * sd.

    Raises OutOfRangeError where mean + z * sd is not a positive length (z far below
    the mean): no length has that z-score.
    """
    z_value = number(z, "z", "SD")
    mean, sd = mean_sd(measure, ga_weeks)
    value = mean + z_value * sd
    if not (math.isfinite(value) and value > 0):
        raise OutOfRangeError(f"no positive {check_measure(measure).upper()} has z = {z_value:g} at {ga_weeks} weeks")
    return value


def value_at_centile(measure: str, ga_weeks: float, centile: float) -> float:
    """The value (mm) at ``centile`` (strictly between 0 and 100) for ``ga_weeks``."""
    return value_at_zscore(measure, ga_weeks, centile_to_z(centile))


def centile_to_z(centile: float) -> float:
    """Phi^-1(centile / 100) for a centile strictly between 0 and 100."""
    value = number(centile, "centile", "centile points")
    if not 0.0 < value < 100.0:
        raise OutOfRangeError(f"centile must be strictly between 0 and 100, got {centile!r}")
    return _STANDARD_NORMAL.inv_cdf(min(max(value, _MIN_CENTILE), _MAX_CENTILE) / 100.0)
