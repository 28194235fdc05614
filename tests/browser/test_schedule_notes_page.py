"""The live page says what the engine's schedule reduced (issue 22: a reduced schedule is
never silent): a job whose time budget cannot hold its work shows "Reduced: 1 seed instead of
3 and ... iterations instead of 20000 to fit ...". Real headless Chromium, real in-process
daemon, tiny models; 20000 iterations of 3 seeds never fit in 3 s, whatever the machine."""

from __future__ import annotations

import pytest
from daemon_helpers import HANG_S, job_body

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

HANG_MS = int(HANG_S * 1000)


def test_a_planned_job_shows_what_was_reduced(start_daemon, page):
    client, _ = start_daemon()
    body = {**job_body(levels=[2], seeds=3, iterations=20000, seed=4, time_budget_s=3)}
    status, answer = client.post_json("/v1/jobs", {**body, "name": "planned.png"})
    assert status == 202, answer
    final = client.wait(answer["id"])
    assert final["state"] == protocol.DONE and final["schedule_notes"], final

    page.goto(client.url + "/")
    row = page.locator(f'li.job[data-id="{answer["id"]}"]')
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    schedule = row.locator(".schedule")
    expect(schedule).to_be_visible()
    expect(schedule).to_have_text(f"Reduced: {'; '.join(final['schedule_notes'])}")
    expect(schedule).to_contain_text("1 seed instead of 3 and ")
    assert page.console_errors == []


def test_a_job_nothing_was_reduced_for_shows_no_such_line(start_daemon, page):
    client, _ = start_daemon()
    status, answer = client.post_json("/v1/jobs", job_body(levels=[2], iterations=2, seed=5))
    assert status == 202, answer
    assert client.wait(answer["id"])["schedule_notes"] == []
    page.goto(client.url + "/")
    row = page.locator(f'li.job[data-id="{answer["id"]}"]')
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    expect(row.locator(".schedule")).to_be_hidden()
    assert page.console_errors == []
