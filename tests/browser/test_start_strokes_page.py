"""The page's "Start strokes (SVG)" in a real headless Chromium against a real daemon (tiny
models): the chosen SVG goes through ``POST /v1/start-strokes`` and its strokes with the job;
kept ones come back as the very numbers drawn; an SVG without strokes is refused in words
before any job is queued.
"""

from __future__ import annotations

import pytest
from daemon_helpers import HANG_S, png_bytes
from test_live_page import card, fill_tiny_settings

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

HANG_MS = int(HANG_S * 1000)
#: drawn over the 96 x 64 photo (its viewBox is the photo): one curve and one line
DRAWING = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="192" height="128" viewBox="0 0 96 64">'
    '<path d="M 10.125,20.5 C 30.0625,5.75 50.3,40.1 70.7,30.9 L 80,60"/></svg>'
)
STROKES = [
    [[10.125, 20.5], [30.0625, 5.75], [50.3, 40.1], [70.7, 30.9]],
]


def _choose(page, photo: bytes, drawing: str | None, keep: bool) -> None:
    page.set_input_files("#image", {"name": "disc.png", "mimeType": "image/png", "buffer": photo})
    if drawing is not None:
        page.set_input_files(
            "#start-svg",
            {"name": "mine.svg", "mimeType": "image/svg+xml", "buffer": drawing.encode()},
        )
    if keep:
        page.check("#keep-start")


def test_start_strokes_from_an_svg_are_kept_exactly(start_daemon, page):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    _choose(page, png_bytes((96, 64)), DRAWING, keep=True)
    fill_tiny_settings(page, levels="3,4")
    page.click("#submit")
    expect(page.locator("#form-status")).to_have_text("Queued: disc.png.", timeout=HANG_MS)

    row = page.locator("li.job").first
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    job_id = row.get_attribute("data-id")
    result = client.result(job_id)
    assert result["settings"]["keep_start_strokes"] is True
    given = result["settings"]["start_strokes"]
    assert given[0] == STROKES[0]
    assert given[1][0] == [70.7, 30.9] and given[1][3] == [80, 60]  # the line, as a cubic
    for level in result["levels"]:
        assert [path["points"] for path in level["paths"][:2]] == given
        assert len(level["paths"]) == level["strokes"]
    expect(card(page, job_id).locator("figure.preview path")).to_have_count(7, timeout=HANG_MS)
    assert page.console_errors == []


def test_an_svg_without_strokes_is_refused_before_any_job(start_daemon, page):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    empty = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 96 64"><text>hi</text></svg>'
    _choose(page, png_bytes((96, 64)), empty, keep=False)
    fill_tiny_settings(page)
    page.click("#submit")
    expect(page.locator("#form-status")).to_contain_text(
        "Not queued: mine.svg: the SVG has no paths", timeout=HANG_MS
    )
    expect(page.locator("#submit")).to_be_enabled()
    # keeping strokes without an SVG is said at once
    page.set_input_files("#start-svg", [])
    page.check("#keep-start")
    page.click("#submit")
    expect(page.locator("#form-status")).to_have_text(
        "Choose the SVG of the strokes to keep first."
    )
    assert client.get("/v1/jobs") == (200, {"jobs": []})
    assert page.console_errors == []
