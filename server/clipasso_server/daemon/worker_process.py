"""What a worker runs: one sketch job on the engine, and the main loop of a worker process.

This is the only daemon module that imports torch (through the engine), and only inside the
worker: :func:`worker_main` is the target of a process started with the ``spawn`` method (a
fresh interpreter: forking a process that has touched CUDA breaks it), and the Ray actor of
:mod:`clipasso_server.daemon.ray_backend` wraps the same :class:`SketchRunner`. The thread
backend (tests, ``Daemon(models=...)``) calls :func:`run_sketch` in the daemon's own process.

Messages on the pipe, worker to daemon: ``("ready", info)``, ``("progress", report,
snapshot)``, ``("done", result, info)``, ``("cancelled", snapshot, info)``, ``("error", code,
message, info)``; daemon to worker: ``("run", image, settings)``, ``("cancel",)``,
``("stop",)``. ``report`` is the engine's :class:`Progress` without its snapshot; a snapshot
travels as the protocol's result body (``"partial": true``), so the daemon side needs no
engine classes to serve it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any

from clipasso_server.engine.errors import Cancelled, EngineError, internal_error_message
from clipasso_server.engine.types import Progress

log = logging.getLogger("clipasso.daemon")

#: progress(report without snapshot, snapshot as a result body or None)
ProgressSink = Callable[[Progress, "dict[str, Any] | None"], None]
#: a cancel is read between steps: a worker that has measured its steps gets this many of
#: them to stop before it is killed (and reloaded, 1 GB and seconds of work)
CANCEL_GRACE_STEPS = 3


class StepClock:
    """A ProgressSink passing reports on and keeping the latest measured step time, so the
    cancel grace can follow the machine's real pace."""

    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress
        self.step_time_s: float | None = None

    def __call__(self, report: Progress, snapshot: dict[str, Any] | None = None) -> None:
        measured = getattr(report, "step_time_s", None)
        if isinstance(measured, (int, float)) and measured > 0:
            self.step_time_s = float(measured)
        self.progress(report, snapshot)

    def grace_s(self, base_s: float) -> float:
        """``base_s``, or :data:`CANCEL_GRACE_STEPS` measured steps when that is longer (a
        loaded machine once had 5 s steps, and every cancel killed a healthy worker)."""
        return max(base_s, CANCEL_GRACE_STEPS * (self.step_time_s or 0.0))


def result_body(result: Any) -> dict[str, Any]:
    """An engine SketchResult as the protocol's result body (without ``id``), SVG included."""
    from clipasso_server.engine.svg_output import result_to_svg

    body = result.to_json()
    body["svg"] = result_to_svg(result)
    return body


