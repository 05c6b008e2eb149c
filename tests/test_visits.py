"""clinical.visits: exams per pregnancy in SQLite, trajectories, centile-drop warnings."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import create_engine, text

from fetometry.clinical import efw, growth, visits
from fetometry.clinical.dating import CircularDatingError
from fetometry.clinical.visits import TrajectoryPoint, VisitStore, VisitStoreError

START = date(2024, 3, 1)  # the first exam, at 20+0 weeks


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'visits.db'}"


@pytest.fixture
def store(url):
    with VisitStore(url) as opened:
        yield opened


def _add_at(store, ga_weeks, measurements, pregnancy="P-001", **kwargs):
    when = START + timedelta(days=round((ga_weeks - 20.0) * 7))
    return store.add_exam(pregnancy, when, ga_weeks, measurements, ga_source="crl", **kwargs)


def _ac_at(ga, centile):
    return growth.value_at_centile("ac", ga, centile)


def test_exams_round_trip_and_persist(store, url):
    first = _add_at(store, 20.0, {"hc_mm": 175.0, "AC": 150.0}, model="attention-unet")
    second = _add_at(store, 24.0, {"hc": 220.0})
    exams = store.exams("P-001")
    assert [e.id for e in exams] == [first, second]
    assert exams[0].measurements == {"hc": 175.0, "ac": 150.0}
    assert exams[0].exam_date == START and exams[0].ga_source == "crl" and exams[0].model == "attention-unet"
    assert exams[1].to_dict()["exam_date"] == (START + timedelta(days=28)).isoformat()
    store.close()
    with VisitStore(url) as reopened:  # stored on disk, not in memory
        assert [e.measurements for e in reopened.exams("P-001")] == [e.measurements for e in exams]
        assert reopened.pregnancies() == ["P-001"]


def test_trajectory_centiles_and_chart_points(store):
    _add_at(store, 20.0, {"ac": _ac_at(20.0, 40.0), "hc": 172.5, "fl": 31.3})
    _add_at(store, 28.0, {"ac": _ac_at(28.0, 45.0), "hc": 260.4, "fl": 51.3})
    store.add_exam("P-001", START + timedelta(days=84), None, {"ac": 250.0})  # GA unknown
    points = store.trajectory("P-001", "ac")
    assert [p.centile is None for p in points] == [False, False, True]
    assert points[0].centile == pytest.approx(40.0) and points[1].centile == pytest.approx(45.0)
    assert store.chart_points("P-001", "AC_mm") == [(20.0, points[0].value), (28.0, points[1].value)]
    efw_points = store.trajectory("P-001", "efw")
    assert len(efw_points) == 2
    assert efw_points[1].value == pytest.approx(efw.hadlock_efw_g(260.4, _ac_at(28.0, 45.0), 51.3))
    assert efw_points[1].centile == pytest.approx(efw.efw_centile(efw_points[1].value, 28.0))


def test_lines_crossed_down_definition():
    assert visits.lines_crossed_down(60.0, 20.0) == (25.0, 50.0)
    assert visits.lines_crossed_down(55.0, 30.0) == (50.0,)
    assert visits.lines_crossed_down(75.0, 50.0) == (75.0,)  # 50 itself is not below 50
    assert visits.lines_crossed_down(80.0, 10.0) == (25.0, 50.0, 75.0)
    assert visits.lines_crossed_down(20.0, 60.0) == ()  # rising


def test_centile_drop_across_two_quartiles_warns(store):
    first = _add_at(store, 20.0, {"ac": _ac_at(20.0, 60.0)})
    second = _add_at(store, 24.0, {"ac": _ac_at(24.0, 55.0)})  # 60 -> 55: no line crossed
    third = _add_at(store, 28.0, {"ac": _ac_at(28.0, 5.0)})  # 60 -> 5: a fall of 55 points, over two quartiles
    warnings = store.warnings("P-001")
    assert len(warnings) == 1
    warning = warnings[0]
    assert (warning["code"], warning["measure"]) == ("centile_drop", "ac")
    # Gordijn 2016: measured from the highest earlier exam, not only the previous one.
    assert (warning["from_exam_id"], warning["to_exam_id"]) == (first, third)
    assert warning["lines_crossed"] == [25.0, 50.0]
    assert second not in (warning["from_exam_id"], warning["to_exam_id"])


def test_one_quartile_or_rising_does_not_warn(store):
    _add_at(store, 20.0, {"hc": growth.value_at_centile("hc", 20.0, 60.0)})
    _add_at(store, 24.0, {"hc": growth.value_at_centile("hc", 24.0, 40.0)})  # crosses 50 only
    _add_at(store, 28.0, {"hc": growth.value_at_centile("hc", 28.0, 90.0)})  # rising
    assert store.warnings("P-001") == []


def test_exams_without_centile_are_skipped_when_comparing():
    points = [
        TrajectoryPoint(1, START, 20.0, 150.0, 70.0),
        TrajectoryPoint(2, START, None, 160.0, None),
        TrajectoryPoint(3, START, 28.0, 200.0, 15.0),
    ]
    warnings = visits.centile_drop_warnings("ac", points)
    assert [(w["from_exam_id"], w["to_exam_id"]) for w in warnings] == [(1, 3)]


def test_failed_insert_leaves_nothing_half_stored(store, monkeypatch):
    # Let a negative value past the Python checks so that the DATABASE rejects the second
    # measurement row after the exam row and the first measurement were written.
    monkeypatch.setattr(visits, "_check_measurements", lambda m: {"hc": 250.0, "ac": -5.0})
    with pytest.raises(VisitStoreError, match="nothing was written"):
        _add_at(store, 27.0, {"hc": 250.0, "ac": -5.0})
    assert store.exams("P-001") == []
    assert store.pregnancies() == []
    engine = create_engine(store.url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM exam_measurements")).scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("pregnancy", ["Jane Doe", "", "a" * 65, "../etc", "id;drop"])
def test_pregnancy_ids_must_be_opaque_codes(store, pregnancy):
    with pytest.raises(VisitStoreError, match="opaque code"):
        store.add_exam(pregnancy, START, 20.0, {"hc": 175.0})


@pytest.mark.parametrize(
    "measurements, match",
    [
        ({}, "non-empty"),
        ({"crl": 45.0}, "unknown measure"),
        ({"hc": -1.0}, "positive"),
        ({"hc": True}, "positive"),
        ({"hc": "big"}, "positive"),
        ({"hc": 170.0, "hc_mm": 171.0}, "twice"),
    ],
)
def test_bad_measurements_are_refused(store, measurements, match):
    with pytest.raises(VisitStoreError, match=match):
        store.add_exam("P-001", START, 20.0, measurements)
    assert store.exams("P-001") == []


def test_dating_rules(store):
    with pytest.raises(CircularDatingError):
        store.add_exam("P-001", START, 20.0, {"hc": 175.0}, ga_source="hc")
    with pytest.raises(VisitStoreError, match="between 0 and 45"):
        store.add_exam("P-001", START, 60.0, {"hc": 175.0})
    _add_at(store, 20.0, {"hc": 175.0})
    # Four weeks later on the calendar but dated 30 weeks: two datings for one pregnancy.
    with pytest.raises(VisitStoreError, match="one pregnancy keeps one dating"):
        store.add_exam("P-001", START + timedelta(days=28), 30.0, {"hc": 280.0}, ga_source="lmp")
    assert len(store.exams("P-001")) == 1
    _add_at(store, 24.0 + 3 / 7, {"hc": 225.0})  # within the 7-day tolerance
    assert len(store.exams("P-001")) == 2


def test_delete_pregnancy_erases_everything(store):
    _add_at(store, 20.0, {"hc": 175.0, "ac": 150.0})
    _add_at(store, 24.0, {"hc": 220.0}, pregnancy="P-002")
    assert store.delete_pregnancy("P-001") == 1
    assert store.exams("P-001") == [] and store.pregnancies() == ["P-002"]
    engine = create_engine(store.url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM exam_measurements")).scalar() == 1
    engine.dispose()
