"""A damaged store, a full disk and the cache key: real daemons on loopback, real files.

The full disk is a failing writer: ``job_store.atomic_write`` replaced by one that raises
ENOSPC for the files chosen, in the in-process daemon, so everything else runs for real.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import uuid

import pytest
from daemon_helpers import HANG_S, DaemonThread, assert_error, job_body

from clipasso_server.daemon import job_store
from inkscape_clipasso import protocol


def _record(job_id: str, **fields) -> dict:
    record = {
        "id": job_id,
        "name": "old",
        "settings": protocol.parse_settings({"levels": [2], "iterations": 1}).to_json(),
        "image_sha256": "0" * 64,
        "created_at": time.time() - 100,
        "state": protocol.FAILED,
        "started_at": None,
        "finished_at": time.time() - 50,
        "step": 0,
        "total": 1,
        "best_loss": {},
        "error": {"error": "bad_image", "message": "an old failure"},
        "reason": None,
        "step_time_s": None,
    }
    record.update(fields)
    return record


def _text(job_id: str, **fields) -> str:
    return json.dumps(_record(job_id, **fields))


#: case -> (the file's job id, its text)
BAD_RECORDS = {
    "created_at_string": ("a" * 32, _text("a" * 32, created_at="yesterday")),
    "step_infinity": ("b" * 32, _text("b" * 32, step=7).replace('"step": 7', '"step": Infinity')),
    "total_nan": ("c" * 32, _text("c" * 32, total=7).replace('"total": 7', '"total": NaN')),
    "unknown_state": ("d" * 32, _text("d" * 32, state="exploded")),
    "truncated": ("e" * 32, _text("e" * 32)[:40]),
    "wrong_id": ("f" * 32, _text("0" * 32)),
    "bad_settings": ("1" * 32, _text("1" * 32, settings={"levels": "many"})),
    "best_loss_text": ("2" * 32, _text("2" * 32, best_loss={"2": "low"})),
    "negative_step": ("3" * 32, _text("3" * 32, step=-1)),
}


def test_bad_records_are_set_aside_and_the_daemon_starts(start_daemon, tmp_path, caplog):
    state = tmp_path / "state"
    jobs = state / "jobs"
    jobs.mkdir(parents=True)
    good = uuid.uuid4().hex
    (jobs / f"{good}.json").write_text(json.dumps(_record(good)))
    names = {}
    for case, (job_id, text) in BAD_RECORDS.items():
        assert "Infinity" in text or "NaN" in text or "infinity" not in case, case
        names[case] = f"{job_id}.json"
        (jobs / names[case]).write_text(text)

    with caplog.at_level(logging.WARNING, logger="clipasso.daemon"):
        client, _ = start_daemon(state_dir=state)
    assert client.status(good)["state"] == protocol.FAILED
    for case, name in names.items():
        assert not (jobs / name).exists(), case
        assert (jobs / f"{name}.bad").exists(), case
        assert client.get(f"/v1/jobs/{name[:32]}")[0] == 404, case
        lines = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(lines) == 1, (case, lines)


def test_record_problem_accepts_what_the_daemon_writes_and_unknown_fields():
    job_id = uuid.uuid4().hex
    assert job_store.record_problem(_record(job_id, detached=True, worker="w0"), job_id) is None
    assert "created_at" in job_store.record_problem(_record(job_id, created_at=True), job_id)
    assert job_store.record_problem(_record(job_id, step_time_s=float("nan")), job_id)


def _run_to_done(client, **settings) -> str:
    submitted = client.post_json("/v1/jobs", job_body(**settings))
    assert submitted[0] == 202, submitted
    job_id = submitted[1]["id"]
    assert client.wait(job_id)["state"] == protocol.DONE
    return job_id


@pytest.mark.parametrize("damage", ["truncate", "not_a_result", "nan"])
def test_a_damaged_result_is_dropped_and_the_job_runs_afresh(start_daemon, tmp_path, damage):
    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    job_id = _run_to_done(client, seed=31)
    path = state / "results" / f"{job_id}.json"
    text = path.read_text()
    path.write_text(
        {
            "truncate": text[: len(text) // 2],
            "not_a_result": json.dumps({"id": job_id, "levels": []}),
            "nan": text.replace('"loss":', '"loss":NaN,"x":', 1),
        }[damage]
    )

    status, body = client.get(f"/v1/jobs/{job_id}/result")
    assert_error(status, body, "not_ready")
    assert "damaged" in body["message"] and str(state) not in body["message"]
    after = client.status(job_id)
    assert after["state"] == protocol.FAILED and "damaged" in after["error"]["message"]
    assert not path.exists()
    # the same request is not a cache hit any more: it runs again
    status, again = client.post_json("/v1/jobs", job_body(seed=31))
    assert status == 202 and again["id"] != job_id, again
    assert client.wait(again["id"])["state"] == protocol.DONE
    assert client.result(again["id"])["levels"]


def test_a_damaged_result_is_not_a_cache_hit(start_daemon, tmp_path):
    state = tmp_path / "state"
    client, _ = start_daemon(state_dir=state)
    job_id = _run_to_done(client, seed=32)
    path = state / "results" / f"{job_id}.json"
    path.write_bytes(path.read_bytes()[:100])
    status, again = client.post_json("/v1/jobs", job_body(seed=32))
    assert status == 202 and again["id"] != job_id and not again["cached"], again
    assert client.status(job_id)["state"] == protocol.FAILED
    assert client.wait(again["id"])["state"] == protocol.DONE


class FailingDisk:
    """``atomic_write`` that raises ENOSPC for files under the folders in ``full``."""

    def __init__(self, monkeypatch) -> None:
        self.full: set[str] = set()
        self.refused: list[str] = []
        real = job_store.atomic_write

        def write(path, data):
            if path.parent.name in self.full:
                self.refused.append(path.name)
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, data)

        monkeypatch.setattr(job_store, "atomic_write", write)


def test_a_submission_whose_record_cannot_be_saved_is_refused(start_daemon, monkeypatch):
    disk = FailingDisk(monkeypatch)
    client, daemon = start_daemon()
    disk.full = {"jobs"}
    status, body = client.post_json("/v1/jobs", job_body(seed=41))
    assert_error(status, body, "insufficient_storage")
    assert "No space left on device" in body["message"] and "/" not in body["message"]
    assert daemon.queue.queue_length() == 0
    disk.full = set()
    status, body = client.post_json("/v1/jobs", job_body(seed=41))
    assert status == 202, body
    assert client.wait(body["id"])["state"] == protocol.DONE


def test_a_result_the_disk_refused_is_kept_served_and_saved_later(
    start_daemon, tmp_path, monkeypatch, model_store
):
    from clipasso_server.daemon.config import DaemonConfig

    disk = FailingDisk(monkeypatch)
    state = tmp_path / "state"
    client, daemon = start_daemon(state_dir=state)
    submitted = client.submit(iterations=30, seed=42)
    client.wait(submitted["id"], until=lambda s: s["state"] == protocol.RUNNING)
    disk.full = {"jobs", "results", "cache"}  # the disk fills up while the job runs
    final = client.wait(submitted["id"])
    assert final["state"] == protocol.DONE and final["warning"], final
    assert f"{submitted['id']}.json" in disk.refused
    served = client.result(submitted["id"])  # from memory
    assert not (state / "results" / f"{submitted['id']}.json").exists()

    disk.full = set()  # space again: the periodic retry writes result and record
    deadline = time.monotonic() + HANG_S
    while client.status(submitted["id"])["warning"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.status(submitted["id"])["warning"] is None
    record = json.loads((state / "jobs" / f"{submitted['id']}.json").read_text())
    assert record["state"] == protocol.DONE

    thread = DaemonThread(DaemonConfig(port=0, device="cpu", state_dir=state), model_store)
    daemon.queue.shutdown(5)  # the first daemon must not write any more
    try:
        restarted = type(client)(thread.start())
        assert restarted.status(submitted["id"])["state"] == protocol.DONE
        assert restarted.result(submitted["id"]) == served
    finally:
        thread.stop()


def test_a_job_found_unfinished_after_a_crash_is_not_called_shutting_down(start_daemon, tmp_path):
    state = tmp_path / "state"
    jobs = state / "jobs"
    jobs.mkdir(parents=True)
    job_id = uuid.uuid4().hex
    (jobs / f"{job_id}.json").write_text(
        json.dumps(_record(job_id, state=protocol.RUNNING, error=None, finished_at=None))
    )
    client, _ = start_daemon(state_dir=state)
    status = client.status(job_id)
    assert status["state"] == protocol.INTERRUPTED
    assert status["error"]["error"] == "interrupted", status


def test_a_failing_rename_leaves_the_old_record_intact(tmp_path, monkeypatch):
    store = job_store.JobStore(tmp_path)
    job_id = uuid.uuid4().hex
    store.save_record(_record(job_id, name="first"))

    def refuse(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        store.save_record(_record(job_id, name="second"))
    monkeypatch.undo()
    assert [r["name"] for r in store.load_records()] == ["first"]
    assert sorted(p.name for p in store.jobs_dir.iterdir()) == [f"{job_id}.json"]  # no temp


def test_every_component_changes_the_cache_key(test_weights_dir, monkeypatch):
    import clipasso_server
    from clipasso_server.daemon.engine_bridge import EngineBridge

    devices = [{"device": "cpu", "state": "idle"}]
    bridge = EngineBridge(test_weights_dir, 1000, lambda: devices)
    settings = protocol.parse_settings(
        {"loss_model": "test-tiny-rn", "saliency_model": "test-tiny-vit"}
    ).to_json()
    base = bridge.cache_key("0" * 64, settings)
    assert base is not None and base == bridge.cache_key("0" * 64, dict(settings))
    changed = {
        "width": 2.5,
        "color": "#ff0000",
        "time_budget_s": 60.0,
        "levels": [4, 8],
        "iterations": 10,
        "seeds": 2,
        "seed": 7,
        "remove_background": True,
        "renderer": "torch",
    }
    keys = {base}
    for name, value in changed.items():
        assert settings[name] != value, name
        key = bridge.cache_key("0" * 64, {**settings, name: value})
        assert key not in keys, name
        keys.add(key)
    assert bridge.cache_key("1" * 64, settings) not in keys  # another image
    for name in ("loss_model", "saliency_model"):  # a stored record that lacks one
        lacking = {key: value for key, value in settings.items() if key != name}
        assert bridge.cache_key("0" * 64, lacking) is None, name
        assert bridge.cache_key("0" * 64, {**settings, name: None}) is None, name

    monkeypatch.setattr(clipasso_server, "__version__", "999.0")  # an upgrade
    upgraded = bridge.cache_key("0" * 64, settings)
    assert upgraded not in keys
    monkeypatch.undo()
    devices[0] = {"device": "cuda:0", "state": "idle"}  # the same daemon on a GPU
    assert bridge.cache_key("0" * 64, settings) not in keys | {upgraded}
    devices[0] = {"device": "cpu", "state": "idle"}
    assert bridge.cache_key("0" * 64, settings) == base
    # "auto" is keyed by the renderer it resolves to here (diffvg once installed)
    assert bridge.engine_identity(settings)["renderer"] in ("torch", "diffvg")
    # the model weights' versions are part of it
    other = job_store.cache_key("0" * 64, settings, {"loss": "x", "saliency": "y"}, {})
    assert other not in keys


def test_crash_messages_for_clients_carry_no_server_paths():
    from clipasso_server.engine.errors import without_paths

    disk = OSError(errno.ENOSPC, "No space left on device", "/home/me/.local/state/x.json")
    assert without_paths(disk) == "No space left on device"
    text = without_paths(RuntimeError("cannot open /home/me/.cache/clip/RN101.pt: bad magic"))
    assert "/home" not in text and "bad magic" in text
    assert without_paths(ValueError("ratio 1/2 of a/b")) == "ratio 1/2 of a/b"


def test_a_crash_in_a_worker_process_reaches_clients_without_server_paths(
    monkeypatch, test_weights_dir
):
    from clipasso_server.daemon import worker_process

    options = worker_process.WorkerOptions(
        device="cpu", weights_dir=str(test_weights_dir), allow_download=False
    )
    runner = worker_process.SketchRunner(options)  # what each worker process runs jobs with

    def crash(*args):
        raise RuntimeError("cannot open /home/me/.cache/clip/RN101.pt: bad magic")

    monkeypatch.setattr(worker_process, "run_sketch", crash)
    kind, (code, message, _) = runner.run(b"", {}, lambda *_: None, lambda: False)
    assert (kind, code) == ("error", "internal")
    assert message.startswith("internal error (RuntimeError: cannot open ")
    assert "/home" not in message and "bad magic" in message


def test_one_rule_hides_server_paths_and_keeps_urls():
    from clipasso_server.engine.errors import hide_paths

    url = "https://openaipublic.azureedge.net/clip/models/afeb0e10/RN101.pt"
    text = hide_paths(
        f"put RN101.pt into /home/u/x, C:\\Users\\x or /home/u/My Models/clip "
        f"given with --clip-weights DIR, or RN101.pt into /root/.cache/clip. Download: {url}."
    )
    assert url in text, text
    for leak in ("/home", "Users", "My Models", "/clip "):
        assert leak not in text, text
    assert text.count("<path>") == 4, text
    assert hide_paths("ratio 1/2 of a/b") == "ratio 1/2 of a/b"


def test_a_job_error_naming_server_paths_shows_none_in_its_status(tmp_path):
    """Weights deleted after a job was accepted: the worker's error names the folders it
    searched; the job's status carries the error without them."""
    from clipasso_server.daemon.job_queue import Job, JobQueue, new_job_id
    from clipasso_server.engine.errors import MissingWeightsError

    def runner(job, progress, should_stop):
        raise MissingWeightsError(
            "no weights found for model RN101: put RN101.pt into /home/u/weights "
            "or C:\\Users\\u\\weights; download https://example.org/clip/RN101.pt"
        )

    queue = JobQueue(job_store.JobStore(tmp_path / "state"), runner, max_queue=4)
    queue.start()
    try:
        job = Job(id=new_job_id(), settings=_record("x")["settings"], image=b"x", total=1)
        queue.submit(job)
        deadline = time.monotonic() + HANG_S
        while queue.state(job.id) != protocol.FAILED and time.monotonic() < deadline:
            time.sleep(0.01)
        status = queue.status(job.id)
    finally:
        queue.shutdown(grace_s=HANG_S)
    message = status["error"]["message"]
    assert status["error"]["error"] == "missing_weights", status
    assert "/home" not in message and "Users" not in message, message
    assert "https://example.org/clip/RN101.pt" in message and "RN101.pt into" in message


