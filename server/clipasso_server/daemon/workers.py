"""The daemon's workers: one per device, each running one job at a time.

A :class:`ProcessWorker` is a process started with the ``spawn`` method (a fresh interpreter;
forked CUDA breaks) that owns one device and keeps its models loaded; jobs, progress, best-so-far
snapshots and cancels travel over a pipe. The daemon's HTTP process never imports torch, and a
crash in a worker (a segfault in a native extension, a CUDA error, the OOM killer) fails that
worker's job with a message saying what happened, the worker is started again, and everything
else carries on. A :class:`ThreadWorker` runs the engine in the daemon's own process on a
given ModelStore (the tests share one so the tiny models load once per session).

Every worker is a runner for :mod:`~clipasso_server.daemon.dispatch`:
``worker.run(job, progress, should_stop)`` returns the result body or raises ``Cancelled`` /
``EngineError``, like the engine itself. What the worker kinds share (states, errors, the
messages about a running job) is in :mod:`~clipasso_server.daemon.worker_base`, which Ray's
workers (:mod:`~clipasso_server.daemon.ray_backend`) use too; only :func:`make_workers` imports
that module, when ``--backend ray`` asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from clipasso_server.daemon.worker_base import (
    BUSY,
    IDLE,
    START_TIMEOUT_S,
    STARTING,
    STOPPED,
    RestartingWorker,
    WorkerError,
    cancelled_with,
    settle,
)
from clipasso_server.daemon.worker_process import (
    ProgressSink,
    StepClock,
    WorkerOptions,
    cancelled_snapshot,
    mem_available_bytes,
    rss_bytes,
    run_sketch,
    worker_main,
)
from clipasso_server.engine.errors import Cancelled, EngineError

log = logging.getLogger("clipasso.daemon")

_POLL_S = 0.05
_CGROUP_EVENTS = "/sys/fs/cgroup/memory.events"
_VMSTAT = "/proc/vmstat"


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has ended so far: this cgroup's count (v2
    ``memory.events``) plus the whole system's (``/proc/vmstat``); None where neither can be
    read. A rise across a worker's death means the OOM killer ended it, as far as can be told."""
    counts = [_counter(_CGROUP_EVENTS, "oom_kill"), _counter(_VMSTAT, "oom_kill")]
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _counter(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii") as lines:
            for line in lines:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def describe_death(exitcode: int | None, oom_before: int | None) -> tuple[str, str]:
    """``(what happened, error code)`` for a worker that ended with ``exitcode`` (negative:
    killed by that signal). A SIGKILL is called out of memory only when the kernel's count of
    OOM kills rose meanwhile: anyone may send SIGKILL (a user, a supervisor, a test)."""
    if exitcode is None:
        return "it stopped answering", "internal"
    if exitcode >= 0:
        return f"it exited with status {exitcode}", "internal"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode != signal.SIGKILL:
        return f"it was killed by {name}", "internal"
    after = oom_kills()
    if oom_before is None or after is None:
        return "it was killed by SIGKILL (whether by the OOM killer cannot be told here)", (
            "internal"
        )
    if after > oom_before:
        return "it ran out of memory: the kernel's OOM killer ended it (SIGKILL)", (
            "insufficient_memory"
        )
    return "it was killed by SIGKILL, not by the kernel's OOM killer (no OOM kill counted)", (
        "internal"
    )


class ProcessWorker(RestartingWorker):
    """One spawned worker process on one device, restarted whenever it dies."""

    def __init__(
        self,
        name: str,
        options: WorkerOptions,
        cancel_grace_s: float,
    ) -> None:
        super().__init__(name, options, cancel_grace_s)
        self._process: Any = None
        self._conn: Any = None
        self._oom_before: int | None = None
        self._closing = False

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the process; it says ready once torch is imported and its store is built."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=worker_main, args=(child, self.options), name=f"clipasso-{self.name}"
        )
        self._oom_before = oom_kills()
        with self._lock:
            self._state = STARTING
            self._ready.clear()
            self._start_error = None
            self._process, self._conn = process, parent
        process.start()
        child.close()  # so the parent's end sees EOF when the child dies
        threading.Thread(
            target=self._await_ready, args=(process, parent), name=f"{self.name}-start", daemon=True
        ).start()
        log.info("%s starting on %s (pid %s)", self.name, self.options.device, process.pid)

    def _await_ready(self, process: Any, conn: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        error: WorkerError | None = None
        while True:
            try:
                if conn.poll(0.2):
                    message = conn.recv()
                    if message[0] == "ready":
                        with self._lock:
                            self.last_info = dict(message[1])
                            self._state = IDLE if not self._closing else STOPPED
                        log.info("%s ready on %s", self.name, message[1].get("device"))
                        break
                    if message[0] == "error":  # the worker could not build its engine
                        error = WorkerError(f"{self.name} cannot start: {message[2]}", message[1])
                        break
                elif not process.is_alive() or time.monotonic() > deadline:
                    raise EOFError
            except (EOFError, OSError):
                process.join(1.0)
                what, code = describe_death(process.exitcode, self._oom_before)
                error = WorkerError(f"{self.name} did not start ({what})", code)
                break
        if error is not None:
            log.error("%s", error.message)
            with self._lock:
                self._start_error = error
                self._state = STOPPED
        self._ready.set()

    def close(self, grace_s: float = 5.0) -> None:
        """Ask the process to stop; terminate it if it has not after ``grace_s``."""
        with self._lock:
            self._closing = True
            process, conn = self._process, self._conn
            self._state = STOPPED
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stop",))
        process.join(grace_s)
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)
        conn.close()

    def _restart(self, why: str) -> None:
        with self._lock:
            process = self._process
            closing = self._closing
        if process is not None and process.is_alive():
            process.kill()
            process.join(5.0)
        if closing:
            return
        self.restarts += 1
        log.warning("%s restarting (%s)", self.name, why)
        self.start()

    # --- jobs ---------------------------------------------------------------------------

    def run(self, job: Any, progress: ProgressSink, should_stop: Any) -> dict[str, Any]:
        """Run ``job`` on this worker's process; the result body."""
        if job.image is None:
            raise EngineError("the job's image is gone")
        with self._lock:
            closing = self._closing
        if closing:  # a closed worker starts no process again (and run() must not retry)
            raise WorkerError(
                f"{self.name} has stopped: the daemon is shutting down", "shutting_down"
            )
        self._ready.wait()
        with self._lock:
            if self._start_error is not None and not self._closing:
                error = self._start_error
            else:
                error = None
        if error is not None:
            self._restart("it had failed to start")  # the next job tries again
            raise error
        with self._lock:
            process = self._process
        if not process.is_alive():  # it died while idle: this job must not pay for that
            what, _ = describe_death(process.exitcode, self._oom_before)
            self._restart(f"it had died while idle: {what}")
            return self.run(job, progress, should_stop)
        with self._lock:
            self._state, self._job_id = BUSY, job.id
            process, conn = self._process, self._conn
        try:
            return self._exchange(process, conn, job, progress, should_stop)
        finally:
            self._job_ended()

    def _exchange(
        self, process: Any, conn: Any, job: Any, progress: ProgressSink, should_stop: Any
    ) -> dict[str, Any]:
        cancel_sent_at: float | None = None
        clock = StepClock(progress)  # the cancel grace follows the measured step time
        try:
            conn.send(("run", job.image, job.settings))
            while True:
                if conn.poll(_POLL_S):
                    final = settle(conn.recv(), clock)
                    if final is not None:
                        self.last_info, body, error = final
                        if error is not None:
                            raise error
                        return body
                elif not process.is_alive():
                    raise EOFError
                if should_stop():
                    now = time.monotonic()
                    if cancel_sent_at is None:
                        conn.send(("cancel",))
                        cancel_sent_at = now
                    elif now - cancel_sent_at > clock.grace_s(self.cancel_grace_s):
                        grace = clock.grace_s(self.cancel_grace_s)
                        self._restart(f"it did not stop within {grace:g} s of a cancel")
                        raise cancelled_with(None)
        except (EOFError, OSError, BrokenPipeError):
            if self._closing:
                raise cancelled_with(None) from None
            process.join(2.0)
            what, code = describe_death(process.exitcode, self._oom_before)
            message = (
                f"the worker process on {self.last_info.get('device') or self.options.device} "
                "died while running this job "
                f"({what}); the daemon started it again, so the job can be submitted again"
            )
            log.error("%s: job %s failed: %s", self.name, job.id, message)
            self._restart(what)
            raise WorkerError(message, code) from None

    # --- health -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """This worker for ``GET /v1/health``: name, device, state, pid, memory, job."""
        with self._lock:
            process, state, job_id = self._process, self._state, self._job_id
            last = dict(self.last_info)
        pid = process.pid if process is not None else None
        return {
            "name": self.name,
            "backend": "process",
            "device": str(last.get("device") or self.options.device),
            "state": state,
            "pid": pid,
            "rss_bytes": rss_bytes(pid) if pid else None,
            "job": job_id,
            "restarts": self.restarts,
            "free_bytes": last.get("free_bytes"),
            "total_bytes": last.get("total_bytes"),
            "peak_bytes": last.get("peak_bytes"),
            "models_loaded": list(last.get("models_loaded") or ()),
        }


