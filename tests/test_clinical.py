"""clinical: dating, INTERGROWTH-21st standards, EFW, flags and the clinical summary.

Check values are the PUBLISHED tables, typed in from their sources (cited per table),
not values computed by fetometry.
"""

from __future__ import annotations

import json
import math
from datetime import date

import pytest

from fetometry.clinical import assess, dating, efw, flags, growth
from fetometry.clinical.assess import clinical_summary
from fetometry.clinical.dating import CircularDatingError
from fetometry.clinical.growth import OutOfRangeError
from fetometry.clinical.inputs import InvalidInputError

# --------------------------------------------------------------------------- published tables

#: INTERGROWTH-21st fetal growth standards, z-score tables (-3, -2, -1, 0, +1, +2, +3 SD),
#: mm, "International Fetal Growth Standards", University of Oxford; Papageorghiou et al.,
#: Lancet 2014;384:869-79. Rows at 14, 20, 28, 34 and 40 exact weeks.
ZSCORE_TABLES = {
    "hc": {
        14: (81.1, 86.7, 92.3, 97.9, 103.5, 109.0, 114.6),
        20: (150.2, 157.6, 165.0, 172.5, 179.9, 187.4, 194.8),
        28: (233.5, 242.5, 251.4, 260.4, 269.3, 278.2, 287.2),
        34: (277.8, 287.9, 298.0, 308.1, 318.2, 328.3, 338.4),
        40: (295.2, 308.1, 321.0, 333.9, 346.9, 359.8, 372.7),
    },
    "bpd": {
        14: (24.4, 26.1, 27.9, 29.6, 31.4, 33.1, 34.8),
        20: (41.5, 43.8, 46.1, 48.4, 50.7, 53.0, 55.3),
        28: (64.6, 67.6, 70.5, 73.5, 76.4, 79.4, 82.3),
        34: (77.9, 81.3, 84.6, 87.9, 91.2, 94.5, 97.9),
        40: (83.1, 87.1, 91.0, 94.9, 98.8, 102.7, 106.7),
    },
    "ofd": {
        14: (28.0, 29.9, 31.8, 33.8, 35.7, 37.6, 39.6),
        20: (52.4, 55.1, 57.9, 60.7, 63.5, 66.2, 69.0),
        28: (80.8, 84.5, 88.1, 91.8, 95.5, 99.1, 102.8),
        34: (94.6, 99.1, 103.6, 108.0, 112.5, 117.0, 121.4),
        40: (97.2, 103.4, 109.6, 115.8, 122.0, 128.2, 134.4),
    },
    "ac": {
        14: (68.2, 72.4, 76.5, 80.6, 84.7, 88.9, 93.0),
        20: (124.8, 132.5, 140.1, 147.7, 155.4, 163.0, 170.6),
        28: (199.4, 210.7, 222.0, 233.3, 244.6, 255.9, 267.2),
        34: (248.3, 263.4, 278.5, 293.6, 308.7, 323.9, 339.0),
        40: (282.6, 305.0, 327.4, 349.8, 372.2, 394.6, 417.1),
    },
    "fl": {
        14: (8.6, 10.1, 11.6, 13.1, 14.6, 16.1, 17.7),
        20: (26.0, 27.7, 29.5, 31.3, 33.1, 34.8, 36.6),
        28: (44.9, 47.0, 49.2, 51.3, 53.4, 55.5, 57.7),
        34: (55.5, 58.0, 60.5, 63.1, 65.6, 68.1, 70.7),
        40: (62.5, 65.7, 68.9, 72.1, 75.4, 78.6, 81.8),
    },
}

#: INTERGROWTH-21st AC centile table (3rd, 5th, 10th, 50th, 90th, 95th, 97th), mm, same source.
AC_CENTILE_TABLE = {
    14: (72.9, 73.8, 75.3, 80.6, 85.9, 87.4, 88.4),
    20: (133.4, 135.2, 138.0, 147.7, 157.5, 160.3, 162.1),
    28: (212.1, 214.7, 218.8, 233.3, 247.8, 251.9, 254.5),
    34: (265.2, 268.7, 274.3, 293.6, 313.0, 318.5, 322.0),
    40: (307.7, 312.9, 321.1, 349.8, 378.5, 386.7, 392.0),
}
TABLE_CENTILES = (3, 5, 10, 50, 90, 95, 97)

