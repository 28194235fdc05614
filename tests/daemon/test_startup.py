"""Right after start-up: several jobs submitted at once to a fresh `clipasso serve` all run.

The extension submits one job per selected image, back to back, often just after starting the
daemon; lazy imports from several threads at once once deadlocked in importlib there.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from daemon_helpers import Client, job_body, png_bytes

from inkscape_clipasso import protocol


def test_jobs_submitted_at_once_to_a_fresh_daemon_all_run(
    serve_process, tmp_path, test_weights_dir
):
    process = serve_process(
        [
            "--port", "0", "--device", "cpu", "--no-download",
            "--state-dir", str(tmp_path / "state"), "--clip-weights", str(test_weights_dir),
        ]
    )  # fmt: skip
    client = Client(process.wait_ready())
    bodies = [
        json.dumps(job_body(png_bytes(shade=10 + 40 * i), iterations=2, levels=[2])).encode()
        for i in range(4)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(
            pool.map(
                lambda body: client.request("POST", "/v1/jobs", body, "application/json"), bodies
            )
        )
    assert [status for status, _ in answers] == [202] * 4, answers
    for _, submitted in answers:
        final = client.wait(submitted["id"])
        assert final["state"] == protocol.DONE, final
    assert process.terminate() == 0
    assert "Traceback" not in process.stderr and "internal error" not in process.stderr
