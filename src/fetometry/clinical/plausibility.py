"""Is a measurement plausible for the stated gestational age? Catching cm/mm and dating mix-ups.

A number typed in cm where mm are expected (17.5 for an HC of 175 mm), a pixel count,
or a GA that belongs to another pregnancy all give z-scores far beyond anything a growth
standard describes (HC 17.5 mm at 20 weeks: z = -20.8). Reading such a z-score as
"microcephaly" turns an input error into a false alarm, and the user is never told that
the units are what is wrong. This module decides, per measure, whether a value is
plausible for the stated GA and, when it is not, what probably went wrong.

The limit: |z| > 5
------------------
A value is *implausible for the stated GA* when its INTERGROWTH-21st z-score
(Papageorghiou et al., Lancet 2014) lies beyond +/-5 SD. Why 5:

- Under the standard's own model (normal at each GA) a value beyond 5 SD on one side
  has probability 2.9e-7, fewer than 1 in 3.4 million fetuses; both sides together
  1 in 1.7 million. A single value there is far more often an input error (units,
  dating, a caliper on the wrong structure) than a measurement of a real fetus.
- It is the limit that growth-data practice uses for "biologically implausible" values:
  the WHO Expert Committee's fixed exclusion range for weight-for-age is z < -5 or
  z > +5 (WHO. Physical status: the use and interpretation of anthropometry. Technical
  Report Series 854, Geneva 1995), which is kept in the WHO Anthro software. There is no
  published implausibility limit for fetal biometry; fetometry adopts this one.
- Below -5 SD real heads do exist: SMFM regards fetal microcephaly as certain at an HC
  5 SD or more below the mean (Society for Maternal-Fetal Medicine Publications
  Committee, Am J Obstet Gynecol 2016;214:B2-B4). So an implausible value is never
  dismissed: it raises an ``alert`` flag that asks to check the units, the dating and
  the measurement, and says that, if all three are confirmed, the value is far outside
  the normal range and needs specialist assessment. What it does NOT do is raise a size
  flag (microcephaly, SGA, LGA) or give a centile from a number that is more likely an
  error than a measurement.

The hints
---------
- Units: if value x 10 would lie within +/-5 SD at the stated GA, the value was probably
  typed in cm (``likely_unit_error = "cm_as_mm"``); if value / 10 would, a value in mm
  was probably converted as if it were cm (``"mm_times_10"``).
- Dating: otherwise the GA (14-40 weeks) at which the value is the standard's median is
  given (``fits_ga_weeks``): a wrong dating, or a fetus that is very small or large.

Without a GA (or with a GA outside 14-40 weeks) no z-score exists. A value is then only
checked against the whole standard: above +5 SD at 40 weeks it fits no GA the standard
covers and is implausible; below -5 SD at 14 weeks it may be an earlier fetus, so it is
``not_assessed`` (with the unit hint when value x 10 would fit).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from fetometry.clinical import growth
from fetometry.clinical.inputs import InvalidInputError, number, optional_number

log = logging.getLogger(__name__)

#: |z| beyond this is implausible for the stated GA (reasoning in the module docstring).
PLAUSIBLE_Z = 5.0
PLAUSIBLE = "plausible"
IMPLAUSIBLE = "implausible"
NOT_ASSESSED = "not_assessed"
STATUSES = (PLAUSIBLE, IMPLAUSIBLE, NOT_ASSESSED)
#: Unit mix-ups that are checked: (code, factor that turns the given value into mm, wording).
UNIT_ERRORS = (
    ("cm_as_mm", 10.0, "it fits the stated GA if it was typed in cm ({fixed:.1f} mm): check the units"),
    (
        "mm_times_10",
        0.1,
        "it fits the stated GA if it is 10 times too large ({fixed:.1f} mm), e.g. mm converted "
        "as if they were cm: check the units",
    ),
)
_LABELS = {"hc": "HC", "bpd": "BPD", "ofd": "OFD", "ac": "AC", "fl": "FL"}
#: What a confirmed extreme value means, per measure and side (for the alert's message).
_IF_CONFIRMED = {
    ("hc", -1): "far below -3 SD, the prenatal microcephaly range",
    ("hc", 1): "far above +2 SD, the macrocephaly range",
    ("ac", -1): "far below the 3rd centile, a solitary criterion of fetal growth restriction",
    ("ac", 1): "far above the 90th centile",
}


@dataclass(frozen=True)
class Plausibility:
    """The plausibility of one measure's value for a GA; ``to_dict`` is JSON-ready."""

    measure: str
    value_mm: float
    ga_weeks: float | None
    status: str
    z: float | None = None
    likely_unit_error: str | None = None
    fits_ga_weeks: float | None = None
    message: str | None = None

    def to_dict(self) -> dict:
        row = asdict(self)
        row["z"] = None if self.z is None else round(self.z, 2)
        row["fits_ga_weeks"] = None if self.fits_ga_weeks is None else round(self.fits_ga_weeks, 1)
        return row


