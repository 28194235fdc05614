"""The time limit: the budget sent, the estimate before the wait, and what happens when the
wait runs out (best strokes so far inserted and the job left running, or cancelled)."""

from __future__ import annotations

import functools
import time

import pytest
from ext_helpers import by_id, data_uri, make_png, run_extension, svg_doc

from inkscape_clipasso import clipasso_sketch, job_runner

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
CLIPASSO = "{https://clipasso-inkscape.invalid/ns/1}"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def photo_svg(tmp_path):
    path = tmp_path / "in.svg"
    png = make_png(8, 8)
    body = (
        f'<image id="img1" width="8" height="8" xlink:href="{data_uri(png)}"/>'
        f'<image id="img2" x="20" width="8" height="8" xlink:href="{data_uri(make_png(4, 4))}"/>'
    )
    path.write_text(svg_doc(body))
    return path


#: a wait the runs below must never reach unless something hangs
HANG_S = 600


def methods(fake) -> list[str]:
    return [request.method for request in fake.requests]


@pytest.fixture
def limit_after_first_poll(monkeypatch, fake_daemon):
    """The extension's wait clock jumps past any deadline once the daemon has answered one
    status poll, so "the wait ran out" happens after the job exists however slow the
    machine is, and never before."""

    def clock() -> float:
        polled = any(job["polls"] > 0 for job in fake_daemon.jobs.values())
        return time.monotonic() + (HANG_S * 10 if polled else 0.0)

    monkeypatch.setattr(
        clipasso_sketch, "run_jobs", functools.partial(job_runner.run_jobs, clock=clock)
    )


@pytest.mark.parametrize(
    ("args", "budget"),
    [([], 600.0), (["--time_limit=120"], 120.0), (["--time_limit=0"], None)],
)
def test_time_limit_is_sent_as_the_budget(photo_svg, fake_daemon, args, budget):
    run = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2", *args)
    assert run.status == 0, run.stderr
    (settings,) = fake_daemon.submitted_settings()
    assert settings.time_budget_s == budget


def test_the_limit_is_shared_by_the_selected_images(photo_svg, fake_daemon):
    run = run_extension(
        photo_svg, "--id=img1", "--id=img2", f"--url={fake_daemon.url}", "--levels=2"
    )
    assert run.status == 0, run.stderr
    assert [s.time_budget_s for s in fake_daemon.submitted_settings()] == [300.0, 300.0]


def test_keep_is_the_default_and_submits_detached(photo_svg, fake_daemon):
    run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2")
    assert fake_daemon.requests[0].body["detached"] is True
    fake_daemon.requests.clear()
    run_extension(
        photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--levels=2",
        "--on_time_limit=cancel",
        "--when=wait",  # not waiting leaves the job running: detached whatever the limit does
    )
    assert fake_daemon.requests[0].body["detached"] is False


def test_at_the_limit_the_best_so_far_is_inserted_and_the_job_left_running(
    photo_svg, fake_daemon, tmp_path, monkeypatch, limit_after_first_poll
):
    fake_daemon.polls_before_done = -1  # slower than the wait
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3", f"--timeout={HANG_S}"
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    assert "DELETE" not in methods(fake_daemon)  # the job goes on in the daemon
    assert any("partial=1" in request.path for request in fake_daemon.requests)
    root = run.svg
    parent = by_id(root, "clipasso-img1")
    (job,) = fake_daemon.jobs.values()
    step = min(job["polls"], 2000)
    assert parent.get(LABEL) == f"CLIPasso: img1, running: step {step} of 2000"
    assert parent.get(CLIPASSO + "partial") == "true"
    assert len(by_id(root, "clipasso-img1-level-3")) == 3

    # the detached job finishes on its own; the same request is then answered from the cache
    fake_daemon.finish_all()
    again = tmp_path / "again.svg"
    again.write_bytes(run.output)
    fake_daemon.requests.clear()
    monkeypatch.undo()  # the real clock again
    second = run_extension(
        again, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3", f"--timeout={HANG_S}"
    )
    assert second.status == 0, second.stderr
    assert len(fake_daemon.jobs) == 1  # no new job
    # the unfinished layer is updated in place, not doubled
    assert not second.svg.xpath("//*[@id='clipasso-img1-2']")
    finished = by_id(second.svg, "clipasso-img1")
    assert finished.get(LABEL) == "CLIPasso: img1"
    assert finished.get(CLIPASSO + "partial") is None
    assert finished.get(CLIPASSO + "stop-reason") == "iterations"


