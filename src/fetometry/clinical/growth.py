"""INTERGROWTH-21st fetal growth standards: HC, BPD, OFD, AC and FL for gestational age.

Source
------
Papageorghiou AT, Ohuma EO, Altman DG, et al. International standards for fetal growth
based on serial ultrasound measurements: the Fetal Growth Longitudinal Study of the
INTERGROWTH-21st Project. Lancet 2014;384(9946):869-879. doi:10.1016/S0140-6736(14)61490-2

Each measure is normally distributed at a given gestational age (GA, exact weeks) with a
mean and a standard deviation that are fractional polynomials of GA (the paper's
supplementary equations; the same coefficients are used by the R packages gigs and
growthstandards). Lengths are in mm; the standards cover 14+0 to 40+0 weeks. BPD and OFD
were measured outer-to-outer in the study, as fetometry measures them on the outer skull
ellipse.

    z = (value - mean(GA)) / sd(GA),   centile = 100 * Phi(z)

Check values (the published z-score tables, "International Fetal Growth Standards",
University of Oxford): HC at 40 weeks -3 SD / mean / +3 SD = 295.2 / 333.9 / 372.7 mm;
the tests compare every measure at 14, 20, 28, 34 and 40 weeks with those tables.

A centile needs a GA that was NOT estimated from the same measurement (dating comes
first): see ``fetometry.clinical.assess``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

#: Measures covered by the standard (lengths in mm).
MEASURES = ("hc", "bpd", "ofd", "ac", "fl")
#: Gestational ages (exact weeks) the standard covers, both ends included.
GA_RANGE_WEEKS = (14.0, 40.0)

_STANDARD_NORMAL = NormalDist()
#: Centiles are clipped to (0, 100) exclusive when inverted; beyond these z is not useful.
_MIN_CENTILE, _MAX_CENTILE = 1e-9, 100.0 - 1e-9


class OutOfRangeError(ValueError):
    """An input lies outside the range a formula or standard was built for."""


class UnknownMeasureError(ValueError):
    """A measure name that the standard does not cover."""


# ---------------------------------------------------------------------------------------
# Coefficient table: (mean_mm(GA), sd_mm(GA)) per measure, GA in exact weeks.
# Papageorghiou et al., Lancet 2014, supplementary table of fitted equations.
# ---------------------------------------------------------------------------------------


def _hc(ga: float) -> tuple[float, float]:
    log_ga = math.log(ga)
    mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * log_ga
    sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * log_ga + 0.000976253 * ga**3 * log_ga**2
    return mean, sd


def _bpd(ga: float) -> tuple[float, float]:
    log_ga = math.log(ga)
    mean = 5.60878 + 0.158369 * ga**2 - 0.00256379 * ga**3
    sd = math.exp(0.101252 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * log_ga + 0.0000999638 * ga**3 * log_ga**2)
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
    "hc": _hc, "bpd": _bpd, "ofd": _ofd, "ac": _ac, "fl": _fl,
}


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def check_measure(measure: str) -> str:
    """Normalise a measure name ('HC', 'hc_mm' -> 'hc') or raise UnknownMeasureError."""
    name = str(measure).strip().lower().removesuffix("_mm")
    if name not in _EQUATIONS:
        raise UnknownMeasureError(f"unknown measure {measure!r}; use one of {', '.join(MEASURES)}")
    return name


def check_ga_weeks(ga_weeks: float, *, ga_range: tuple[float, float] = GA_RANGE_WEEKS, standard: str = "INTERGROWTH-21st") -> float:
    """Return ``ga_weeks`` as a float, or raise OutOfRangeError saying which range applies."""
    try:
        ga = float(ga_weeks)
    except (TypeError, ValueError):
        raise ValueError(f"gestational age must be a number of weeks, got {ga_weeks!r}") from None
    if not math.isfinite(ga):
        raise ValueError(f"gestational age must be finite, got {ga_weeks!r}")
    low, high = ga_range
    if not low <= ga <= high:
        raise OutOfRangeError(
            f"gestational age {ga:.2f} weeks is outside the {standard} standard ({low:g}-{high:g} weeks); "
            "no centile can be given there"
        )
    return ga


def _check_value(value_mm: float, measure: str) -> float:
    try:
        value = float(value_mm)
    except (TypeError, ValueError):
        raise ValueError(f"{measure.upper()} must be a number of mm, got {value_mm!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{measure.upper()} must be a positive number of mm, got {value_mm!r}")
    return value


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
    """The value (mm) with z-score ``z`` at ``ga_weeks``: mean + z * sd."""
    if not math.isfinite(float(z)):
        raise ValueError(f"z must be finite, got {z!r}")
    mean, sd = mean_sd(measure, ga_weeks)
    return mean + float(z) * sd


def value_at_centile(measure: str, ga_weeks: float, centile: float) -> float:
    """The value (mm) at ``centile`` (strictly between 0 and 100) for ``ga_weeks``."""
    return value_at_zscore(measure, ga_weeks, centile_to_z(centile))


def centile_to_z(centile: float) -> float:
    """Phi^-1(centile / 100) for a centile strictly between 0 and 100."""
    value = float(centile)
    if not (math.isfinite(value) and 0.0 < value < 100.0):
        raise ValueError(f"centile must be strictly between 0 and 100, got {centile!r}")
    return _STANDARD_NORMAL.inv_cdf(min(max(value, _MIN_CENTILE), _MAX_CENTILE) / 100.0)
