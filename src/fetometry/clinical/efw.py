"""Estimated fetal weight (EFW): Hadlock's HC-AC-FL formula and its INTERGROWTH-21st standard.

Formula
-------
Hadlock FP, Harrist RB, Sharman RS, Deter RL, Park SK. Estimation of fetal weight with
the use of head, body, and femur measurements - a prospective study. Am J Obstet Gynecol
1985;151(3):333-337. With HC, AC and FL in **cm**:

    log10 EFW(g) = 1.326 - 0.00326 AC FL + 0.0107 HC + 0.0438 AC + 0.158 FL

Check value: HC 12 cm, AC 9.5 cm, FL 10 cm -> 1382.93 g (the R package gigs,
``hadlock_efw()`` documentation).

Standard (centiles of that EFW)
-------------------------------
Stirnemann J, Salomon LJ, Papageorghiou AT. INTERGROWTH-21st standards for Hadlock's
estimation of fetal weight. Ultrasound Obstet Gynecol 2020;56(6):946-948.
doi:10.1002/uog.22000. The Hadlock EFW of the INTERGROWTH-21st Fetal Growth Longitudinal
Study, modelled as a Box-Cox (LMS) distribution of ln(EFW) with GA in exact weeks and
t = GA / 10:

    L = 9.43643 + 9.41579 t^-2 - 83.54220 ln(t) t^-2
    M = -2.42272 + 1.86478 GA^0.5 - 1.93299e-5 GA^3
    S = 0.0193557 + 0.0310716 t^-2 - 0.0657587 ln(t) t^-2
    z = ((ln EFW / M)^L - 1) / (L S)

Valid from 18+0 to 41+0 weeks (126-287 days). Check values: the paper's centile table
(3rd/5th/10th/50th/90th/95th/97th at each week 18-41), e.g. 40 weeks: 10th 2888 g,
50th 3409 g, 90th 3999 g. The tests compare the whole table.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from fetometry.clinical.growth import centile_to_z, check_ga_weeks
from fetometry.clinical.inputs import OutOfRangeError, number

#: Gestational ages (exact weeks) covered by the Hadlock-EFW standard (Stirnemann 2020).
EFW_GA_RANGE_WEEKS = (18.0, 41.0)
#: Macrosomia thresholds (g): > 4000 g is the common definition, > 4500 g the severe one
#: (ACOG Practice Bulletin No. 216, Macrosomia, Obstet Gynecol 2020;135:e18-e35).
MACROSOMIA_G = 4000.0
SEVERE_MACROSOMIA_G = 4500.0

#: Plausibility bounds (mm) for the formula's inputs. Chosen by fetometry to catch unit
#: mistakes (cm or px passed as mm); they are NOT limits published with the formula.
_PLAUSIBLE_MM = {"hc": (50.0, 450.0), "ac": (40.0, 500.0), "fl": (5.0, 100.0)}
_STANDARD_NORMAL = NormalDist()
_EFW_STANDARD = "INTERGROWTH-21st Hadlock-EFW"


def _plausible_mm(name: str, value_mm: float) -> float:
    value = number(value_mm, name.upper(), "mm", positive=True)
    low, high = _PLAUSIBLE_MM[name]
    if not low <= value <= high:
        raise OutOfRangeError(
            f"{name.upper()} = {value_mm!r} mm is outside the plausible {low:g}-{high:g} mm; "
            "check the unit (mm, not cm or pixels)"
        )
    return value


def hadlock_efw_g(hc_mm: float, ac_mm: float, fl_mm: float) -> float:
    """Hadlock 1985 EFW (g) from HC, AC and FL in **mm** (converted to cm internally)."""
    hc_cm = _plausible_mm("hc", hc_mm) / 10.0
    ac_cm = _plausible_mm("ac", ac_mm) / 10.0
    fl_cm = _plausible_mm("fl", fl_mm) / 10.0
    log10_efw = 1.326 - 0.00326 * ac_cm * fl_cm + 0.0107 * hc_cm + 0.0438 * ac_cm + 0.158 * fl_cm
    return 10.0**log10_efw


def efw_lms(ga_weeks: float) -> tuple[float, float, float]:
    """(L, M, S) of ln(EFW) at ``ga_weeks`` (18-41 weeks), Stirnemann et al. 2020."""
    ga = check_ga_weeks(ga_weeks, ga_range=EFW_GA_RANGE_WEEKS, standard=_EFW_STANDARD)
    t = ga / 10.0
    log_term = math.log(t) * t**-2
    lam = 9.43643 + 9.41579 * t**-2 - 83.54220 * log_term
    mu = -2.42272 + 1.86478 * math.sqrt(ga) - 1.93299e-5 * ga**3
    sigma = 0.0193557 + 0.0310716 * t**-2 - 0.0657587 * log_term
    return lam, mu, sigma


def efw_zscore(efw_g: float, ga_weeks: float) -> float:
    """z-score of a Hadlock EFW (g) at ``ga_weeks`` in the INTERGROWTH-21st standard."""
    weight = number(efw_g, "EFW", "grams", positive=True)
    if weight <= 1.0:
        # ln(EFW) must be positive for the Box-Cox model of ln(EFW); no fetus weighs 1 g.
        raise OutOfRangeError(f"EFW must be above 1 g, got {efw_g!r}")
    lam, mu, sigma = efw_lms(ga_weeks)
    ratio = math.log(weight) / mu
    try:
        if abs(lam) < 1e-9:  # the Box-Cox limit L -> 0
            z = math.log(ratio) / sigma
        else:
            z = (ratio**lam - 1.0) / (lam * sigma)
    except (OverflowError, ZeroDivisionError):
        z = math.nan
    if not math.isfinite(z):
        raise OutOfRangeError(
            f"EFW {weight:g} g at {ga_weeks} weeks is too far from the standard for a z-score; check the inputs"
        )
    return z


def efw_centile(efw_g: float, ga_weeks: float) -> float:
    """Centile (0..100) of a Hadlock EFW at ``ga_weeks``."""
    return 100.0 * _STANDARD_NORMAL.cdf(efw_zscore(efw_g, ga_weeks))


def efw_at_zscore(ga_weeks: float, z: float) -> float:
    """The Hadlock EFW (g) with z-score ``z`` at ``ga_weeks``.

    Raises InvalidInputError for a z that is not a finite number (NaN was returned as
    NaN before), OutOfRangeError where the Box-Cox distribution has no such weight.
    """
    z_value = number(z, "z", "SD")
    lam, mu, sigma = efw_lms(ga_weeks)
    try:
        if abs(lam) < 1e-9:
            weight = math.exp(mu * math.exp(sigma * z_value))
        else:
            base = 1.0 + lam * sigma * z_value
            if base <= 0:
                raise OutOfRangeError(
                    f"z = {z_value:g} lies beyond the support of the EFW distribution at {ga_weeks} weeks"
                )
            weight = math.exp(mu * base ** (1.0 / lam))
    except OverflowError:
        weight = math.inf
    if not math.isfinite(weight):
        raise OutOfRangeError(f"z = {z_value:g} at {ga_weeks} weeks gives no finite EFW")
    return weight


def efw_at_centile(ga_weeks: float, centile: float) -> float:
    """The Hadlock EFW (g) at ``centile`` (strictly between 0 and 100) for ``ga_weeks``."""
    return efw_at_zscore(ga_weeks, centile_to_z(centile))
