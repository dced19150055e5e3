"""The README's picture of the DICOM node at work: Orthanc's own web explorer showing a study a modality sent,
with the node's report and overlay in it.

    python -m bench.pacs_screenshot

Starts Orthanc and the node as ``bench.pacs`` does, sends two Kermany test films (one study each), waits for the
results, and photographs in headless Chromium (Playwright) Orthanc Explorer's page of the first study and the
overlay instance's preview, side by side in ``docs/figures/orthanc_study.png``.
"""

from __future__ import annotations

import shutil
import time

from bench.common import DATA, ROOT
from bench.pacs import MODEL, WORK, echo, inbox_rows, send_all, start_node
from pneumoscan.data.io import load_image

FIGURE = ROOT / "docs" / "figures" / "orthanc_study.png"


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from tests.conftest import launch_chromium
    from tests.dicom_films import dx_film, new_study, save
    from tests.orthanc import free_port, start_orthanc

    folder = WORK / "screenshot"
    shutil.rmtree(folder, ignore_errors=True)
    films = [save(dx_film(load_image(p), new_study(7000 + i)), folder / f"film{i}.dcm")
             for i, p in enumerate(sorted((DATA / "test" / "PNEUMONIA").iterdir())[:2])]
    node_port = free_port()
    orthanc = start_orthanc(node_port)
    node = start_node(folder / "inbox", node_port, orthanc.dicom_port)
    try:
        assert echo(node_port, "PNEUMOSCAN")
        send_all(films, orthanc.dicom_port, 1)
        while sum(r["state"] == "sent" for r in inbox_rows(folder / "inbox")) < len(films):
            time.sleep(0.5)
        time.sleep(2)
        study = next(s for s in orthanc.get("/studies?expand") if len(s["Series"]) == 3)
        overlay = next(i for series in study["Series"] for i in orthanc.get(f"/series/{series}")["Instances"]
                       if orthanc.get(f"/instances/{i}/simplified-tags").get("Modality") == "OT")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.goto(f"{orthanc.url}/app/explorer.html#study?uuid={study['ID']}")
            page.wait_for_timeout(2500)
            page.screenshot(path=str(folder / "study.png"))
            page.goto(f"{orthanc.url}/instances/{overlay}/preview")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(folder / "overlay.png"))
            browser.close()
    finally:
        node.terminate()
        node.wait(60)
        orthanc.stop()
    left, right = Image.open(folder / "study.png"), Image.open(folder / "overlay.png")
    right = right.crop(right.getbbox() or (0, 0, right.width, right.height))
    right.thumbnail((left.height, left.height))
    canvas = Image.new("RGB", (left.width + right.width, left.height), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(FIGURE)
    print(f"wrote {FIGURE.relative_to(ROOT)} (model {MODEL.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
