"""`clipasso serve` as a real process: SIGTERM, restart persistence, and the token rules."""

from __future__ import annotations

import signal
import subprocess
import sys

from daemon_helpers import HANG_S, ROOT, Client, assert_error, job_body

from inkscape_clipasso import protocol


def _serve_args(state_dir, weights_dir, *extra: str) -> list[str]:
    return [
        "--port", "0", "--device", "cpu", "--no-download",
        "--state-dir", str(state_dir), "--clip-weights", str(weights_dir), *extra,
    ]  # fmt: skip


def test_sigterm_persists_and_a_restart_serves_old_results(
    serve_process, tmp_path, test_weights_dir
):
    state = tmp_path / "state"
    first = serve_process(_serve_args(state, test_weights_dir))
    client = Client(first.wait_ready())
    finished = client.submit(iterations=3, seed=11)
    assert client.wait(finished["id"])["state"] == protocol.DONE
    result_before = client.result(finished["id"])
    running = client.submit(iterations=5000, seed=12)
    queued = client.submit(iterations=5000, seed=13)
    client.wait(running["id"], until=lambda s: s["step"] >= 1)

    assert first.terminate() == 0, first.stderr
    log = first.stderr
    assert f"job {finished['id']} done in" in log
    assert f"job {running['id']} interrupted" in log
    assert f"job {queued['id']} interrupted" in log

    second = serve_process(_serve_args(state, test_weights_dir))
    client = Client(second.wait_ready())
    assert client.status(finished["id"])["state"] == protocol.DONE
    assert client.result(finished["id"]) == result_before
    for job in (running, queued):
        status = client.status(job["id"])
        assert status["state"] == protocol.INTERRUPTED, status
        assert status["error"]["error"] == "shutting_down"
        assert_error(*client.get(f"/v1/jobs/{job['id']}/result"), "not_ready")
    # the cache survived the restart too
    status, again = client.post_json("/v1/jobs", job_body(iterations=3, seed=11))
    assert status == 200 and again["id"] == finished["id"], again
    assert second.terminate(signal.SIGINT) == 0, second.stderr  # Ctrl+C stops it cleanly too
    assert "stopped" in second.stderr


def test_a_daemon_killed_outright_keeps_the_best_strokes_it_last_saved(
    serve_process, tmp_path, test_weights_dir
):
    state = tmp_path / "state"
    first = serve_process(_serve_args(state, test_weights_dir, "--save-every", "0"))
    client = Client(first.wait_ready())
    running = client.submit(iterations=5000, levels=[2, 3], seed=21)
    saved = client.wait_partial(running["id"])
    # the snapshots are saved in order, so once a later one is shown this one is on disk
    later = client.wait_partial(running["id"], after_step=saved["step"])
    first.kill()  # SIGKILL (the out-of-memory killer): no chance to save anything more

    second = serve_process(_serve_args(state, test_weights_dir))
    client = Client(second.wait_ready())
    status = client.status(running["id"])
    assert status["state"] == protocol.INTERRUPTED, status
    assert status["error"]["error"] == "interrupted"  # killed, not shut down
    assert status["step"] >= saved["step"]
    code, kept = client.partial(running["id"])
    assert code == 200, kept
    assert kept["partial"] is True and saved["step"] <= kept["step"] <= later["step"]
    assert [level["strokes"] for level in kept["levels"]] == [2, 3]
    assert "unfinished" in kept["svg"]
    assert second.terminate() == 0
    assert f"job {running['id']} interrupted" in second.stderr


def test_save_every_must_not_be_negative(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clipasso_server.cli", "serve", "--save-every", "-1",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--save-every must be 0 or more" in done.stderr


def test_listening_off_loopback_without_a_token_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clipasso_server.cli", "serve", "--host", "0.0.0.0",
         "--port", "0", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=HANG_S, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0], done.stderr
    assert not list(tmp_path.iterdir()), "it should refuse before touching the state dir"


def test_off_loopback_every_request_needs_the_token(start_daemon):
    token = "s3cret-token"
    client, daemon = start_daemon(host="0.0.0.0", token=token)
    assert daemon.url.startswith("http://0.0.0.0:")
    wrong_headers = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": "Bearer"},
    ]
    anonymous = Client(client.url)
    for headers in wrong_headers:
        for method, path in [("GET", "/v1/health"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x")]:
            assert_error(*anonymous.request(method, path, headers=headers), "unauthorized")
    status, health = client.get("/v1/health")
    assert status == 200 and protocol.validate_health(health)
    job = client.submit(iterations=2, levels=[2], seed=31)
    assert client.wait(job["id"])["state"] == protocol.DONE