#: INTERGROWTH-21st standard for Hadlock's EFW, centiles (3rd..97th) in g at 18-41 weeks,
#: Stirnemann, Salomon & Papageorghiou, Ultrasound Obstet Gynecol 2020;56:946-948
#: (as tabulated in the R package gigs, data-raw/tables/ig_fet/ig_fet_hefwfga_centiles.txt).
EFW_CENTILE_TABLE = {
    18: (184, 187, 193, 216, 244, 253, 260),
    19: (224, 228, 235, 263, 297, 308, 316),
    20: (271, 276, 284, 318, 359, 372, 381),
    21: (324, 330, 341, 381, 430, 446, 457),
    22: (385, 392, 405, 454, 513, 532, 544),
    23: (453, 463, 478, 537, 607, 629, 645),
    24: (530, 541, 559, 630, 714, 740, 758),
    25: (616, 629, 650, 734, 834, 865, 887),
    26: (710, 726, 751, 851, 968, 1005, 1030),
    27: (813, 832, 862, 979, 1116, 1160, 1189),
    28: (925, 947, 982, 1119, 1279, 1330, 1364),
    29: (1046, 1072, 1113, 1272, 1457, 1515, 1554),
    30: (1175, 1205, 1252, 1435, 1649, 1716, 1760),
    31: (1312, 1346, 1400, 1610, 1854, 1930, 1981),
    32: (1455, 1494, 1556, 1795, 2072, 2158, 2216),
    33: (1604, 1648, 1718, 1988, 2300, 2397, 2462),
    34: (1757, 1807, 1885, 2189, 2538, 2646, 2719),
    35: (1913, 1968, 2056, 2394, 2782, 2902, 2983),
    36: (2070, 2131, 2228, 2602, 3031, 3163, 3251),
    37: (2226, 2293, 2400, 2811, 3280, 3425, 3522),
    38: (2379, 2453, 2569, 3017, 3527, 3684, 3789),
    39: (2527, 2607, 2733, 3217, 3768, 3937, 4051),
    40: (2667, 2753, 2888, 3409, 3999, 4180, 4302),
    41: (2798, 2889, 3034, 3588, 4217, 4409, 4538),
}

#: INTERGROWTH-21st CRL dating, 50th centile of GA (weeks+days) for a CRL (mm); Papageorghiou
#: et al., Ultrasound Obstet Gynecol 2014;44:641-648 (as tabulated in gigs, gafcrl table).
CRL_DATING_TABLE = {15: "8+3", 20: "8+6", 30: "9+6", 45: "11+1", 60: "12+3", 75: "13+4", 84: "14+2", 95: "15+0"}


# --------------------------------------------------------------------------- growth standards


@pytest.mark.parametrize("measure", growth.MEASURES)
def test_zscore_tables_reproduced_within_0_1_mm(measure):
    worst = 0.0
    for ga, row in ZSCORE_TABLES[measure].items():
        for z, published in zip(range(-3, 4), row):
            worst = max(worst, abs(growth.value_at_zscore(measure, ga, z) - published))
    assert worst < 0.1, f"{measure}: largest difference {worst:.3f} mm"


def test_hc_at_40_weeks_matches_references_check_values():
    assert [round(growth.value_at_zscore("hc", 40, z), 1) for z in (-3, 0, 3)] == [295.2, 333.9, 372.7]


def test_bpd_sd_constant_is_the_gigs_value():
    """0.101242 (gigs R/ig_fet.R), not 0.101252 (growthstandards): see growth's docstring.

    The published tables cannot tell the two apart (factor exp(1e-5) on the SD), so the SD
    is compared with the gigs equation, typed in from gigs, at a relative 1e-9."""
    for ga in (14.0, 20.0, 33.3, 40.0):
        log_ga = math.log(ga)
        gigs_sd = math.exp(
            0.101242 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * log_ga + 0.0000999638 * ga**3 * log_ga**2
        )
        assert growth.mean_sd("bpd", ga)[1] == pytest.approx(gigs_sd, rel=1e-9)


