"""clinical.plausibility and clinical_summary: values implausible for the stated GA name the
likely error (cm/mm, dating) and raise no size flag. The cases are the ones a user found."""

from __future__ import annotations

import json
from statistics import NormalDist

import pytest

from fetometry.clinical import growth, plausibility
from fetometry.clinical.assess import clinical_summary
from fetometry.clinical.plausibility import IMPLAUSIBLE, NOT_ASSESSED, PLAUSIBLE, PLAUSIBLE_Z, assess_measure

SIZE_FLAGS = {
    "microcephaly",
    "small_head",
    "macrocephaly",
    "sga_ac",
    "severe_sga_ac",
    "lga_ac",
    "sga_efw",
    "severe_sga_efw",
    "lga_efw",
    "macrosomia",
}


def _codes(summary):
    return {flag["code"] for flag in summary["flags"]}


def test_the_limit_is_beyond_one_in_three_million_per_side():
    """The reasoning in the module docstring, as numbers."""
    one_side = 1.0 - NormalDist().cdf(PLAUSIBLE_Z)
    assert PLAUSIBLE_Z == 5.0
    assert 1 / one_side > 3.4e6 and 1 / (2 * one_side) > 1.7e6


def test_centimetres_typed_as_mm_name_the_units_and_raise_no_microcephaly():
    # The user's case: HC 17.5 (cm) at 20 weeks gave a microcephaly ALERT at z -20.8.
    summary = clinical_summary(hc_mm=17.5, ga_weeks=20, ga_source="lmp")
    entry = summary["plausibility"]["measures"]["hc"]
    assert summary["plausibility"]["status"] == IMPLAUSIBLE
    assert entry["z"] == pytest.approx(-20.8, abs=0.05)  # the z is kept, for the record
    assert entry["likely_unit_error"] == "cm_as_mm"
    assert "implausible for the stated GA" in entry["message"] and "typed in cm" in entry["message"]
    assert "check the units, the dating or the measurement" in entry["message"]
    assert summary["hc_z"] is None and summary["hc_centile"] is None
    assert _codes(summary) == {"implausible_hc"}
    assert [f["severity"] for f in summary["flags"]] == ["warning"]  # named implausible, never an alert
    json.dumps(summary, allow_nan=False)


def test_a_value_ten_times_too_large_is_named_too():
    summary = clinical_summary(hc_mm=1750.0, ga_weeks=20, ga_source="lmp")
    assert summary["plausibility"]["measures"]["hc"]["likely_unit_error"] == "mm_times_10"
    assert not _codes(summary) & SIZE_FLAGS


def test_a_head_that_fits_another_gestational_age_points_at_the_dating():
    # HC 97 mm at a stated 24 weeks: z -14.7; 97 mm is the median HC at about 14 weeks.
    summary = clinical_summary(hc_mm=97.0, ga_weeks=24, ga_source="lmp")
    entry = summary["plausibility"]["measures"]["hc"]
    assert entry["status"] == IMPLAUSIBLE and entry["z"] == pytest.approx(-14.7, abs=0.05)
    assert entry["likely_unit_error"] is None
    assert entry["fits_ga_weeks"] == pytest.approx(14.0, abs=0.2)
    assert "check the dating" in entry["message"]
    # A real, extreme head is not dismissed: if everything is confirmed, it is microcephaly range.
    assert "microcephaly range" in entry["message"] and "specialist assessment" in entry["message"]
    assert "microcephaly" not in _codes(summary)


