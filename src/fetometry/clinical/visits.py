"""Growth over visits: exams stored per pregnancy, trajectories and centile-drop warnings.

Storage
-------
SQLAlchemy, SQLite by default (``VisitStore()`` uses ``~/.fetometry/visits.db``); any
SQLAlchemy URL works, e.g. ``postgresql+psycopg://user@host/db``. Two tables: ``exams``
(one row per scan) and ``exam_measurements`` (one row per measure). An exam and its
measurements are written in ONE transaction: a failure leaves nothing half-stored.

Privacy: nothing identifies a patient. A pregnancy is an opaque id chosen by the user
(letters, digits, ``.``, ``_``, ``-``; no spaces, so that names are not typed in by
habit); there are no free-text fields. ``delete_pregnancy`` erases a pregnancy.

Dating: a stored GA must be independent of the scan (LMP, CRL, known date, earlier
scan); HC-derived GAs are refused. The GAs of one pregnancy must advance with the
calendar: a new exam whose GA disagrees with an earlier exam's GA plus the days between
them by more than ``DATING_TOLERANCE_DAYS`` is refused (re-date the pregnancy first).

Centile-drop warning: the consensus definition, exactly
-------------------------------------------------------
Source: Gordijn SJ, Beune IM, Thilaganathan B, et al. Consensus definition of fetal
growth restriction: a Delphi procedure. Ultrasound Obstet Gynecol 2016;48:333-339.
doi:10.1002/uog.15884. Its abstract (the wording implemented here; the full text's
table could not be read from this project):

    "For early FGR (<32 weeks), three solitary parameters (abdominal circumference
    (AC) <3rd centile, estimated fetal weight (EFW) <3rd centile and absent
    end-diastolic flow in the umbilical artery (UA)) and four contributory parameters
    (AC or EFW <10th centile combined with a pulsatility index (PI) >95th centile in
    either the UA or uterine artery) were agreed upon. For late FGR (>=32 weeks), two
    solitary parameters (AC or EFW <3rd centile) and four contributory parameters (EFW
    or AC <10th centile, AC or EFW crossing centiles by >two quartiles on growth charts
    and cerebroplacental ratio <5th centile or UA-PI >95th centile) were defined."

The late-FGR definition needs either solitary parameter, or at least two of the three
contributory groups (AC/EFW <10th centile; AC/EFW crossing centiles by more than two
quartiles; CPR <5th centile or UA-PI >95th centile), in the absence of congenital
anomalies. Centile crossing is not a criterion of early FGR.

"Crossing centiles by >two quartiles", made precise: a quartile is a quarter of the
centile scale, 25 centile points, so the centile must FALL BY MORE THAN 50 POINTS:
``earlier - later > 50``. "By" names the amount crossed, not a count of lines passed:
counting the quartile lines 25/50/75 makes a fall of 40 points (60th -> 20th) count
and a fall of 49.8 points (74.9th -> 25.1st) not, depending only on where the fall
starts. Requiring more than two of the three lines (from >= 75th to < 25th)
would be a stricter reading that ignores falls such as 70th -> 15th (55 points). A fall
of exactly 50 points (75th -> 25th) is two quartiles, not more, and does not count.
Only falls count (the criterion is about growth restriction).

"Over time", not "between consecutive scans": the fall is measured from EVERY earlier
exam with a centile, so a drift 80 -> 55 -> 30 -> 5 (25 points per interval) is caught
between the first and the last exam (75 points). For each later exam the warning names
the earlier exam with the highest centile (the largest fall). The rule is applied to
AC and EFW (the consensus' measures, flagged ``fgr_criterion`` when the later exam is
at >= 32 weeks) and, as a review signal with the same definition, to HC, BPD, OFD and
FL. Centiles are INTERGROWTH-21st (a non-customised standard).

``late_fgr_criteria`` (alert): at an exam at >= 32 weeks, AC or EFW below the 10th
centile AND an AC or EFW crossing as above: two of the three contributory groups of late
FGR. The third (Doppler: CPR, UA-PI) is not measured by fetometry, and neither are
congenital anomalies: a missing warning rules nothing out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from fetometry.clinical import dating, efw, growth, plausibility
from fetometry.clinical.growth import MEASURES
from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError, number

#: Quartile lines of the centile scale (reported with each warning; see the module doc).
QUARTILE_LINES = (25.0, 50.0, 75.0)
#: One quartile of the centile scale, in centile points.
QUARTILE_CENTILES = 25.0
#: "Crossing centiles by >two quartiles" (Gordijn 2016): a fall of MORE than this.
CROSSING_FALL_CENTILES = 2 * QUARTILE_CENTILES
#: Late FGR is defined from 32+0 weeks (Gordijn 2016).
LATE_FGR_WEEKS = 32.0
#: AC or EFW below this centile is a contributory parameter of late FGR (Gordijn 2016).
LATE_FGR_SMALL_CENTILE = 10.0
#: The consensus definition's measures (AC and the EFW).
FGR_MEASURES = ("ac", "efw")
#: Largest disagreement (days) between stored GAs and the calendar within one pregnancy.
DATING_TOLERANCE_DAYS = 7.0
#: Trajectory measures: the growth-standard measures plus the Hadlock EFW.
TRAJECTORY_MEASURES = (*MEASURES, "efw")

_PREGNANCY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class VisitStoreError(InvalidInputError):
    """An exam cannot be stored or read as asked (bad id, dates or measurements)."""


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class _ExamRow(_Base):
    __tablename__ = "exams"
    __table_args__ = (CheckConstraint("ga_weeks IS NULL OR (ga_weeks > 0 AND ga_weeks <= 45)", name="ga_plausible"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pregnancy_id: Mapped[str] = mapped_column(String(64), index=True)
    exam_date: Mapped[date] = mapped_column(Date)
    ga_weeks: Mapped[float | None] = mapped_column(Float, nullable=True)
    ga_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    measurements: Mapped[list[_MeasurementRow]] = relationship(
        back_populates="exam", cascade="all, delete-orphan", order_by="_MeasurementRow.measure"
    )


class _MeasurementRow(_Base):
    __tablename__ = "exam_measurements"
    __table_args__ = (
        UniqueConstraint("exam_id", "measure", name="one_value_per_measure"),
        CheckConstraint("value_mm > 0", name="value_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id", ondelete="CASCADE"), index=True)
    measure: Mapped[str] = mapped_column(String(8))
    value_mm: Mapped[float] = mapped_column(Float)
    exam: Mapped[_ExamRow] = relationship(back_populates="measurements")


# ---------------------------------------------------------------------------------------
# Plain results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exam:
    """One stored exam; ``measurements`` maps 'hc', 'ac', ... to mm."""

    id: int
    pregnancy_id: str
    exam_date: date
    ga_weeks: float | None
    ga_source: str | None
    model: str | None
    measurements: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "pregnancy_id": self.pregnancy_id,
            "exam_date": self.exam_date.isoformat(),
            "ga_weeks": self.ga_weeks,
            "ga_source": self.ga_source,
            "model": self.model,
            "measurements": dict(self.measurements),
        }


@dataclass(frozen=True)
class TrajectoryPoint:
    """A measure at one exam; ``centile`` is None without a GA inside the standard."""

    exam_id: int
    exam_date: date
    ga_weeks: float | None
    value: float
    centile: float | None


# ---------------------------------------------------------------------------------------
# Pure helpers (no database)
# ---------------------------------------------------------------------------------------


def _centile_value(value: object, name: str) -> float:
    checked = number(value, name, "centile points")
    if not 0.0 <= checked <= 100.0:
        raise InvalidInputError(f"{name} must be between 0 and 100, got {value!r}")
    return checked


def lines_crossed_down(earlier_centile: float, later_centile: float) -> tuple[float, ...]:
    """Quartile lines L with earlier >= L > later (crossed downwards)."""
    earlier = _centile_value(earlier_centile, "earlier centile")
    later = _centile_value(later_centile, "later centile")
    return tuple(line for line in QUARTILE_LINES if earlier >= line > later)


def crosses_two_quartiles(earlier_centile: float, later_centile: float) -> bool:
    """True when the centile FELL by more than two quartiles (> 50 centile points).

    Gordijn et al. 2016, "AC or EFW crossing centiles by >two quartiles on growth
    charts"; why a fall in points and not a count of lines: the module docstring.
    """
    earlier = _centile_value(earlier_centile, "earlier centile")
    later = _centile_value(later_centile, "later centile")
    return earlier - later > CROSSING_FALL_CENTILES


def _placed_points(points: list[TrajectoryPoint]) -> list[TrajectoryPoint]:
    """The points that have a centile (and so a GA), checked, in GA order."""
    if not isinstance(points, (list, tuple)):
        raise InvalidInputError(f"points must be a list of TrajectoryPoint, got {type(points).__name__}")
    placed = []
    for point in points:
        if not isinstance(point, TrajectoryPoint):
            raise InvalidInputError(f"points must be TrajectoryPoint objects, got {type(point).__name__} {point!r}")
        if point.centile is None:
            continue
        _centile_value(point.centile, "a point's centile")
        number(point.ga_weeks, "a point's GA", "weeks", positive=True)  # a centile needs a GA
        placed.append(point)
    return sorted(placed, key=lambda p: p.ga_weeks)


def centile_drop_warnings(measure: str, points: list[TrajectoryPoint]) -> list[dict]:
    """``centile_drop`` warnings: a fall by more than two quartiles since ANY earlier exam.

    One warning per later exam that has fallen by more than 50 centile points below an
    earlier exam, naming the earlier exam with the highest centile (see the module doc).
    """
    if not isinstance(measure, str):
        raise InvalidInputError(f"measure must be a name such as 'ac', got {measure!r}")
    placed = _placed_points(points)
    warnings = []
    for index, later in enumerate(placed):
        earlier_points = placed[:index]
        if not earlier_points:
            continue
        highest = max(earlier_points, key=lambda p: p.centile)
        if not crosses_two_quartiles(highest.centile, later.centile):
            continue
        fall = highest.centile - later.centile
        crossed = lines_crossed_down(highest.centile, later.centile)
        fgr_criterion = measure.lower() in FGR_MEASURES and later.ga_weeks >= LATE_FGR_WEEKS
        context = (
            "one of the contributory parameters of late fetal growth restriction (Gordijn 2016)"
            if fgr_criterion
            else "a review signal (the consensus uses AC and EFW crossing at 32 weeks or later)"
        )
        warnings.append(
            {
                "code": "centile_drop",
                "severity": "warning",
                "measure": measure,
                "from_exam_id": highest.exam_id,
                "to_exam_id": later.exam_id,
                "from_centile": round(highest.centile, 1),
                "to_centile": round(later.centile, 1),
                "centile_fall": round(fall, 1),
                "quartiles_fallen": round(fall / QUARTILE_CENTILES, 2),
                "lines_crossed": list(crossed),
                "fgr_criterion": fgr_criterion,
                "message": (
                    f"{measure.upper()} fell from the {highest.centile:.1f}th centile ({highest.exam_date}) to the "
                    f"{later.centile:.1f}th ({later.exam_date}): {fall:.1f} centile points, more than two quartiles; "
                    f"{context}. Review growth."
                ),
            }
        )
    return warnings


def _late_fgr_warnings(trajectories: dict[str, list[TrajectoryPoint]], drops: list[dict]) -> list[dict]:
    """``late_fgr_criteria`` alerts: two contributory parameters of late FGR at one exam.

    At an exam at >= 32 weeks: AC or EFW below the 10th centile, and an AC or EFW
    ``centile_drop`` ending at that exam (Gordijn 2016; see the module doc).
    """
    small: dict[int, list[str]] = {}
    exam_dates: dict[int, object] = {}
    for measure in FGR_MEASURES:
        for point in _placed_points(trajectories.get(measure, [])):
            if point.ga_weeks >= LATE_FGR_WEEKS and point.centile < LATE_FGR_SMALL_CENTILE:
                small.setdefault(point.exam_id, []).append(f"{measure.upper()} {point.centile:.1f}th centile")
                exam_dates[point.exam_id] = point.exam_date
    crossing: dict[int, list[str]] = {}
    for drop in drops:
        if drop.get("fgr_criterion"):
            crossing.setdefault(drop["to_exam_id"], []).append(
                f"{drop['measure'].upper()} {drop['from_centile']}th -> {drop['to_centile']}th"
            )
    found = []
    for exam_id in sorted(set(small) & set(crossing)):
        found.append(
            {
                "code": "late_fgr_criteria",
                "severity": "alert",
                "exam_id": exam_id,
                "below_10th": small[exam_id],
                "crossing": crossing[exam_id],
                "message": (
                    f"Exam of {exam_dates[exam_id]}: two of the three contributory parameters of the consensus "
                    f"definition of late fetal growth restriction are met (Gordijn 2016): AC/EFW below the 10th "
                    f"centile ({'; '.join(small[exam_id])}) and AC/EFW crossing centiles by more than two quartiles "
                    f"({'; '.join(crossing[exam_id])}). The definition applies in the absence of congenital "
                    "anomalies; Doppler (CPR, UA-PI) is not measured by fetometry. Assessment is advised."
                ),
            }
        )
    return found


def _trajectory_value(measure: str, values: dict[str, float]) -> float | None:
    """The stored value of a measure, or the Hadlock EFW computed from HC, AC and FL."""
    if measure != "efw":
        return values.get(measure)
    if not all(m in values for m in ("hc", "ac", "fl")):
        return None
    try:
        return efw.hadlock_efw_g(values["hc"], values["ac"], values["fl"])
    except OutOfRangeError:
        return None


def _implausible_at(measure: str, values: dict[str, float], ga_weeks: float) -> bool:
    """True when the measure (for EFW: HC, AC or FL) is implausible for the exam's GA."""
    inputs = ("hc", "ac", "fl") if measure == "efw" else (measure,)
    return any(
        plausibility.assess_measure(name, values[name], ga_weeks).status == plausibility.IMPLAUSIBLE
        for name in inputs
        if name in values
    )


