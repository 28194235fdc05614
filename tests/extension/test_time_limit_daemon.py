"""The time limit against the real daemon (tiny models): at the limit the extension inserts the
best strokes so far and leaves the job running detached; the job survives its client (the
daemon's abandonment watchdog does not cancel it), and the next run inserts the finished
sketch without running it again.

Nothing here depends on the machine's speed: the extension's wait runs on a clock that jumps
past its deadline the moment the job has strokes to show, and the daemon's worker process is
paused (SIGSTOP) at that moment, so the job is unfinished at the limit however fast the machine
is; it is resumed (SIGCONT) to finish a few tiny steps. Every wait is on an event, with a limit
that only catches a hang.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ext_helpers import by_id, data_uri, make_png, run_extension, svg_doc
from serve_daemon import has_strokes, jobs, missing_python, serve, worker_pid

from inkscape_clipasso import clipasso_sketch, job_runner

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
ITERATIONS = 20  # what is left after the pause is the test's only wait on real work
HANG_S = 600.0  # limits that only catch a hang
ABANDON_AFTER_S = 2


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    reason = missing_python()
    if reason:
        pytest.skip(reason)
    # an abandoned (unpolled) job is cancelled after 2 s: a detached one must not be
    with serve(tmp_path_factory.mktemp("daemon"), f"--abandon-after={ABANDON_AFTER_S}") as url:
        yield url


@contextmanager
def paused_at_first_strokes(url: str, monkeypatch) -> Iterator[threading.Event]:
    """While inside: the daemon's worker is paused as soon as the running job has strokes to
    show, and the extension's wait clock then jumps past any deadline. Yields the event set
    at the pause; the worker is resumed on leaving."""
    paused, done = threading.Event(), threading.Event()
    pid = worker_pid(url)
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            while not done.is_set():
                running = [j for j in jobs(url) if j["state"] == "running"]
                if running and has_strokes(url, running[0]["id"]):
                    os.kill(pid, signal.SIGSTOP)
                    paused.set()
                    return
                time.sleep(0.02)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            failure.append(exc)
            paused.set()

    def clock() -> float:
        return time.monotonic() + (HANG_S * 10 if paused.is_set() else 0.0)

    monkeypatch.setattr(
        clipasso_sketch, "run_jobs", functools.partial(job_runner.run_jobs, clock=clock)
    )
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield paused
    finally:
        done.set()
        watcher.join(timeout=HANG_S)
        monkeypatch.undo()
        os.kill(pid, signal.SIGCONT)
    assert not failure, failure


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
        f"--timeout={HANG_S:.0f}",
        "--poll_interval=0.05",
        "--on_time_limit=keep",
        "--when=wait",  # this test is about the wait running out
    )


def test_unfinished_at_the_limit_then_finished_on_the_next_run(daemon, tmp_path, monkeypatch):
    document = tmp_path / "in.svg"
    photo = data_uri(make_png(48, 48, (120, 60, 40)))
    document.write_text(svg_doc(f'<image id="img1" width="48" height="48" xlink:href="{photo}"/>'))

    with paused_at_first_strokes(daemon, monkeypatch) as paused:
        first = sketch(document, daemon)
        assert paused.is_set(), "the extension's wait ended before the job had strokes"
        assert first.status == 0, first.stderr
        assert first.stderr == ""
        layer = by_id(first.svg, "clipasso-img1")
        assert ", running: step " in layer.get(LABEL), layer.get(LABEL)
        assert layer.get(LABEL).endswith(f" of {ITERATIONS}"), layer.get(LABEL)
        (job,) = jobs(daemon)
        assert job["state"] == "running" and job["detached"] is True, job
        # the subject is time passing unpolled: twice --abandon-after, and still running
        time.sleep(2 * ABANDON_AFTER_S)
        (job,) = jobs(daemon)
        assert job["state"] == "running", job

    deadline = time.monotonic() + HANG_S
    while job["state"] == "running":
        assert time.monotonic() < deadline, f"the job hung: {job}"
        time.sleep(0.2)
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
