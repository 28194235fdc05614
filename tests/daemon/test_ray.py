"""``--backend ray``: the same workers as Ray actors, on a local Ray cluster started here (CPU
workers, tiny models): jobs run on actors, cancel works, a killed actor's job fails cleanly and
the next job runs; without Ray, ``clipasso serve --backend ray`` says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from daemon_helpers import HANG_S, ROOT, Client, DaemonThread

from inkscape_clipasso import protocol

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory, test_weights_dir):
    from clipasso_server.daemon.config import DaemonConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = DaemonConfig(
        port=0,
        device="cpu",
        backend="ray",
        state_dir=tmp_path_factory.mktemp("ray-state"),
        clip_weights=test_weights_dir,
        allow_download=False,
    )
    thread = DaemonThread(config, None)
    try:
        url = thread.start()
        assert thread.daemon.workers[0].wait_ready(HANG_S), thread.daemon.workers_info()
        yield Client(url), thread.daemon
        thread.stop()
    finally:
        ray.shutdown()


def test_jobs_run_on_a_ray_actor_and_cancel_stops_them(ray_daemon):
    client, _ = ray_daemon
    job = client.submit(iterations=2, seed=21)
    assert client.wait(job["id"])["state"] == protocol.DONE
    assert client.result(job["id"])["levels"]
    code, health = client.get("/v1/health")
    (worker,) = health["workers"]
    assert worker["backend"] == "ray" and worker["state"] == "idle", worker
    assert worker["pid"] not in (None, os.getpid()) and worker["device"] == "cpu"

    long = client.submit(iterations=5000, seed=22)
    client.wait(long["id"], until=lambda s: s["step"] >= 2)
    code, _ = client.delete(f"/v1/jobs/{long['id']}")
    assert code == 200
    assert client.wait(long["id"])["state"] == protocol.CANCELLED


def test_a_killed_actor_fails_its_job_cleanly_and_the_next_job_runs(ray_daemon):
    client, daemon = ray_daemon
    doomed = client.submit(iterations=5000, seed=23)
    client.wait(doomed["id"], until=lambda s: s["step"] >= 1)
    ray.kill(daemon.workers[0]._actor, no_restart=True)
    status = client.wait(doomed["id"])
    assert status["state"] == protocol.FAILED, status
    assert "Ray actor" in status["error"]["message"] and "died" in status["error"]["message"]
    after = client.submit(iterations=2, seed=24)
    assert client.wait(after["id"])["state"] == protocol.DONE
    assert daemon.workers_info()[0]["restarts"] == 1


def test_without_ray_the_backend_says_how_to_install_it(tmp_path):
    # a Python that cannot import ray: a sitecustomize hides it
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['ray'] = None\n"
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a, **k: None if n == 'ray' else _f(n, *a, **k)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(hide))
    done = subprocess.run(
        [sys.executable, "-m", "clipasso_server.cli", "serve", "--backend", "ray", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=HANG_S,
    )
    assert done.returncode == 2, done
    assert "pip install 'clipasso-inkscape[ray]'" in done.stderr, done.stderr
    assert done.stdout == ""
