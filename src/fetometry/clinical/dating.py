"""Gestational age (GA): from dates, from crown-rump length, and estimated from head circumference.

Dating comes first (ISUOG practice guidelines): the GA used to place a measurement on a
growth standard must come from the last menstrual period (LMP), a first-trimester
crown-rump length (CRL), a known conception date or an earlier dating scan, never from
the measurement being assessed. An HC-based GA is an *estimate* for women who present
without dating; it is reported, and no HC centile is computed from it.

Formulas (each with its source and check value)
-----------------------------------------------
- LMP (Naegele's convention): GA = (exam date - first day of the LMP) / 7 weeks.
- CRL, INTERGROWTH-21st (Papageorghiou AT, Kennedy SH, Salomon LJ, et al. International
  standards for early fetal size and pregnancy dating based on ultrasound measurement of
  crown-rump length in the first trimester of pregnancy. Ultrasound Obstet Gynecol
  2014;44:641-648. doi:10.1002/uog.13448), CRL in mm, GA in days:
  GA = 40.9041 + 3.21585 CRL^0.5 + 0.348956 CRL; valid for CRL 15-95 mm.
  Check: the published table, CRL 45 mm -> 11+1 weeks, 95 mm -> 15+0 weeks.
- HC, Hadlock (Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age:
  computer-assisted analysis of multiple fetal growth parameters. Radiology
  1984;152:497-501), HC in cm, menstrual age in weeks:
  MA = 8.96 + 0.540 HC + 0.0003 HC^3. Check: HC 25 cm -> 27.15 weeks. Derived from
  fetuses of 14-42 menstrual weeks, so estimates outside 14-42 weeks are refused.
- HC, INTERGROWTH-21st (Papageorghiou AT, Kemp B, Stones W, et al. Ultrasound-based
  gestational-age estimation in late pregnancy. Ultrasound Obstet Gynecol
  2016;48:719-726. doi:10.1002/uog.15894), HC in mm, GA in days:
  GA = exp(0.05970 (ln HC)^2 + 0.000000006409 HC^3 + 3.3258). Check: HC 175 mm ->
  20.2 weeks; HC 250 mm -> 189.8 days (outside the documented range, so only with
  ``extrapolate=True``). Documented for GA 98-181 days.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import date, datetime

from fetometry.clinical.growth import GA_RANGE_WEEKS
from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError, number

#: Longest plausible pregnancy (weeks) for a GA computed from dates.
MAX_GA_WEEKS = 45.0
#: CRL range (mm) of the INTERGROWTH-21st dating formula.
CRL_RANGE_MM = (15.0, 95.0)
#: GA range (weeks) of Hadlock's 1984 study population.
HADLOCK_GA_RANGE_WEEKS = (14.0, 42.0)
#: GA range (days) documented for the INTERGROWTH-21st HC dating formula.
INTERGROWTH_HC_GA_RANGE_DAYS = (98.0, 181.0)

#: Accepted sources of a GA used for centiles, with what they mean.
GA_SOURCES = {
    "lmp": "last menstrual period",
    "crl": "first-trimester crown-rump length",
    "ivf": "known conception date (assisted reproduction)",
    "earlier_scan": "an earlier ultrasound dating scan",
    "known": "a gestational age stated by the clinician",
}
#: Sources that make a centile circular: the GA came from the HC being assessed.
CIRCULAR_GA_SOURCES = ("hc", "same_hc", "this_hc", "hadlock_hc", "intergrowth_hc")


class CircularDatingError(InvalidInputError):
    """A centile was requested with a GA estimated from the same head circumference."""


# ---------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------


def as_date(value: date | str, name: str = "date") -> date:
    """A ``date`` from a date, a datetime or an ISO string ``YYYY-MM-DD``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        # An int such as 20240101 would parse as a date in Python 3.11: refuse it, as a
        # number is never how a date reaches this module on purpose.
        raise InvalidInputError(
            f"{name} must be a date or an ISO date string YYYY-MM-DD, got {type(value).__name__} {value!r}"
        )
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a date or an ISO date string YYYY-MM-DD, got {value!r}") from None


