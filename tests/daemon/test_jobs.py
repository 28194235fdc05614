"""Submitting jobs over real HTTP: progress, results, multipart, the cache, and ten clients."""

from __future__ import annotations

import itertools
import json
import threading
import uuid

from daemon_helpers import HANG_S, job_body, png_bytes, tiny_settings

from inkscape_clipasso import protocol


def test_submit_progress_result(shared_daemon):
    client, _ = shared_daemon
    submitted = client.submit(iterations=8, seed=101)
    assert submitted["state"] == protocol.QUEUED
    statuses = []
    final = client.wait(submitted["id"], until=lambda s: statuses.append(s) or s["state"] == "done")

    running = [s for s in statuses if s["state"] == protocol.RUNNING and s["step"] > 0]
    assert running, "no progress was seen while the job ran"
    steps = [s["step"] for s in running]
    assert steps == sorted(steps) and all(0 < s <= 8 for s in steps)
    assert all(set(s["best_loss"]) <= {"2", "3"} for s in running)
    assert any(s["eta_s"] is not None and s["eta_s"] >= 0 for s in running if s["step"] > 1)
    assert final["step"] == final["total"] == 8
    assert set(final["best_loss"]) == {"2", "3"} and final["error"] is None
    assert final["elapsed_s"] > 0 and final["queue_position"] == 0

    result = client.result(submitted["id"])
    assert result["id"] == submitted["id"]
    assert result["image"] == {"width": 64, "height": 64}
    assert [level["strokes"] for level in result["levels"]] == [2, 3]
    assert (
        result["settings"]
        == protocol.parse_settings(tiny_settings(iterations=8, seed=101)).to_json()
    )
    assert result["svg"].lstrip().startswith(("<?xml", "<svg"))
    assert "test-tiny-rn" in result["models"]["loss"]

    status, health = client.get("/v1/health")
    assert status == 200
    health = protocol.validate_health(health)
    assert health["device"] == "cpu" and health["protocol"] == protocol.PROTOCOL_VERSION
    assert {"test-tiny-rn", "test-tiny-vit"} <= set(health["models_loaded"])


def test_multipart_submission(shared_daemon):
    client, _ = shared_daemon
    boundary = uuid.uuid4().hex
    settings = protocol.parse_settings(tiny_settings(iterations=2, levels=[2], seed=202))
    parts = [
        ("settings", "application/json", None, json.dumps(settings.to_json()).encode()),
        ("image", "image/png", "disc.png", png_bytes()),
        ("name", "text/plain", None, b"multipart"),
    ]
    body = b""
    for name, content_type, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    status, submitted = client.request(
        "POST", "/v1/jobs", body, f"multipart/form-data; boundary={boundary}"
    )
    assert status == 202, submitted
    final = client.wait(protocol.validate_submit_response(submitted)["id"])
    assert final["state"] == protocol.DONE and final["name"] == "multipart"
    result = client.result(submitted["id"])
    assert result["settings"]["seed"] == 202 and len(result["levels"]) == 1


def test_identical_job_is_served_from_the_cache(shared_daemon):
    client, daemon = shared_daemon
    body = job_body(iterations=3, seed=303)
    status, first = client.post_json("/v1/jobs", body)
    assert status == 202
    assert client.wait(first["id"])["state"] == protocol.DONE
    original = client.result(first["id"])

    status, again = client.post_json("/v1/jobs", body)
    assert status == 200, again
    again = protocol.validate_submit_response(again)
    assert again["id"] == first["id"] and again["state"] == protocol.DONE and again["cached"]
    assert client.result(again["id"]) == original
    assert list((daemon.state_dir / "cache").glob("*.json")), "the cache index is not on disk"

    # Any difference in the settings or the image is a new job.
    status, other = client.post_json("/v1/jobs", job_body(iterations=3, seed=304))
    assert status == 202 and other["id"] != first["id"]
    status, other_image = client.post_json(
        "/v1/jobs", job_body(png_bytes(shade=90), iterations=3, seed=303)
    )
    assert status == 202 and other_image["id"] != first["id"]
    for job in (other, other_image):
        client.delete(f"/v1/jobs/{job['id']}")


def test_ten_clients_at_once_are_served_one_at_a_time_in_order(shared_daemon):
    client, _ = shared_daemon
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def one_client(index: int) -> None:
        try:
            barrier.wait()
            submitted = client.submit(iterations=2, levels=[2], seed=1000 + index)
            final = client.wait(submitted["id"])
            results[index] = {**final, "position": submitted["queue_position"]}
            client.result(submitted["id"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_S)
    assert not errors, errors
    assert len(results) == 10 and all(r["state"] == protocol.DONE for r in results.values())

    by_arrival = sorted(results.values(), key=lambda r: r["created_at"])
    by_start = sorted(results.values(), key=lambda r: r["started_at"])
    assert [r["id"] for r in by_arrival] == [r["id"] for r in by_start]
    for earlier, later in itertools.pairwise(by_start):
        assert later["started_at"] >= earlier["finished_at"], "two jobs ran at once"
    assert max(r["position"] for r in results.values()) >= 5, "the jobs were not queued"


def test_a_job_the_engine_cannot_run_fails_with_the_engines_message(tmp_path, test_weights_dir):
    """A weight file that is there (so the submission is accepted) but cannot be loaded: the
    job fails in the engine, and says what really failed."""
    import shutil

    from daemon_helpers import Client, DaemonThread

    from clipasso_server.daemon.config import DaemonConfig
    from clipasso_server.engine.clip_models import ModelStore

    weights = tmp_path / "weights"
    shutil.copytree(test_weights_dir, weights)
    (weights / "RN50.safetensors").write_bytes(b"not a safetensors file")
    store = ModelStore(device="cpu", weights_dir=weights, allow_download=False)
    thread = DaemonThread(DaemonConfig(port=0, device="cpu", state_dir=tmp_path / "s"), store)
    client = Client(thread.start())
    try:
        job = client.submit(iterations=2, levels=[2], loss_model="RN50", seed=404)
        final = client.wait(job["id"])
        status, body = client.get(f"/v1/jobs/{job['id']}/result")
    finally:
        thread.stop()
    assert status == 409 and body["error"] == "not_ready"
    assert final["state"] == protocol.FAILED
    assert final["error"]["error"] == "bad_weights", final
    message = final["error"]["message"]
    assert "RN50" in message and "Traceback" not in message, message
    assert "missing" not in message.lower(), message  # it is there, just unreadable
