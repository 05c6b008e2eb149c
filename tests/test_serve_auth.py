"""Access control of `fetometry serve`: tokens, sessions, revocation, rate limits, audit, FHIR, corrections.

The shipped default model is loaded once for the module; apps are built per test with a
token file (alice: user, root: admin, bob: revoked) and an audit log in tmp_path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import stat
import threading

import pytest
from fastapi.testclient import TestClient

from fetometry.biometry.measures import measure_ellipse
from fetometry.correction import ellipse_from_fields
from fetometry.inference.predictor import Predictor
from fetometry.resources import SAMPLES_DIR
from fetometry.serve import auth
from fetometry.serve.app import ServeSettings, create_app
from fetometry.serve.audit import AuditLog

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
SAMPLE_PIXEL_MM = "0.130960682505"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture()
def tokens(tmp_path) -> dict:
    path = tmp_path / "tokens.json"
    found = {
        "alice": auth.create_token(path, "alice"),
        "root": auth.create_token(path, "root", admin=True),
        "bob": auth.create_token(path, "bob"),
    }
    auth.revoke_token(path, "bob")
    return {"path": path, **found}


def make_app(predictor, tmp_path, tokens=None, **settings):
    settings = ServeSettings(
        tokens_file=str(tokens["path"]) if tokens else None, audit_path=str(tmp_path / "audit.sqlite"), **settings
    )
    return create_app(settings, predictor_factory=lambda key: predictor)


@pytest.fixture()
def client(predictor, tmp_path, tokens):
    with TestClient(make_app(predictor, tmp_path, tokens)) as test_client:
        yield test_client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def measure(client, path="/api/measure", headers=None, **fields):
    data = {"pixel_size_mm": SAMPLE_PIXEL_MM, **fields}
    files = {"file": ("patient_doe_jane.png", SAMPLE.read_bytes(), "image/png")}
    return client.post(path, files=files, data=data, headers=headers or {})


def audit_rows(tmp_path) -> list[dict]:
    log = AuditLog(tmp_path / "audit.sqlite")
    try:
        return log.query(limit=1000)
    finally:
        log.close()


# ------------------------------------------------------------------------ token file


def test_the_token_file_keeps_hashes_only_in_mode_0600(tokens):
    path = tokens["path"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_text()
    assert tokens["alice"] not in raw and hashlib.sha256(tokens["alice"].encode()).hexdigest() in raw
    entries = {e.name: e for e in auth.read_tokens(path)}
    assert entries["root"].admin and not entries["alice"].admin and entries["bob"].revoked and entries["alice"].active
    assert len(tokens["alice"]) >= 43  # token_urlsafe(32): 256 random bits
    with pytest.raises(auth.TokenFileError, match="active token named"):
        auth.create_token(path, "alice")
    with pytest.raises(auth.TokenFileError, match="never a patient"):
        auth.create_token(path, "Jane Doe")
    assert not list(path.parent.glob(".tokens.json.*"))  # no temp file left behind


def test_the_token_verb(tmp_path, monkeypatch, capsys):
    from fetometry import cli

    assert "token" in cli.VERBS
    path = str(tmp_path / "t.json")
    assert cli.main(["token", "create", "carol", "--tokens", path, "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert auth.TokenStore(path).lookup(token).name == "carol"
    assert cli.main(["token", "list", "--tokens", path]) == 0
    listing = capsys.readouterr().out
    assert "carol\tadmin" in listing and "active" in listing and token not in listing
    assert auth.hash_token(token) not in listing
    assert cli.main(["token", "revoke", "carol", "--tokens", path]) == 0
    assert cli.main(["token", "list", "--tokens", path]) == 0 and "revoked" in capsys.readouterr().out
    assert cli.main(["token", "revoke", "nobody", "--tokens", path]) == 1  # ValueError: one line, exit 1
    with pytest.raises(SystemExit):  # the sub-verb is required
        cli.main(["token", "--tokens", path])


# ---------------------------------------------------------------- 401 / 403 / 200 per route

ROUTES = [
    ("GET", "/api/info"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/api/measure"),
    ("POST", "/api/report"),
    ("POST", "/api/fhir"),
    ("POST", "/api/correct"),
    ("GET", "/api/exams/nope/report"),
    ("GET", "/api/audit"),
    ("POST", "/api/logout"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_needs_a_valid_token(client, tokens, method, path):
    missing = client.request(method, path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert client.request(method, path, headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.request(method, path, headers=bearer("not-a-token")).status_code == 403
    revoked = client.request(method, path, headers=bearer(tokens["bob"]))
    assert revoked.status_code == 403 and tokens["bob"] not in revoked.text
    ok = client.request(method, path, headers=bearer(tokens["root"]))
    assert ok.status_code not in (401, 403, 429), ok.text  # past access control (4xx for a missing body is fine)


def test_the_routes_answer_200_with_a_token(client, tokens):
    alice = bearer(tokens["alice"])
    assert client.get("/api/info", headers=alice).json()["actor"] == "alice"
    assert client.get("/openapi.json", headers=alice).status_code == 200
    row = measure(client, headers=alice).json()
    assert row["status"] == "ok" and row["exam_id"]
    assert measure(client, "/api/report", headers=alice).content.startswith(b"%PDF")
    assert client.get(f"/api/exams/{row['exam_id']}/report", headers=alice).content.startswith(b"%PDF")
    assert client.get("/api/audit", headers=bearer(tokens["root"])).status_code == 200


def test_health_the_page_and_its_files_are_open(client):
    for path in ("/health", "/api/health", "/", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path


def test_the_audit_log_is_admin_only_and_records_without_names_or_secrets(client, tokens, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    alice = bearer(tokens["alice"])
    assert measure(client, headers=alice, pregnancy_id="").status_code == 200
    client.get("/api/info", headers=bearer(tokens["bob"]))  # denied: revoked
    refused = client.get("/api/audit", headers=alice)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    entries = client.get("/api/audit", headers=bearer(tokens["root"]), params={"limit": 50}).json()["entries"]
    measured = [e for e in entries if e["action"] == "measure"]
    assert len(measured) == 1
    row = measured[0]
    assert row["actor"] == "alice" and row["image_sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert row["model_name"] == "unext" and len(row["weights_sha256"]) == 64 and row["model_version"]
    assert row["status"] == "ok" and 150 < row["hc_mm"] < 180 and row["bpd_mm"] and row["ofd_mm"]
    denied = [e for e in entries if e["action"] == "denied"]
    assert {(e["actor"], e["detail"]["reason"]) for e in denied} >= {
        ("bob", "revoked token"),
        ("alice", "not an admin"),
    }
    since = client.get("/api/audit", headers=bearer(tokens["root"]), params={"since": "2999-01-01"}).json()
    assert since["entries"] == []
    stored = (tmp_path / "audit.sqlite").read_bytes() + json.dumps(entries).encode()
    for secret in (tokens["alice"], tokens["bob"], tokens["root"], "patient_doe_jane", "Bearer"):
        assert secret.encode() not in stored, secret
        assert secret not in caplog.text, secret


# ------------------------------------------------------------------------- revocation


def test_a_revoked_token_fails_at_its_next_request_and_a_running_one_finishes(predictor, tmp_path, tokens, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = Predictor.predict_batch.__get__(predictor)

    def slow(images):
        entered.set()
        release.wait(60)
        return real(images)

    alice = bearer(tokens["alice"])
    with TestClient(make_app(predictor, tmp_path, tokens)) as client:
        assert client.get("/api/info", headers=alice).status_code == 200
        monkeypatch.setattr(predictor, "predict_batch", slow)
        results = {}
        running = threading.Thread(target=lambda: results.update(first=measure(client, headers=alice)))
        running.start()
        try:
            assert entered.wait(60)
            auth.revoke_token(tokens["path"], "alice")  # while alice's request is inside the model
        finally:
            release.set()
        running.join(120)
        assert results["first"].status_code == 200  # it had passed the check: it finishes
        after = client.get("/api/info", headers=alice)
        assert after.status_code == 403 and "revoked" in after.json()["detail"]
        carol = auth.create_token(tokens["path"], "carol")  # new tokens work without a restart
        assert client.get("/api/info", headers=bearer(carol)).status_code == 200


def test_an_unreadable_token_file_fails_closed(predictor, tmp_path, tokens):
    with TestClient(make_app(predictor, tmp_path, tokens)) as client:
        assert client.get("/api/info", headers=bearer(tokens["alice"])).status_code == 200
        tokens["path"].write_text("{not json")
        assert client.get("/api/info", headers=bearer(tokens["alice"])).status_code == 403


# --------------------------------------------------------------------------- sessions


def test_the_page_session_cookie_flow(client, tokens):
    assert client.post("/api/login", json={"token": "wrong"}).status_code == 403
    assert client.post("/api/login", json={"token": tokens["bob"]}).status_code == 403
    response = client.post("/api/login", json={"token": tokens["alice"]})
    assert response.status_code == 200 and response.json()["actor"] == "alice"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(auth.SESSION_COOKIE + "=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert tokens["alice"] not in cookie and "Max-Age=" in cookie
    assert client.get("/api/info").json()["actor"] == "alice"  # the cookie alone now suffices
    assert measure(client).status_code == 200
    cross = client.post("/api/measure", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403  # a session is for this server's own page only
    assert client.post("/api/logout").json() == {"logged_out": True}
    assert client.get("/api/info").status_code == 401
    # A session dies with its token.
    client.post("/api/login", json={"token": tokens["alice"]})
    assert client.get("/api/info").status_code == 200
    auth.revoke_token(tokens["path"], "alice")
    assert client.get("/api/info").status_code == 403
    assert client.get("/api/info").status_code == 401  # and the session is gone


def test_sessions_expire():
    now = [0.0]
    store = auth.SessionStore(ttl_s=10, clock=lambda: now[0])
    entry = auth.TokenEntry("alice", "user", "0" * 64, "2026-01-01T00:00:00+00:00")
    session_id = store.open(entry)
    assert store.get(session_id).name == "alice" and len(session_id) >= 43
    now[0] = 11
    assert store.get(session_id) is None


# ------------------------------------------------------------------------ rate limits


def test_the_rate_limit_answers_429_per_token(predictor, tmp_path, tokens):
    with TestClient(make_app(predictor, tmp_path, tokens, rate_limit_per_minute=2)) as client:
        alice, root = bearer(tokens["alice"]), bearer(tokens["root"])
        assert [client.get("/api/info", headers=alice).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/api/info", headers=alice)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 30
        assert client.get("/api/info", headers=root).status_code == 200  # another token has its own bucket
        assert client.get("/health").status_code == 200  # liveness is never limited


def test_the_token_bucket_refills():
    now = [0.0]
    limiter = auth.RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("a") == 0 for _ in range(60)) and limiter.take("a") == pytest.approx(1.0)
    now[0] = 2.0
    assert limiter.take("a") == 0 and limiter.take("a") == 0 and limiter.take("a") > 0


# ------------------------------------------------------------------------- the verb


def test_serve_refuses_a_public_address_without_tokens(tokens, capsys):
    from fetometry.serve.command import audit_path, check_access, register, run_serve

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"))
    assert run_serve(parser.parse_args(["serve", "--host", "0.0.0.0"])) == 2
    assert "--tokens" in capsys.readouterr().err
    check_access(parser.parse_args(["serve", "--host", "0.0.0.0", "--tokens", str(tokens["path"])]))
    check_access(parser.parse_args(["serve"]))  # loopback without tokens: as before (actor "local")
    with pytest.raises(ValueError, match="no token file"):
        check_access(parser.parse_args(["serve", "--tokens", str(tokens["path"]) + ".missing"]))
    args = parser.parse_args(["serve", "--rate-limit", "30/min", "--tokens", str(tokens["path"])])
    assert args.rate_limit == 30 and audit_path(args) == str(tokens["path"].parent / "audit.sqlite")
    assert parser.parse_args(["serve", "--rate-limit", "5"]).rate_limit == 5
    assert audit_path(parser.parse_args(["serve"])) is None  # loopback, no tokens: in memory
    for bad in ("0/min", "fast"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--rate-limit", bad])
    assert "N/min" in capsys.readouterr().err


def test_loopback_without_tokens_is_local(predictor, tmp_path):
    with TestClient(make_app(predictor, tmp_path)) as client:
        info = client.get("/api/info").json()
        assert (info["auth_enabled"], info["actor"]) == (False, "local")
        assert measure(client).status_code == 200
        assert client.post("/api/login", json={"token": "x"}).status_code == 400
        assert [e["actor"] for e in client.get("/api/audit").json()["entries"]] == ["local"]


# ------------------------------------------------------------------ FHIR and corrections


def test_fhir_route_returns_a_valid_bundle_and_is_audited(client, tokens, tmp_path):
    from fetometry.report.fhir import validate_bundle

    response = measure(client, "/api/fhir", headers=bearer(tokens["alice"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    validate_bundle(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    assert "patient_doe_jane" not in response.text
    assert [r["action"] for r in audit_rows(tmp_path)] == ["fhir"]


def test_a_correction_is_recomputed_by_the_server_and_audited(client, tokens, tmp_path):
    alice = bearer(tokens["alice"])
    row = measure(client, headers=alice, ga_weeks="20").json()
    edit = row["editable_ellipse"]
    fields = {k: edit[k] for k in ("center_x_px", "center_y_px", "semi_axes_a_px", "semi_axes_b_px", "angle_rad")}
    fields["semi_axes_a_px"] += 15
    body = {"exam_id": row["exam_id"], **fields, "images": False}
    corrected = client.post("/api/correct", json=body, headers=alice)
    assert corrected.status_code == 200, corrected.text
    out = corrected.json()
    expected = measure_ellipse(ellipse_from_fields(**fields), float(SAMPLE_PIXEL_MM))
    assert out["hc_mm"] == pytest.approx(expected.hc_mm) and out["corrected_by_user"] is True
    assert out["automatic"]["hc_mm"] == pytest.approx(row["hc_mm"]) and out["hc_mm"] > row["hc_mm"]
    assert out["ga_weeks"] == 20 and "hc_centile" in out  # the server's GA, not one from the client
    pdf = client.get(f"/api/exams/{row['exam_id']}/report", headers=alice)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # Not someone else's exam, not a forgotten one, not an absurd ellipse.
    assert client.post("/api/correct", json=body, headers=bearer(tokens["root"])).status_code == 404
    assert client.post("/api/correct", json={**body, "exam_id": "gone"}, headers=alice).status_code == 404
    for bad in ({"semi_axes_a_px": -3}, {"center_x_px": 5000}, {"semi_axes_b_px": 4000}):
        refused = client.post("/api/correct", json={**body, **bad}, headers=alice)
        assert refused.status_code == 422 and refused.json()["error"] == "bad_ellipse", bad
    assert client.post("/api/correct", json={**body, "angle_rad": "x"}, headers=alice).status_code == 422
    rows = audit_rows(tmp_path)
    correction = [r for r in rows if r["action"] == "correct"]
    assert len(correction) == 1 and correction[0]["actor"] == "alice"
    assert correction[0]["hc_mm"] == pytest.approx(expected.hc_mm)
    assert correction[0]["detail"]["automatic"]["hc_mm"] == pytest.approx(row["hc_mm"])
    assert correction[0]["detail"]["corrected"]["semi_axes_a_px"] == pytest.approx(fields["semi_axes_a_px"])
    assert [r["action"] for r in rows if r["action"] == "report"] == ["report"]


def test_exams_expire_from_the_cache():
    from fetometry.serve.app import ApiError, ExamCache, Upload

    now = [0.0]
    cache = ExamCache(size=2, ttl_s=10, clock=lambda: now[0])
    upload = Upload("0" * 64, None, 0.0, "alice")
    first = cache.put("exam-1", upload)
    cache.put("exam-2", upload)
    cache.put("exam-3", upload)  # bounded: the oldest goes
    with pytest.raises(ApiError):
        cache.get(first, "alice")
    second = cache.put("exam-4", upload)
    now[0] = 11
    with pytest.raises(ApiError):
        cache.get(second, "alice")