def ga_from_lmp(lmp: date | str, exam: date | str) -> float:
    """GA in weeks on ``exam`` from the first day of the last menstrual period ``lmp``."""
    lmp_date, exam_date = as_date(lmp, "lmp"), as_date(exam, "exam date")
    days = (exam_date - lmp_date).days
    if days < 0:
        raise InvalidInputError(f"the exam date {exam_date} is before the LMP {lmp_date}; check the dates")
    weeks = days / 7.0
    if weeks > MAX_GA_WEEKS:
        raise OutOfRangeError(
            f"LMP {lmp_date} gives {weeks:.1f} weeks on {exam_date}, more than {MAX_GA_WEEKS:g}; check the dates"
        )
    return weeks


def weeks_days(ga_weeks: float) -> str:
    """Format a GA as completed weeks + days, e.g. 27.15 -> '27+1'."""
    ga = number(ga_weeks, "gestational age", "weeks", minimum=0.0)
    if ga > MAX_GA_WEEKS:
        raise OutOfRangeError(f"gestational age {ga:g} weeks is more than {MAX_GA_WEEKS:g}; check the dating")
    total_days = int(math.floor(ga * 7.0 + 1e-9))
    return f"{total_days // 7}+{total_days % 7}"


# ---------------------------------------------------------------------------------------
# Ultrasound dating formulas
# ---------------------------------------------------------------------------------------


def _positive(value: float, name: str, unit: str) -> float:
    return number(value, name, unit, positive=True)


def ga_from_crl(crl_mm: float) -> float:
    """GA in weeks from a first-trimester CRL (mm), INTERGROWTH-21st (Papageorghiou 2014)."""
    crl = _positive(crl_mm, "CRL", "mm")
    low, high = CRL_RANGE_MM
    if not low <= crl <= high:
        raise OutOfRangeError(f"CRL {crl:g} mm is outside the INTERGROWTH-21st dating range {low:g}-{high:g} mm")
    days = 40.9041 + 3.21585 * math.sqrt(crl) + 0.348956 * crl
    return days / 7.0


def _hadlock_weeks(hc_mm: float) -> float:
    hc_cm = hc_mm / 10.0
    return 8.96 + 0.540 * hc_cm + 0.0003 * hc_cm**3


def _intergrowth_days(hc_mm: float) -> float:
    log_hc = math.log(hc_mm)
    return math.exp(0.05970 * log_hc**2 + 0.000000006409 * hc_mm**3 + 3.3258)


def _hc_at(formula: Callable[[float], float], target: float) -> float:
    """HC (mm) where an increasing dating formula reaches ``target`` (bisection).

    Both formulas are increasing and finite on 1-1000 mm, which brackets every GA range
    used here, so the bisection never evaluates a formula where it overflows.
    """
    low, high = 1.0, 1000.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if formula(middle) < target else (low, middle)
    return 0.5 * (low + high)


@functools.lru_cache(maxsize=None)
def _hc_range(formula: Callable[[float], float], ga_range: tuple[float, float]) -> tuple[float, float]:
    """The HC range (mm) whose formula GA lies in ``ga_range``."""
    return _hc_at(formula, ga_range[0]), _hc_at(formula, ga_range[1])


def _refuse_outside(
    formula: Callable[[float], float], hc_mm: float, ga_range: tuple[float, float], unit: str, name: str
) -> None:
    # The HC is compared with the HC range BEFORE the formula is evaluated: the
    # INTERGROWTH formula overflows a float from about HC 4700 mm (a cm/mm or pixel mix-up).
    hc_low, hc_high = _hc_range(formula, ga_range)
    low, high = ga_range
    inside = hc_low <= hc_mm <= hc_high and low <= formula(hc_mm) <= high
    if not inside:
        raise OutOfRangeError(
            f"HC {hc_mm:.1f} mm is outside the {name} dating formula's range "
            f"(HC {hc_low:.0f}-{hc_high:.0f} mm, GA {low:g}-{high:g} {unit}); no GA estimate"
        )


