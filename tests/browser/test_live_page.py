"""The live page in a real headless Chromium against a real daemon running the tiny models.

The page is driven the way a person uses it: it lists a running job whose progress bar moves
and whose previews draw strokes, Cancel cancels, a dropped photo becomes a finished job whose
SVG downloads with one layer per level, and a daemon with a token refuses the page until the
token is typed in.
"""

from __future__ import annotations

import base64
import os
import shutil
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import pytest
from daemon_helpers import HANG_S, TINY_MODELS, job_body, png_bytes

from inkscape_clipasso import protocol

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

SVG = "{http://www.w3.org/2000/svg}"
INKSCAPE = "{http://www.inkscape.org/namespaces/inkscape}"
#: where the screenshot of a running job is copied for the README, when asked
SCREENSHOT_COPY_ENV = "CLIPASSO_LIVE_VIEW_PNG"
#: Playwright's limit on every wait: long enough that it only catches a hang
HANG_MS = int(HANG_S * 1000)


def card(page, job_id: str):
    return page.locator(f'li.job[data-id="{job_id}"]')


def fill_tiny_settings(page, levels: str = "2,3", iterations: str = "5") -> None:
    """The form's settings for a job the tiny models finish in seconds."""
    page.fill("#levels", levels)
    page.fill("#iterations", iterations)
    page.fill("#seeds", "1")
    page.click("details > summary")
    page.fill("#loss-model", TINY_MODELS["loss_model"])
    page.fill("#saliency-model", TINY_MODELS["saliency_model"])


def svg_layers(path: Path) -> list[tuple[str, int]]:
    """(label, number of paths) of each stroke layer of a downloaded SVG."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return [
        (g.get(f"{INKSCAPE}label"), len(g.findall(f"{SVG}path")))
        for g in root.iter(f"{SVG}g")
        if g.get(f"{INKSCAPE}groupmode") == "layer" and g.get("id", "").startswith("clipasso-level")
    ]


def test_running_job_shows_progress_and_live_previews_and_cancels(start_daemon, page, tmp_path):
    client, _ = start_daemon()
    photo = resources.files("clipasso_server") / "data" / "sample.png"
    body = job_body(photo.read_bytes(), levels=[4, 8, 16], iterations=20000)  # until cancelled
    status, job = client.post_json("/v1/jobs", {**body, "name": "sample.png"})
    assert status == 202, job
    page.goto(client.url + "/")
    page.evaluate("window.loadedOnce = true")
    row = card(page, job["id"])
    expect(row).to_have_attribute("data-state", "running", timeout=HANG_MS)

    # the progress bar advances
    bar = row.locator("progress.bar")
    page.wait_for_function("(bar) => bar.value > 0", arg=bar.element_handle(), timeout=HANG_MS)
    first = float(bar.evaluate("b => b.value"))
    page.wait_for_function(
        "([bar, first]) => bar.value > first", arg=[bar.element_handle(), first], timeout=HANG_MS
    )
    expect(row.locator(".numbers")).to_contain_text("steps/s", timeout=HANG_MS)
    expect(row.locator(".numbers")).to_contain_text("left")

    # one preview per level with that level's strokes, over the photo's thumbnail
    expect(row.locator("figure.preview")).to_have_count(3, timeout=HANG_MS)
    for strokes in (4, 8, 16):
        expect(row.locator(f'figure[data-strokes="{strokes}"] path')).to_have_count(strokes)
    expect(row.locator("img.thumb")).to_be_visible()
    assert row.locator("img.thumb").evaluate("img => img.naturalWidth") == 256  # of 512 x 384
    assert row.locator("figure.preview image").first.get_attribute("href").startswith("blob:")

    # and the strokes move as the optimisation goes on, without reloading the page
    stroke = row.locator('figure[data-strokes="16"] path').first
    before = stroke.get_attribute("d")
    page.wait_for_function(
        "([path, d]) => path.isConnected ? path.getAttribute('d') !== d : true",
        arg=[stroke.element_handle(), before],
        # a new snapshot comes every 10 steps (eval_every), slow on a busy 2-core machine
        timeout=HANG_MS,
    )
    assert row.locator('figure[data-strokes="16"] path').first.get_attribute("d") != before
    assert page.evaluate("window.loadedOnce") is True

    shot = tmp_path / "live-view.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the running job: {shot}")
    copy_to = os.environ.get(SCREENSHOT_COPY_ENV)
    if copy_to:
        shutil.copyfile(shot, copy_to)

    # Cancel, by keyboard
    cancel = row.locator("button.cancel")
    cancel.focus()
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("data-state", "cancelled", timeout=HANG_MS)
    expect(row.locator(".state")).to_have_text("Cancelled")
    expect(cancel).to_be_hidden()
    assert client.status(job["id"])["state"] == protocol.CANCELLED
    assert page.console_errors == []


def test_dropped_photo_becomes_a_finished_job_whose_svg_downloads(start_daemon, page, tmp_path):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    expect(page.locator("#no-jobs")).to_be_visible()
    photo = base64.b64encode(png_bytes((96, 64))).decode()
    dropped = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "disc.png", { type: "image/png" }));
            return data;
        }""",
        photo,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    expect(page.locator("#form-status")).to_have_text("Chosen: disc.png")
    expect(page.locator("#chosen")).to_be_visible()
    fill_tiny_settings(page)
    page.click("#submit")

    row = page.locator("li.job").first
    expect(row).to_have_attribute("data-state", "done", timeout=HANG_MS)
    expect(row.locator(".link")).to_have_text("disc.png")
    expect(row.locator("figure.preview")).to_have_count(2, timeout=HANG_MS)
    with page.expect_download() as download_info:
        row.locator("button.download").click()
    download = download_info.value
    assert download.suggested_filename == "disc-sketch.svg"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert svg_layers(saved) == [("2 strokes", 2), ("3 strokes", 3)]

    job_id = row.get_attribute("data-id")
    status = client.status(job_id)
    assert status["name"] == "disc.png" and status["state"] == protocol.DONE
    assert status["detached"] is True  # closing the page does not cancel it
    result = client.result(job_id)
    assert result["settings"]["levels"] == [2, 3] and result["settings"]["iterations"] == 5

    # the job's own page shows that job only
    page.goto(f"{client.url}/jobs/{job_id}")
    expect(page.locator("li.job")).to_have_count(1)
    expect(page.locator("#new-job")).to_be_hidden()
    expect(card(page, job_id).locator("figure.preview path")).to_have_count(5, timeout=HANG_MS)
    assert page.console_errors == []


