"""Helpers for the daemon tests: a tiny HTTP client, tiny jobs for the tiny test models, an
in-process daemon on a real loopback socket, and a real `clipasso serve` child process.

The in-process daemons run the real aiohttp app, queue, store and engine in a background
thread with its own event loop; the tests talk to them over HTTP like the extension does.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from inkscape_clipasso import protocol

TINY_MODELS = {"loss_model": "test-tiny-rn", "saliency_model": "test-tiny-vit"}
#: the limit of every wait on an event: long enough that it only ever catches a hang, never a
#: slow (loaded) machine
HANG_S = 600.0
ROOT = Path(__file__).resolve().parents[2]


def tiny_settings(**overrides: Any) -> dict[str, Any]:
    """Settings of a job that takes about a second on two CPU cores with the tiny models."""
    settings = {"levels": [2, 3], "iterations": 5, "seeds": 1, **TINY_MODELS}
    settings.update(overrides)
    return settings


def png_bytes(size: tuple[int, int] = (64, 64), shade: int = 20) -> bytes:
    """A small PNG with a dark disc, so saliency has something to find."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 6, h // 6, w * 5 // 6, h * 5 // 6), fill=(shade,) * 3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def job_body(image: bytes | None = None, **settings: Any) -> dict[str, Any]:
    """A JSON job request for ``image`` (the default disc) with tiny settings."""
    parsed = protocol.parse_settings(tiny_settings(**settings))
    return protocol.build_job_request(image or png_bytes(), parsed, name="test")


class Client:
    """A few lines of urllib: every call returns (status, decoded JSON body)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if content_type:
            all_headers["Content-Type"] = content_type
        if self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=HANG_S) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            assert b"Traceback" not in raw
            return error.code, json.loads(raw)

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.request("DELETE", path)

    def post_json(self, path: str, data: Any) -> tuple[int, Any]:
        return self.request("POST", path, json.dumps(data).encode(), "application/json")

    def submit(self, **settings: Any) -> dict[str, Any]:
        """Submit a tiny job; the validated 202 body."""
        status, body = self.post_json("/v1/jobs", job_body(**settings))
        assert status == 202, body
        return protocol.validate_submit_response(body)

    def status(self, job_id: str) -> dict[str, Any]:
        code, body = self.get(f"/v1/jobs/{job_id}")
        assert code == 200, body
        return protocol.validate_status(body)

    def wait(self, job_id: str, until=None, timeout: float = HANG_S) -> dict[str, Any]:
        """Poll every 50 ms until ``until(status)`` (default: a final state); the last status."""
        until = until or (lambda s: s["state"] in protocol.FINAL_STATES)
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if until(status):
                return status
            assert time.monotonic() < deadline, f"job {job_id} stuck: {status}"
            time.sleep(0.05)

    def result(self, job_id: str) -> dict[str, Any]:
        code, body = self.get(f"/v1/jobs/{job_id}/result")
        assert code == 200, body
        return protocol.validate_result(body)

    def partial(self, job_id: str) -> tuple[int, dict]:
        return self.get(f"/v1/jobs/{job_id}/result?partial=1")

    def wait_partial(
        self, job_id: str, after_step: int = 0, timeout: float = HANG_S
    ) -> dict[str, Any]:
        """The first best-so-far snapshot past ``after_step``."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.partial(job_id)
            if code == 200 and body["step"] > after_step:
                return protocol.validate_result(body)
            if code != 200:
                assert_error(code, body, "not_ready")
            assert time.monotonic() < deadline, "no snapshot came"
            time.sleep(0.1)


def assert_error(status: int, body: Any, code: str) -> None:
    """An error answer: the protocol's status for ``code`` and exactly {error, message}."""
    assert body.get("error") == code, body
    assert status == protocol.ERROR_STATUS[code], (status, body)
    assert set(body) == {"error", "message"} and body["message"], body


class DaemonThread:
    """A real Daemon serving on a loopback socket from a background event loop."""

    def __init__(self, config, models) -> None:
        from clipasso_server.daemon.service import Daemon

        self.daemon = Daemon(config, models=models)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self._call(self.daemon.start())

    def stop(self) -> None:
        self._call(self.daemon.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(HANG_S)


class ServeProcess:
    """`python -m clipasso_server.cli serve ...` as a child process; URL read from stdout."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clipasso_server.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.url = ""
        self.stderr = ""

    def wait_ready(self, timeout: float = HANG_S) -> str:
        """Block until the "listening on URL" line; the URL."""
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()))
        reader.start()
        reader.join(timeout)
        line = lines[0] if lines else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"daemon did not start: {line!r}\n{err}")
        self.url = match.group(1)
        return self.url

    def terminate(self, signum: int = signal.SIGTERM, timeout: float = HANG_S) -> int:
        """Send ``signum``, wait for the exit; the exit status (stderr kept in ``self.stderr``)."""
        self.process.send_signal(signum)
        _, self.stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


def unknown_job_id() -> str:
    return uuid.uuid4().hex


def daemon_factory(tmp_path: Path, model_store: Any):
    """The ``start_daemon`` fixture's body: yields ``start(**config) -> (Client, Daemon)``
    (in-process daemons on the shared store, each with its own state folder) and stops every
    daemon it started afterwards."""
    from clipasso_server.daemon.config import DaemonConfig

    running: list[DaemonThread] = []

    def start(**overrides: Any):
        options = {"port": 0, "device": "cpu", "state_dir": tmp_path / f"state-{len(running)}"}
        options.update(overrides)
        thread = DaemonThread(DaemonConfig(**options), model_store)
        url = thread.start()
        running.append(thread)
        host = options.get("host", "127.0.0.1")
        if host in ("0.0.0.0", "::"):
            url = f"http://127.0.0.1:{thread.daemon.port}"
        return Client(url, overrides.get("token")), thread.daemon

    yield start
    for thread in running:
        thread.stop()
