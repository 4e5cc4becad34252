"""The demo in a real headless browser (Debian ``chromium`` driven by Playwright).

Set ``RESTORE_SCREENSHOTS=docs/screenshots`` to also save a screenshot of every tab there.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from playwright import sync_api

from app import DemoConfig, launch

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    ui = launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1100, "height": 800})
        # not "networkidle": the page keeps a connection open to the server
        tab.goto(ui.local_url, wait_until="domcontentloaded")
        tab.get_by_role("tab", name="Image").wait_for(timeout=60_000)
        yield tab, config
        browser.close()
    ui.close()


def test_image_upload_shows_before_after(page, tmp_path):
    tab, config = page
    tab.get_by_role("tab", name="Image").click()
    tab.locator("#image-input input[type=file]").set_input_files(str(Path(config.workdir) / "examples" / "astronaut.png"))
    tab.locator("#image-run").click()
    slider_images = tab.locator("#image-slider img")
    slider_images.first.wait_for(state="visible", timeout=60_000)
    assert slider_images.count() == 2  # before and after
    tab.screenshot(path=str(tmp_path / "image.png"))
    assert (tmp_path / "image.png").stat().st_size > 0
    if folder := os.environ.get("RESTORE_SCREENSHOTS"):
        _screenshot_tabs(tab, Path(folder))


def _screenshot_tabs(tab, folder: Path) -> None:
    """Screenshots for docs/: each tab after running its example (Video: before running)."""
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / "image.png"))
    tab.get_by_role("tab", name="Video").click()
    tab.screenshot(path=str(folder / "video.png"))
    tab.get_by_role("tab", name="DICOM").click()
    tab.get_by_text("ct_series.zip", exact=True).last.click()
    tab.get_by_role("button", name="Restore series").click()
    tab.get_by_text("slices written as derived DICOM").wait_for(timeout=60_000)
    tab.screenshot(path=str(folder / "dicom.png"))
    tab.get_by_role("tab", name="Inspect").click()
    tab.get_by_role("button", name="Attention-routing map").click()
    tab.get_by_text("heads", exact=False).filter(has_text="untrained").first.wait_for(timeout=60_000)
    tab.get_by_role("button", name="Show head attention").click()
    tab.get_by_role("button", name="Region partition").click()
    tab.get_by_text("bottleneck:").wait_for(timeout=60_000)
    tab.screenshot(path=str(folder / "inspect.png"), full_page=True)