def test_no_strokes_yet_at_the_limit_aborts_but_leaves_the_job_running(
    photo_svg, fake_daemon, limit_after_first_poll
):
    fake_daemon.polls_before_done = -1
    fake_daemon.partial_after_polls = -1
    run = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", f"--timeout={HANG_S}")
    assert run.status != 0 and run.output == b""
    assert "keeps running in the daemon" in run.stderr
    assert "run the extension again" in run.stderr
    assert "DELETE" not in methods(fake_daemon)


def test_far_beyond_the_limit_with_cancel_aborts_at_once(photo_svg, fake_daemon):
    fake_daemon.polls_before_done = -1
    fake_daemon.eta_s = 9600.0
    fake_daemon.steps_per_s = 0.21
    run = run_extension(
        photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--timeout=60",
        "--on_time_limit=cancel",
        "--poll_interval=0.05",
        "--when=wait",  # automatic would not wait at all (test_insert_now.py)
    )
    assert run.status != 0 and run.output == b""
    for phrase in ("about 2 h 40 min", "0.21 steps/s", "far beyond", "fewer iterations", "GPU"):
        assert phrase in run.stderr, run.stderr
    assert methods(fake_daemon)[-1] == "DELETE"
    assert sum(method == "GET" for method in methods(fake_daemon)) == 1  # no waiting


def test_far_beyond_the_limit_with_keep_waits_and_records_the_estimate(photo_svg, fake_daemon):
    fake_daemon.polls_before_done = 2
    fake_daemon.eta_s = 9600.0
    fake_daemon.steps_per_s = 0.21
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2", "--poll_interval=0.05"
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    desc = by_id(run.svg, "clipasso-img1").find(SVG + "desc").text
    assert "Waited " in desc and "estimated 2 h 40 min" in desc and "0.21 steps/s" in desc


def test_cancel_in_inkscape_cancels_even_a_detached_job(photo_svg, fake_daemon):
    """Inkscape's Cancel does not kill the script: it closes its end of the script's stdout.
    The script must notice, cancel its job and end (here: a real process, its stdout a pipe
    whose reader goes away as Inkscape's does)."""
    import os
    import subprocess
    import sys

    from ext_helpers import REPO

    fake_daemon.polls_before_done = -1
    script = REPO / "inkscape_clipasso" / "clipasso_sketch.py"
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--id=img1",
            f"--url={fake_daemon.url}",
            "--live_view=false",
            "--poll_interval=0.1",
            str(photo_svg),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, DOCUMENT_PATH=str(photo_svg)),
    )
    try:
        deadline = time.monotonic() + HANG_S
        while not any(request.method == "GET" for request in fake_daemon.requests):
            assert time.monotonic() < deadline and process.poll() is None, process.poll()
            time.sleep(0.05)
        assert fake_daemon.requests[0].body["detached"] is True
        process.stdout.close()  # what Inkscape's Cancel does
        process.wait(timeout=HANG_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert methods(fake_daemon)[-1] == "DELETE"
    assert process.returncode != 0


def test_a_second_run_waits_for_the_job_the_first_left_running(
    photo_svg, fake_daemon, tmp_path, monkeypatch, limit_after_first_poll
):
    """Before the detached job is done (so not in the cache yet), running again on the same
    photo and settings must not queue the same work a second time."""
    fake_daemon.polls_before_done = -1
    first = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", f"--timeout={HANG_S}")
    assert first.status == 0, first.stderr
    (job_id,) = fake_daemon.jobs
    again = tmp_path / "again.svg"
    again.write_bytes(first.output)
    fake_daemon.polls_before_done = fake_daemon.jobs[job_id]["polls"] + 1  # ends soon now
    fake_daemon.requests.clear()
    monkeypatch.undo()  # the real clock again
    second = run_extension(again, "--id=img1", f"--url={fake_daemon.url}", f"--timeout={HANG_S}")
    assert second.status == 0, second.stderr
    assert "POST" not in methods(fake_daemon)
    assert list(fake_daemon.jobs) == [job_id]
    finished = by_id(second.svg, "clipasso-img1")  # updated in place
    assert finished.get(CLIPASSO + "job") == job_id
    assert finished.get(CLIPASSO + "partial") is None

    # other settings are other work: a new job
    fake_daemon.requests.clear()
    third = run_extension(again, "--id=img1", f"--url={fake_daemon.url}", "--seed=7")
    assert third.status == 0, third.stderr
    assert "POST" in methods(fake_daemon)