def test_token_protected_daemon_refuses_the_page_until_the_token_is_given(
    start_daemon, page, tmp_path
):
    token = "s3cret-token"
    client, _ = start_daemon(token=token)
    earlier = client.submit()
    requests = []
    page.on("request", lambda r: requests.append(r))
    page.goto(client.url + "/")

    # the page itself loads, its API calls are refused: nothing is listed, the token is asked for
    expect(page.locator("#token-section")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    assert page.locator("li.job").count() == 0
    refused = page.evaluate("fetch('/v1/jobs').then((r) => r.status)")
    assert refused == 401

    page.keyboard.type("wrong")
    page.keyboard.press("Enter")
    expect(page.locator("#token-error")).to_have_text("That token was refused.")
    assert page.evaluate("sessionStorage.getItem('clipasso-token')") is None

    page.fill("#token", token)
    page.keyboard.press("Enter")
    expect(page.locator("#token-section")).to_be_hidden()
    expect(card(page, earlier["id"])).to_be_visible()

    # kept for the session: a reload does not ask again
    page.reload()
    expect(card(page, earlier["id"])).to_be_visible()
    expect(page.locator("#token-section")).to_be_hidden()

    # a photo chosen with the file picker goes through with the token (and same-origin checks)
    picked = tmp_path / "picked.png"
    picked.write_bytes(png_bytes((50, 70)))
    page.set_input_files("#image", str(picked))
    fill_tiny_settings(page, iterations="3")
    page.click("#submit")
    expect(page.locator("#form-status")).to_have_text("Queued: picked.png.")
    expect(page.locator("li.job")).to_have_count(2, timeout=HANG_MS)
    expect(page.locator("li.job").first).to_have_attribute("data-state", "done", timeout=HANG_MS)

    api_calls = [r for r in requests if "/v1/" in r.url]
    assert api_calls
    for r in requests:
        assert token not in r.url
    posts = [r for r in api_calls if r.method == "POST"]
    assert len(posts) == 1
    # the page's POST is what the Host/Origin checks look at: a browser's, from our origin
    sent = posts[0].all_headers()
    assert sent.get("origin") == client.url
    assert sent.get("sec-fetch-site") == "same-origin"
    assert sent.get("authorization") == f"Bearer {token}"
    assert posts[0].response().status == 202
    authorised = [r for r in api_calls if r.headers.get("authorization") == f"Bearer {token}"]
    assert len(authorised) >= 3
    assert page.console_errors == []


def test_form_is_labelled_and_keyboard_ordered(start_daemon, page):
    client, _ = start_daemon()
    page.goto(client.url + "/")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll("input")]
            .filter((input) => input.labels.length === 0).map((input) => input.id)"""
    )
    assert unlabelled == []
    expected = [
        "A",  # the CLIPasso home link
        "image",
        "levels",
        "iterations",
        "time-budget",
        "seeds",
        "schedule",
        "precision",
        "width",
        "color",
        "remove-background",
        "start-svg",
        "keep-start",
        "SUMMARY",
        "submit",
    ]
    order = []
    for _ in expected:
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert order == expected
    # Enter on a field submits; with no photo the form says so and puts focus on the picker
    page.focus("#levels")
    page.keyboard.press("Enter")
    expect(page.locator("#form-status")).to_have_text("Choose a photo first.")
    expect(page.locator("#image")).to_be_focused()