def _z(measure: str, value_mm: float, ga_weeks: float) -> float:
    mean, sd = growth.mean_sd(measure, ga_weeks)
    return (value_mm - mean) / sd


def median_ga_weeks(measure: str, value_mm: float) -> float:
    """The GA (weeks, clipped to 14-40) at which ``value_mm`` is the standard's median.

    The five medians increase with GA over 14-40 weeks (their derivatives are positive
    there), so a bisection finds the one GA.
    """
    name = growth.check_measure(measure)
    value = number(value_mm, _LABELS[name], "mm", positive=True)
    low, high = growth.GA_RANGE_WEEKS
    if value <= growth.mean_sd(name, low)[0]:
        return low
    if value >= growth.mean_sd(name, high)[0]:
        return high
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if growth.mean_sd(name, middle)[0] < value else (low, middle)
    return 0.5 * (low + high)


def _unit_error(measure: str, value_mm: float, ga_weeks: float) -> tuple[str, str] | None:
    for code, factor, wording in UNIT_ERRORS:
        fixed = value_mm * factor
        if abs(_z(measure, fixed, ga_weeks)) <= PLAUSIBLE_Z:
            return code, wording.format(fixed=fixed)
    return None


def _confirmed(measure: str, z: float) -> str:
    side = -1 if z < 0 else 1
    meaning = _IF_CONFIRMED.get((measure, side), "far outside the standard's range")
    return (
        f" If the units, the dating and the measurement are all confirmed, the {_LABELS[measure]} is "
        f"{meaning}: specialist assessment is advised."
    )


def _with_ga(name: str, value: float, ga: float) -> Plausibility:
    z = _z(name, value, ga)
    if abs(z) <= PLAUSIBLE_Z:
        return Plausibility(name, value, ga, PLAUSIBLE, z=z)
    label = _LABELS[name]
    message = (
        f"{label} {value:.1f} mm is implausible for the stated GA of {ga:.1f} weeks (z {z:+.1f}, beyond the "
        f"+/-{PLAUSIBLE_Z:g} SD plausibility limit): check the units, the dating or the measurement."
    )
    unit_error = _unit_error(name, value, ga)
    fits = None
    if unit_error is not None:
        message += f" Likely a unit mix-up: {unit_error[1]}."
    else:
        fits = median_ga_weeks(name, value)
        z_fits = _z(name, value, fits)
        low, high = growth.GA_RANGE_WEEKS
        if abs(z_fits) <= PLAUSIBLE_Z and fits in (low, high) and abs(z_fits) > 0.5:
            side = "below the median even at" if fits == low else "above the median even at"
            message += f" It is {side} {fits:g} weeks (z {z_fits:+.1f} there): check the dating."
        elif abs(z_fits) <= PLAUSIBLE_Z:
            message += f" It is the median {label} at about {fits:.1f} weeks: check the dating."
        else:
            fits = None
            message += " It fits no GA from 14 to 40 weeks: check the measurement."
        message += _confirmed(name, z)
    log.info("implausible %s %.3g mm at %.2f weeks (z %.1f)", name, value, ga, z)
    return Plausibility(
        name,
        value,
        ga,
        IMPLAUSIBLE,
        z=z,
        likely_unit_error=None if unit_error is None else unit_error[0],
        fits_ga_weeks=fits,
        message=message,
    )


