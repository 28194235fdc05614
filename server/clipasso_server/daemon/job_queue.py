"""The job queue and the one worker thread that runs jobs, one at a time, on the engine.

One worker, because the engine holds the device: two jobs at once would only fight over the
GPU's memory and the CPU's cores. The HTTP side never waits for the engine: it reads each
job's progress from memory under a short lock, and the worker updates that memory after every
optimisation step. Records go to disk at state changes only (queued, running, final), not per
step, so polling costs the worker nothing.

Cancellation is cooperative: a cancel sets the job's ``cancel_reason`` and the engine's
``should_stop`` check sees it between steps. A daemon shutdown cancels with the reason
:data:`SHUTDOWN`, and such jobs end as ``interrupted`` rather than ``cancelled``, the same state
a restart gives jobs that were cut off by a crash: the user did not ask for them to stop.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clipasso_server.daemon.job_store import JobStore, cache_key
from clipasso_server.engine.errors import Cancelled, EngineError
from clipasso_server.engine.types import Progress
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

SHUTDOWN = "the daemon is shutting down"
INTERRUPTED_ERROR = {
    "error": "shutting_down",
    "message": "the daemon stopped before this job finished; submit it again",
}

#: runner(job, progress, should_stop) -> the protocol's result body (without "id")
Runner = Callable[
    ["Job", Callable[[Progress], None], Callable[[], bool]],
    dict[str, Any],
]


def new_job_id() -> str:
    """32 lowercase hex digits (uuid4), the shape ``protocol.is_job_id`` accepts."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """One job's state; fields are changed under the queue's lock only."""

    id: str
    settings: dict[str, Any]
    name: str = ""
    image: bytes | None = None  # dropped once the job has run
    image_sha256: str = ""
    created_at: float = field(default_factory=time.time)
    state: str = protocol.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    total: int = 0
    best_loss: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    reason: str | None = None  # why it was cancelled or interrupted
    step_time_s: float | None = None  # mean seconds per optimisation step
    # in memory only
    last_seen: float = field(default_factory=time.monotonic)
    cancel_reason: str | None = None
    first_step_at: float | None = None

    def record(self) -> dict[str, Any]:
        """What goes to disk: everything but the image and the in-memory bookkeeping."""
        return {
            "id": self.id,
            "name": self.name,
            "settings": self.settings,
            "image_sha256": self.image_sha256,
            "created_at": self.created_at,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "step": self.step,
            "total": self.total,
            "best_loss": self.best_loss,
            "error": self.error,
            "reason": self.reason,
            "step_time_s": self.step_time_s,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """A job read back from disk (finished, or about to be marked interrupted)."""
        settings = record.get("settings")
        best = record.get("best_loss")
        return cls(
            id=record["id"],
            settings=settings if isinstance(settings, dict) else {},
            name=str(record.get("name") or ""),
            image_sha256=str(record.get("image_sha256") or ""),
            created_at=_number(record.get("created_at"), 0.0),
            state=record.get("state") if record.get("state") in protocol.JOB_STATES else "failed",
            started_at=_number(record.get("started_at"), None),
            finished_at=_number(record.get("finished_at"), None),
            step=int(_number(record.get("step"), 0)),
            total=int(_number(record.get("total"), 0)),
            best_loss={
                str(k): float(v)
                for k, v in (best.items() if isinstance(best, dict) else ())
                if str(k).isdigit() and isinstance(v, (int, float))
            },
            error=record.get("error") if isinstance(record.get("error"), dict) else None,
            reason=record.get("reason") if isinstance(record.get("reason"), str) else None,
            step_time_s=_number(record.get("step_time_s"), None),
        )

    def elapsed_s(self, now: float) -> float:
        """Seconds spent running (so far, or in all once finished); 0 while queued."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)

    def remaining_steps(self) -> int:
        return max(0, self.total - self.step)


