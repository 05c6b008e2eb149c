"""`fetometry serve` for real: uvicorn on a loopback port, concurrent HTTP clients, and the
page driven in headless Chromium (Debian's /usr/bin/chromium through Playwright).
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from helpers import CHROMIUM, CHROMIUM_ARGS

from fetometry import DISCLAIMER
from fetometry.resources import SAMPLES_DIR
from fetometry.serve.app import ServeSettings, create_app

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
SAMPLE_PIXEL_MM = "0.130960682505"
SAMPLE_HC_MM = 165.45  # the HC18 reference for this image


def _rss_mb() -> float:
    """Resident memory of this process (the server runs in it), from /proc."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20


@pytest.fixture(scope="module")
def live_server():
    """The app under uvicorn on 127.0.0.1 and a free port, in a thread; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves on this socket
    app = create_app(ServeSettings(max_pending=32))
    app.state.service.cache.get(None)  # load the default model before the clock starts
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _measure(url: str) -> httpx.Response:
    files = {"file": ("345_HC.png", SAMPLE.read_bytes(), "image/png")}
    return httpx.post(f"{url}/api/measure", files=files, data={"pixel_size_mm": SAMPLE_PIXEL_MM}, timeout=120)


def test_concurrent_requests_all_succeed_with_bounded_memory(live_server):
    assert _measure(live_server).status_code == 200  # warm-up: first-use allocations
    before = _rss_mb()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda _: _measure(live_server), range(12)))
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 12
    assert len({round(r.json()["hc_mm"], 6) for r in responses}) == 1  # same image, same answer
    assert elapsed < 120, f"12 requests took {elapsed:.0f} s"
    # One exam at a time: 12 queued uploads must not cost 12 decoded images and maps.
    assert _rss_mb() - before < 150, f"memory grew by {_rss_mb() - before:.0f} MB"


def test_an_oversized_upload_is_answered_not_reset(live_server):
    files = {"file": ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(50 * 1024 * 1024), "image/png")}
    response = httpx.post(f"{live_server}/api/measure", files=files, timeout=120)
    assert response.status_code == 413 and "limit is 20 MB" in response.json()["detail"]
    assert _measure(live_server).status_code == 200


def test_the_page_measures_a_sample_and_downloads_the_report(live_server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'); the browser test needs it")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(live_server + "/")
            assert DISCLAIMER in page.inner_text("#disclaimer")
            # The page's CSP forbids eval, so waits use locators, not wait_for_function strings.
            expect(page.locator("#explain option")).to_have_count(5)

            # A non-image is refused with the server's reason, shown on the page.
            (tmp_path / "notes.png").write_text("not an image")
            page.set_input_files("#file", str(tmp_path / "notes.png"))
            page.click("#measure")
            page.wait_for_selector("#error:not([hidden])")
            assert "not a supported file" in page.inner_text("#error")

            page.set_input_files("#file", str(SAMPLE))
            page.fill("#pixel_size_mm", SAMPLE_PIXEL_MM)
            page.fill("#ga_weeks", "20")
            page.select_option("#explain", "gradcam")
            page.click("#measure")
            expect(page.locator("#hc")).not_to_have_text("-", timeout=120_000)
            assert page.is_hidden("#error")
            hc = float(page.inner_text("#hc"))
            assert abs(hc - SAMPLE_HC_MM) < 5.0, hc
            assert 0 < float(page.inner_text("#hc-centile")) < 100
            assert DISCLAIMER in page.inner_text("#disclaimer") and DISCLAIMER in page.inner_text("#footer-disclaimer")

            overlay = page.get_attribute("#view-image", "src")
            page.click("button[data-view=explanation]")
            assert page.get_attribute("#view-image", "src") not in (overlay, None)
            assert page.get_attribute("button[data-view=explanation]", "aria-pressed") == "true"

            with page.expect_download(timeout=120_000) as download:
                page.click("#report")
            assert download.value.suggested_filename == "345_HC_report.pdf"
            target = tmp_path / "report.pdf"
            download.value.save_as(target)
            assert target.read_bytes().startswith(b"%PDF")
        finally:
            browser.close()