def _without_ga(name: str, value: float, ga: float | None) -> Plausibility:
    """Against the whole standard: too large for any GA up to 40 weeks, or smaller than 14 weeks."""
    label, (low, high) = _LABELS[name], growth.GA_RANGE_WEEKS
    why = "no GA was given" if ga is None else f"the GA {ga:.1f} weeks is outside the standard's {low:g}-{high:g} weeks"
    z_high = _z(name, value, high)
    if z_high > PLAUSIBLE_Z:
        message = (
            f"{label} {value:.1f} mm is implausible: above +{PLAUSIBLE_Z:g} SD even at {high:g} weeks, it fits "
            "no GA the standard covers. Check the units and the measurement."
        )
        fixed = value * 0.1
        if abs(_z(name, fixed, median_ga_weeks(name, fixed))) <= PLAUSIBLE_Z:
            message += f" If it is 10 times too large, {fixed:.1f} mm would fit about {median_ga_weeks(name, fixed):.1f} weeks."
            return Plausibility(name, value, ga, IMPLAUSIBLE, likely_unit_error="mm_times_10", message=message)
        return Plausibility(name, value, ga, IMPLAUSIBLE, message=message)
    z_low = _z(name, value, low)
    if z_low < -PLAUSIBLE_Z:
        message = (
            f"{label} {value:.1f} mm is below -{PLAUSIBLE_Z:g} SD even at {low:g} weeks and {why}: "
            "not assessed (an earlier fetus, or an error)."
        )
        fixed = value * 10.0
        if abs(_z(name, fixed, median_ga_weeks(name, fixed))) <= PLAUSIBLE_Z:
            message += (
                f" If it was typed in cm, {fixed:.1f} mm would fit about "
                f"{median_ga_weeks(name, fixed):.1f} weeks: check the units."
            )
            return Plausibility(name, value, ga, NOT_ASSESSED, likely_unit_error="cm_as_mm", message=message)
        return Plausibility(name, value, ga, NOT_ASSESSED, message=message)
    return Plausibility(name, value, ga, PLAUSIBLE)


def assess_measure(measure: str, value_mm: float, ga_weeks: float | None = None) -> Plausibility:
    """Plausibility of ``value_mm`` for ``measure`` at ``ga_weeks`` (None: not stated).

    With a GA inside 14-40 weeks: implausible beyond +/-5 SD, with a unit or dating hint.
    Without one, or outside it: checked against the standard's whole GA range.
    """
    name = growth.check_measure(measure)
    value = number(value_mm, _LABELS[name], "mm", positive=True)
    ga = optional_number(ga_weeks, "gestational age", "weeks", positive=True)
    low, high = growth.GA_RANGE_WEEKS
    if ga is not None and low <= ga <= high:
        return _with_ga(name, value, ga)
    return _without_ga(name, value, ga)


def summarise(assessments: list[Plausibility]) -> dict:
    """The ``plausibility`` entry of a clinical summary: overall status, limit, per measure.

    ``status`` is ``implausible`` when any measure is, else ``plausible`` when any measure
    was assessed as plausible, else ``not_assessed``. ``message`` joins the messages.
    """
    if not (isinstance(assessments, (list, tuple)) and all(isinstance(item, Plausibility) for item in assessments)):
        raise InvalidInputError(f"expected a list of Plausibility results, got {assessments!r}")
    statuses = {item.status for item in assessments}
    if IMPLAUSIBLE in statuses:
        status = IMPLAUSIBLE
    elif PLAUSIBLE in statuses:
        status = PLAUSIBLE
    else:
        status = NOT_ASSESSED
    messages = [item.message for item in assessments if item.message]
    return {
        "status": status,
        "limit_z": PLAUSIBLE_Z,
        "measures": {item.measure: item.to_dict() for item in assessments},
        "message": " ".join(messages) if messages else None,
    }
