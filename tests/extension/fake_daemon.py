"""A loopback HTTP daemon that speaks the real protocol with geometry the tests choose.

It runs a real ``http.server`` on 127.0.0.1, so the extension's real HTTP client, timeouts and
error handling are exercised. Every answer is built and checked with the shared protocol
module. The strokes are put at known bitmap pixels (see :func:`pattern_points`) so that tests
can check exactly where the extension places them in the document.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from inkscape_clipasso import protocol


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR (the fake only accepts PNGs)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the fake daemon only reads PNGs"
    return struct.unpack(">II", data[16:24])


def pattern_points(index: int, width: int, height: int) -> list[list[float]]:
    """The 4 control points of stroke ``index``: corners, centre and quarter points."""
    w, h = float(width), float(height)
    patterns = [
        [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]],
        [[w / 2, h / 2], [w / 4, h / 4], [3 * w / 4, h / 4], [w, h / 2]],
        [[w / 4, 3 * h / 4], [w / 2, h], [0.0, h / 2], [3 * w / 4, h / 3]],
    ]
    return patterns[index % len(patterns)]


def start_points(settings: protocol.SketchSettings, index: int) -> list[list[float]]:
    """Start stroke ``index`` as the fake's result gives it: exactly as sent when the job
    keeps its start strokes (as the real engine does), else "optimised": moved 1 px right."""
    shift = 0.0 if settings.keep_start_strokes else 1.0
    return [[x + shift, y] for x, y in settings.start_strokes[index]]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeDaemon:
    """Knobs: ``submit_error`` (status, body), ``final_state`` and ``error`` of every job,
    ``polls_before_done`` (-1: never finishes), ``status_delay`` (s), ``raw_status`` (bytes
    sent as the status answer), ``result_override`` (a function editing the result),
    ``eta_s`` and ``steps_per_s`` (what status reports while running), ``partial_after_polls``
    (-1: no snapshot ever; else ``?partial=1`` answers once the job was polled that often).

    Like the real daemon, a job's ids are 32 hex digits (here a counter, so runs are
    repeatable), a repeated request (same image and settings) of a finished job is answered
    200 with ``"cached": true``, and ``?partial=1`` gives the best strokes so far in the final
    schema plus ``"partial": true, "step": k`` (409 ``not_ready`` before the first snapshot).
    """

    submit_error: tuple[int, dict[str, str]] | None = None
    final_state: str = protocol.DONE
    error: dict[str, str] | None = None
    polls_before_done: int = 1
    status_delay: float = 0.0
    raw_status: bytes | None = None
    result_override: Any = None
    eta_s: float | None = None
    steps_per_s: float | None = None
    partial_after_polls: int = 0
    requests: list[Recorded] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def finish_all(self) -> None:
        """Let every job still running end as done (a detached job finishing on its own)."""
        for job in self.jobs.values():
            job["forced_done"] = True

    def is_done(self, job: dict[str, Any]) -> bool:
        return job.get("forced_done", False) or (
            self.polls_before_done >= 0 and job["polls"] > self.polls_before_done
        )

    def cached_job(self, request: protocol.JobRequest) -> dict[str, Any] | None:
        """A finished job with the same image and settings, as the daemon's result cache."""
        for job in self.jobs.values():
            same = job["request"].image == request.image
            if same and job["request"].settings == request.settings and self.is_done(job):
                return job
        return None

    def submitted_images(self) -> list[bytes]:
        """The decoded image bytes of every submitted job, in order."""
        return [
            protocol.decode_image_field(r.body["image"])
            for r in self.requests
            if r.method == "POST"
        ]

    def submitted_settings(self) -> list[protocol.SketchSettings]:
        """The validated settings of every submitted job, in order."""
        return [
            protocol.parse_settings(r.body["settings"]) for r in self.requests if r.method == "POST"
        ]

    def build_result(self, job: dict[str, Any], partial: bool = False) -> dict[str, Any]:
        request: protocol.JobRequest = job["request"]
        settings = request.settings
        width, height = png_size(request.image)
        # The real daemon reports widths in bitmap pixels: canvas px x max(W, H) / 224.
        image_width = settings.width * max(width, height) / protocol.CANVAS_SIZE
        levels = [
            {
                "strokes": count,
                "seed": settings.seed + 1000 * number,
                "loss": 0.5 / count,
                "paths": [
                    {
                        "points": start_points(settings, i)
                        if i < len(settings.start_strokes)
                        else pattern_points(i - len(settings.start_strokes), width, height),
                        "width": image_width,
                        "color": settings.color,
                    }
                    for i in range(count)
                ],
            }
            for number, count in enumerate(settings.levels)
        ]
        result = {
            "id": job["id"],
            "image": {"width": width, "height": height},
            "levels": levels,
            "svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
            "settings": settings.to_json(),
            "models": {"loss": settings.loss_model, "saliency": settings.saliency_model},
            "version": "9.9.9-fake",
            "steps_run": settings.iterations,
            "stop_reason": "iterations",
        }
        if partial:
            step = min(job["polls"], settings.iterations)
            result.update(partial=True, step=step, steps_run=step, stop_reason="budget")
        if self.result_override is not None:
            return self.result_override(result)
        return protocol.validate_result(result)

    def status_of(self, job: dict[str, Any]) -> dict[str, Any]:
        job["polls"] += 1
        done = self.is_done(job)
        state = self.final_state if done else protocol.RUNNING
        total = job["request"].settings.iterations
        return protocol.validate_status(
            {
                "id": job["id"],
                "state": state,
                "queue_position": 0,
                "step": total if done else min(job["polls"], total),
                "total": total,
                "best_loss": {},
                "elapsed_s": 0.1,
                "eta_s": 0.0 if done else self.eta_s,
                "steps_per_s": self.steps_per_s,
                "error": self.error if state == protocol.FAILED else None,
            }
        )