def _done_job(job_id: str):
    from clipasso_server.daemon.job import Job

    settings = _record(job_id)["settings"]
    return Job(id=job_id, settings=settings, state=protocol.DONE, finished_at=time.time() - 50)


def new_job_id() -> str:
    from clipasso_server.daemon.job import new_job_id

    return new_job_id()


def test_a_record_that_fails_while_the_retrier_runs_is_kept(tmp_path):
    """persist() adds to the unsaved records under its own lock while retry_unsaved() reads
    them: the retrier works on a copy ("Set changed size during iteration" otherwise)."""
    from clipasso_server.daemon.job_table import JobTable
    from clipasso_server.daemon.persistence import Persistence

    table = JobTable()
    persistence = Persistence(job_store.JobStore(tmp_path / "state"), table, 1.0)
    first, second = _done_job(new_job_id()), _done_job(new_job_id())

    class Jobs(dict):
        def __contains__(self, job_id):  # a failed write lands while the set is read
            persistence.unsaved_records.add(second.id)
            return super().__contains__(job_id)

    table.jobs = Jobs({first.id: first, second.id: second})
    persistence.unsaved_records.add(first.id)
    assert persistence.retry_unsaved() == 1  # the first written; the second left for later
    assert persistence.unsaved_records == {second.id}


