"""The demo in a real headless browser (Debian ``chromium`` driven by Playwright).

Set ``RESTORE_SCREENSHOTS=docs/screenshots`` to also save a screenshot of every tab there, each
after a run, with the shipped models of ``weights/``.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from playwright import sync_api

from app import DemoConfig, launch
from tests.conditions import wait_until

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system browser; a missing browser fails the UI tests (they are not optional)."""
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if found is None:
        pytest.fail("no chromium on PATH: `apt-get install -y chromium` (.ci/run does this)", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory, chromium):
    config = DemoConfig(workdir=tmp_path_factory.mktemp("demo"), device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        if os.environ.get("RESTORE_SCREENSHOTS"):  # the pictures in docs/ show the shipped models
            patch.setenv("RESTORE_WEIGHTS_DIR", str(REPO / "weights"))
        ui = launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1100, "height": 800})
        # not "networkidle": the page keeps a connection open to the server
        tab.goto(ui.local_url, wait_until="domcontentloaded")
        tab.get_by_role("tab", name="Image").wait_for(timeout=60_000)
        yield tab, config, ui, browser
        browser.close()
    ui.close()


def test_image_upload_shows_before_after(page, tmp_path):
    tab, config, _, _ = page
    tab.get_by_role("tab", name="Image").click()
    tab.locator("#image-input input[type=file]").set_input_files(str(Path(config.workdir) / "examples" / "astronaut.png"))
    tab.locator("#image-run").click()
    slider_images = tab.locator("#image-slider img")
    slider_images.first.wait_for(state="visible", timeout=120_000)
    assert slider_images.count() == 2  # before and after
    tab.locator("#image-zoom img").wait_for(state="visible", timeout=60_000)
    srcs = [slider_images.nth(i).get_attribute("src") for i in range(2)]
    assert all(".png" in (s or "") for s in srcs), "previews are lossless PNG"
    tab.screenshot(path=str(tmp_path / "image.png"))
    assert (tmp_path / "image.png").stat().st_size > 0
    if folder := os.environ.get("RESTORE_SCREENSHOTS"):
        _screenshot_tabs(tab, Path(folder), Path(config.workdir) / "examples")


def test_closing_the_tab_frees_its_dicom_volumes(page):
    _, config, ui, browser = page
    demo = ui.restore_demo
    before = demo.volumes.nbytes  # other tabs' series (the screenshot run's) stay
    other = browser.new_page(viewport={"width": 1100, "height": 800})
    other.goto(ui.local_url, wait_until="domcontentloaded")
    other.get_by_role("tab", name="DICOM").click()
    other.get_by_text("ct_series.zip", exact=True).last.click()
    wait_until(lambda: demo.volumes.nbytes > before, what="the series to be loaded")
    other.close()
    wait_until(lambda: demo.volumes.nbytes <= before, what="the closed tab's volumes to be freed")


def _screenshot_tabs(tab, folder: Path, examples: Path) -> None:
    """Screenshots for docs/: each tab after running its example."""
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / "image.png"), full_page=True)
    tab.get_by_role("tab", name="Video").click()
    tab.locator("#video-input input[type=file]").set_input_files(str(examples / "sample.mp4"))
    tab.get_by_role("button", name="Restore video").click()
    tab.locator("#video-download").get_by_text("sample_x4").first.wait_for(timeout=180_000)
    tab.screenshot(path=str(folder / "video.png"), full_page=True)
    tab.get_by_role("tab", name="DICOM").click()
    tab.get_by_text("ct_series.zip", exact=True).last.click()
    tab.get_by_role("button", name="Restore series").click()
    tab.get_by_text("slices written as derived DICOM").wait_for(timeout=180_000)
    tab.screenshot(path=str(folder / "dicom.png"), full_page=True)
    tab.get_by_role("tab", name="Inspect").click()
    tab.get_by_role("button", name="Attention-routing map").click()
    tab.get_by_text("Measured on this clip").wait_for(timeout=180_000)
    tab.get_by_role("button", name="Show head attention").click()
    tab.get_by_role("button", name="Region partition").click()
    tab.get_by_text("bottleneck:").wait_for(timeout=180_000)
    tab.screenshot(path=str(folder / "inspect.png"), full_page=True)
