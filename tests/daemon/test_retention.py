"""Finished jobs are kept `keep_days` after they ended, then deleted with their results."""

from __future__ import annotations

import json
import time

import pytest
from daemon_helpers import DaemonThread, job_body

from inkscape_clipasso import protocol

DAY_S = 86400.0


def _age_record(state_dir, job_id: str, days: float) -> None:
    """Make a finished job look as if it ended ``days`` ago (its record is the only clock)."""
    path = state_dir / "jobs" / f"{job_id}.json"
    record = json.loads(path.read_text())
    record["finished_at"] = time.time() - days * DAY_S
    path.write_text(json.dumps(record))


def _files_of(state_dir, job_id: str) -> list[str]:
    return sorted(
        str(path.relative_to(state_dir))
        for path in state_dir.rglob("*.json")
        if job_id in path.name or job_id in path.read_text()
    )


def test_finished_jobs_past_keep_days_are_deleted_at_start(start_daemon, tmp_path, model_store):
    from clipasso_server.daemon.config import DaemonConfig

    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    old_body, new_body = job_body(seed=11), job_body(seed=12)
    old = client.post_json("/v1/jobs", old_body)[1]["id"]
    new = client.post_json("/v1/jobs", new_body)[1]["id"]
    for job_id in (old, new):
        assert client.wait(job_id)["state"] == protocol.DONE
    assert len(_files_of(state, old)) == 3  # record, result, cache entry
    _age_record(state, old, days=31)
    _age_record(state, new, days=29)

    # A second daemon on the same state dir (as after a restart), default keep_days=30.
    thread = DaemonThread(DaemonConfig(port=0, device="cpu", state_dir=state), model_store)
    try:
        url = thread.start()
        restarted = type(client)(url)
        assert restarted.get(f"/v1/jobs/{old}")[0] == 404
        assert _files_of(state, old) == []
        status, body = restarted.get(f"/v1/jobs/{new}")
        assert status == 200 and body["state"] == protocol.DONE
        assert restarted.result(new)["levels"]
        # the old job's cache entry went with it: the same request is a new job now
        status, again = restarted.post_json("/v1/jobs", old_body)
        assert status == 202 and again["id"] != old
        restarted.wait(again["id"])
        # ... while the kept one still answers from the cache
        status, cached = restarted.post_json("/v1/jobs", new_body)
        assert status == 200 and cached["id"] == new
    finally:
        thread.stop()


def test_keep_days_zero_keeps_everything(start_daemon, tmp_path, model_store):
    from clipasso_server.daemon.config import DaemonConfig

    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    job_id = client.submit(seed=21)["id"]
    assert client.wait(job_id)["state"] == protocol.DONE
    _age_record(state, job_id, days=3650)

    config = DaemonConfig(port=0, device="cpu", state_dir=state, keep_days=0)
    thread = DaemonThread(config, model_store)
    try:
        restarted = type(client)(thread.start())
        assert restarted.get(f"/v1/jobs/{job_id}")[1]["state"] == protocol.DONE
        assert len(_files_of(state, job_id)) == 3
    finally:
        thread.stop()


def test_unfinished_jobs_are_never_pruned(start_daemon, tmp_path):
    client, daemon = start_daemon(state_dir=tmp_path / "state")
    running = client.submit(iterations=10_000, seed=31)["id"]
    client.wait(running, until=lambda s: s["state"] == protocol.RUNNING)
    queued = client.submit(seed=32)["id"]
    assert daemon.queue.prune_finished(older_than_s=-DAY_S) == []
    assert client.get(f"/v1/jobs/{queued}")[1]["state"] == protocol.QUEUED
    for job_id in (queued, running):
        client.delete(f"/v1/jobs/{job_id}")
    assert client.wait(running)["state"] == protocol.CANCELLED
    # once final, a negative age means "ended before now + 1 day": both go
    assert sorted(daemon.queue.prune_finished(older_than_s=-DAY_S)) == sorted([queued, running])


@pytest.mark.parametrize("days", [-1.0, float("nan")])
def test_negative_keep_days_is_refused(days):
    from clipasso_server.daemon.config import ConfigError, DaemonConfig, check_config

    with pytest.raises(ConfigError, match="--keep-days"):
        check_config(DaemonConfig(keep_days=days))
