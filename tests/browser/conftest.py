"""Fixtures for the web page's tests: real in-process daemons (tiny models) on loopback sockets
and one headless Debian Chromium driven by Playwright for the session.

Playwright's own browser download is not used: it launches ``/usr/bin/chromium`` (the apt
package ``chromium``, which `make test` installs). Without it the browser tests are skipped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("aiohttp")

# the daemon tests' helpers: the urllib client, tiny job settings, the in-process daemon
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from daemon_helpers import daemon_factory

CHROMIUM = os.environ.get("CLIPASSO_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def start_daemon(tmp_path, model_store):
    """Factory: ``start_daemon(**config) -> (Client, Daemon)``; stopped after the test."""
    yield from daemon_factory(tmp_path, model_store)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (its own sessionStorage) that accepts downloads; script errors collected
    in ``page.console_errors``."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: _note_console(page, message))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    context.close()


@pytest.fixture
def submit_form_job(page):
    """``submit_form_job(iterations=, seeds=, choose={select: label}) -> (row, job id)``:
    fill the open page's form for a 2-stroke job of the tiny models on a small PNG, make the
    choices, submit, and wait until its row says done."""
    from daemon_helpers import HANG_S, TINY_MODELS, png_bytes
    from playwright.sync_api import expect

    def submit(iterations: int, seeds: int, choose: dict[str, str]):
        png = {"name": "disc.png", "mimeType": "image/png", "buffer": png_bytes()}
        page.set_input_files("#image", files=[png])
        page.fill("#levels", "2")
        page.fill("#iterations", str(iterations))
        page.fill("#seeds", str(seeds))
        for select, label in choose.items():
            page.select_option(select, label=label)
        page.click("details > summary")
        page.fill("#loss-model", TINY_MODELS["loss_model"])
        page.fill("#saliency-model", TINY_MODELS["saliency_model"])
        page.click("#submit")
        row = page.locator("li.job").first
        expect(row).to_have_attribute("data-state", "done", timeout=int(HANG_S * 1000))
        return row, row.get_attribute("data-id")

    return submit


def _note_console(page, message) -> None:
    # A 409 before the first snapshot (or a 401 before the token) is the API at work, and
    # Chromium logs each as "Failed to load resource"; any other error is the page's fault.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        page.console_errors.append(message.text)