def test_ac_centile_table_reproduced():
    for ga, row in AC_CENTILE_TABLE.items():
        for c, published in zip(TABLE_CENTILES, row):
            assert growth.value_at_centile("ac", ga, c) == pytest.approx(published, abs=0.1)


def test_zscore_and_centile_are_consistent():
    mean, sd = growth.mean_sd("HC_mm", 28)
    assert growth.zscore("hc", mean + sd, 28) == pytest.approx(1.0)
    assert growth.centile("hc", mean, 28) == pytest.approx(50.0)
    assert growth.centile("hc", mean - 1.2815516 * sd, 28) == pytest.approx(10.0, abs=1e-4)
    value = growth.value_at_centile("fl", 31.5, 97)
    assert growth.centile("fl", value, 31.5) == pytest.approx(97.0)


@pytest.mark.parametrize("ga", [13.99, 40.01, 8.0, 42.0])
def test_ga_outside_14_to_40_weeks_is_a_clear_error(ga):
    with pytest.raises(OutOfRangeError, match="14-40 weeks"):
        growth.centile("hc", 200.0, ga)


def test_growth_rejects_bad_inputs():
    with pytest.raises(growth.UnknownMeasureError, match="hc, bpd, ofd, ac, fl"):
        growth.zscore("crl", 50.0, 20)
    for bad in (-1.0, 0.0, math.nan, "abc"):
        with pytest.raises(ValueError):
            growth.zscore("hc", bad, 20)
    for bad in (0, 100, -5):
        with pytest.raises(ValueError, match="strictly between 0 and 100"):
            growth.value_at_centile("hc", 20, bad)
    with pytest.raises(ValueError, match="number of weeks"):
        growth.mean_sd("hc", "twenty")


