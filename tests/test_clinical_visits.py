"""The centile-drop rule is the consensus definition (Gordijn et al., Ultrasound Obstet Gynecol
2016;48:333-339): AC or EFW "crossing centiles by >two quartiles", i.e. a fall of more than 50
centile points since ANY earlier exam; with AC/EFW < 10th centile at >= 32 weeks, two of the
three contributory parameters of late FGR."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fetometry.clinical import growth, visits
from fetometry.clinical.inputs import InvalidInputError
from fetometry.clinical.visits import TrajectoryPoint, VisitStore

START = date(2024, 3, 1)  # 20+0 weeks


@pytest.fixture
def store(tmp_path):
    with VisitStore(f"sqlite:///{tmp_path / 'visits.db'}") as opened:
        yield opened


def _points(*ga_centiles):
    return [
        TrajectoryPoint(i + 1, START + timedelta(days=round((ga - 20) * 7)), ga, 100.0, c)
        for i, (ga, c) in enumerate(ga_centiles)
    ]


def _add(store, ga, measurements, pregnancy="P-1"):
    when = START + timedelta(days=round((ga - 20.0) * 7))
    return store.add_exam(pregnancy, when, ga, measurements, ga_source="crl")


def _ac(ga, centile):
    return growth.value_at_centile("ac", ga, centile)


@pytest.mark.parametrize(
    "earlier, later, expected",
    [
        (75.1, 24.9, True),  # 50.2 points: more than two quartiles
        (70.0, 15.0, True),  # 55 points, though only two quartile lines (50, 25) are crossed
        (80.0, 5.0, True),
        (74.9, 25.1, False),  # 49.8 points: less than two quartiles (one line crossed)
        (75.0, 25.0, False),  # exactly two quartiles is not MORE than two
        (60.0, 20.0, False),  # 40 points, though two lines are crossed: the old rule's false positive
        (55.0, 30.0, False),
        (20.0, 90.0, False),  # rising
    ],
)
def test_crossing_more_than_two_quartiles(earlier, later, expected):
    assert visits.crosses_two_quartiles(earlier, later) is expected


def test_the_drift_80_55_30_5_is_caught_over_any_earlier_exam():
    points = _points((20, 80.0), (25, 55.0), (30, 30.0), (34, 5.0))
    # No two consecutive exams differ by more than 25 points, nor any two exams 2 apart by more than 50.
    warnings = visits.centile_drop_warnings("ac", points)
    assert [(w["from_exam_id"], w["to_exam_id"]) for w in warnings] == [(1, 4)]
    warning = warnings[0]
    assert warning["centile_fall"] == 75.0 and warning["quartiles_fallen"] == 3.0
    assert warning["lines_crossed"] == [25.0, 50.0, 75.0]
    assert warning["fgr_criterion"] is True  # AC, later exam at >= 32 weeks
    assert "more than two quartiles" in warning["message"]


def test_the_fall_is_measured_from_the_highest_earlier_centile():
    points = _points((20, 60.0), (24, 90.0), (28, 70.0), (30, 30.0))
    warnings = visits.centile_drop_warnings("hc", points)
    assert [(w["from_exam_id"], w["to_exam_id"], w["fgr_criterion"]) for w in warnings] == [(2, 4, False)]


def test_negative_cases_do_not_warn():
    assert visits.centile_drop_warnings("ac", _points((20, 74.9), (30, 25.1))) == []
    assert visits.centile_drop_warnings("ac", _points((20, 75.0), (30, 25.0))) == []
    assert visits.centile_drop_warnings("ac", _points((20, 5.0), (30, 80.0))) == []
    assert visits.centile_drop_warnings("ac", _points((20, 80.0))) == []
    # An exam without a centile is skipped, not treated as a fall.
    points = _points((20, 80.0), (25, 60.0)) + [TrajectoryPoint(9, START, None, 10.0, None)]
    assert visits.centile_drop_warnings("ac", points) == []


def test_store_drift_with_a_small_ac_meets_two_late_fgr_criteria(store):
    ids = [_add(store, ga, {"ac": _ac(ga, c)}) for ga, c in ((20, 80.0), (25, 55.0), (30, 30.0), (34, 5.0))]
    warnings = store.warnings("P-1")
    codes = [w["code"] for w in warnings]
    assert codes == ["centile_drop", "late_fgr_criteria"]
    drop, late = warnings
    assert (drop["from_exam_id"], drop["to_exam_id"]) == (ids[0], ids[3]) and drop["fgr_criterion"]
    assert late["severity"] == "alert" and late["exam_id"] == ids[3]
    assert "two of the three contributory parameters" in late["message"] and "Doppler" in late["message"]


def test_store_crossing_before_32_weeks_is_no_late_fgr_criterion(store):
    for ga, c in ((20, 90.0), (26, 60.0), (30, 5.0)):
        _add(store, ga, {"ac": _ac(ga, c)})
    warnings = store.warnings("P-1")
    assert [(w["code"], w["fgr_criterion"]) for w in warnings] == [("centile_drop", False)]


def test_store_crossing_without_smallness_is_one_criterion_only(store):
    for ga, c in ((20, 95.0), (34, 30.0)):
        _add(store, ga, {"ac": _ac(ga, c)})
    assert [w["code"] for w in store.warnings("P-1")] == ["centile_drop"]


def test_store_74_9_to_25_1_does_not_warn(store):
    _add(store, 20, {"ac": _ac(20, 74.9)})
    _add(store, 34, {"ac": _ac(34, 25.1)})
    assert store.warnings("P-1") == []


def test_an_implausible_exam_value_makes_no_centile_drop(store):
    _add(store, 20, {"ac": _ac(20, 60.0)})
    _add(store, 34, {"ac": _ac(34, 50.0) / 10.0})  # typed in cm
    points = store.trajectory("P-1", "ac")
    assert points[1].centile is None
    assert store.warnings("P-1") == []


@pytest.mark.parametrize("args", [("a", 10.0), (True, 10.0), (50.0, float("nan")), (120.0, 10.0), (None, 3.0)])
def test_helpers_refuse_bad_centiles(args):
    with pytest.raises(InvalidInputError):
        visits.crosses_two_quartiles(*args)
    with pytest.raises(InvalidInputError):
        visits.lines_crossed_down(*args)


def test_centile_drop_warnings_refuses_bad_points():
    with pytest.raises(InvalidInputError, match="TrajectoryPoint"):
        visits.centile_drop_warnings("ac", [{"centile": 50.0}])
    with pytest.raises(InvalidInputError, match="centile"):
        visits.centile_drop_warnings("ac", _points((20, 150.0)))
