"""The live page's Schedule field (issue 22, 2a): "Quick" sends the fast schedule, the job
prunes its seeds and the page says so. Real headless Chromium, real in-process daemon, tiny
models."""

from __future__ import annotations

import pytest
from daemon_helpers import HANG_S, TINY_MODELS, png_bytes

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

HANG_MS = int(HANG_S * 1000)


def test_quick_runs_the_fast_schedule(start_daemon, page):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    expect(page.locator("#schedule")).to_have_value("full")
    page.set_input_files(
        "#image", files=[{"name": "disc.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    page.fill("#levels", "2")
    # two seeds, 20 steps: ranked on the evaluation after 10 steps (one every 10)
    page.fill("#iterations", "20")
    page.fill("#seeds", "2")
    page.select_option("#schedule", label="Quick")
    page.click("details > summary")
    page.fill("#loss-model", TINY_MODELS["loss_model"])
    page.fill("#saliency-model", TINY_MODELS["saliency_model"])
    page.click("#submit")

    row = page.locator("li.job").first
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    job_id = row.get_attribute("data-id")
    status = client.status(job_id)
    assert status["state"] == protocol.DONE
    assert client.result(job_id)["settings"]["schedule"] == "fast"
    (note,) = status["schedule_notes"]
    assert note.startswith("fast schedule: seed ") and "pruned at step 11 of 20" in note
    expect(row.locator(".schedule")).to_have_text(f"Reduced: {note}")
    assert page.console_errors == []
