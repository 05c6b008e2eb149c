"""One clinical summary from measurements and (optionally) an independent gestational age.

Dating comes first. With a GA from the LMP, a CRL, a known conception date or an earlier
scan, each given measurement is placed on the INTERGROWTH-21st standard (z-score and
centile) and the flags are computed. Without a GA, the summary gives the HC-based GA
estimates and NO centile: a centile from a GA estimated from the same HC is circular
(it would always be near the 50th). Inputs outside a formula's range give ``None`` and
a note saying why, never an extrapolated number.

Plausibility comes before interpretation: a value beyond +/-5 SD for the stated GA
(``fetometry.clinical.plausibility``) gets no z-score, no centile and no size flag; the
summary's ``plausibility`` entry and an ``implausible_<measure>`` warning say what is
wrong (units, dating or measurement) and, when a cm/mm mix-up fits, which one. Such a
value is also kept out of the EFW and the cephalic index.

The result is JSON-ready (floats rounded for display: GA to 0.01 week, z to 0.01,
centiles to 0.1, EFW to 1 g). The z-score and centile keys exist only when a GA was
given (the contract of ``measure --json``); every other key is always present, and
``None`` means "not computable from these inputs", with ``notes`` saying why.
"""

from __future__ import annotations

from typing import Any

from fetometry.clinical import dating, efw, flags, growth, plausibility
from fetometry.clinical.growth import MEASURES
from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError, number, optional_number

STANDARDS = {
    "growth": "INTERGROWTH-21st Fetal Growth Standards (Papageorghiou et al., Lancet 2014)",
    "efw": "Hadlock 1985 (HC, AC, FL); centiles: INTERGROWTH-21st standard for Hadlock EFW "
    "(Stirnemann et al., Ultrasound Obstet Gynecol 2020)",
    "ga_from_hc": "Hadlock et al., Radiology 1984; INTERGROWTH-21st (Papageorghiou et al., "
    "Ultrasound Obstet Gynecol 2016)",
    "plausibility": "beyond +/-5 SD of the INTERGROWTH-21st standard for the stated GA (fetometry's limit, "
    "after the WHO fixed exclusion range for anthropometric z-scores, TRS 854, 1995)",
}


def _optional_mm(name: str, value: float | None) -> float | None:
    return optional_number(value, name, "mm", positive=True)


def _optional_ga(ga_weeks: float | None) -> float | None:
    if ga_weeks is None:
        return None
    ga = number(ga_weeks, "ga_weeks", "weeks")
    if not 0 < ga <= dating.MAX_GA_WEEKS:
        raise InvalidInputError(f"ga_weeks must be between 0 and {dating.MAX_GA_WEEKS:g} weeks, got {ga_weeks!r}")
    return ga


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _ga_estimates(hc_mm: float, notes: list[str]) -> dict[str, float | None]:
    """HC-based GA estimates; out-of-range formulas give None and a note."""
    estimates: dict[str, float | None] = {}
    for key, formula in (
        ("ga_hadlock_weeks", dating.ga_from_hc_hadlock),
        ("ga_intergrowth_weeks", dating.ga_from_hc_intergrowth),
    ):
        try:
            estimates[key] = _rounded(formula(hc_mm), 2)
        except OutOfRangeError as error:
            estimates[key] = None
            notes.append(str(error))
    return estimates


def _nothing_placed() -> dict[str, float | None]:
    return {f"{measure}_{kind}": None for measure in MEASURES for kind in ("z", "centile")}


def _assess_plausibility(values: dict[str, float | None], ga: float | None) -> dict[str, plausibility.Plausibility]:
    return {m: plausibility.assess_measure(m, values[m], ga) for m in MEASURES if values[m] is not None}


def _implausible(checked: dict[str, plausibility.Plausibility], measure: str) -> bool:
    return measure in checked and checked[measure].status == plausibility.IMPLAUSIBLE


def _place_on_standard(
    values: dict[str, float | None], ga: float, notes: list[str], checked: dict[str, plausibility.Plausibility]
) -> dict[str, float | None]:
    """z-scores and centiles of the given, plausible measures at an independent GA."""
    placed = _nothing_placed()
    if not any(values[m] is not None for m in MEASURES):
        return placed
    try:
        growth.check_ga_weeks(ga)
    except OutOfRangeError as error:
        notes.append(str(error))
        return placed
    for measure in MEASURES:
        if values[measure] is None:
            continue
        if _implausible(checked, measure):
            notes.append(
                f"no {measure.upper()} z-score or centile: the value is implausible for the stated GA "
                f"(see plausibility and flags)"
            )
            continue
        placed[f"{measure}_z"] = growth.zscore(measure, values[measure], ga)
        placed[f"{measure}_centile"] = growth.centile(measure, values[measure], ga)
    return placed


