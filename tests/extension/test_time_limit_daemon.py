"""The time limit against the real daemon (tiny models): at the limit the extension inserts the
best strokes so far and leaves the job running detached; the job survives its client (the
daemon's abandonment watchdog does not cancel it), and the next run inserts the finished
sketch without running it again."""

from __future__ import annotations

import time

import pytest
from ext_helpers import by_id, data_uri, make_png, run_extension, svg_doc
from serve_daemon import get_json, missing_python, serve

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
ITERATIONS = 300  # far more than fit in the wait below, a minute or so to the end
WAIT_S = 10  # the extension's longest wait


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    reason = missing_python()
    if reason:
        pytest.skip(reason)
    # an abandoned (unpolled) job is cancelled after 2 s: a detached one must not be
    with serve(tmp_path_factory.mktemp("daemon"), "--abandon-after=2") as url:
        yield url


def jobs(url: str) -> list[dict]:
    """The daemon's jobs, read as the web page does (without keeping them alive)."""
    return get_json(f"{url}/v1/jobs", headers={"X-Clipasso-Viewer": "1"})["jobs"]


def sketch(document, url: str):
    return run_extension(
        document,
        "--id=img1",
        f"--url={url}",
        "--levels=2,4",
        "--seeds=1",
        f"--iterations={ITERATIONS}",
        "--loss_model=test-tiny-rn",
        "--saliency_model=test-tiny-vit",
        "--time_limit=0",
        f"--timeout={WAIT_S}",
        "--poll_interval=0.2",
        "--on_time_limit=keep",
    )


def test_unfinished_at_the_limit_then_finished_on_the_next_run(daemon, tmp_path):
    document = tmp_path / "in.svg"
    photo = data_uri(make_png(48, 48, (120, 60, 40)))
    document.write_text(svg_doc(f'<image id="img1" width="48" height="48" xlink:href="{photo}"/>'))

    first = sketch(document, daemon)
    assert first.status == 0, first.stderr
    assert first.stderr == ""
    layer = by_id(first.svg, "clipasso-img1")
    assert "unfinished (step " in layer.get(LABEL), layer.get(LABEL)
    assert layer.get(LABEL).endswith(f" of {ITERATIONS})"), layer.get(LABEL)
    (job,) = jobs(daemon)
    assert job["state"] == "running" and job["detached"] is True, job

    time.sleep(4)  # twice --abandon-after with nobody polling: still running
    (job,) = jobs(daemon)
    assert job["state"] == "running", job
    deadline = time.monotonic() + 600
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
        (job,) = jobs(daemon)
    assert job["state"] == "done", job

    after = tmp_path / "after.svg"
    after.write_bytes(first.output)
    for source in (after, document):  # with the unfinished layer, and a fresh document
        again = sketch(source, daemon)
        assert again.status == 0, again.stderr
        groups = list(again.svg.iter("{http://www.w3.org/2000/svg}g"))
        labels = [g.get(LABEL) or "" for g in groups]
        finished = [
            g
            for g in groups
            if g.get(LABEL, "").startswith("CLIPasso: img1") and "unfinished" not in g.get(LABEL)
        ]
        assert len(finished) == 1, labels
        paths = finished[0].findall(".//{http://www.w3.org/2000/svg}path")
        assert len(paths) == 2 + 4
    assert len(jobs(daemon)) == 1  # the finished job served both runs: nothing ran again
