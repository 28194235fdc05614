"""Cancelling: by DELETE (queued and running), by abandonment, and a full queue (429)."""

from __future__ import annotations

import logging
import time

from daemon_helpers import HANG_S, assert_error, job_body

from inkscape_clipasso import protocol

LONG = 5000  # iterations: far more than any test waits for


def test_delete_stops_a_running_job_within_one_step_and_cancels_a_queued_one(start_daemon):
    client, _ = start_daemon(max_queue=1)
    running = client.submit(iterations=LONG, seed=1)
    queued = client.submit(iterations=LONG, seed=2)
    assert queued["queue_position"] == 1

    # the queue holds one waiting job: a third is refused
    status, body = client.post_json("/v1/jobs", job_body(seed=3))
    assert_error(status, body, "queue_full")

    status_running = client.wait(running["id"], until=lambda s: s["step"] >= 2)
    assert status_running["state"] == protocol.RUNNING
    status, body = client.get(f"/v1/jobs/{running['id']}/result")
    assert_error(status, body, "not_ready")

    status, cancelled = client.delete(f"/v1/jobs/{queued['id']}")
    assert status == 200 and protocol.validate_status(cancelled)["state"] == protocol.CANCELLED

    before = client.status(running["id"])["step"]
    status, stopped = client.delete(f"/v1/jobs/{running['id']}")
    assert status == 200
    stopped = protocol.validate_status(stopped)
    assert stopped["state"] == protocol.CANCELLED
    assert stopped["step"] <= before + 2, "the job ran on after the cancel"
    assert stopped["reason"] == "cancelled by request" and not stopped["cancelling"]
    time.sleep(0.3)
    assert client.status(running["id"])["step"] == stopped["step"]

    status, body = client.get(f"/v1/jobs/{running['id']}/result")
    assert_error(status, body, "not_ready")
    # cancelling a finished job changes nothing; the daemon takes new jobs again
    status, again = client.delete(f"/v1/jobs/{running['id']}")
    assert status == 200 and again["state"] == protocol.CANCELLED
    assert client.wait(client.submit(iterations=2, levels=[2])["id"])["state"] == protocol.DONE


def test_jobs_nobody_polls_are_cancelled(start_daemon, caplog):
    caplog.set_level(logging.INFO, logger="clipasso.daemon")
    client, daemon = start_daemon(abandon_after_s=1.0)
    running = client.submit(iterations=LONG, seed=4)
    queued = client.submit(iterations=LONG, seed=5)
    client.wait(running["id"], until=lambda s: s["state"] == protocol.RUNNING)

    # nobody polls either job now; the queue is read directly, as that asks nothing of it
    deadline = time.monotonic() + HANG_S
    while any(
        daemon.queue.state(job["id"]) not in protocol.FINAL_STATES for job in (running, queued)
    ):
        assert time.monotonic() < deadline, "the abandoned jobs were not cancelled"
        time.sleep(0.1)

    for job in (running, queued):
        status = client.status(job["id"])
        assert status["state"] == protocol.CANCELLED, status
        assert status["reason"].startswith("abandoned"), status
    status, health = client.get("/v1/health")
    assert protocol.validate_health(health)["queue_length"] == 0
    lines = [r.getMessage() for r in caplog.records if "abandoned" in r.getMessage()]
    assert len(lines) == 2, lines


def test_a_polled_job_is_not_abandoned(start_daemon):
    client, _ = start_daemon(abandon_after_s=1.0)
    job = client.submit(iterations=25, levels=[2], seed=6)
    final = client.wait(job["id"])  # polling every 50 ms keeps it alive
    assert final["state"] == protocol.DONE
