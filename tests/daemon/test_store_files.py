"""Store files that are not what the daemon wrote: FIFOs, folders, symlinks, huge sparse
files, records lost beside intact results, orphans and cache entries naming another job.

Real daemons on loopback over real state folders; every case once hung, leaked, served the
wrong sketch or lost one.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from daemon_helpers import DaemonThread, assert_error, job_body

from clipasso_server.daemon.config import DaemonConfig
from inkscape_clipasso import protocol


def _run_to_done(client, **settings) -> str:
    status, body = client.post_json("/v1/jobs", job_body(**settings))
    assert status == 202, body
    assert client.wait(body["id"])["state"] == protocol.DONE
    return body["id"]


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_fifo_among_the_records_does_not_stop_start_up(start_daemon, tmp_path):
    state = tmp_path / "state"
    (state / "jobs").mkdir(parents=True)
    fifo = state / "jobs" / f"{'a' * 32}.json"
    os.mkfifo(fifo)
    client, _ = start_daemon(state_dir=state)  # once blocked for ever opening the FIFO
    assert client.get("/v1/jobs") == (200, {"jobs": []})
    assert not fifo.exists() and (state / "jobs" / f"{'a' * 32}.json.bad").exists()


def test_results_that_are_not_regular_files_are_damage(start_daemon, tmp_path):
    state = tmp_path / "state"
    client, daemon = start_daemon(state_dir=state)
    fifo_job, folder_job, sparse_job = (_run_to_done(client, seed=seed) for seed in (81, 82, 83))
    results = state / "results"
    (results / f"{fifo_job}.json").unlink()
    os.mkfifo(results / f"{fifo_job}.json")
    (results / f"{folder_job}.json").unlink()
    (results / f"{folder_job}.json").mkdir()
    with open(results / f"{sparse_job}.json", "r+b") as sparse:
        sparse.truncate(1 << 30)  # 1 GB, all but a few KB of it holes
    before = _peak_rss()
    for job_id in (fifo_job, folder_job, sparse_job):
        status, body = client.get(f"/v1/jobs/{job_id}/result")  # the FIFO once hung here
        assert_error(status, body, "not_ready")
        assert "damaged" in body["message"] and str(state) not in body["message"], body
        assert client.status(job_id)["state"] == protocol.FAILED
    # the sparse gigabyte was never read into memory
    assert _peak_rss() - before < 256 * 2**20, (_peak_rss() - before) / 2**20
    assert not (results / f"{fifo_job}.json").exists()
    assert not (results / f"{folder_job}.json").exists()
    assert not (results / f"{sparse_job}.json").exists()
    # and nothing of them is a cache hit
    assert not daemon.store.has_result(fifo_job)


def test_a_thumbnail_symlinked_elsewhere_or_a_fifo_is_not_served(start_daemon, tmp_path):
    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    linked, piped = (_run_to_done(client, seed=seed) for seed in (84, 85))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for clients \xff\xd9")
    thumbnails = state / "thumbnails"
    (thumbnails / f"{linked}.jpg").unlink()
    (thumbnails / f"{linked}.jpg").symlink_to(secret)
    (thumbnails / f"{piped}.jpg").unlink()
    os.mkfifo(thumbnails / f"{piped}.jpg")
    for job_id in (linked, piped):
        status, body = client.get(f"/v1/jobs/{job_id}/thumbnail")
        assert_error(status, body, "not_found")
    assert secret.exists() and not (thumbnails / f"{linked}.jpg").is_symlink()


def test_a_partial_that_is_a_fifo_neither_hangs_nor_stops_shutdown(tmp_path, model_store):
    from daemon_helpers import Client

    state = tmp_path / "state"
    first = DaemonThread(
        DaemonConfig(port=0, device="cpu", state_dir=state, save_every_s=0), model_store
    )
    client = Client(first.start())
    job = client.submit(iterations=5000, seed=86)
    client.wait_partial(job["id"])
    client.delete(f"/v1/jobs/{job['id']}")
    assert client.wait(job["id"])["state"] == protocol.CANCELLED
    first.stop()
    partial = state / "partials" / f"{job['id']}.json"
    assert partial.exists()
    partial.unlink()
    os.mkfifo(partial)

    def work(client) -> None:
        status, body = client.partial(job["id"])  # read from disk: once hung on the FIFO
        assert_error(status, body, "not_ready")

    _restart(tmp_path, state, model_store, work)  # stopping once waited for ever on it


def _restart(tmp_path: Path, state: Path, model_store, work) -> None:
    """A second daemon on the same state folder, ``work(client)`` against it, then stopped."""
    from daemon_helpers import Client

    thread = DaemonThread(DaemonConfig(port=0, device="cpu", state_dir=state), model_store)
    try:
        work(Client(thread.start()))
    finally:
        thread.stop()


def test_a_damaged_record_no_longer_hides_an_intact_result(tmp_path, model_store):
    from daemon_helpers import Client

    state = tmp_path / "state"
    first = DaemonThread(DaemonConfig(port=0, device="cpu", state_dir=state), model_store)
    client = Client(first.start())
    garbled, one_field = _run_to_done(client, seed=87), _run_to_done(client, seed=88)
    result_before = client.result(garbled)
    first.stop()
    (state / "jobs" / f"{garbled}.json").write_text("{ this is not json")
    record = json.loads((state / "jobs" / f"{one_field}.json").read_text())
    (state / "jobs" / f"{one_field}.json").write_text(json.dumps({**record, "step": "many"}))

    def work(client) -> None:
        for job_id in (garbled, one_field):
            assert client.status(job_id)["state"] == protocol.DONE  # was 404
            with urllib.request.urlopen(f"{client.url}/v1/jobs/{job_id}/thumbnail") as answer:
                assert answer.status == 200 and answer.read().startswith(b"\xff\xd8")
        assert client.result(garbled) == result_before
        # the record that kept its image hash is a cache hit again; the garbled one cannot be
        # checked against its key any more, so its request runs again rather than guess
        status, again = client.post_json("/v1/jobs", job_body(seed=88))
        assert (status, again["id"], again["cached"]) == (200, one_field, True), again
        status, again = client.post_json("/v1/jobs", job_body(seed=87))
        assert status == 202 and again["id"] != garbled, again
        client.delete(f"/v1/jobs/{again['id']}")

    _restart(tmp_path, state, model_store, work)


def test_orphans_are_pruned_at_start_up(start_daemon, tmp_path):
    state = tmp_path / "state"
    for folder in ("jobs", "results", "partials", "thumbnails", "cache"):
        (state / folder).mkdir(parents=True)
    orphan = "9" * 32
    files = [
        state / "results" / f"{orphan}.json",  # damaged: nothing to rebuild from
        state / "partials" / f"{orphan}.json",
        state / "thumbnails" / f"{orphan}.jpg",
    ]
    for path in files:
        path.write_text("{}")
    entry = state / "cache" / f"{'c' * 64}.json"
    entry.write_text(json.dumps({"id": orphan}))
    client, _ = start_daemon(state_dir=state)
    assert client.get("/v1/jobs") == (200, {"jobs": []})
    for path in (*files, entry):
        assert not path.exists(), path


def test_a_cache_entry_naming_another_job_is_not_served(start_daemon, tmp_path):
    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    mine = _run_to_done(client, seed=89)
    other = _run_to_done(client, seed=90)
    entries = {json.loads(p.read_text())["id"]: p for p in (state / "cache").glob("*.json")}
    entries[mine].write_text(json.dumps({"id": other}))  # my request's key names their job
    status, body = client.post_json("/v1/jobs", job_body(seed=89))
    assert status == 202 and body["id"] != other and not body["cached"], body
    assert client.wait(body["id"])["state"] == protocol.DONE
    assert client.result(body["id"])["settings"]["seed"] == 89


def test_the_store_imports_where_the_os_lacks_open_flags():
    """O_NOFOLLOW and O_NONBLOCK are POSIX only: the store is still importable without them
    (read in a fresh interpreter whose os module lacks them)."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "for name in ('O_NOFOLLOW', 'O_NONBLOCK', 'O_CLOEXEC'):\n"
        "    delattr(os, name)\n"
        "import clipasso_server.daemon.job_store as store\n"
        "assert store._OPEN_FLAGS == os.O_RDONLY\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
