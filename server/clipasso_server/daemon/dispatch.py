"""The dispatch threads: one per worker, each taking the next queued job and running it.

One job per worker, because a worker holds a device: two jobs on one device would only fight
over the GPU's memory and the CPU's cores. Each worker (a process per device, a Ray actor, or
the engine in this process: :mod:`clipasso_server.daemon.workers`) has a thread here, so a job
goes to the next free worker. The thread updates the job's progress and best-so-far snapshot
in memory at every optimisation step (the HTTP side reads them under a short lock and never
waits for the engine), saves the snapshot now and then, and records how the job ended.

Cancellation is cooperative: a cancel sets the job's ``cancel_reason`` and the engine's
``should_stop`` check sees it between steps. A job stopped for :data:`~clipasso_server.daemon.
job.SHUTDOWN` ends ``interrupted`` rather than ``cancelled``: the user did not ask for it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from clipasso_server.daemon.job import INTERRUPTED_ERROR, SHUTDOWN, Job, finish, schedule_notes
from clipasso_server.daemon.job_store import result_json
from clipasso_server.daemon.job_table import JobTable
from clipasso_server.daemon.persistence import Persistence
from clipasso_server.daemon.worker_process import ProgressSink
from clipasso_server.engine.errors import (
    Cancelled,
    EngineError,
    hide_paths,
    internal_error_message,
)
from clipasso_server.engine.types import Progress
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

#: runner(job, progress, should_stop) -> the protocol's result body (without "id")
Runner = Callable[[Job, ProgressSink, Callable[[], bool]], dict[str, Any]]


class Dispatcher:
    """One thread per runner (worker), taking jobs from ``table``'s queue until it closes."""

    def __init__(self, table: JobTable, persistence: Persistence, runners: list[Runner]) -> None:
        self.table = table
        self.persistence = persistence
        self.runners = runners
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one dispatch thread per worker."""
        for index, runner in enumerate(self.runners):
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"clipasso-dispatch-{index}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def join(self, deadline: float) -> None:
        """Wait for the threads to end, until ``deadline`` (``time.monotonic()``)."""
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next_job(self) -> Job | None:
        """The next queued job, now running; None once the table is closing."""
        table = self.table
        with table.wake:
            while not table.queue and not table.closing:
                table.wake.wait()
            if table.closing:
                return None
            job = table.queue.popleft()
            job.state = protocol.RUNNING
            job.started_at = time.time()
            if table.sketch_step_s is not None:
                job.prior_step_s = table.sketch_step_s * job.sketches()
            table.running.append(job)
            return job

    def _work(self, runner: Runner) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            self.persistence.persist(job)
            log.info("job %s started", job.id)
            self.run(job, runner)

    def run(self, job: Job, runner: Runner) -> None:
        """Run ``job`` (already marked running) on ``runner`` and record how it ended."""
        table, persistence = self.table, self.persistence

        def progress(report: Progress, snapshot: dict[str, Any] | None = None) -> None:
            with table.lock:
                job.step, job.total = report.step, report.total
                job.best_loss = {
                    str(k): float(v) for k, v in report.best_loss.items() if math.isfinite(v)
                }
                if snapshot is not None:
                    job.snapshot = snapshot
                job.schedule_notes = tuple(getattr(report, "schedule_notes", ()))
                if report.step_time_s:  # the engine's own measurement (None before step 1)
                    job.step_time_s = float(report.step_time_s)
                if job.step_time_s is not None:
                    table.sketch_step_s = job.step_time_s / job.sketches()
            if snapshot is not None and persistence.snapshot_due(job):
                # on this (the dispatch) thread, so it can never land after the final result
                persistence.save_snapshot(job)
                persistence.persist(job)  # the step it reached, for the status after a crash

        def should_stop() -> bool:
            return job.cancel_reason is not None

        state, error, outcome = protocol.DONE, None, ""
        try:
            result = runner(job, progress, should_stop)
            persistence.save_result(job, result_json({"id": job.id, **result}))
            with table.lock:
                if result.get("stop_reason") in protocol.STOP_REASONS:
                    job.stop_reason = result["stop_reason"]
                if isinstance(result.get("steps_run"), int):
                    job.step = result["steps_run"]
                job.schedule_notes = schedule_notes(result.get("schedule_notes"))
            outcome = "done"
        except Cancelled as exc:
            carried = getattr(exc, "snapshot_body", None)
            if carried is not None:
                with table.lock:
                    job.snapshot = carried
            if job.cancel_reason == SHUTDOWN:
                state, error = protocol.INTERRUPTED, dict(INTERRUPTED_ERROR)
                outcome = f"interrupted ({SHUTDOWN})"
            else:
                state, outcome = protocol.CANCELLED, f"cancelled ({job.cancel_reason})"
        except EngineError as exc:
            # weights gone since submission name the folders searched: the log has them whole
            message = hide_paths(exc.message)
            state, error = protocol.FAILED, {"error": exc.code, "message": message}
            outcome = f"failed: {exc.message}"
        except Exception as exc:
            # The daemon's own fault: the traceback goes to the log, never to the client.
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc().rstrip())
            message = internal_error_message(exc)
            state, error = protocol.FAILED, {"error": "internal", "message": message}
            outcome = f"failed: {message}"
        with table.lock:
            if job.state not in protocol.FINAL_STATES:
                reason = job.cancel_reason if state != protocol.DONE else None
                finish(job, state, time.time(), reason, error)
            if job in table.running:
                table.running.remove(job)
        if state != protocol.DONE:
            persistence.save_snapshot(job)
        else:
            with table.lock:
                job.snapshot = None  # the result is on disk
            persistence.drop_snapshot(job)
        persistence.persist(job)
        if state == protocol.DONE:
            log.info("job %s done in %.1f s", job.id, job.elapsed_s(time.time()))
        else:
            log.info("job %s %s", job.id, outcome)
