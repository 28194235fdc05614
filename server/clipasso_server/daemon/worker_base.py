"""What every worker kind shares: its states, its errors, the messages a worker sends about a
running job, and the bookkeeping of one whose engine lives elsewhere.

Both :mod:`~clipasso_server.daemon.workers` (processes, in-process threads) and
:mod:`~clipasso_server.daemon.ray_backend` (Ray actors) build on this module; neither imports
the other's internals, so the two stay apart (the worker factory alone picks one of them).
"""

from __future__ import annotations

import threading
from typing import Any

from clipasso_server.daemon.worker_process import ProgressSink, WorkerOptions
from clipasso_server.engine.errors import Cancelled, EngineError

STARTING, IDLE, BUSY, STOPPED = "starting", "idle", "busy", "stopped"
#: how long a new worker may take to import torch and say it is ready
START_TIMEOUT_S = 300.0


class WorkerError(EngineError):
    """The worker died or could not start; ``code`` is ``insufficient_memory`` when the
    evidence says it ran out of memory, else ``internal``."""

    def __init__(self, message: str, code: str = "internal") -> None:
        super().__init__(message)
        self.code = code


def cancelled_with(snapshot: dict[str, Any] | None) -> Cancelled:
    """A Cancelled carrying the best strokes so far (a result body) for the queue to keep."""
    exc = Cancelled()
    exc.snapshot_body = snapshot  # type: ignore[attr-defined]
    return exc


def engine_error(code: str, message: str) -> EngineError:
    """An EngineError with the worker's code (bad_image, missing_weights, internal...)."""
    error = EngineError(message)
    error.code = code
    return error


def settle(message: tuple[Any, ...], progress: ProgressSink) -> tuple[Any, ...] | None:
    """Act on one message of a running job's worker (a process or a Ray actor): a progress
    report goes to ``progress`` (None); the final one gives ``(worker info, result body,
    error)``, where error is the Cancelled or EngineError to raise, or None when done."""
    kind = message[0]
    if kind == "progress":
        progress(message[1], message[2])
        return None
    if kind == "done":
        return dict(message[2]), message[1], None
    if kind == "cancelled":
        return dict(message[2]), None, cancelled_with(message[1])
    if kind == "error":
        return dict(message[3]), None, engine_error(message[1], message[2])
    raise EngineError(f"the worker sent an unknown message {kind!r}")


class RestartingWorker:
    """What a worker whose engine lives elsewhere (a process, a Ray actor) keeps track of: its
    state, the job it runs, whether its engine said ready, how often it was started again, and
    the engine's last report (device, memory, models)."""

    def __init__(self, name: str, options: WorkerOptions, cancel_grace_s: float) -> None:
        self.name = name
        self.options = options
        self.cancel_grace_s = cancel_grace_s
        self.restarts = 0
        self.last_info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._state = STARTING
        self._job_id: str | None = None
        self._ready = threading.Event()
        self._start_error: WorkerError | None = None

    def wait_ready(self, timeout: float) -> bool:
        """Block until the engine said ready (or failed to start); whether it is ready."""
        return self._ready.wait(timeout) and self._start_error is None

    def _job_ended(self) -> None:
        with self._lock:
            if self._state == BUSY:
                self._state = IDLE
            self._job_id = None