@pytest.mark.parametrize(
    "bad, match",
    [
        (True, "boolean"),
        ("175", "text"),
        (None, "number of mm"),
        (float("inf"), "finite"),
        (10**400, "cannot be used as a number"),
        ([175.0], "number of mm"),
    ],
)
def test_lengths_must_be_real_numbers(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        growth.zscore("hc", bad, 20)
    with pytest.raises(InvalidInputError, match=match):
        dating.ga_from_hc_hadlock(bad)
    with pytest.raises(InvalidInputError, match=match):
        efw.hadlock_efw_g(bad, 95.0, 100.0)
    if bad is not None:  # None means "not measured" in the summary
        with pytest.raises(InvalidInputError, match=match):
            clinical_summary(hc_mm=bad, ga_weeks=20)


@pytest.mark.parametrize("bad, match", [(True, "boolean"), ("20", "text"), (float("nan"), "finite")])
def test_ages_must_be_real_numbers(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        clinical_summary(hc_mm=175.0, ga_weeks=bad)
    with pytest.raises(InvalidInputError, match=match):
        growth.centile("hc", 175.0, bad)
    with pytest.raises(InvalidInputError, match=match):
        efw.efw_centile(300.0, bad)
    with pytest.raises(InvalidInputError, match=match):
        dating.weeks_days(bad)


def test_numpy_numbers_are_numbers():
    import numpy as np

    assert growth.zscore("hc", np.float32(172.5), np.int64(20)) == pytest.approx(
        growth.zscore("hc", 172.5, 20), abs=1e-5
    )
    with pytest.raises(InvalidInputError, match="boolean"):
        growth.zscore("hc", np.bool_(True), 20)


# --------------------------------------------------------------------------- dating


def test_hadlock_dating_check_value_and_range():
    assert dating.ga_from_hc_hadlock(250.0) == pytest.approx(27.15, abs=0.005)
    for hc in (50.0, 400.0):
        with pytest.raises(OutOfRangeError, match="Hadlock"):
            dating.ga_from_hc_hadlock(hc)


def test_intergrowth_hc_dating_check_values_and_range():
    assert round(dating.ga_from_hc_intergrowth(175.0), 1) == 20.2
    # 250 mm -> 189.8 days is the published check value, beyond the documented 98-181 days.
    assert dating.ga_from_hc_intergrowth(250.0, extrapolate=True) * 7 == pytest.approx(189.8, abs=0.05)
    with pytest.raises(OutOfRangeError, match="98-181 days"):
        dating.ga_from_hc_intergrowth(250.0)
    with pytest.raises(OutOfRangeError):
        dating.ga_from_hc_intergrowth(60.0)


def test_huge_hc_is_out_of_range_not_an_overflow():
    # HC 4800 mm made the INTERGROWTH formula overflow before its range was checked.
    for hc in (4800.0, 1e300):
        with pytest.raises(OutOfRangeError, match="dating formula's range"):
            dating.ga_from_hc_intergrowth(hc)
        with pytest.raises(OutOfRangeError, match="dating formula's range"):
            dating.ga_from_hc_hadlock(hc)
    with pytest.raises(OutOfRangeError, match="check the unit"):
        dating.ga_from_hc_intergrowth(4800.0, extrapolate=True)


def test_crl_dating_matches_published_table():
    for crl, published in CRL_DATING_TABLE.items():
        weeks, days = map(int, published.split("+"))
        assert dating.ga_from_crl(crl) * 7 == pytest.approx(weeks * 7 + days, abs=0.5)
    for crl in (10.0, 100.0):
        with pytest.raises(OutOfRangeError, match="15-95 mm"):
            dating.ga_from_crl(crl)


def test_ga_from_lmp():
    assert dating.ga_from_lmp(date(2024, 1, 1), date(2024, 7, 1)) == pytest.approx(26.0)
    assert dating.ga_from_lmp("2024-01-01", "2024-01-11") == pytest.approx(10 / 7)
    with pytest.raises(ValueError, match="before the LMP"):
        dating.ga_from_lmp("2024-05-01", "2024-04-01")
    with pytest.raises(OutOfRangeError, match="check the dates"):
        dating.ga_from_lmp("2022-01-01", "2024-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        dating.ga_from_lmp("01/02/2024", "2024-04-01")


def test_weeks_days_formatting():
    assert dating.weeks_days(27.15) == "27+1"
    assert dating.weeks_days(20.0) == "20+0"


def test_ga_source_rules():
    assert dating.check_ga_source("LMP") == "lmp"
    assert dating.check_ga_source(None) is None
    with pytest.raises(CircularDatingError, match="not estimated from the same head"):
        dating.check_ga_source("hc")
    with pytest.raises(ValueError, match="unknown GA source"):
        dating.check_ga_source("guess")


# --------------------------------------------------------------------------- EFW


def test_hadlock_efw_check_value():
    # gigs::hadlock_efw(headcirc_cm = 12, abdocirc_cm = 9.5, femurlen_cm = 10) -> 1382.929
    assert efw.hadlock_efw_g(120.0, 95.0, 100.0) == pytest.approx(1382.929, abs=0.01)


def test_hadlock_efw_of_intergrowth_medians_is_near_the_efw_median():
    """Cross-check of two independent publications (and of the mm -> cm conversion)."""
    for ga in (20, 28, 36, 40):
        medians = [growth.mean_sd(m, ga)[0] for m in ("hc", "ac", "fl")]
        assert efw.hadlock_efw_g(*medians) == pytest.approx(efw.efw_at_centile(ga, 50), rel=0.02)


def test_efw_standard_reproduces_published_table():
    worst = 0.0
    for ga, row in EFW_CENTILE_TABLE.items():
        for c, published in zip(TABLE_CENTILES, row):
            worst = max(worst, abs(efw.efw_at_centile(ga, c) - published))
    assert worst <= 0.5 + 1e-6, f"largest difference {worst:.2f} g"


def test_efw_centile_inverts_efw_at_centile():
    assert efw.efw_centile(efw.efw_at_centile(33.3, 7.0), 33.3) == pytest.approx(7.0)
    assert efw.efw_zscore(efw.efw_at_zscore(25.0, -1.5), 25.0) == pytest.approx(-1.5)


def test_efw_at_zscore_refuses_nan_and_huge_z():
    with pytest.raises(InvalidInputError, match="finite"):
        efw.efw_at_zscore(30, math.nan)  # returned NaN
    with pytest.raises(OutOfRangeError):
        efw.efw_at_zscore(30, 1e6)
    with pytest.raises(InvalidInputError, match="boolean"):
        efw.efw_at_zscore(30, True)


def test_efw_bad_input():
    for ga in (17.9, 41.1):
        with pytest.raises(OutOfRangeError, match="18-41 weeks"):
            efw.efw_centile(1000.0, ga)
    with pytest.raises(OutOfRangeError, match="unit"):
        efw.hadlock_efw_g(25.0, 23.0, 5.0)  # cm passed as mm
    with pytest.raises(ValueError):
        efw.efw_zscore(-10.0, 30)


# --------------------------------------------------------------------------- flags


def _codes(found):
    return [flag.code for flag in found]


def test_head_size_flag_thresholds():
    assert _codes(flags.head_size_flags(-3.0)) == ["microcephaly"]
    assert flags.head_size_flags(-3.5)[0].severity == "alert"
    assert _codes(flags.head_size_flags(-2.0)) == ["small_head"]
    assert _codes(flags.head_size_flags(-1.99)) == []
    assert _codes(flags.head_size_flags(2.0)) == []
    assert _codes(flags.head_size_flags(2.01)) == ["macrocephaly"]
    assert flags.head_size_flags(None) == []


def test_growth_and_macrosomia_flag_thresholds():
    assert _codes(flags.growth_flags(9.9, None)) == ["sga_ac"]
    assert _codes(flags.growth_flags(10.0, 10.0)) == []
    assert _codes(flags.growth_flags(2.9, 5.0)) == ["severe_sga_ac", "sga_efw"]
    assert _codes(flags.growth_flags(90.0, 90.1)) == ["lga_efw"]
    assert _codes(flags.macrosomia_flags(4000.0)) == []
    assert [(f.code, f.severity) for f in flags.macrosomia_flags(4001.0)] == [("macrosomia", "warning")]
    assert flags.macrosomia_flags(4600.0)[0].severity == "alert"


def test_head_shape_flags():
    assert _codes(flags.head_shape_flags(60.0, 85.0)) == ["dolichocephaly"]  # CI 70.6
    assert _codes(flags.head_shape_flags(75.0, 85.0)) == ["brachycephaly"]  # CI 88.2
    assert _codes(flags.head_shape_flags(66.0, 85.0)) == []  # CI 77.6


def test_flag_rejects_unknown_severity():
    with pytest.raises(InvalidInputError, match="severity"):
        flags.Flag("x", "fatal", "no")


def test_flag_functions_refuse_what_is_not_a_z_or_centile():
    for bad in ("-3", True, math.nan):
        with pytest.raises(InvalidInputError):
            flags.head_size_flags(bad)
    with pytest.raises(InvalidInputError, match="between 0 and 100"):
        flags.growth_flags(120.0, None)
    with pytest.raises(InvalidInputError, match="positive"):
        flags.head_shape_flags(60.0, 0.0)


# --------------------------------------------------------------------------- clinical summary


def test_hc_alone_gives_estimated_ga_and_no_centile():
    summary = clinical_summary(hc_mm=250.0)
    assert summary["ga_hadlock_weeks"] == pytest.approx(27.15)
    assert summary["ga_intergrowth_weeks"] is None  # beyond its 98-181 days
    assert any("INTERGROWTH-21st dating formula's range" in note for note in summary["notes"])
    assert any("no centile" in note for note in summary["notes"])
    placement_keys = {f"{m}_{kind}" for m in (*growth.MEASURES, "efw") for kind in ("z", "centile")}
    assert not placement_keys & set(summary)  # no centile keys at all without an independent GA
    assert summary["flags"] == []
    json.dumps(summary)  # JSON-ready


def test_second_trimester_hc_gets_both_estimates():
    summary = clinical_summary(hc_mm=175.0)
    assert summary["ga_intergrowth_weeks"] == pytest.approx(20.22, abs=0.01)
    assert summary["ga_hadlock_weeks"] == pytest.approx(dating.ga_from_hc_hadlock(175.0), abs=0.01)


def test_independent_ga_gives_centiles_and_flags():
    ga = 28.0
    hc = growth.value_at_zscore("hc", ga, -3.2)
    ac = growth.value_at_centile("ac", ga, 5.0)
    summary = clinical_summary(hc_mm=hc, ac_mm=ac, fl_mm=51.3, ga_weeks=ga, ga_source="lmp")
    assert summary["hc_z"] == pytest.approx(-3.2, abs=0.005)
    assert summary["ac_centile"] == pytest.approx(5.0, abs=0.05)
    assert summary["fl_centile"] == pytest.approx(50.0, abs=1.0)
    assert summary["bpd_centile"] is None
    weight = efw.hadlock_efw_g(hc, ac, 51.3)
    assert summary["efw_g"] == pytest.approx(weight, abs=0.5)
    assert summary["efw_centile"] == pytest.approx(efw.efw_centile(weight, ga), abs=0.05)
    codes = [flag["code"] for flag in summary["flags"]]
    assert "microcephaly" in codes and "sga_ac" in codes
    assert summary["notes"] == []


def test_the_same_hc_cannot_date_itself():
    with pytest.raises(CircularDatingError):
        clinical_summary(hc_mm=250.0, ga_weeks=27.15, ga_source="hc")


def test_ga_source_not_stated_is_noted():
    summary = clinical_summary(hc_mm=260.4, ga_weeks=28.0)
    assert summary["hc_centile"] == pytest.approx(50.0, abs=0.5)  # 260.4 mm: the published mean
    assert any("GA source not stated" in note for note in summary["notes"])


def test_ga_outside_the_standard_gives_no_centile_but_a_note():
    summary = clinical_summary(hc_mm=340.0, ac_mm=360.0, fl_mm=75.0, ga_weeks=41.0, ga_source="crl")
    assert summary["hc_centile"] is None and summary["ac_centile"] is None
    assert any("14-40 weeks" in note for note in summary["notes"])
    assert summary["efw_centile"] is not None  # the EFW standard covers 18-41 weeks


def test_macrosomia_needs_no_ga():
    summary = clinical_summary(hc_mm=350.0, ac_mm=400.0, fl_mm=78.0)
    assert summary["efw_g"] > 4000
    assert [flag["code"] for flag in summary["flags"]] == ["macrosomia"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hc_mm=-5.0), "positive"),
        (dict(hc_mm=200.0, ga_weeks=50.0), "between 0 and 45"),
        (dict(hc_mm=200.0, ga_weeks=20.0, ga_source="guess"), "unknown GA source"),
        (dict(ac_mm="big"), "number of mm"),
    ],
)
def test_summary_bad_input_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clinical_summary(**kwargs)


def test_summary_keys_are_stable():
    without_ga = {
        "ga_weeks",
        "ga_source",
        "ga_hadlock_weeks",
        "ga_intergrowth_weeks",
        "efw_g",
        "plausibility",
        "flags",
        "notes",
        "standards",
    }
    with_ga = (
        without_ga | {"efw_z", "efw_centile"} | {f"{m}_{kind}" for m in growth.MEASURES for kind in ("z", "centile")}
    )
    assert set(clinical_summary().keys()) == without_ga
    assert set(clinical_summary(hc_mm=200.0).keys()) == without_ga
    assert set(clinical_summary(hc_mm=200.0, ga_weeks=22, ga_source="lmp").keys()) == with_ga
    assert assess.STANDARDS["growth"].startswith("INTERGROWTH-21st")