def run_sketch(
    models: Any,
    image: bytes,
    settings: dict[str, Any],
    max_pixels: int,
    progress: ProgressSink,
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Decode ``image``, sketch it with ``settings`` on ``models`` (a ModelStore); the result
    body. Snapshots in the engine's progress reports are turned into result bodies here, in the
    worker, at most as often as the engine makes them (about once a second)."""
    from clipasso_server.engine.image_input import decode_image
    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.types import SketchConfig

    def report(step: Progress) -> None:
        snapshot = getattr(step, "snapshot", None)
        body = result_body(snapshot) if snapshot is not None else None
        if snapshot is not None:
            step = dataclasses.replace(step, snapshot=None)
        progress(step, body)

    decoded = decode_image(image, max_pixels=max_pixels)
    result = sketch(
        decoded, SketchConfig(**settings), models, progress=report, should_stop=should_stop
    )
    return result_body(result)


def cancelled_snapshot(exc: Cancelled) -> dict[str, Any] | None:
    """The best strokes a cancelled run carried (``Cancelled.snapshot``), as a result body."""
    snapshot = getattr(exc, "snapshot", None)
    return result_body(snapshot) if snapshot is not None else None


def memory_info(device: Any) -> dict[str, Any]:
    """This worker's device, pid, resident memory and the device's free/total memory."""
    import torch

    info: dict[str, Any] = {"pid": os.getpid(), "device": str(device), "rss_bytes": rss_bytes()}
    if getattr(device, "type", "") == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # what torch's caching allocator holds but does not use is free for the next job
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        info.update(free_bytes=int(free + cached), total_bytes=int(total))
        info["peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    else:
        info.update(mem_available_bytes())
    return info


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of a process from /proc (Linux); None where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def mem_available_bytes() -> dict[str, int]:
    """``{"free_bytes": MemAvailable, "total_bytes": MemTotal}`` from /proc/meminfo; {} if
    unreadable (not Linux)."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                if key in ("MemAvailable", "MemTotal"):
                    fields[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    if len(fields) < 2:
        return {}
    return {"free_bytes": fields["MemAvailable"], "total_bytes": fields["MemTotal"]}


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to build its models; plain data, so it pickles to a spawned
    process or a Ray actor."""

    device: str = "auto"
    weights_dir: str | None = None
    allow_download: bool = True
    max_pixels: int = 50_000_000
    #: torch threads (None: torch's default, every core)
    threads: int | None = None


class SketchRunner:
    """One worker's engine: a ModelStore built once on the worker's device and kept, so each
    model loads once per worker."""

    def __init__(self, options: WorkerOptions) -> None:
        import torch

        from clipasso_server.engine.clip_models import ModelStore

        if options.threads:
            torch.set_num_threads(options.threads)
        self.options = options
        self.models = ModelStore(
            device=options.device,
            weights_dir=options.weights_dir,
            allow_download=options.allow_download,
        )

    def info(self) -> dict[str, Any]:
        return {**memory_info(self.models.device), "models_loaded": self.models.loaded()}

    def run(
        self,
        image: bytes,
        settings: dict[str, Any],
        progress: ProgressSink,
        should_stop: Callable[[], bool],
    ) -> tuple[str, tuple[Any, ...]]:
        """Run one job; ``(kind, payload)`` as the pipe's final message carries it."""
        try:
            body = run_sketch(
                self.models, image, settings, self.options.max_pixels, progress, should_stop
            )
            return "done", (body, self.info())
        except Cancelled as exc:
            return "cancelled", (cancelled_snapshot(exc), self.info())
        except EngineError as exc:
            return "error", (exc.code, exc.message, self.info())
        except Exception as exc:
            log.error("the job crashed in the worker:\n%s", traceback.format_exc().rstrip())
            return "error", ("internal", internal_error_message(exc), self.info())


def _exit_with_parent(every_s: float = 0.5) -> None:
    """End this process as soon as the daemon is gone (killed outright, say), even in the
    middle of a job or a model load: an orphaned worker would hold the device, its memory and
    the daemon's output pipes. A thread notices the re-parenting within ``every_s``."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(conn: Any, options: WorkerOptions) -> None:
    """A worker process: build the runner, say ready, then run jobs until told to stop.

    Cancel arrives on the same pipe while a job runs; the engine's stop check reads it between
    steps. The daemon terminates a worker that does not stop in time, so nothing here needs to
    handle signals.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in the terminal is the daemon's
    _exit_with_parent()
    try:
        runner = SketchRunner(options)
    except EngineError as exc:  # a device that is not there, say
        conn.send(("error", exc.code, exc.message))
        return
    except Exception as exc:
        conn.send(("error", "internal", f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(("ready", runner.info()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if message[0] == "stop":
            return
        if message[0] != "run":
            continue  # a cancel that arrived after its job ended
        _, image, settings = message
        cancelled = stopping = False

        def should_stop() -> bool:
            nonlocal cancelled, stopping
            while not cancelled and conn.poll():
                kind = conn.recv()[0]
                cancelled = kind in ("cancel", "stop")
                stopping = stopping or kind == "stop"
            return cancelled

        def progress(report: Progress, snapshot: dict[str, Any] | None) -> None:
            conn.send(("progress", report, snapshot))

        kind, payload = runner.run(image, settings, progress, should_stop)
        conn.send((kind, *payload))
        if stopping:
            return
