"""serve.audit.AuditLog: append-only SQLite (triggers), queries by time, no secrets or names in rows."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fetometry.provenance import ModelIdentity
from fetometry.serve.audit import AuditLog, parse_since, utc_now

IDENTITY = ModelIdentity("attention-unet", "0.0.0", "ab" * 32)


@pytest.fixture()
def log(tmp_path):
    audit = AuditLog(tmp_path / "audit.sqlite")
    yield audit
    audit.close()


def test_rows_carry_who_what_which_image_and_model(log):
    summary = {"status": "ok", "hc_mm": 165.4, "bpd_mm": 45.0, "ofd_mm": 60.0}
    log.append("alice", "measure", image_sha256="cd" * 32, exam_id="e1", identity=IDENTITY, summary=summary)
    log.append("alice", "correct", exam_id="e1", detail={"automatic": {"hc_mm": 165.4}, "corrected": {"hc_mm": 170.0}})
    rows = log.query()
    assert [r["action"] for r in rows] == ["measure", "correct"]
    first = rows[0]
    assert (first["actor"], first["image_sha256"], first["model_name"], first["weights_sha256"]) == (
        "alice",
        "cd" * 32,
        "attention-unet",
        "ab" * 32,
    )
    assert (first["status"], first["hc_mm"], first["time"].endswith("Z")) == ("ok", 165.4, True)
    assert rows[1]["detail"]["corrected"]["hc_mm"] == 170.0
    with pytest.raises(ValueError, match="unknown audit action"):
        log.append("alice", "delete-everything")


def test_update_and_delete_are_refused_by_the_database(log, tmp_path):
    log.append("alice", "login")
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as connection:
        connection.execute(text("UPDATE audit SET actor = 'mallory'"))
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit"))
    # Also through a plain sqlite3 connection, and after reopening the file.
    raw = sqlite3.connect(tmp_path / "audit.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM audit WHERE 1")
    raw.close()
    log.close()
    reopened = AuditLog(tmp_path / "audit.sqlite")
    assert [r["actor"] for r in reopened.query()] == ["alice"]
    with pytest.raises(DBAPIError, match="append-only"), reopened.engine.begin() as connection:
        connection.execute(text("UPDATE audit SET action = 'measure'"))
    reopened.close()


def test_query_by_time_and_limit(log):
    log.append("a", "login")
    time.sleep(0.01)
    middle = utc_now()
    for _ in range(3):
        log.append("b", "measure")
    assert [r["actor"] for r in log.query(since=middle)] == ["b", "b", "b"]
    assert len(log.query(limit=2)) == 2 and log.query(since="2999-01-01") == []
    assert parse_since("2026-01-31T13:00:00+01:00") == "2026-01-31T12:00:00.000000Z"
    with pytest.raises(ValueError, match="ISO 8601"):
        log.query(since="yesterday")
    with pytest.raises(ValueError, match="1-10000"):
        log.query(limit=0)


def test_the_in_memory_log_is_one_database_for_every_thread():
    import threading

    memory = AuditLog(None)  # loopback without --audit: kept while the server runs
    threads = [threading.Thread(target=memory.append, args=("local", "measure")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["actor"] for r in memory.query()] == ["local"] * 4
    with pytest.raises(DBAPIError, match="append-only"), memory.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit"))
    memory.close()