class ThreadWorker:
    """The engine in the daemon's own process, on a shared ModelStore (tests, one device)."""

    def __init__(self, name: str, models: Any, max_pixels: int) -> None:
        self.name = name
        self.models = models
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._job_id: str | None = None
        # the store's lock is held while a model loads; health must never wait for that
        self._loaded: list[str] = list(models.loaded())

    def start(self) -> None:
        """Nothing to start: the store is already built."""

    def close(self, grace_s: float = 5.0) -> None:
        """Nothing to stop: the queue's thread ends with the job."""

    def wait_ready(self, timeout: float) -> bool:
        return True

    def run(self, job: Any, progress: ProgressSink, should_stop: Any) -> dict[str, Any]:
        if job.image is None:
            raise EngineError("the job's image is gone")
        with self._lock:
            self._job_id = job.id
        try:
            return run_sketch(
                self.models, job.image, job.settings, self.max_pixels, progress, should_stop
            )
        except Cancelled as exc:
            raise cancelled_with(cancelled_snapshot(exc)) from None
        finally:
            with self._lock:
                self._job_id = None
                self._loaded = list(self.models.loaded())

    def info(self) -> dict[str, Any]:
        with self._lock:
            job_id = self._job_id
        return {
            "name": self.name,
            "backend": "thread",
            "device": str(self.models.device),
            "state": BUSY if job_id else IDLE,
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "job": job_id,
            "restarts": 0,
            "models_loaded": list(self._loaded),
            **mem_available_bytes(),
        }


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_devices(config: Any) -> list[str]:
    """One device per worker: ``--devices`` as given, else ``--workers`` x ``--device``."""
    if config.devices:
        return [device.strip() for device in config.devices]
    return [config.device] * config.workers


