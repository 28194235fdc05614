"""The live page's Schedule field (issue 22, 2a): "Quick" sends the fast schedule, the job
prunes its seeds and the page says so. Real headless Chromium, real in-process daemon, tiny
models."""

from __future__ import annotations

import pytest

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect


def test_quick_runs_the_fast_schedule(start_daemon, page, submit_form_job):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    expect(page.locator("#schedule")).to_have_value("full")
    # two seeds, 20 steps: ranked on the evaluation after 10 steps (one every 10)
    row, job_id = submit_form_job(iterations=20, seeds=2, choose={"#schedule": "Quick"})
    status = client.status(job_id)
    assert status["state"] == protocol.DONE
    assert client.result(job_id)["settings"]["schedule"] == "fast"
    (note,) = status["schedule_notes"]
    assert note.startswith("fast schedule: seed ") and "pruned at step 11 of 20" in note
    expect(row.locator(".schedule")).to_have_text(f"Reduced: {note}")
    assert page.console_errors == []