def test_an_implausible_value_far_beyond_every_formula_does_not_crash():
    # HC 4800 mm raised an uncaught OverflowError (the INTERGROWTH dating formula overflows).
    summary = clinical_summary(hc_mm=4800.0, ga_weeks=20, ga_source="lmp")
    assert summary["plausibility"]["status"] == IMPLAUSIBLE
    assert summary["ga_intergrowth_weeks"] is None and summary["ga_hadlock_weeks"] is None
    assert not _codes(summary) & SIZE_FLAGS
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(
    "z, expected", [(-4.99, PLAUSIBLE), (4.99, PLAUSIBLE), (-5.01, IMPLAUSIBLE), (5.01, IMPLAUSIBLE)]
)
def test_the_limit_is_five_sd_on_each_side(z, expected):
    value = growth.value_at_zscore("ac", 30.0, z)
    assert assess_measure("ac", value, 30.0).status == expected


def test_within_the_limit_the_size_flags_are_unchanged():
    # -4.7 SD at 24 weeks: plausible, a real microcephaly range: the alert stays.
    summary = clinical_summary(hc_mm=growth.value_at_zscore("hc", 24, -4.7), ga_weeks=24, ga_source="lmp")
    assert summary["plausibility"]["status"] == PLAUSIBLE
    assert "microcephaly" in _codes(summary)


def test_an_implausible_input_keeps_the_efw_and_head_shape_out():
    ga = 30.0
    hc, ac, fl = (growth.mean_sd(m, ga)[0] for m in ("hc", "ac", "fl"))
    summary = clinical_summary(
        hc_mm=hc, ac_mm=ac / 10.0, fl_mm=fl, bpd_mm=8.0, ofd_mm=100.0, ga_weeks=ga, ga_source="crl"
    )
    assert summary["efw_g"] is None and any("no EFW" in note for note in summary["notes"])
    assert _codes(summary) == {"implausible_ac", "implausible_bpd"}  # no severe SGA, no dolichocephaly
    assert summary["hc_centile"] == pytest.approx(50.0, abs=0.1)  # the plausible measure is still placed
    assert summary["plausibility"]["measures"]["ac"]["likely_unit_error"] == "cm_as_mm"


def test_without_a_ga_only_the_whole_standard_is_checked():
    # Too large for any GA up to 40 weeks: implausible even without a GA.
    large = assess_measure("hc", 450.0)
    assert large.status == IMPLAUSIBLE and "fits no GA the standard covers" in large.message
    # Smaller than 14 weeks may be an earlier fetus: not assessed, but the cm hint is given.
    small = assess_measure("hc", 17.5)
    assert small.status == NOT_ASSESSED and small.likely_unit_error == "cm_as_mm"
    summary = clinical_summary(hc_mm=17.5)
    assert any("typed in cm" in note for note in summary["notes"]) and summary["flags"] == []
    assert assess_measure("hc", 250.0).status == PLAUSIBLE


def test_a_ga_outside_the_standard_is_checked_like_no_ga():
    assert assess_measure("fl", 75.0, 41.0).status == PLAUSIBLE
    assert assess_measure("fl", 300.0, 41.0).status == IMPLAUSIBLE
    assert assess_measure("hc", 60.0, 12.0).status == NOT_ASSESSED  # a 12-week head is not an error


def test_the_summary_entry_is_machine_readable():
    summary = clinical_summary(hc_mm=250.0, ga_weeks=27.0, ga_source="lmp")
    entry = summary["plausibility"]
    assert entry == {
        "status": PLAUSIBLE,
        "limit_z": 5.0,
        "message": None,
        "measures": {
            "hc": {
                "measure": "hc",
                "value_mm": 250.0,
                "ga_weeks": 27.0,
                "status": PLAUSIBLE,
                "z": round(growth.zscore("hc", 250.0, 27.0), 2),
                "likely_unit_error": None,
                "fits_ga_weeks": None,
                "message": None,
            }
        },
    }
    assert clinical_summary()["plausibility"]["status"] == NOT_ASSESSED


@pytest.mark.parametrize("measure", growth.MEASURES)
def test_median_ga_inverts_the_standard(measure):
    for ga in (15.0, 22.5, 31.0, 39.0):
        median = growth.mean_sd(measure, ga)[0]
        assert plausibility.median_ga_weeks(measure, median) == pytest.approx(ga, abs=1e-6)
