"""The audit log of ``fetometry serve --audit FILE.sqlite``: append-only, one row per action.

Each row: UTC time, actor (a token's name, or "local" on a loopback server without
tokens), action (``measure``, ``report``, ``correct``, ``login``, ``logout``, ``denied``,
``fhir``), the sha256 of the uploaded bytes (never the file name: names often carry
patient data), the model's name, version and weights sha256
(``provenance.model_identity``), the exam id, the result (status, HC/BPD/OFD mm) and a
JSON ``detail`` (for a correction: the automatic and the corrected ellipse and values;
for a denial: the path and why). Tokens, Authorization headers, cookies, file names and
pregnancy ids are never written.

SQLite triggers abort every UPDATE and DELETE on the table, so the application cannot
rewrite history; someone with write access to the FILE still can (keep it on a volume
only the server's account writes, and back it up).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, event, select, text
from sqlalchemy.pool import StaticPool

ACTIONS = ("measure", "report", "correct", "login", "logout", "denied", "fhir")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: string order is time order

metadata = MetaData()
audit_table = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", String(32), nullable=False, index=True),
    Column("actor", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("image_sha256", String(64)),
    Column("exam_id", String(64)),
    Column("model_name", String(128)),
    Column("model_version", String(64)),
    Column("weights_sha256", Text),
    Column("status", String(32)),
    Column("hc_mm", Float),
    Column("bpd_mm", Float),
    Column("ofd_mm", Float),
    Column("detail", Text),
)

TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def parse_since(value: str | None) -> str | None:
    """An ISO 8601 time (``2026-01-31``, ``...T12:00:00Z``, with an offset) -> the log's format (UTC)."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"since={value!r}: give an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def result_summary(exam) -> dict:
    """status, hc_mm, bpd_mm, ofd_mm of an ExamResult (None where nothing was measured)."""
    m = exam.result.measurement
    return {
        "status": exam.result.status,
        "hc_mm": None if m is None else float(m.hc_mm),
        "bpd_mm": None if m is None else float(m.bpd_mm),
        "ofd_mm": None if m is None else float(m.ofd_mm),
    }


def ellipse_values(result) -> dict | None:
    """The ellipse and mm values of an ImageResult, for a correction's ``detail``."""
    if result is None:
        return None
    e, m = result.ellipse, result.measurement
    return {
        "status": result.status,
        "center_x_px": None if e is None else e.center_x_px,
        "center_y_px": None if e is None else e.center_y_px,
        "semi_axes_a_px": None if e is None else e.semi_major_px,
        "semi_axes_b_px": None if e is None else e.semi_minor_px,
        "angle_rad": None if e is None else e.angle_rad,
        "hc_mm": None if m is None else m.hc_mm,
        "bpd_mm": None if m is None else m.bpd_mm,
        "ofd_mm": None if m is None else m.ofd_mm,
    }


class AuditLog:
    """Append-only SQLite audit log (see the module docstring); safe to share between threads."""

    def __init__(self, path: str | Path | None):
        """``path``: the SQLite file (created when missing); None: in memory, gone when the server stops."""
        self.path = None if path is None else Path(path)
        if self.path is None:
            # One shared connection: each new connection to "sqlite://" would be another, empty database.
            self.engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self._lock = threading.Lock()
        metadata.create_all(self.engine)
        with self.engine.begin() as connection:
            for statement in TRIGGERS:
                connection.execute(text(statement))

    def append(
        self,
        actor: str,
        action: str,
        *,
        image_sha256: str | None = None,
        exam_id: str | None = None,
        identity=None,
        summary: dict | None = None,
        detail: dict | None = None,
    ) -> None:
        """One row; ``identity`` is a provenance.ModelIdentity, ``summary`` a ``result_summary``."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        summary = summary or {}
        row = {
            "time": utc_now(),
            "actor": actor,
            "action": action,
            "image_sha256": image_sha256,
            "exam_id": exam_id,
            "model_name": getattr(identity, "name", None),
            "model_version": getattr(identity, "version", None),
            "weights_sha256": getattr(identity, "weights_sha256", None),
            "status": summary.get("status"),
            "hc_mm": summary.get("hc_mm"),
            "bpd_mm": summary.get("bpd_mm"),
            "ofd_mm": summary.get("ofd_mm"),
            "detail": None if detail is None else json.dumps(detail, allow_nan=False, default=float),
        }
        with self._lock, self.engine.begin() as connection:
            connection.execute(audit_table.insert().values(**row))

    def query(self, *, since: str | None = None, limit: int = 100) -> list[dict]:
        """Rows at or after ``since`` (ISO 8601), oldest first, at most ``limit`` (1-10000)."""
        if not 1 <= int(limit) <= 10000:
            raise ValueError(f"limit={limit}: choose 1-10000")
        statement = select(audit_table).order_by(audit_table.c.id).limit(int(limit))
        start = parse_since(since)
        if start is not None:
            statement = statement.where(audit_table.c.time >= start)
        with self._lock, self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(statement)]
        for row in rows:
            row["detail"] = None if row["detail"] is None else json.loads(row["detail"])
        return rows

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
