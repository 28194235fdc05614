"""Every failure aborts with a useful message and leaves no output document."""

from __future__ import annotations

import socket

import pytest
from ext_helpers import make_png, run_extension


def assert_aborted(run, *phrases: str) -> None:
    assert run.status != 0
    assert run.output == b"", "a failed run must not write a document"
    for phrase in phrases:
        assert phrase in run.stderr, run.stderr


def test_unreachable_daemon_says_how_to_start_it(single_photo_svg):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = run_extension(single_photo_svg, "--id=img1", f"--url=http://127.0.0.1:{port}")
    assert_aborted(run, "Could not reach the CLIPasso daemon", "clipasso serve")


def test_daemon_error_message_is_shown(single_photo_svg, fake_daemon):
    fake_daemon.submit_error = (429, {"error": "queue_full", "message": "the queue is full (8)"})
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}")
    assert_aborted(run, "the queue is full (8)", "queue_full")


def test_token_is_sent_and_refusal_explained(single_photo_svg, fake_daemon):
    fake_daemon.submit_error = (401, {"error": "unauthorized", "message": "bad token"})
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--token=s3cret")
    assert_aborted(run, "bad token", "--token")
    assert fake_daemon.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_failed_job_shows_the_daemon_reason(single_photo_svg, fake_daemon):
    fake_daemon.final_state = "failed"
    fake_daemon.error = {"error": "bad_image", "message": "the image is truncated"}
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}")
    assert_aborted(run, "failed", "the image is truncated")


def test_deadline_cancels_the_job(single_photo_svg, fake_daemon):
    fake_daemon.polls_before_done = -1
    run = run_extension(
        single_photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--timeout=1",
        "--on_time_limit=cancel",
    )
    assert_aborted(run, "did not finish within the time limit (1 s)")
    assert [r.method for r in fake_daemon.requests][-1] == "DELETE"


def test_slow_answer_hits_the_deadline(single_photo_svg, fake_daemon):
    fake_daemon.status_delay = 3.0
    run = run_extension(
        single_photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--timeout=1",
        "--on_time_limit=cancel",
    )
    assert_aborted(run, "did not finish within the time limit (1 s)")
    assert [r.method for r in fake_daemon.requests][-1] == "DELETE"


def test_not_json(single_photo_svg, fake_daemon):
    fake_daemon.raw_status = b"<html>hello</html>"
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}")
    assert_aborted(run, "not JSON")


def test_result_that_breaks_the_protocol(single_photo_svg, fake_daemon):
    def drop_a_path(result):
        result["levels"][0]["paths"].pop()
        return result

    fake_daemon.result_override = drop_a_path
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=3")
    assert_aborted(run, "does not understand", "2 paths, not 3")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--levels=four"], "levels must be whole numbers"),
        (["--levels=4,999"], "each level must be between"),
        (["--iterations=0"], "iterations must be between"),
        (["--visible_level=lots"], "the visible level must be"),
        (["--loss_model=no spaces"], "loss_model must be a model name"),
        (["--url=ftp://x"], "The daemon URL must look like"),
        (["--width_mode=document", "--width=0"], "stroke width must be more than 0"),
    ],
)
def test_bad_settings_never_reach_the_daemon(single_photo_svg, fake_daemon, args, phrase):
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", *args)
    assert_aborted(run, phrase)
    assert fake_daemon.requests == []


def test_one_slow_request_before_the_deadline(fake_daemon):
    """A request over its own limit, long before the overall deadline, says so."""
    from inkscape_clipasso import protocol
    from inkscape_clipasso.daemon_client import DaemonClient, DaemonError
    from inkscape_clipasso.job_runner import WaitOptions, run_jobs

    fake_daemon.status_delay = 1.0
    client = DaemonClient(fake_daemon.url, request_timeout=0.3)
    body = protocol.build_job_request(make_png(8, 8), protocol.SketchSettings(), "photo")
    with pytest.raises(DaemonError, match=r"did not answer within 0\.3 s") as caught:
        run_jobs(client, [body], WaitOptions(deadline_s=60, poll_interval=0.05))
    assert "timeout" not in str(caught.value)
    assert [r.method for r in fake_daemon.requests][-1] == "DELETE"
