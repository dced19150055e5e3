"""End-to-end: real Chromium (Debian's, driven by Playwright) uploads files on the web page and sees
the probabilities and the overlay, a refusal, and the population-shift warning beside a flagged
result. Skips, with the reason, only where Chromium is not installed."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.conftest import launch_chromium, needs_chromium

pytestmark = needs_chromium
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "runs" / "screenshots"


@pytest.fixture(scope="module")
def flagging_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run whose novelty limit is near 0: every X-ray it scores is flagged."""
    import dataclasses

    from pneumoscan.models.checkpoint import load_model, redescribe, replace_checks

    run = tmp_path_factory.mktemp("flagging") / "run"
    shutil.copytree(tiny_run, run)
    checks = load_model(run).checks
    replace_checks(run, dataclasses.replace(checks, shift=dataclasses.replace(checks.shift, threshold=1e-6)))
    redescribe(run, population="the phantoms of the test suite")
    return run


@contextlib.contextmanager
def serving(model: Path):
    """The app serving ``model`` on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    from pneumoscan.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module", params=["tiny", "flagging"])
def server_url(request, tiny_run, flagging_run):
    with serving(tiny_run if request.param == "tiny" else flagging_run) as url:
        yield url, request.param


def test_upload_shows_probabilities_overlay_and_flag(server_url, phantom_root):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, kind = server_url
    xray = next((phantom_root / "test" / "PNEUMONIA").iterdir())
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#file", str(xray))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        probabilities = [float(page.inner_text(f"#p-{name}")) for name in ("NORMAL", "PNEUMONIA")]
        assert sum(probabilities) == pytest.approx(1, abs=2e-4)
        label = page.inner_text("#label")
        assert label in ("NORMAL", "PNEUMONIA")
        assert f"pushed the model towards {label} (Grad-CAM)" in page.inner_text("#explained")  # the decision's map
        assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
        warning = page.locator("#warning")
        if kind == "flagging":
            assert warning.is_visible() and "less reliable" in warning.inner_text()
        else:
            assert not warning.is_visible()
        page.fill("#opacity", "80")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"upload_{kind}.png"), full_page=True)
        browser.close()
    assert (SCREENSHOT_DIR / f"upload_{kind}.png").stat().st_size > 5000


def test_a_document_is_refused_with_the_reason(server_url, tmp_path):
    from PIL import Image

    from pneumoscan.input_checks.not_xray import made_images

    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = server_url
    document = tmp_path / "letter.png"
    Image.fromarray((made_images(1, seed=5)["document"][0] * 255).astype("uint8")).save(document)
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#file", str(document))
        page.wait_for_selector("#error.refused", timeout=30_000)
        assert "does not look like a chest X-ray" in page.inner_text("#error")
        assert page.locator("#result").is_hidden()
        browser.close()


def test_the_page_speaks_of_the_served_models_task(brain_mri_model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with serving(brain_mri_model) as url, sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('drop-what').textContent.includes('brain MRI')")
        assert page.inner_text("#drop-what") == "Drop a brain MRI here"
        assert "on brain MRI" in page.inner_text("#task") and "brain MRI" in page.inner_text("#use")
        assert "chest" not in page.content().lower() and "pneumonia" not in page.content().lower()
        browser.close()


def test_the_page_outlines_the_lungs_and_says_a_lateral_film_is_not_frontal(lung_model, tmp_path):
    from PIL import Image
    from tests.conftest import one_lung_film

    from pneumoscan.data.synthetic import phantom_with_lungs

    sync_api = pytest.importorskip("playwright.sync_api")
    film, lungs = phantom_with_lungs(np.random.default_rng(11), size=64)
    frontal, lateral = tmp_path / "frontal.png", tmp_path / "lateral.png"
    Image.fromarray((film.clip(0, 1) * 255).astype("uint8")).save(frontal)
    Image.fromarray((one_lung_film(film, lungs).clip(0, 1) * 255).astype("uint8")).save(lateral)
    with serving(lung_model) as url, sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#file", str(frontal))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        assert page.locator("#lungs-row").is_visible() and "the lungs, outlined" in page.inner_text("#heat-in-lungs")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "upload_lungs.png"), full_page=True)
        page.set_input_files("#file", str(lateral))
        page.wait_for_selector("#error.refused", timeout=30_000)
        assert "not a frontal chest X-ray" in page.inner_text("#error")
        assert page.locator("#result").is_hidden()
        browser.close()
