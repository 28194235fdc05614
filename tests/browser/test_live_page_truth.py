"""What the live page tells about a job is true: a job still loading says so instead of
"step 0", a job's time budget is shown while it waits and runs, a job its budget stopped early
says so with the steps it ran (not "Done" with a full bar), and a job's name is shown as text,
whatever markup it holds. Real headless Chromium, real in-process daemon, tiny models; every
wait is on an event, with a limit that only catches a hang.
"""

from __future__ import annotations

import os
import threading

import pytest
from daemon_helpers import HANG_S, job_body

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

HANG_MS = int(HANG_S * 1000)
#: a job name a careless page would turn into an element that runs script
MARKUP_NAME = '<img src=x onerror="window.injected=1"><b>bold</b>.png'
#: where to copy the screenshot of the budget-stopped job, when asked (to look at it)
SCREENSHOT_ENV = "CLIPASSO_TRUTH_PNG"
LOADING_SCREENSHOT_ENV = "CLIPASSO_TRUTH_LOADING_PNG"


def card(page, job_id: str):
    return page.locator(f'li.job[data-id="{job_id}"]')


class SlowLoads:
    """The worker's model store, whose model loads wait until ``go`` is set (everything else
    is the real store's)."""

    def __init__(self, store, go: threading.Event) -> None:
        self.store, self.go = store, go

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def loss_model(self, name: str, precision: str = "auto"):
        assert self.go.wait(HANG_S)
        return self.store.loss_model(name, precision)

    def saliency_model(self, name: str):
        assert self.go.wait(HANG_S)
        return self.store.saliency_model(name)


def submit(client, name: str = "test", **settings) -> str:
    status, body = client.post_json("/v1/jobs", {**job_body(levels=[2], **settings), "name": name})
    assert status == 202, body
    return body["id"]


def test_loading_budget_and_markup_name_are_shown_as_they_are(start_daemon, page):
    client, daemon = start_daemon()
    first = submit(client, MARKUP_NAME, iterations=20000, seed=1)  # runs until cancelled
    client.wait(first, until=lambda s: s["step"] >= 1)
    second = submit(client, "budgeted.png", iterations=20000, seed=2, time_budget_s=3600)
    page.goto(client.url + "/")

    # the name is text: no element made of it, no script run
    link = card(page, first).locator(".link")
    expect(link).to_have_text(MARKUP_NAME)
    assert card(page, first).locator(".title *:not(a)").count() == 0
    assert page.evaluate("window.injected") is None
    expect(card(page, first).locator("progress.bar")).to_have_attribute(
        "aria-label", f"Progress of {MARKUP_NAME}"
    )

    # waiting: its budget is shown
    queued = card(page, second)
    expect(queued.locator(".state")).to_have_text("Queued (1 ahead)")
    expect(queued.locator(".numbers")).to_contain_text("time budget 1 h 00 min")

    # running but not at its first step yet: its models are loading (here a load that waits
    # for the test), so the page says so rather than "step 0"
    loading = threading.Event()
    worker = daemon.workers[0]
    worker.models = SlowLoads(worker.models, loading)
    try:
        assert client.delete(f"/v1/jobs/{first}")[0] == 200
        expect(queued).to_have_attribute("data-state", "running", timeout=HANG_MS)
        expect(queued.locator(".state")).to_have_text(
            "Starting: loading the models and preparing the photo…"
        )
        expect(queued.locator(".numbers")).to_contain_text("time budget 1 h 00 min")
        assert client.status(second)["step"] == 0
        if os.environ.get(LOADING_SCREENSHOT_ENV):
            page.screenshot(path=os.environ[LOADING_SCREENSHOT_ENV], full_page=True)
    finally:
        loading.set()
        worker.models = worker.models.store

    # running: the share of the steps done, and the budget
    expect(queued.locator(".state")).to_contain_text("Running, ", timeout=HANG_MS)
    expect(queued.locator(".state")).to_contain_text("% of the steps done")
    expect(queued.locator(".numbers")).to_contain_text("time budget 1 h 00 min")
    assert client.delete(f"/v1/jobs/{second}")[0] == 200
    expect(queued.locator(".state")).to_have_text("Cancelled", timeout=HANG_MS)
    # the first job was cancelled, not failed (the store it ran on was swapped under it)
    expect(card(page, first).locator(".state")).to_have_text("Cancelled")
    assert page.evaluate("window.injected") is None
    assert page.console_errors == []


def test_a_job_its_budget_stopped_says_so_with_the_steps_it_ran(start_daemon, page, tmp_path):
    client, _ = start_daemon()
    job = submit(client, "quick.png", iterations=20000, seed=3, time_budget_s=1)
    final = client.wait(job)
    assert final["state"] == protocol.DONE, final
    assert final["stop_reason"] == "budget" and final["time_budget_s"] == 1
    steps = final["step"]
    assert 1 <= steps < 20000, final
    assert client.result(job)["steps_run"] == steps

    page.goto(client.url + "/")
    row = card(page, job)
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    expect(row.locator(".state")).to_have_text(
        f"Stopped by its time budget (1 s) after {steps} of 20000 steps"
    )
    expect(row.locator(".numbers")).to_contain_text(f"step {steps} of 20000")
    bar = row.locator("progress.bar")
    assert bar.evaluate("b => [b.value, b.max]") == [steps, 20000]
    expect(bar).to_have_attribute("aria-valuetext", f"step {steps} of 20000")
    expect(row.locator("button.download")).to_be_visible()  # its strokes are a result

    shot = tmp_path / "budget-stopped.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get(SCREENSHOT_ENV):
        shot.replace(os.environ[SCREENSHOT_ENV])
    assert page.console_errors == []