def test_a_pruned_job_is_never_written_back_by_the_retrier(tmp_path):
    from clipasso_server.daemon.housekeeping import prune_finished
    from clipasso_server.daemon.job_table import JobTable
    from clipasso_server.daemon.persistence import Persistence

    store = job_store.JobStore(tmp_path / "state")
    table = JobTable()
    persistence = Persistence(store, table, 1.0)
    job = _done_job(new_job_id())
    table.jobs[job.id] = job
    persistence.unsaved_results[job.id] = b'{"id": "x"}'  # the disk refused both earlier
    persistence.unsaved_records.add(job.id)
    assert prune_finished(table, persistence, older_than_s=10) == [job.id]
    assert persistence.retry_unsaved() == 0
    assert not store.has_result(job.id) and store.load_record(job.id) is None


def test_a_record_rebuilt_from_a_result_keeps_why_the_job_stopped(tmp_path):
    """A job its time budget stopped at step 3 of 10: the record rebuilt from its result
    says so, or the job shows as a plain Done that ran all its steps."""
    from clipasso_server.daemon.job import Job

    store = job_store.JobStore(tmp_path / "state")
    job_id = new_job_id()
    settings = protocol.parse_settings({"levels": [1], "iterations": 10}).to_json()
    path = {"points": [[0, 0], [1, 1], [2, 2], [3, 3]], "width": 1.5, "color": "#000000"}
    result = {
        "id": job_id,
        "image": {"width": 64, "height": 48},
        "levels": [{"strokes": 1, "seed": 0, "loss": 0.5, "paths": [path]}],
        "svg": "<svg/>",
        "settings": settings,
        "models": {"loss": "RN101"},
        "version": "0.1.0",
        "stop_reason": "budget",
        "steps_run": 3,
    }
    store.save_result(job_id, job_store.result_json(result))
    (record,) = store.load_records()  # no record of the job: rebuilt from its result
    job = Job.from_record(record)
    assert (job.state, job.stop_reason, job.step) == (protocol.DONE, "budget", 3)
