"""Submit and return, then Update sketches, in the real Inkscape with the real daemon (tiny test
models), as a designer would: Sketch with "Now, update later" returns with the layers marked
running and the job detached; Update sketches brings the best strokes so far in; once the job
is done, a second Update puts the finished strokes in place (same layers, same order, names no
longer running), which also shows that Inkscape saved the inserted paths as they were (else
their digest would not match and the strokes would go into a sibling layer).

Nothing depends on the machine's speed: the daemon's worker process is paused (SIGSTOP) while
Inkscape submits, so the job cannot have strokes when Sketch returns, and paused again as
soon as it has some, so the first Update sees a running job; every wait is on an event, with
a limit that only catches a hang.
"""

from __future__ import annotations

import os
import signal

import inkscape_runner
import pytest
from ext_helpers import INKSCAPE_NS, by_id, data_uri, layers, make_png
from inkscape_runner import apply_and_read, write_preferences
from serve_daemon import (
    HANG_S,
    has_strokes,
    install_extension,
    jobs,
    pause_when,
    wait_for,
    worker_pid,
)

pytestmark = [pytest.mark.inkscape, pytest.mark.slow]

LABEL = f"{{{INKSCAPE_NS}}}label"
CLIPASSO = "{https://clipasso-inkscape.invalid/ns/1}"
SVG = "{http://www.w3.org/2000/svg}"
ITERATIONS = 100  # enough that the watcher pauses the job long before its last step
LEVELS = (2, 4)
UPDATE_ACTION = "org.clipasso.clipasso-update.noprefs"


def test_submit_return_then_update_in_place(daemon, tmp_path, monkeypatch):
    profile = tmp_path / "profile"
    install_extension(profile)
    write_preferences(
        profile,
        {
            "url": daemon,
            "levels": ",".join(map(str, LEVELS)),
            "iterations": str(ITERATIONS),
            "seeds": "1",
            "loss_model": "test-tiny-rn",
            "saliency_model": "test-tiny-vit",
            "time_limit": "0",
            "when": "now",
            "visible_level": "all",
            "poll_interval": "0.2",
            "live_view": "false",
        },
    )
    document = tmp_path / "in.svg"
    photo = data_uri(make_png(48, 48, (150, 90, 40)))
    document.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:inkscape="{INKSCAPE_NS}" width="100mm" height="100mm" viewBox="0 0 100 100">
  <image id="img1" x="10" y="10" width="60" height="60" preserveAspectRatio="none"
         xlink:href="{photo}"/>
</svg>
""",
        encoding="utf-8",
    )
    pid = worker_pid(daemon)

    # 1. Sketch, not waiting, while the worker cannot make any strokes
    os.kill(pid, signal.SIGSTOP)
    try:
        root = apply_and_read(profile, document, tmp_path / "running.svg", ["img1"])
    except BaseException:
        os.kill(pid, signal.SIGCONT)
        raise
    parent = by_id(root, "clipasso-img1")
    assert parent.get(LABEL) == "CLIPasso: img1, running: no strokes yet"
    assert parent.get(CLIPASSO + "state") == "running"
    assert parent.get(CLIPASSO + "url") == daemon
    for count in LEVELS:
        level = by_id(root, f"clipasso-img1-level-{count}")
        assert level.get(LABEL) == f"{count} strokes, running: no strokes yet"
        assert level.findall(SVG + "path") == []
    (job,) = jobs(daemon)
    assert job["detached"] is True and job["state"] in ("queued", "running"), job
    assert parent.get(CLIPASSO + "job") == job["id"]

    # 2. Update while the job runs: its best strokes so far
    paused = pause_when(pid, lambda: has_strokes(daemon, job["id"]))
    try:
        assert paused.wait(HANG_S), "the job never had strokes"
        monkeypatch.setattr(inkscape_runner, "ACTION", UPDATE_ACTION)
        root = apply_and_read(profile, tmp_path / "running.svg", tmp_path / "updated.svg", ["img1"])
    finally:
        os.kill(pid, signal.SIGCONT)
    parent = by_id(root, "clipasso-img1")
    assert parent.get(LABEL).startswith("CLIPasso: img1, running: step "), parent.get(LABEL)
    assert parent.get(LABEL).endswith(f" of {ITERATIONS}")
    for count in LEVELS:
        level = by_id(root, f"clipasso-img1-level-{count}")
        assert len(level.findall(SVG + "path")) == count
    order = [layer.get("id") for layer in layers(root)]

    # 3. Once the job is done, Update again: the finished strokes, in place
    wait_for(lambda: jobs(daemon)[0]["state"] == "done", "the job to finish")
    root = apply_and_read(profile, tmp_path / "updated.svg", tmp_path / "finished.svg", ["img1"])
    assert [layer.get("id") for layer in layers(root)] == order  # no sibling: nothing edited
    parent = by_id(root, "clipasso-img1")
    assert parent.get(LABEL) == "CLIPasso: img1"
    assert parent.get(CLIPASSO + "state") == "done"
    for count in LEVELS:
        level = by_id(root, f"clipasso-img1-level-{count}")
        assert level.get(LABEL) == f"{count} strokes"
        assert len(level.findall(SVG + "path")) == count
    assert len(jobs(daemon)) == 1  # the one job served every step
