"""The watcher's bookkeeping in one SQLite file: the change cursor and one row per instance.

The cursor is the last Orthanc change sequence number fully processed; it advances in
the same transaction as the instance's row, so a crash leaves either both or neither.
SOP Instance UIDs are stored hashed (sha256); no patient identifier is ever written here.
The output UIDs are deterministic (``output_uid``), so an instance processed again after
a crash between upload and bookkeeping gets the same UIDs, which the watcher looks up in
Orthanc before uploading: nothing is stored twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, func, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.pool import StaticPool

__all__ = ["InstanceRecord", "WatchState", "hash_uid", "output_uid"]

_metadata = MetaData()

cursor_table = Table(
    "cursor",
    _metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
)

instances_table = Table(
    "instances",
    _metadata,
    Column("orthanc_id", String(64), primary_key=True),
    Column("sop_uid_sha256", String(64), nullable=True, index=True),
    Column("status", String(64), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("sr_uid", String(64), nullable=True),
    Column("sc_uid", String(64), nullable=True),
    Column("seq", Integer, nullable=True),
    Column("processed_at", String(32), nullable=False),
)

CURSOR = "changes"


def hash_uid(uid: str | None) -> str | None:
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest() if uid else None


def output_uid(source_uid: str, model_name: str, weights_sha256: str, kind: str) -> str:
    """A UID fixed by its inputs: the same source, model and kind always give the same UID."""
    return generate_uid(entropy_srcs=[str(source_uid), model_name, weights_sha256, kind])


@dataclass(frozen=True)
class InstanceRecord:
    orthanc_id: str
    status: str
    reason: str = ""
    sop_uid_sha256: str | None = None
    sr_uid: str | None = None
    sc_uid: str | None = None
    seq: int | None = None
    processed_at: str = ""


class WatchState:
    """``WatchState(path)``: opens (creating if needed) the SQLite file; ``":memory:"`` for tests."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        options = {"poolclass": StaticPool} if self.path == ":memory:" else {}
        self._engine = create_engine(f"sqlite:///{self.path}", **options)
        _metadata.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    @property
    def cursor(self) -> int:
        with self._engine.connect() as connection:
            seq = connection.execute(select(cursor_table.c.seq).where(cursor_table.c.name == CURSOR)).scalar()
        return int(seq or 0)

    def advance(self, seq: int, connection=None) -> None:
        """Move the cursor forward to ``seq`` (never backwards)."""
        if connection is None:
            with self._engine.begin() as connection:
                return self.advance(seq, connection)
        statement = insert(cursor_table).values(name=CURSOR, seq=int(seq))
        statement = statement.on_conflict_do_update(
            index_elements=[cursor_table.c.name], set_={"seq": func.max(cursor_table.c.seq, statement.excluded.seq)}
        )
        connection.execute(statement)

    def record(self, record: InstanceRecord, *, seq: int | None = None) -> None:
        """Store (or replace) one instance's row and, with ``seq``, advance the cursor, in one transaction."""
        row = {
            "orthanc_id": record.orthanc_id,
            "sop_uid_sha256": record.sop_uid_sha256,
            "status": record.status,
            "reason": record.reason or "",
            "sr_uid": record.sr_uid,
            "sc_uid": record.sc_uid,
            "seq": seq if seq is not None else record.seq,
            "processed_at": record.processed_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        statement = insert(instances_table).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=[instances_table.c.orthanc_id], set_={k: v for k, v in row.items() if k != "orthanc_id"}
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
            if seq is not None:
                self.advance(seq, connection)

    def get(self, orthanc_id: str) -> InstanceRecord | None:
        with self._engine.connect() as connection:
            row = (
                connection.execute(select(instances_table).where(instances_table.c.orthanc_id == orthanc_id))
                .mappings()
                .first()
            )
        return InstanceRecord(**row) if row else None

    def records(self) -> list[InstanceRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(instances_table).order_by(instances_table.c.seq)).mappings().all()
        return [InstanceRecord(**row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Instances per status, over the whole state file."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(instances_table.c.status, func.count()).group_by(instances_table.c.status)
            ).all()
        return {status: int(n) for status, n in rows}