def _trajectory_centile(
    measure: str, value: float, ga_weeks: float | None, values: dict[str, float] | None = None
) -> float | None:
    """Centile at an exam; None without a GA, outside the standard's GA range, or for an
    implausible value (a cm/mm mix-up must not look like a centile drop)."""
    if ga_weeks is None:
        return None
    if values is not None and _implausible_at(measure, values, ga_weeks):
        return None
    try:
        if measure == "efw":
            return efw.efw_centile(value, ga_weeks)
        return growth.centile(measure, value, ga_weeks)
    except OutOfRangeError:
        return None


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _check_pregnancy_id(pregnancy_id: str) -> str:
    text = str(pregnancy_id)
    if not _PREGNANCY_ID.fullmatch(text):
        raise VisitStoreError(
            f"pregnancy id {pregnancy_id!r} is not allowed: use an opaque code of 1-64 letters, digits, "
            "'.', '_' or '-' (no spaces, never a patient's name)"
        )
    return text


def _as_number(value: object) -> float:
    """float(value), or NaN for anything that is not a real number (bools included)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _check_measurements(measurements: dict[str, float]) -> dict[str, float]:
    if not isinstance(measurements, dict) or not measurements:
        raise VisitStoreError("measurements must be a non-empty dict such as {'hc_mm': 250.0}")
    checked: dict[str, float] = {}
    for key, value in measurements.items():
        try:
            measure = growth.check_measure(key)
        except growth.UnknownMeasureError as error:
            raise VisitStoreError(str(error)) from None
        if measure in checked:
            raise VisitStoreError(f"measure {measure!r} is given twice")
        number = _as_number(value)
        if not (math.isfinite(number) and number > 0):
            raise VisitStoreError(f"{key} must be a positive number of mm, got {value!r}")
        checked[measure] = number
    return checked


def _check_ga(ga_weeks: float | None, ga_source: str | None) -> tuple[float | None, str | None]:
    source = dating.check_ga_source(ga_source)
    if ga_weeks is None:
        return None, source
    ga = _as_number(ga_weeks)
    if not (math.isfinite(ga) and 0 < ga <= dating.MAX_GA_WEEKS):
        raise VisitStoreError(f"ga_weeks must be between 0 and {dating.MAX_GA_WEEKS:g}, got {ga_weeks!r}")
    return ga, source


def _check_dating_consistency(new_date: date, new_ga: float | None, earlier: list[_ExamRow]) -> None:
    if new_ga is None:
        return
    for row in earlier:
        if row.ga_weeks is None:
            continue
        expected = row.ga_weeks + (new_date - row.exam_date).days / 7.0
        if abs(expected - new_ga) * 7.0 > DATING_TOLERANCE_DAYS:
            raise VisitStoreError(
                f"GA {new_ga:.1f} weeks on {new_date} disagrees with exam {row.id} "
                f"({row.ga_weeks:.1f} weeks on {row.exam_date}, i.e. {expected:.1f} weeks on {new_date}); "
                "one pregnancy keeps one dating: fix the GA or the date"
            )


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


def default_url() -> str:
    """``sqlite:///~/.fetometry/visits.db`` (the folder is created when needed)."""
    folder = Path.home() / ".fetometry"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'visits.db'}"


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    """SQLite ignores ON DELETE CASCADE unless foreign keys are switched on per connection."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class VisitStore:
    """Exams per pregnancy in a SQL database (SQLite by default, any SQLAlchemy URL)."""

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        self.url = url or default_url()
        self._engine = create_engine(self.url, echo=echo)
        _enable_sqlite_foreign_keys(self._engine)
        _Base.metadata.create_all(self._engine)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> VisitStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------

    def add_exam(
        self,
        pregnancy_id: str,
        exam_date: date | str,
        ga_weeks: float | None,
        measurements: dict[str, float],
        *,
        ga_source: str | None = None,
        model: str | None = None,
    ) -> int:
        """Store one exam and its measurements atomically; returns the exam id.

        ``measurements`` maps measure names (``hc``/``hc_mm``, ``bpd``, ``ofd``, ``ac``,
        ``fl``) to mm. ``ga_weeks`` may be None (no centiles for this exam).
        """
        pid = _check_pregnancy_id(pregnancy_id)
        when = dating.as_date(exam_date, "exam_date")
        values = _check_measurements(measurements)
        ga, source = _check_ga(ga_weeks, ga_source)
        try:
            with Session(self._engine) as session, session.begin():
                earlier = session.scalars(select(_ExamRow).where(_ExamRow.pregnancy_id == pid)).all()
                _check_dating_consistency(when, ga, list(earlier))
                row = _ExamRow(
                    pregnancy_id=pid,
                    exam_date=when,
                    ga_weeks=ga,
                    ga_source=source,
                    model=None if model is None else str(model)[:64],
                    created_at=datetime.now(timezone.utc),
                )
                session.add(row)
                session.flush()  # the exam id, inside the same transaction
                for measure, value in values.items():
                    session.add(_MeasurementRow(exam_id=row.id, measure=measure, value_mm=value))
                session.flush()  # constraint errors surface here, before the commit
                return row.id
        except IntegrityError as error:  # session.begin() has rolled everything back
            raise VisitStoreError(f"the exam was not stored (nothing was written): {error.orig}") from error

    def delete_pregnancy(self, pregnancy_id: str) -> int:
        """Erase every exam of a pregnancy; returns how many exams were deleted."""
        pid = _check_pregnancy_id(pregnancy_id)
        with Session(self._engine) as session, session.begin():
            rows = session.scalars(select(_ExamRow).where(_ExamRow.pregnancy_id == pid)).all()
            for row in rows:
                session.delete(row)
            return len(rows)

    # -- reading ---------------------------------------------------------------------

    def pregnancies(self) -> list[str]:
        """All pregnancy ids, sorted."""
        with Session(self._engine) as session:
            return sorted(session.scalars(select(_ExamRow.pregnancy_id).distinct()).all())

    def exams(self, pregnancy_id: str) -> list[Exam]:
        """The exams of a pregnancy, oldest first (by date, then by id)."""
        pid = _check_pregnancy_id(pregnancy_id)
        with Session(self._engine) as session:
            rows = session.scalars(
                select(_ExamRow).where(_ExamRow.pregnancy_id == pid).order_by(_ExamRow.exam_date, _ExamRow.id)
            ).all()
            return [
                Exam(
                    row.id,
                    row.pregnancy_id,
                    row.exam_date,
                    row.ga_weeks,
                    row.ga_source,
                    row.model,
                    {m.measure: m.value_mm for m in row.measurements},
                )
                for row in rows
            ]

    def trajectory(self, pregnancy_id: str, measure: str) -> list[TrajectoryPoint]:
        """One measure over the exams that have it (``measure`` in TRAJECTORY_MEASURES)."""
        name = "efw" if str(measure).lower() in ("efw", "efw_g") else growth.check_measure(measure)
        points = []
        for exam in self.exams(pregnancy_id):
            value = _trajectory_value(name, exam.measurements)
            if value is not None:
                value_centile = _trajectory_centile(name, value, exam.ga_weeks, exam.measurements)
                points.append(TrajectoryPoint(exam.id, exam.exam_date, exam.ga_weeks, value, value_centile))
        return points

    def chart_points(self, pregnancy_id: str, measure: str) -> list[tuple[float, float]]:
        """[(ga_weeks, value)] for a growth chart; exams without a GA are left out."""
        return [(p.ga_weeks, p.value) for p in self.trajectory(pregnancy_id, measure) if p.ga_weeks is not None]

    def warnings(self, pregnancy_id: str) -> list[dict]:
        """``centile_drop`` warnings over every trajectory measure, then ``late_fgr_criteria``.

        Definitions: the module docstring (Gordijn et al. 2016).
        """
        trajectories = {measure: self.trajectory(pregnancy_id, measure) for measure in TRAJECTORY_MEASURES}
        drops = []
        for measure in TRAJECTORY_MEASURES:
            drops.extend(centile_drop_warnings(measure, trajectories[measure]))
        return drops + _late_fgr_warnings(trajectories, drops)
