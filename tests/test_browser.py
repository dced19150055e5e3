"""End-to-end: real Chromium (Debian's, driven by Playwright) uploads an X-ray on the web page and
sees the probability and the overlay. Skips, with the reason, only where Chromium is not installed."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "runs" / "screenshots"


@pytest.fixture(scope="module")
def server_url(tiny_run):
    import uvicorn

    from pneumoscan.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_upload_shows_probability_and_overlay(server_url, phantom_root):
    sync_api = pytest.importorskip("playwright.sync_api")
    xray = next((phantom_root / "test" / "PNEUMONIA").iterdir())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        page = browser.new_page()
        page.goto(server_url)
        page.set_input_files("#file", str(xray))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        probability = float(page.inner_text("#probability"))
        assert 0.0 <= probability <= 1.0
        assert page.inner_text("#label") in ("NORMAL", "PNEUMONIA")
        assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
        page.fill("#opacity", "80")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "upload.png"), full_page=True)
        browser.close()
    assert (SCREENSHOT_DIR / "upload.png").stat().st_size > 5000
