"""The web app and REST API through FastAPI's TestClient: contract, bad input, hardening.

The shipped default model is loaded once and shared by every app built here; a spy on
its ``predict`` proves that refused requests never reach the model.
"""

from __future__ import annotations

import base64
import pickle
import re
import tempfile
import threading

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import pdf_text

from fetometry import DISCLAIMER
from fetometry.exam import measure_exam
from fetometry.inference.predictor import Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes
from fetometry.io.images import read_image
from fetometry.resources import SAMPLES_DIR
from fetometry.serve.app import STATIC_DIR, ServeSettings, create_app

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
SAMPLE_PIXEL_MM = "0.130960682505"
SAMPLE_HC_MM = 165.45  # the HC18 reference for this image


@pytest.fixture(scope="module")
def shared_predictor() -> Predictor:
    return Predictor.from_weights()


class Factory:
    """predictor_factory for create_app: hands out the shared model, records each load."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.loads: list = []

    def __call__(self, key):
        self.loads.append(key)
        return self.predictor


@pytest.fixture()
def predict_calls(shared_predictor, monkeypatch) -> list:
    """Counts the model's predictions during one test."""
    calls = []
    real = Predictor.predict.__get__(shared_predictor)

    def counting(image):
        calls.append(image.shape)
        return real(image)

    monkeypatch.setattr(shared_predictor, "predict", counting)
    return calls


def make_client(predictor, **settings) -> tuple[TestClient, Factory]:
    factory = Factory(predictor)
    return TestClient(create_app(ServeSettings(**settings), predictor_factory=factory)), factory


@pytest.fixture()
def client(shared_predictor, predict_calls):
    test_client, _ = make_client(shared_predictor)
    with test_client:
        yield test_client


def post(client, path="/api/measure", *, data: bytes | None = None, name="345_HC.png", **fields):
    content = SAMPLE.read_bytes() if data is None else data
    return client.post(
        path, files={"file": (name, content, "application/octet-stream")}, data={k: str(v) for k, v in fields.items()}
    )


# ------------------------------------------------------------------------- page and docs


def test_page_is_self_contained_and_shows_the_disclaimer(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert DISCLAIMER in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("index.html", "app.js", "style.css"):  # offline: nothing from a CDN
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), name
        assert client.get(f"/static/{name}").status_code == 200
    script = (STATIC_DIR / "app.js").read_text()  # server text is set as text, never as markup
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)