def _efw(
    values: dict[str, float | None], ga: float | None, notes: list[str], checked: dict[str, plausibility.Plausibility]
) -> tuple[float | None, float | None, float | None]:
    """(efw_g, efw_z, efw_centile); None where not computable, with a note."""
    if any(values[m] is None for m in ("hc", "ac", "fl")):
        return None, None, None
    implausible = [m.upper() for m in ("hc", "ac", "fl") if _implausible(checked, m)]
    if implausible:
        notes.append(f"no EFW: {', '.join(implausible)} implausible for the stated GA")
        return None, None, None
    try:
        weight = efw.hadlock_efw_g(values["hc"], values["ac"], values["fl"])
    except OutOfRangeError as error:
        notes.append(f"no EFW: {error}")
        return None, None, None
    if ga is None:
        return weight, None, None
    try:
        return weight, efw.efw_zscore(weight, ga), efw.efw_centile(weight, ga)
    except OutOfRangeError as error:
        notes.append(f"no EFW centile: {error}")
        return weight, None, None


def _collect_flags(
    values: dict[str, float | None],
    placed: dict[str, float | None],
    efw_values: tuple,
    checked: dict[str, plausibility.Plausibility],
) -> list[dict[str, str]]:
    weight, _, efw_centile = efw_values
    shape_ok = not (_implausible(checked, "bpd") or _implausible(checked, "ofd"))
    found = (
        flags.implausible_flags(list(checked.values()))
        + flags.head_size_flags(placed["hc_z"])
        + flags.growth_flags(placed["ac_centile"], efw_centile)
        + flags.macrosomia_flags(weight)
        + (flags.head_shape_flags(values["bpd"], values["ofd"]) if shape_ok else [])
    )
    return [flag.to_dict() for flag in found]


def clinical_summary(
    *,
    hc_mm: float | None = None,
    bpd_mm: float | None = None,
    ofd_mm: float | None = None,
    ac_mm: float | None = None,
    fl_mm: float | None = None,
    ga_weeks: float | None = None,
    ga_source: str | None = None,
) -> dict[str, Any]:
    """Dating, plausibility, INTERGROWTH-21st z-scores/centiles, EFW and flags as a JSON-ready dict.

    ``ga_weeks`` must be an independent GA (``ga_source`` one of
    ``dating.GA_SOURCES``); an HC-derived source raises CircularDatingError. Keys:
    ``ga_weeks``, ``ga_source``, ``ga_hadlock_weeks``, ``ga_intergrowth_weeks``,
    ``{hc,bpd,ofd,ac,fl}_z``, ``{...}_centile``, ``efw_g``, ``efw_z``, ``efw_centile``,
    ``plausibility`` ({"status", "limit_z", "measures", "message"}, see
    ``plausibility.summarise``), ``flags`` (list of {"code", "severity", "message"}),
    ``notes`` (list of str) and ``standards`` (the sources used).

    Raises only ValueError subclasses (InvalidInputError, CircularDatingError) for
    inputs that are not numbers of mm / weeks (bools and strings included) or an
    unknown GA source; values outside a formula's range give None and a note.
    """
    values = {
        "hc": _optional_mm("hc_mm", hc_mm),
        "bpd": _optional_mm("bpd_mm", bpd_mm),
        "ofd": _optional_mm("ofd_mm", ofd_mm),
        "ac": _optional_mm("ac_mm", ac_mm),
        "fl": _optional_mm("fl_mm", fl_mm),
    }
    source = dating.check_ga_source(ga_source)
    ga = _optional_ga(ga_weeks)
    notes: list[str] = []

    estimates = {"ga_hadlock_weeks": None, "ga_intergrowth_weeks": None}
    if values["hc"] is not None:
        estimates = _ga_estimates(values["hc"], notes)
    checked = _assess_plausibility(values, ga)
    notes.extend(item.message for item in checked.values() if item.status == plausibility.NOT_ASSESSED and item.message)
    if ga is None:
        placed = _nothing_placed()
        if any(v is not None for v in values.values()):
            notes.append(
                "no independent gestational age given (LMP, CRL, known date or earlier scan): "
                "estimated GA only, no centile"
            )
    else:
        if source is None:
            notes.append(
                "GA source not stated: the centiles assume the GA was dated independently of "
                "this scan (LMP, CRL, known conception date or an earlier scan)"
            )
        placed = _place_on_standard(values, ga, notes, checked)
    efw_values = _efw(values, ga, notes, checked)

    summary: dict[str, Any] = {"ga_weeks": _rounded(ga, 2), "ga_source": source, **estimates}
    if ga is not None:
        for measure in MEASURES:
            summary[f"{measure}_z"] = _rounded(placed[f"{measure}_z"], 2)
            summary[f"{measure}_centile"] = _rounded(placed[f"{measure}_centile"], 1)
    summary["efw_g"] = _rounded(efw_values[0], 0)
    if ga is not None:
        summary["efw_z"] = _rounded(efw_values[1], 2)
        summary["efw_centile"] = _rounded(efw_values[2], 1)
    summary["plausibility"] = plausibility.summarise(list(checked.values()))
    summary["flags"] = _collect_flags(values, placed, efw_values, checked)
    summary["notes"] = notes
    summary["standards"] = dict(STANDARDS)
    return summary
