"""Worker processes: torch stays out of the HTTP process, a dead or stuck worker fails or
cancels only its own job and is started again, two CPU workers run two jobs at once, and the
torch-free model table still agrees with open_clip."""

from __future__ import annotations

import os
import signal
import time

import pytest
from daemon_helpers import HANG_S, Client, assert_error, job_body

from inkscape_clipasso import protocol


def _serve_args(state_dir, weights_dir, *extra: str) -> list[str]:
    return [
        "--port", "0", "--device", "cpu", "--no-download",
        "--state-dir", str(state_dir), "--clip-weights", str(weights_dir), *extra,
    ]  # fmt: skip


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
        return maps.read()


def _ended(pid: int) -> bool:
    """Whether our child process can be reaped, without reaping it (WNOWAIT): its parent's next
    look sees it dead. A zombie in /proc is not enough: a killed multi-threaded process shows
    its main thread as a zombie while its other threads are still exiting, and until they have,
    the parent's waitpid still finds it alive."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _workers(client: Client) -> list[dict]:
    code, body = client.get("/v1/health")
    assert code == 200, body
    protocol.validate_health(body)
    return body["workers"]


def _wait_workers(client: Client, until, timeout: float = HANG_S) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        workers = _workers(client)
        if until(workers):
            return workers
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)


@pytest.fixture
def serve(serve_process, tmp_path, test_weights_dir):
    """Start ``clipasso serve`` with process workers; (Client, ServeProcess)."""

    def start(*extra: str):
        process = serve_process(_serve_args(tmp_path / "state", test_weights_dir, *extra))
        return Client(process.wait_ready()), process

    return start


def test_the_http_process_never_loads_torch_and_the_worker_does(serve):
    client, process = serve()
    job = client.submit(iterations=2)
    assert client.wait(job["id"])["state"] == protocol.DONE
    (worker,) = _workers(client)
    assert worker["backend"] == "process" and worker["device"] == "cpu"
    assert worker["state"] == "idle" and worker["pid"] != process.process.pid
    assert worker["rss_bytes"] > 50 * 1024 * 1024
    assert worker["models_loaded"] == ["test-tiny-rn", "test-tiny-vit"]
    assert "libtorch" not in _maps(process.process.pid)
    assert "libtorch" in _maps(worker["pid"])


def test_a_killed_worker_fails_its_job_says_why_and_the_next_job_runs(serve):
    client, _ = serve()
    doomed = client.submit(iterations=5000, seed=1)
    client.wait(doomed["id"], until=lambda s: s["step"] >= 1)
    snapshot = client.wait_partial(doomed["id"])  # snapshots cross the pipe
    (worker,) = _workers(client)
    os.kill(worker["pid"], signal.SIGKILL)
    status = client.wait(doomed["id"])
    assert status["state"] == protocol.FAILED, status
    code, kept = client.get(f"/v1/jobs/{doomed['id']}/result?partial=1")
    assert code == 200 and kept["partial"] is True and kept["step"] >= snapshot["step"]
    message = status["error"]["message"]
    # sent by hand, not by the kernel's OOM killer: not called out of memory
    assert "SIGKILL" in message and "ran out of memory" not in message, message
    assert status["error"]["error"] == "internal"
    (restarted,) = _wait_workers(client, lambda w: w[0]["restarts"] == 1)
    assert restarted["pid"] != worker["pid"]
    after = client.submit(iterations=2, seed=2)
    assert client.wait(after["id"])["state"] == protocol.DONE


def test_a_worker_that_does_not_stop_is_terminated_and_started_again(serve):
    client, _ = serve()
    stuck = client.submit(iterations=5000, seed=3)
    client.wait(stuck["id"], until=lambda s: s["step"] >= 1)
    (worker,) = _workers(client)
    os.kill(worker["pid"], signal.SIGSTOP)  # it can no longer see the cancel
    code, _ = client.delete(f"/v1/jobs/{stuck['id']}")
    assert code == 200
    assert client.wait(stuck["id"])["state"] == protocol.CANCELLED
    (restarted,) = _wait_workers(client, lambda w: w[0]["restarts"] == 1)
    assert restarted["pid"] != worker["pid"]
    assert not os.path.exists(f"/proc/{worker['pid']}/maps") or "libtorch" not in _maps(
        worker["pid"]
    )  # the stopped process is gone (or a zombie)
    after = client.submit(iterations=2, seed=4)
    assert client.wait(after["id"])["state"] == protocol.DONE


def test_two_cpu_workers_run_two_jobs_at_once(serve):
    client, _ = serve("--workers", "2")
    first = client.submit(iterations=5000, seed=5)
    second = client.submit(iterations=5000, seed=6)
    for job in (first, second):
        client.wait(job["id"], until=lambda s: s["state"] == protocol.RUNNING and s["step"] >= 1)
    workers = _workers(client)
    assert {w["state"] for w in workers} == {"busy"}
    assert {w["job"] for w in workers} == {first["id"], second["id"]}
    for job in (first, second):
        client.delete(f"/v1/jobs/{job['id']}")
        assert client.wait(job["id"])["state"] == protocol.CANCELLED


def test_a_job_that_cannot_fit_in_memory_is_refused(shared_daemon):
    client, _ = shared_daemon
    body = job_body(loss_model="RN101", saliency_model="ViT-B-32", seeds=16)
    body["settings"]["levels"] = [2, 4, 8, 16, 32, 64, 96, 128]
    status, answer = client.post_json("/v1/jobs", body)
    assert_error(status, answer, "insufficient_memory")
    assert "8 levels x 16 seeds" in answer["message"] and "GB" in answer["message"]


def test_the_torch_free_model_table_agrees_with_open_clip():
    from open_clip.pretrained import get_pretrained_cfg

    from clipasso_server.engine import model_specs

    for name in model_specs.known_models():
        spec = model_specs.model_spec(name)
        if spec.pretrained_tag is None:
            continue
        cfg = get_pretrained_cfg(spec.arch, spec.pretrained_tag)
        assert (spec.url, spec.hf_hub) == (cfg["url"], cfg["hf_hub"].strip("/")), name


def test_the_gpu_check_says_there_is_no_cuda_and_exits_0(tmp_path):
    import subprocess
    import sys

    from daemon_helpers import ROOT

    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done
    assert "no CUDA device here" in done.stdout
    assert (tmp_path / "out" / "summary.json").read_text().strip() == '{"cuda": false}'


def test_the_gpu_summary_judges_the_full_size_step_not_the_tiny_one(tmp_path):
    import json
    import subprocess
    import sys

    from daemon_helpers import ROOT

    rows = [  # bench/step.py --device cuda: the tiny model's row comes first
        {"model": "test-tiny-rn", "device": "cuda", "step_ms": 3.1},
        {"model": "RN101-random", "device": "cuda", "step_ms": 22.5},
    ]
    (tmp_path / "step.json").write_text(json.dumps({"rows": rows}))  # no job.json: it failed
    env = dict(os.environ, OUT=str(tmp_path), TOTAL="10", STATUSES="step=0\njob=1", DEVICE_OPTS="")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_summary.py")],
        capture_output=True, text=True, env=env, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 0, done
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["default_step_ms"] == 22.5 and summary["step_ok"] is False
    assert summary["exit_status"] == {"step": "0", "job": "1"} and summary["job_ok"] is False


def test_a_closed_worker_refuses_a_job_instead_of_restarting(test_weights_dir):
    from types import SimpleNamespace

    from clipasso_server.daemon.worker_process import WorkerOptions
    from clipasso_server.daemon.workers import ProcessWorker, WorkerError

    options = WorkerOptions(device="cpu", weights_dir=str(test_weights_dir), allow_download=False)
    worker = ProcessWorker("worker-0", options, cancel_grace_s=5.0)
    worker.start()
    assert worker.wait_ready(HANG_S)
    worker.close()
    job = SimpleNamespace(id="0" * 32, image=b"not run", settings={})
    with pytest.raises(WorkerError) as refused:  # once retried itself until RecursionError
        worker.run(job, lambda *_: None, lambda: False)
    assert refused.value.code == "shutting_down"
    assert worker.info()["state"] == "stopped" and worker.restarts == 0


def test_a_killed_worker_is_started_again_before_its_job_fails_or_the_next_one_runs(
    test_weights_dir,
):
    """The restart is part of failing the job, not left to the next job: by the time ``run``
    raises, a new process is starting (the HTTP test above would only see a missing restart
    as a long wait timing out). One that died while idle is started again by the next job,
    which then runs rather than failing."""
    from types import SimpleNamespace

    from daemon_helpers import png_bytes, tiny_settings

    from clipasso_server.daemon.worker_process import WorkerOptions
    from clipasso_server.daemon.workers import ProcessWorker, WorkerError

    options = WorkerOptions(device="cpu", weights_dir=str(test_weights_dir), allow_download=False)
    worker = ProcessWorker("worker-0", options, cancel_grace_s=5.0)
    worker.start()
    try:
        assert worker.wait_ready(300)
        doomed_pid = worker.info()["pid"]
        settings = protocol.parse_settings(tiny_settings(iterations=5000)).to_json()
        job = SimpleNamespace(id="1" * 32, image=png_bytes(), settings=settings)
        killed = []

        def kill_at_the_first_step(report, snapshot) -> None:
            if not killed:
                os.kill(doomed_pid, signal.SIGKILL)
                killed.append(report.step)

        with pytest.raises(WorkerError) as died:
            worker.run(job, kill_at_the_first_step, lambda: False)
        assert killed and "SIGKILL" in died.value.message, died.value.message
        info = worker.info()
        assert worker.restarts == 1 and info["restarts"] == 1
        assert info["pid"] not in (None, doomed_pid) and info["state"] in ("starting", "idle")
        assert worker.wait_ready(300)
        again = SimpleNamespace(
            id="2" * 32,
            image=png_bytes(),
            settings=protocol.parse_settings(tiny_settings(iterations=2)).to_json(),
        )
        idle_pid = worker.info()["pid"]
        os.kill(idle_pid, signal.SIGKILL)  # dead while idle: the next job must not pay for it
        deadline = time.monotonic() + 60
        while not _ended(idle_pid):
            assert time.monotonic() < deadline, "the killed process is still there"
            time.sleep(0.05)
        body = worker.run(again, lambda *_: None, lambda: False)
        assert body["steps_run"] == 2 and worker.restarts == 2
        assert worker.info()["pid"] not in (idle_pid, doomed_pid)
    finally:
        worker.close()