def test_info_and_openapi_describe_the_api(client):
    info = client.get("/api/info").json()
    assert info["models"][0] == "unext-scanners" and info["max_upload_mb"] == 20  # the default first
    assert info["ga_range_weeks"] == [14.0, 40.0] and info["disclaimer"] == DISCLAIMER
    spec = client.get("/openapi.json").json()
    for path in ("/api/measure", "/api/report"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        schema = spec["components"]["schemas"][body["$ref"].split("/")[-1]] if "$ref" in body else body
        assert {"file", "pixel_size_mm", "ga_weeks", "lmp"} <= set(schema["properties"]), path
        assert schema["required"] == ["file"]
    assert "application/pdf" in spec["paths"]["/api/report"]["post"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------- measuring


def test_measure_returns_the_json_of_measure(client, shared_predictor):
    response = post(client, pixel_size_mm=SAMPLE_PIXEL_MM, ga_weeks=20)
    assert response.status_code == 200, response.text
    row = response.json()
    direct = measure_exam(
        SAMPLE, predictor=shared_predictor, pixel_size_mm=float(SAMPLE_PIXEL_MM), ga_weeks=20
    ).to_json()
    # The server adds the exam id and the editable ellipse of POST /api/correct.
    assert set(row) - {"exam_id", "editable_ellipse"} == set(direct) and "images" not in row
    assert row["exam_id"] and row["editable_ellipse"]["image_width_px"] == 800
    assert row["hc_mm"] == pytest.approx(direct["hc_mm"], abs=1e-9)
    assert abs(row["hc_mm"] - SAMPLE_HC_MM) < 5.0
    assert row["ga_weeks"] == 20 and 0 < row["hc_centile"] < 100 and row["disclaimer"] == DISCLAIMER
    assert response.headers["cache-control"] == "no-store"


def test_measure_can_return_the_overlay(client):
    row = post(client, pixel_size_mm=SAMPLE_PIXEL_MM, images="true").json()
    header, encoded = row["images"]["overlay"].split(",", 1)
    assert header == "data:image/png;base64"
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (540, 800, 3)
    assert row["images"]["explanation"] is None and row["images"]["uncertainty"] is None


def test_uncertainty_and_its_map(client):
    row = post(client, pixel_size_mm=SAMPLE_PIXEL_MM, uncertainty="true", images="true").json()
    assert row["hc_sd_mm"] >= 0 and len(row["hc_interval_mm"]) == 2
    assert row["images"]["uncertainty"].startswith("data:image/png;base64,")


def test_dicom_upload_is_calibrated_from_its_regions(client):
    dicom = ultrasound_dicom_bytes(read_image(SAMPLE), pixel_size_mm=float(SAMPLE_PIXEL_MM))
    from_dicom = post(client, data=dicom, name="scan.dcm").json()
    from_png = post(client, pixel_size_mm=SAMPLE_PIXEL_MM).json()
    assert from_dicom["pixel_size_source"].startswith("DICOM")
    assert from_dicom["pixel_size_mm"] == pytest.approx(float(SAMPLE_PIXEL_MM))
    assert from_dicom["hc_mm"] == pytest.approx(from_png["hc_mm"], abs=1e-6)


def test_without_pixel_size_no_millimetres(client):
    row = post(client).json()
    assert row["status"] == "no_pixel_size" and row["hc_mm"] is None and "pixel size" in row["detail"]


def test_report_is_a_pdf_named_after_the_upload_only(client):
    response = post(
        client, "/api/report", name="../../../tmp/evil name.png", pixel_size_mm=SAMPLE_PIXEL_MM, ga_weeks=20
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="evil_name_report.pdf"'
    assert response.content.startswith(b"%PDF")
    text = pdf_text(response.content)
    hc = post(client, pixel_size_mm=SAMPLE_PIXEL_MM).json()["hc_mm"]
    assert f"{hc:.1f}" in text and "decision support" in text


# ---------------------------------------------------------------------------- bad input


class _Marker:
    """Unpickling this would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize(
    "fields, upload, status, reason",
    [
        ({}, b"just some text", 415, "not a supported file"),
        ({}, b"", 422, "empty"),
        ({}, "truncated", 422, "truncated or corrupt"),
        ({"ga_weeks": 13}, None, 422, "outside 14-40 weeks"),
        ({"ga_weeks": 41}, None, 422, "outside 14-40 weeks"),
        ({"ga_weeks": "soon"}, None, 422, "ga_weeks"),
        ({"ga_weeks": 20, "lmp": "2026-01-01"}, None, 422, "not both"),
        ({"lmp": "yesterday"}, None, 422, "YYYY-MM-DD"),
        ({"pixel_size_mm": 0}, None, 422, "plausible range"),
        ({"explain": "magic"}, None, 422, "gradcam"),
        ({"model": "../../weights/attention-unet"}, None, 422, "unknown model"),
        ({"frame": -1}, None, 422, "frame"),
        ({"pregnancy_id": "P-1"}, None, 400, "--db"),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(client, predict_calls, fields, upload, status, reason):
    if upload == "truncated":
        upload = SAMPLE.read_bytes()[:2000]
    response = post(client, data=upload, **fields)
    assert response.status_code == status, response.text
    body = response.json()
    assert reason in body["detail"] and body["error"]
    assert predict_calls == []


def test_pickles_are_never_unpickled(client, predict_calls, tmp_path):
    marker = tmp_path / "unpickled"
    for name in ("model.pt", "scan.pkl", "image.png", "x.dcm"):
        response = post(client, data=pickle.dumps(_Marker(str(marker))), name=name, model="attention-unet")
        assert response.status_code == 415, response.text
    assert not marker.exists() and predict_calls == []


def test_oversized_uploads_get_413_and_the_server_goes_on(client, predict_calls):
    big = b"\x89PNG\r\n\x1a\n" + bytes(50 * 1024 * 1024)
    response = post(client, data=big)
    assert response.status_code == 413
    assert "50.0 MB" in response.json()["detail"] and "limit is 20 MB" in response.json()["detail"]

    def chunked():  # no Content-Length: the limit must count the bytes as they arrive
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\x89PNG\r\n\x1a\n'
        for _ in range(50):
            yield bytes(1024 * 1024)
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/api/measure", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "limit is 20 MB" in response.json()["detail"]
    assert predict_calls == []
    assert post(client, pixel_size_mm=SAMPLE_PIXEL_MM).status_code == 200


def test_the_upload_limit_is_configurable(shared_predictor):
    small, _ = make_client(shared_predictor, max_upload_mb=0.5)
    with small:
        assert len(SAMPLE.read_bytes()) < 0.5 * 1024 * 1024
        assert post(small, pixel_size_mm=SAMPLE_PIXEL_MM).status_code == 200
        response = post(small, data=b"\x89PNG\r\n\x1a\n" + bytes(600 * 1024))
        assert response.status_code == 413 and "limit is 0.5 MB" in response.json()["detail"]


def test_nothing_is_left_on_disk(client, tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # uploads spool and reports render here
    big_but_allowed = SAMPLE.read_bytes() + bytes(3 * 1024 * 1024)  # > 1 MB: spooled to disk
    assert post(client, data=big_but_allowed, pixel_size_mm=SAMPLE_PIXEL_MM).status_code == 200
    assert post(client, "/api/report", pixel_size_mm=SAMPLE_PIXEL_MM).status_code == 200
    assert post(client, data=b"junk" * 400_000).status_code == 415
    assert list(spool.iterdir()) == []


# --------------------------------------------------------------------- model and visits


def test_the_model_is_loaded_once_and_only_by_name(shared_predictor):
    test_client, factory = make_client(shared_predictor)
    with test_client:
        for _ in range(3):
            assert post(test_client, pixel_size_mm=SAMPLE_PIXEL_MM).status_code == 200
        assert post(test_client, model="/etc/passwd").status_code == 422
    assert factory.loads == [None]


def test_visits_are_stored_whole_or_not_at_all(shared_predictor, tmp_path):
    from fetometry.clinical.visits import VisitStore

    url = f"sqlite:///{tmp_path / 'visits.db'}"
    test_client, _ = make_client(shared_predictor, db_url=url)
    with test_client:
        assert test_client.get("/api/info").json()["visits_enabled"] is True
        first = post(
            test_client, pixel_size_mm=SAMPLE_PIXEL_MM, ga_weeks=20, exam_date="2026-03-02", pregnancy_id="P-1"
        ).json()
        assert first["visit_stored"] is True and first["pregnancy_id"] == "P-1"
        refused = post(
            test_client, pixel_size_mm=SAMPLE_PIXEL_MM, ga_weeks=45, exam_date="2026-06-01", pregnancy_id="P-1"
        )
        assert refused.status_code == 422
        assert post(test_client, pixel_size_mm=SAMPLE_PIXEL_MM, pregnancy_id="Jane Doe").status_code == 422
        unmeasured = post(test_client, ga_weeks=24, exam_date="2026-03-30", pregnancy_id="P-1").json()
        assert unmeasured["visit_stored"] is False  # no pixel size: nothing measured, nothing stored
        report = post(
            test_client,
            "/api/report",
            pixel_size_mm=SAMPLE_PIXEL_MM,
            ga_weeks=24,
            exam_date="2026-03-30",
            pregnancy_id="P-1",
        )
        assert report.status_code == 200 and "P-1" in pdf_text(report.content)
    with VisitStore(url) as store:
        exams = store.exams("P-1")
    assert [e.ga_weeks for e in exams] == [20.0]
    assert exams[0].measurements["hc"] == pytest.approx(first["hc_mm"])


def test_a_full_queue_answers_503(shared_predictor, monkeypatch):
    started, release = threading.Event(), threading.Event()
    real = Predictor.predict_batch.__get__(shared_predictor)

    def slow(images):
        started.set()
        release.wait(30)
        return real(images)

    monkeypatch.setattr(shared_predictor, "predict_batch", slow)
    test_client, _ = make_client(shared_predictor, max_pending=1)
    with test_client:
        results = {}
        first = threading.Thread(
            target=lambda: results.setdefault("first", post(test_client, pixel_size_mm=SAMPLE_PIXEL_MM))
        )
        first.start()
        assert started.wait(30)
        busy = post(test_client, pixel_size_mm=SAMPLE_PIXEL_MM)
        release.set()
        first.join(60)
    assert busy.status_code == 503 and "retry" in busy.json()["detail"]
    assert results["first"].status_code == 200


# ------------------------------------------------------------------------- the CLI verb


def test_serve_verb_binds_to_loopback_by_default():
    import argparse

    from fetometry.serve.command import is_loopback, register, run_serve

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb, args.db, args.model) == ("127.0.0.1", 8000, 20.0, None, None)
    assert not hasattr(args, "func")  # the CLI (fetometry.cli) sets func, not register
    assert is_loopback(args.host) and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(FileNotFoundError, match="attention-unet"):  # refused before anything listens
        run_serve(parser.parse_args(["serve", "--model", "no-such-model"]))
    with pytest.raises(ValueError, match="1-65535"):
        run_serve(parser.parse_args(["serve", "--port", "70000"]))
    assert (args.tokens, args.audit, args.rate_limit) == (None, None, None)
