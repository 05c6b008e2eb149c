"""The ellipse editor for real: uvicorn with a token file, headless Chromium (Debian's
/usr/bin/chromium through Playwright, launched as in test_serve_e2e.py) logs in on the
page, measures a sample, drags an axis handle with the mouse and accepts; the server's
recomputation is what the page shows, marked "corrected by user", and it is audited.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from helpers import CHROMIUM, CHROMIUM_ARGS

from fetometry.biometry.measures import measure_ellipse
from fetometry.correction import ellipse_from_fields
from fetometry.resources import SAMPLES_DIR
from fetometry.serve import auth
from fetometry.serve.app import ServeSettings, create_app
from fetometry.serve.audit import AuditLog

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
SAMPLE_PIXEL_MM = "0.130960682505"
ELLIPSE_KEYS = ("center_x_px", "center_y_px", "semi_axes_a_px", "semi_axes_b_px", "angle_rad")


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory):
    """The app with tokens and an audit file under uvicorn on 127.0.0.1; yields (url, token, audit path)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'); the browser test needs it")
    folder = tmp_path_factory.mktemp("secured")
    tokens = folder / "tokens.json"
    token = auth.create_token(tokens, "sonographer")
    audit = folder / "audit.sqlite"
    app = create_app(ServeSettings(tokens_file=str(tokens), audit_path=str(audit)))
    app.state.service.cache.get(None)  # load the default model before the page asks for it
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", token, audit
    server.should_exit = True
    thread.join(10)
    sock.close()


def _screen(box: dict, width_px: int, x_px: float, y_px: float) -> tuple[float, float]:
    """A point of the original image grid -> page coordinates on the (scaled) canvas."""
    k = box["width"] / width_px
    return box["x"] + x_px * k, box["y"] + y_px * k


def test_drag_an_axis_accept_and_the_server_recomputes(secured_server):
    import math

    from playwright.sync_api import expect, sync_playwright

    url, token, audit_file = secured_server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            # Without a session the page asks for a token and shows nothing else.
            expect(page.locator("#login")).to_be_visible()
            assert page.is_hidden("#exam-form")
            page.fill("#token", token)
            page.click("#login-button")
            expect(page.locator("#whoami")).to_have_text("sonographer")
            assert page.input_value("#token") == ""  # the token does not stay in the page
            assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in page.context.cookies())

            page.set_input_files("#file", str(SAMPLE))
            page.fill("#pixel_size_mm", SAMPLE_PIXEL_MM)
            page.fill("#ga_weeks", "20")
            with page.expect_response("**/api/measure", timeout=120_000) as measured:
                page.click("#measure")
            row = measured.value.json()
            expect(page.locator("#editor-box")).to_be_visible()
            automatic_hc = page.inner_text("#hc")
            assert automatic_hc == f"{row['hc_mm']:.1f}"
            assert page.is_hidden("#corrected")

            # Drag the end of the first axis 25 px (image grid) outwards along it.
            edit = row["editable_ellipse"]
            page.locator("#editor").scroll_into_view_if_needed()  # the mouse acts in the viewport
            box = page.locator("#editor").bounding_box()
            width = edit["image_width_px"]
            cos, sin = math.cos(edit["angle_rad"]), math.sin(edit["angle_rad"])
            a = edit["semi_axes_a_px"]
            start = _screen(box, width, edit["center_x_px"] + a * cos, edit["center_y_px"] + a * sin)
            end = _screen(box, width, edit["center_x_px"] + (a + 25) * cos, edit["center_y_px"] + (a + 25) * sin)
            page.mouse.move(*start)
            page.mouse.down()
            page.mouse.move(*end, steps=8)
            page.mouse.up()
            estimate = page.inner_text("#hc")
            assert estimate != automatic_hc and float(estimate) > float(automatic_hc)  # live client-side estimate

            with page.expect_request("**/api/correct") as sent, page.expect_response("**/api/correct") as answered:
                page.click("#accept")
            assert answered.value.status == 200, answered.value.text()
            body = json.loads(sent.value.post_data)
            corrected = answered.value.json()
            expect(page.locator("#corrected")).to_be_visible()
            assert "corrected by user" in page.inner_text("#corrected")
            assert f"{row['hc_mm']:.1f}" in page.inner_text("#automatic")

            # What the page shows is the server's recomputation, which is measure_ellipse's.
            expected = measure_ellipse(ellipse_from_fields(*(body[k] for k in ELLIPSE_KEYS)), float(SAMPLE_PIXEL_MM))
            assert corrected["corrected_by_user"] is True and corrected["hc_mm"] == pytest.approx(expected.hc_mm)
            assert page.inner_text("#hc") == f"{corrected['hc_mm']:.1f}" != automatic_hc
            assert body["semi_axes_a_px"] == pytest.approx(a + 25, abs=1.5)
            assert corrected["automatic"]["hc_mm"] == pytest.approx(row["hc_mm"])

            with page.expect_download(timeout=120_000) as download:
                page.click("#report")
            assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
        finally:
            browser.close()

    log = AuditLog(audit_file)
    try:
        rows = log.query(limit=100)
    finally:
        log.close()
    assert [r["action"] for r in rows] == ["login", "measure", "correct", "report"]
    correction = rows[2]
    assert correction["actor"] == "sonographer" and correction["exam_id"] == row["exam_id"]
    assert correction["hc_mm"] == pytest.approx(corrected["hc_mm"])
    assert correction["detail"]["automatic"]["hc_mm"] == pytest.approx(row["hc_mm"])
    assert correction["detail"]["corrected"]["hc_mm"] == pytest.approx(corrected["hc_mm"])
    assert rows[3]["hc_mm"] == pytest.approx(corrected["hc_mm"])  # the report is of the corrected exam
