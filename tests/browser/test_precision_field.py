"""The live page's Arithmetic field (issue 22): the loss model's arithmetic chosen is sent with
the job and is the one that ran (the result's ``models.loss_arithmetic``). Real headless
Chromium, real in-process daemon, tiny models."""

from __future__ import annotations

import pytest

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

#: what a select's drop-down arrow takes of its box, generously (Chromium draws it in ~16 px)
ARROW_PX = 24
#: each option's text width in the select's own font
TEXT_WIDTHS = """s => {
  const style = getComputedStyle(s);
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  return Object.fromEntries([...s.options].map((o) => [o.text, context.measureText(o.text).width]));
}"""


@pytest.mark.parametrize(
    ("label", "sent", "ran"),
    [("Exact (fp32)", "fp32", "float32"), ("Fast (bf16)", "bf16", "bfloat16 autocast")],
)
def test_the_arithmetic_chosen_is_the_one_that_runs(
    start_daemon, page, submit_form_job, label, sent, ran
):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    expect(page.locator("#precision")).to_have_value("auto")
    expect(page.locator("#precision-hint")).to_contain_text("Auto uses bf16 only where")
    _, job_id = submit_form_job(iterations=3, seeds=1, choose={"#precision": label})
    assert client.status(job_id)["state"] == protocol.DONE
    result = client.result(job_id)
    assert result["settings"]["precision"] == sent
    assert result["models"]["loss_arithmetic"] == ran
    assert page.console_errors == []


def test_the_options_are_the_protocols_and_fit_their_field(page, start_daemon):
    """Every option is one the daemon takes, and the longest one is not cut off."""
    client, _ = start_daemon()
    page.goto(client.url + "/")
    select = page.locator("#precision")
    values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert tuple(values) == protocol.PRECISIONS
    widths = select.evaluate(TEXT_WIDTHS)
    room = select.evaluate("s => s.clientWidth") - ARROW_PX
    assert all(width <= room for width in widths.values()), (room, widths)