def _number(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


class JobQueue:
    """FIFO of jobs, the worker thread, and the in-memory table of every known job."""

    def __init__(self, store: JobStore, runner: Runner, max_queue: int) -> None:
        self.store = store
        self.runner = runner
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._persist_lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._closing = False
        self._worker: threading.Thread | None = None
        self._step_time_s: float | None = None  # of the latest job, for queued jobs' ETA

    # --- life cycle ---------------------------------------------------------------------

    def restore(self) -> None:
        """Load every record from disk; jobs that were queued or running become interrupted."""
        now = time.time()
        cut_off = []
        for record in self.store.load_records():
            job = Job.from_record(record)
            if job.state in (protocol.QUEUED, protocol.RUNNING):
                job.state = protocol.INTERRUPTED
                job.finished_at = now
                job.error = dict(INTERRUPTED_ERROR)
                job.reason = "the daemon stopped before this job finished"
                cut_off.append(job)
            self._jobs[job.id] = job
        for job in cut_off:
            self._persist(job)
            log.info("job %s interrupted (the daemon stopped while it was unfinished)", job.id)

    def start(self) -> None:
        """Start the worker thread."""
        self._worker = threading.Thread(target=self._work, name="clipasso-worker", daemon=True)
        self._worker.start()

    def shutdown(self, grace_s: float) -> None:
        """Take no more jobs, interrupt the queued and the running one, persist, stop the worker.

        Waits up to ``grace_s`` for the running job to reach its next step; if it does not
        (a model still loading, say), its record is marked interrupted here and the worker is
        left to die with the process.
        """
        with self._wake:
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            now = time.time()
            for job in queued:
                self._finish_locked(job, protocol.INTERRUPTED, now, SHUTDOWN, INTERRUPTED_ERROR)
            running = self._running
            if running is not None and running.cancel_reason is None:
                running.cancel_reason = SHUTDOWN
            self._wake.notify_all()
        for job in queued:
            self._persist(job)
            log.info("job %s interrupted (%s)", job.id, SHUTDOWN)
        if self._worker is not None:
            self._worker.join(grace_s)
            if self._worker.is_alive() and running is not None:
                with self._lock:
                    if running.state not in protocol.FINAL_STATES:
                        self._finish_locked(
                            running, protocol.INTERRUPTED, time.time(), SHUTDOWN, INTERRUPTED_ERROR
                        )
                self._persist(running)
                log.info("job %s interrupted (it did not stop in %.0f s)", running.id, grace_s)

    # --- requests from the HTTP side -----------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue ``job``; its queue position. Raises ProtocolError when full or closing."""
        with self._wake:
            if self._closing:
                raise protocol.ProtocolError("shutting_down", "the daemon is shutting down")
            if len(self._queue) >= self.max_queue:
                raise protocol.ProtocolError(
                    "queue_full",
                    f"{len(self._queue)} jobs are already waiting (the limit is "
                    f"{self.max_queue}); try again when one has finished",
                )
            job.created_at = time.time()
            job.last_seen = time.monotonic()
            self._jobs[job.id] = job
            self._queue.append(job)
            position = self._position_locked(job)
            self._wake.notify()
        self._persist(job)
        log.info("job %s queued (position %d)", job.id, position)
        return position

    def known(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._jobs

    def state(self, job_id: str) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.state

    def touch(self, job_id: str) -> None:
        """Note that a client still cares about this job (any GET of it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.last_seen = time.monotonic()

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The protocol's status body of a job, or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            now = time.time()
            return {
                "id": job.id,
                "state": job.state,
                "queue_position": self._position_locked(job),
                "step": job.step,
                "total": job.total,
                "best_loss": dict(job.best_loss),
                "elapsed_s": round(job.elapsed_s(now), 3),
                "eta_s": self._eta_locked(job),
                "error": dict(job.error) if job.error else None,
                "name": job.name,
                "reason": job.reason,
                # a running job asked to stop that has not reached its next step yet
                "cancelling": job.state == protocol.RUNNING and job.cancel_reason is not None,
                "created_at": job.created_at,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
                "step_time_s": job.step_time_s,
            }

    def cancel(self, job_id: str, reason: str) -> bool:
        """Cancel a queued job now, or ask the running one to stop; False for unknown ids.

        Finished jobs are left as they are (cancelling twice is harmless).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if job.state == protocol.QUEUED:
                self._queue.remove(job)
                self._finish_locked(job, protocol.CANCELLED, time.time(), reason, None)
            elif job.state == protocol.RUNNING:
                if job.cancel_reason is None:
                    job.cancel_reason = reason
                return True
            else:
                return True
        self._persist(job)
        log.info("job %s cancelled (%s)", job.id, reason)
        return True

    def cancel_abandoned(self, after_s: float) -> list[str]:
        """Cancel every queued or running job that no client has asked about for ``after_s``."""
        now = time.monotonic()
        with self._lock:
            stale = [
                job.id
                for job in (*self._queue, *([self._running] if self._running else []))
                if job.cancel_reason is None and now - job.last_seen > after_s
            ]
        for job_id in stale:
            self.cancel(job_id, f"abandoned: no client asked about it for {after_s:g} s")
        return stale

    def prune_finished(self, older_than_s: float) -> list[str]:
        """Forget and delete jobs that ended more than ``older_than_s`` ago (results included);
        their ids. Queued and running jobs are never touched."""
        cut_off = time.time() - older_than_s
        with self._lock:
            old = [
                job.id
                for job in self._jobs.values()
                if job.state in protocol.FINAL_STATES
                and (job.finished_at if job.finished_at is not None else job.created_at) < cut_off
            ]
            for job_id in old:
                del self._jobs[job_id]
        with self._persist_lock:  # no record write of these jobs can be under way
            for job_id in old:
                try:
                    self.store.delete_job(job_id)
                except OSError as exc:
                    log.error("cannot delete the files of job %s: %s", job_id, exc)
            if old:
                self.store.prune_cache()
        return old

    def queue_length(self) -> int:
        """Jobs waiting plus the one running."""
        with self._lock:
            return len(self._queue) + (1 if self._running is not None else 0)

    # --- the worker ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                job = self._queue.popleft()
                job.state = protocol.RUNNING
                job.started_at = time.time()
                self._running = job
            self._persist(job)
            log.info("job %s started", job.id)
            self._run(job)

    def _run(self, job: Job) -> None:
        def progress(report: Progress) -> None:
            now = time.monotonic()
            with self._lock:
                job.step, job.total = report.step, report.total
                job.best_loss = {str(k): float(v) for k, v in report.best_loss.items()}
                if job.first_step_at is None or report.step <= 1:
                    job.first_step_at = now
                elif report.step > 1:
                    job.step_time_s = (now - job.first_step_at) / (report.step - 1)
                    self._step_time_s = job.step_time_s

        def should_stop() -> bool:
            return job.cancel_reason is not None

        state, error, outcome = protocol.DONE, None, ""
        try:
            result = self.runner(job, progress, should_stop)
            self.store.save_result(job.id, {"id": job.id, **result})
            models = result.get("models")
            if job.image_sha256 and isinstance(models, dict):
                self.store.cache_store(cache_key(job.image_sha256, job.settings, models), job.id)
            outcome = "done"
        except Cancelled:
            if job.cancel_reason == SHUTDOWN:
                state, error = protocol.INTERRUPTED, dict(INTERRUPTED_ERROR)
                outcome = f"interrupted ({SHUTDOWN})"
            else:
                state, outcome = protocol.CANCELLED, f"cancelled ({job.cancel_reason})"
        except EngineError as exc:
            state, error = protocol.FAILED, {"error": exc.code, "message": exc.message}
            outcome = f"failed: {exc.message}"
        except Exception as exc:
            # The daemon's own fault: the traceback goes to the log, never to the client.
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc().rstrip())
            message = f"internal error ({type(exc).__name__}: {exc})"[:500]
            state, error = protocol.FAILED, {"error": "internal", "message": message}
            outcome = f"failed: {message}"
        with self._lock:
            if job.state not in protocol.FINAL_STATES:
                reason = job.cancel_reason if state != protocol.DONE else None
                self._finish_locked(job, state, time.time(), reason, error)
            self._running = None
        self._persist(job)
        if state == protocol.DONE:
            log.info("job %s done in %.1f s", job.id, job.elapsed_s(time.time()))
        else:
            log.info("job %s %s", job.id, outcome)

    # --- helpers (call with the lock held) -----------------------------------------------

    @staticmethod
    def _finish_locked(
        job: Job, state: str, now: float, reason: str | None, error: dict[str, str] | None
    ) -> None:
        job.state = state
        job.finished_at = now
        job.reason = reason
        job.error = dict(error) if error else None
        job.image = None

    def _position_locked(self, job: Job) -> int:
        """Jobs that run before this one starts (the running one included); 0 when running."""
        if job.state != protocol.QUEUED:
            return 0
        ahead = 0
        for queued in self._queue:
            if queued is job:
                break
            ahead += 1
        return ahead + (1 if self._running is not None else 0)

    def _eta_locked(self, job: Job) -> float | None:
        """Seconds until the job finishes, from the measured step time; None while unknown."""
        if job.state == protocol.RUNNING:
            if job.step_time_s is None:
                return None
            return round(job.remaining_steps() * job.step_time_s, 2)
        if job.state != protocol.QUEUED or self._step_time_s is None:
            return None if job.state == protocol.QUEUED else 0.0
        steps = _iterations(job)
        if self._running is not None:
            steps += self._running.remaining_steps() or _iterations(self._running)
        for queued in self._queue:
            if queued is job:
                break
            steps += _iterations(queued)
        return round(steps * self._step_time_s, 2)

    def _persist(self, job: Job) -> None:
        # The snapshot is taken inside the persist lock, so a later write never carries an
        # older state than an earlier one.
        with self._persist_lock:
            with self._lock:
                record = job.record()
            try:
                self.store.save_record(record)
            except OSError as exc:
                log.error("cannot save the record of job %s: %s", job.id, exc)


def _iterations(job: Job) -> int:
    value = job.settings.get("iterations", 0)
    return value if isinstance(value, int) else 0