def ga_from_hc_hadlock(hc_mm: float) -> float:
    """Menstrual age in weeks from HC (mm), Hadlock 1984; refused outside 14-42 weeks."""
    hc = _positive(hc_mm, "HC", "mm")
    _refuse_outside(_hadlock_weeks, hc, HADLOCK_GA_RANGE_WEEKS, "weeks", "Hadlock 1984")
    return _hadlock_weeks(hc)


def ga_from_hc_intergrowth(hc_mm: float, *, extrapolate: bool = False) -> float:
    """GA in weeks from HC (mm), INTERGROWTH-21st (Papageorghiou 2016).

    Refused (OutOfRangeError) outside the documented 98-181 days unless ``extrapolate``;
    extrapolation exists only to check the formula against published values.
    """
    hc = _positive(hc_mm, "HC", "mm")
    if not extrapolate:
        _refuse_outside(_intergrowth_days, hc, INTERGROWTH_HC_GA_RANGE_DAYS, "days", "INTERGROWTH-21st")
    try:
        days = _intergrowth_days(hc)
    except OverflowError:
        raise OutOfRangeError(
            f"HC {hc:g} mm is far beyond the INTERGROWTH-21st dating formula; check the unit (mm)"
        ) from None
    return days / 7.0


def check_ga_source(ga_source: str | None) -> str | None:
    """Normalise a GA source; raise CircularDatingError for an HC-derived GA.

    ``None`` means "not stated": accepted, and the assessment says so in its notes.
    """
    if ga_source is None:
        return None
    if not isinstance(ga_source, str):
        raise InvalidInputError(f"the GA source must be text, one of {', '.join(GA_SOURCES)}; got {ga_source!r}")
    source = ga_source.strip().lower()
    if source in CIRCULAR_GA_SOURCES:
        raise CircularDatingError(
            "a centile needs a gestational age that was not estimated from the same head "
            "circumference; give the GA from the LMP, a first-trimester CRL, a known conception "
            "date or an earlier dating scan (or give no GA to get the HC-based estimate only)"
        )
    if source not in GA_SOURCES:
        raise InvalidInputError(f"unknown GA source {ga_source!r}; use one of {', '.join(GA_SOURCES)}")
    return source


# ---------------------------------------------------------------------------------------
# The dating of one exam
# ---------------------------------------------------------------------------------------


def exam_dating(
    *,
    ga_weeks: float | None = None,
    lmp: date | str | None = None,
    exam_date: date | str | None = None,
    ga_source: str | None = None,
) -> tuple[float | None, str | None]:
    """The exam's gestational age in weeks and its source, or (None, None) when undated.

    The GA must come from outside the image: the LMP (source 'lmp') or a stated GA whose
    source is 'known' (default), 'crl', 'ivf' or 'earlier_scan'; never from the HC it
    will be compared with (``check_ga_source`` refuses such sources). A GA outside the
    growth standards' range (``growth.GA_RANGE_WEEKS``, INTERGROWTH-21st 14-40 weeks) gets
    OutOfRangeError, since no centile can be given there.
    """
    lmp_day = None if lmp is None else as_date(lmp, "LMP")
    if ga_weeks is not None and lmp_day is not None:
        raise InvalidInputError("give either a gestational age or an LMP date, not both")
    if ga_weeks is None and lmp_day is None:
        if ga_source:
            raise InvalidInputError(f"a GA source ({ga_source}) was given without a gestational age")
        return None, None
    if lmp_day is not None:
        if ga_source not in (None, "", "lmp"):
            raise InvalidInputError(f"an LMP was given, so the GA source is 'lmp', not {ga_source!r}")
        exam_day = date.today() if exam_date is None else as_date(exam_date, "exam date")
        ga, source = ga_from_lmp(lmp_day, exam_day), "lmp"
    else:
        ga, source = number(ga_weeks, "gestational age", "weeks"), check_ga_source(ga_source or "known")
    low, high = GA_RANGE_WEEKS
    if not low <= ga <= high:
        raise OutOfRangeError(
            f"gestational age {ga:.1f} weeks (source: {source}) is outside {low:g}-{high:g} weeks, "
            "the range of the growth standards; no centile can be given"
        )
    return float(ga), source