def make_workers(config: Any, models: Any = None) -> list[Any]:
    """The workers ``config`` asks for; a given ModelStore means one in-process ThreadWorker.

    Several CPU workers split the cores between them (``torch.set_num_threads``), so two
    jobs at once do not fight over the same cores.
    """
    if models is not None or config.backend == "thread":
        if models is None:
            from clipasso_server.engine.clip_models import ModelStore

            models = ModelStore(
                device=config.device,
                weights_dir=config.clip_weights,
                allow_download=config.allow_download,
            )
        return [ThreadWorker("worker-0", models, config.max_pixels)]
    devices = worker_devices(config)
    on_cpu = [d for d in devices if not d.startswith(("cuda", "mps"))]
    threads = max(1, cpu_cores() // len(on_cpu)) if len(on_cpu) > 1 else None
    workers = []
    for index, device in enumerate(devices):
        options = WorkerOptions(
            device=device,
            weights_dir=str(config.clip_weights) if config.clip_weights else None,
            allow_download=config.allow_download,
            max_pixels=config.max_pixels,
            threads=threads if device in on_cpu else None,
        )
        if config.backend == "ray":
            from clipasso_server.daemon.ray_backend import RayWorker

            workers.append(
                RayWorker(f"worker-{index}", options, config.ray_address, config.cancel_grace_s)
            )
        else:
            workers.append(ProcessWorker(f"worker-{index}", options, config.cancel_grace_s))
    return workers
