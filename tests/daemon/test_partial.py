"""Issue 11's daemon side: the best strokes so far of a running or cancelled job
(``?partial=1``, kept across a restart), detached jobs that outlive their client and are then
served from the cache, the job list, and step rates and estimates before a job starts."""

from __future__ import annotations

import json
import time

import pytest
from daemon_helpers import (
    HANG_S,
    Client,
    DaemonThread,
    assert_error,
    job_body,
    png_bytes,
    tiny_settings,
)

from inkscape_clipasso import protocol


def _listed(client: Client) -> list[dict]:
    code, body = client.get("/v1/jobs")
    assert code == 200, body
    return body["jobs"]


def _snapshots_landed() -> bool:
    from clipasso_server.engine.types import Progress

    return "snapshot" in Progress.__dataclass_fields__


needs_snapshots = pytest.mark.skipif(
    not _snapshots_landed(), reason="the engine does not send snapshots yet"
)


@needs_snapshots
def test_partial_results_of_a_running_then_cancelled_job_survive_a_restart(tmp_path, model_store):
    from clipasso_server.daemon.config import DaemonConfig

    config = DaemonConfig(port=0, device="cpu", state_dir=tmp_path / "state")
    first = DaemonThread(config, model_store)
    client = Client(first.start())
    try:
        running = client.submit(iterations=5000, levels=[2, 3], seed=31)
        queued = client.submit(iterations=5, seed=32)
        assert_error(*client.partial(queued["id"]), "not_ready")  # nothing drawn yet
        partial = client.wait_partial(running["id"])
        assert partial["partial"] is True and 0 < partial["step"] < 5000
        assert [level["strokes"] for level in partial["levels"]] == [2, 3]
        assert "unfinished" in partial["svg"]
        code, _ = client.delete(f"/v1/jobs/{running['id']}")
        assert client.status(running["id"])["state"] == protocol.CANCELLED
        code, kept = client.partial(running["id"])
        assert code == 200 and kept["partial"] is True and kept["step"] >= partial["step"]
        assert_error(*client.get(f"/v1/jobs/{running['id']}/result"), "not_ready")
        assert client.wait(queued["id"])["state"] == protocol.DONE
        final = client.result(queued["id"])
        code, same = client.partial(queued["id"])  # a done job: its final result
        assert code == 200 and same == final and "partial" not in same
    finally:
        first.stop()
    second = DaemonThread(config, model_store)
    client = Client(second.start())
    try:
        code, after = client.partial(running["id"])
        assert code == 200 and after == kept
        # the step cost measured before the restart gives an estimate at once
        fresh = client.submit(iterations=5000, seed=40)
        assert client.status(fresh["id"])["eta_s"] > 0
        client.delete(f"/v1/jobs/{fresh['id']}")
    finally:
        second.stop()


def test_a_detached_job_outlives_its_client_and_is_then_served_from_the_cache(start_daemon):
    client, _ = start_daemon(abandon_after_s=0.5)
    body = job_body(iterations=8, seed=33)
    body["detached"] = True
    code, detached = client.post_json("/v1/jobs", body)
    assert code == 202, detached
    attached = client.submit(iterations=5, seed=34)  # queued behind it, never polled
    deadline = time.monotonic() + HANG_S
    while True:  # the job list is not a client asking about a job: nobody polls either
        states = {job["id"]: job for job in _listed(client)}
        if states[detached["id"]]["state"] in protocol.FINAL_STATES:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert states[detached["id"]]["state"] == protocol.DONE, states[detached["id"]]
    assert states[detached["id"]]["detached"] is True
    assert states[attached["id"]]["state"] == protocol.CANCELLED
    assert "abandoned" in states[attached["id"]]["reason"]
    again = dict(body, detached=False)
    code, cached = client.post_json("/v1/jobs", again)
    assert code == 200 and cached == {
        "id": detached["id"],
        "state": protocol.DONE,
        "queue_position": 0,
        "cached": True,
    }


def test_the_multipart_form_takes_a_detached_part(shared_daemon):
    client, _ = shared_daemon
    boundary = "b0undary"
    body = b""
    parts = [
        ("image", png_bytes(shade=77)),
        ("settings", json.dumps(tiny_settings(iterations=2, seed=35)).encode()),
        ("detached", b"true"),
    ]
    for name, data in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        body += head.encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    code, answer = client.request(
        "POST", "/v1/jobs", body, f"multipart/form-data; boundary={boundary}"
    )
    assert code == 202, answer
    assert client.status(answer["id"])["detached"] is True
    client.wait(answer["id"])
    bad = body.replace(b"\r\ntrue\r\n", b"\r\nmaybe\r\n")
    assert_error(
        *client.request("POST", "/v1/jobs", bad, f"multipart/form-data; boundary={boundary}"),
        "bad_request",
    )


def test_jobs_are_listed_newest_first_with_rates_and_estimates(start_daemon):
    client, _ = start_daemon()
    first = client.submit(iterations=4, seed=36)
    client.wait(first["id"])
    running = client.submit(iterations=5000, seed=37)
    small = client.submit(iterations=40, seed=38)
    big = client.submit(iterations=40, seed=39, seeds=4)
    status = client.wait(running["id"], until=lambda s: s["steps_per_s"] is not None)
    assert status["steps_per_s"] > 0 and status["eta_s"] > 0
    small_eta = client.status(small["id"])["eta_s"]
    big_eta = client.status(big["id"])["eta_s"]
    # a queued job's estimate: the work ahead of it plus its own levels x seeds x iterations
    assert small_eta is not None and big_eta is not None and big_eta > small_eta > 0
    listed = _listed(client)
    assert [job["id"] for job in listed[:4]] == [big["id"], small["id"], running["id"], first["id"]]
    for job in listed:
        protocol.validate_status(job)
        assert "name" in job and "created_at" in job
    for job in (running, small, big):
        client.delete(f"/v1/jobs/{job['id']}")