def _handler(fake: FakeDaemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            """Quiet: a test's stderr stays the extension's."""

        def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            return body

        def _job(self) -> dict[str, Any] | None:
            parts = urlsplit(self.path).path.split("/")
            job = fake.jobs.get(parts[3]) if len(parts) > 3 else None
            if job is None:
                self._send(404, {"error": "not_found", "message": "no such job"})
            return job

        def do_POST(self) -> None:
            body = self._record()
            if fake.submit_error is not None:
                self._send(*fake.submit_error)
                return
            try:
                request = protocol.parse_job_request(body)
                protocol.check_start_strokes_inside(request.settings, *png_size(request.image))
            except protocol.ProtocolError as exc:
                self._send(exc.status, exc.to_json())
                return
            cached = fake.cached_job(request)
            if cached is not None:
                answer = {"id": cached["id"], "state": protocol.DONE, "queue_position": 0}
                self._send(200, {**answer, "cached": True})
                return
            job_id = f"{len(fake.jobs) + 1:032x}"
            fake.jobs[job_id] = {"id": job_id, "request": request, "polls": 0}
            self._send(202, {"id": job_id, "state": protocol.QUEUED, "queue_position": 0})

        def do_GET(self) -> None:
            self._record()
            job = self._job()
            if job is None:
                return
            url = urlsplit(self.path)
            if url.path.endswith("/result"):
                if fake.is_done(job):
                    self._send(200, fake.build_result(job))
                elif parse_qs(url.query).get("partial") != ["1"]:
                    self._send(409, {"error": "not_ready", "message": "the job is running"})
                elif 0 <= fake.partial_after_polls <= job["polls"]:
                    self._send(200, fake.build_result(job, partial=True))
                else:
                    self._send(409, {"error": "not_ready", "message": "no strokes yet"})
                return
            time.sleep(fake.status_delay)
            if fake.raw_status is not None:
                self._send(200, None, raw=fake.raw_status)
                return
            self._send(200, fake.status_of(job))

        def do_DELETE(self) -> None:
            self._record()
            job = self._job()
            if job is not None:
                self._send(200, {"id": job["id"], "state": protocol.CANCELLED})

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """socketserver prints handler errors to sys.stderr, which would land in whichever test is
    capturing the extension's stderr then. A client that gave up (its timeout passed while a
    slow answer was pending) is expected; anything else is kept for the fixture to raise."""

    errors: list[BaseException]

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            self.errors.append(error)


class FakeDaemonServer:
    """Runs a :class:`FakeDaemon` on 127.0.0.1 in a thread; use as a context manager."""

    def __init__(self, fake: FakeDaemon) -> None:
        self.fake = fake
        self.server = _QuietServer(("127.0.0.1", 0), _handler(fake))
        self.server.errors = []
        self.server.daemon_threads = True
        fake.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeDaemon:
        self.thread.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        if self.server.errors:
            raise RuntimeError("the fake daemon failed") from self.server.errors[0]
