"""The job queue and its dispatch threads: one per worker, each running one job at a time.

One job per worker, because a worker holds a device: two jobs on one device would only fight
over the GPU's memory and the CPU's cores. Each worker (a process per device, a Ray actor, or
the engine in this process: :mod:`clipasso_server.daemon.workers`) has a thread here that takes
the next queued job, so a job goes to the next free worker. The HTTP side never waits for the
engine: it reads each job's progress and its latest best-so-far snapshot from memory under a
short lock, and the dispatch thread updates that memory at every optimisation step. Records go
to disk at state changes only (queued, running, final), not per step, so polling costs the
worker nothing. The latest snapshot is persisted when a job ends unfinished, and while it
runs at most every ``save_every_s`` (with its record), so the best strokes of a cancelled or
interrupted job survive a restart, and those of a job cut off by a killed daemon survive too,
as of the last save.

Cancellation is cooperative: a cancel sets the job's ``cancel_reason`` and the engine's
``should_stop`` check sees it between steps. A daemon shutdown cancels with the reason
:data:`SHUTDOWN`, and such jobs end as ``interrupted`` rather than ``cancelled``, the same state
a restart gives jobs that were cut off by a crash: the user did not ask for them to stop.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clipasso_server.daemon.config import DEFAULT_SAVE_EVERY_S
from clipasso_server.daemon.job_store import JobStore, result_json
from clipasso_server.daemon.worker_process import ProgressSink
from clipasso_server.engine.errors import Cancelled, EngineError, internal_error_message
from clipasso_server.engine.types import Progress
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

SHUTDOWN = "the daemon is shutting down"
INTERRUPTED_ERROR = {
    "error": "shutting_down",
    "message": "the daemon stopped before this job finished; submit it again",
}
#: a job found unfinished at start-up: the daemon was killed or crashed, it did not shut down
CRASHED_ERROR = {
    "error": "interrupted",
    "message": "the daemon was stopped abruptly (killed or crashed) before this job finished; "
    "submit it again",
}

#: runner(job, progress, should_stop) -> the protocol's result body (without "id")
Runner = Callable[["Job", ProgressSink, Callable[[], bool]], dict[str, Any]]


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
    detached: bool = False  # never cancelled by the abandonment watchdog
    # in memory only
    cache_key: str | None = None  # the result cache's key, computed at submission
    snapshot: dict[str, Any] | None = None  # the latest best-so-far result body
    snapshot_saved_at: float | None = None  # time.monotonic() of the latest save to disk
    last_seen: float = field(default_factory=time.monotonic)
    cancel_reason: str | None = None
    #: seconds per step the earlier jobs measured over their whole run, scaled to this job's
    #: levels x seeds when it started (None: nothing measured before)
    prior_step_s: float | None = None

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
            "detached": self.detached,
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
            detached=record.get("detached") is True,
        )

    def elapsed_s(self, now: float) -> float:
        """Seconds spent running (so far, or in all once finished); 0 while queued."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)

    def remaining_steps(self) -> int:
        return max(0, self.total - self.step)

    def sketches(self) -> int:
        """levels x seeds: what one optimisation step costs is proportional to it."""
        levels = self.settings.get("levels")
        seeds = self.settings.get("seeds")
        defaults = protocol.SketchSettings()
        n_levels = len(levels) if isinstance(levels, list) else len(defaults.levels)
        return n_levels * (seeds if isinstance(seeds, int) and seeds > 0 else defaults.seeds)


def _number(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


class JobQueue:
    """FIFO of jobs, one dispatch thread per worker, and the in-memory table of every job."""

    def __init__(
        self,
        store: JobStore,
        runners: Runner | list[Runner],
        max_queue: int,
        save_every_s: float = DEFAULT_SAVE_EVERY_S,
    ) -> None:
        self.store = store
        self.runners = list(runners) if isinstance(runners, (list, tuple)) else [runners]
        self.max_queue = max_queue
        self.save_every_s = save_every_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._persist_lock = threading.Lock()
        #: results and records a failed write (a full disk, too many open files) left in memory
        #: only; :meth:`retry_unsaved` writes them, and the result is served from here meanwhile
        self._unsaved_results: dict[str, bytes] = {}
        self._unsaved_records: set[str] = set()
        #: one submission at a time: its record is on disk before it is queued, in order
        self._submit_lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._closing = False
        self._threads: list[threading.Thread] = []
        #: seconds per step per sketch (levels x seeds) of the latest job, for queued jobs' ETA
        self._sketch_step_s: float | None = None

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
                job.error = dict(CRASHED_ERROR)
                job.reason = "the daemon stopped before this job finished"
                cut_off.append(job)
            self._jobs[job.id] = job
            if job.step_time_s:  # records come oldest first: the latest measurement wins
                self._sketch_step_s = job.step_time_s / job.sketches()
        for job in cut_off:
            self._persist(job)
            log.info("job %s interrupted (the daemon stopped while it was unfinished)", job.id)

    def start(self) -> None:
        """Start one dispatch thread per worker."""
        for index, runner in enumerate(self.runners):
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"clipasso-dispatch-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def shutdown(self, grace_s: float) -> None:
        """Take no more jobs, interrupt the queued and the running ones, persist, stop the
        dispatch threads.

        Waits up to ``grace_s`` in all for the running jobs to reach their next step; one that
        does not (a model still loading, say) is marked interrupted here and its worker is left
        to the caller to stop.
        """
        with self._wake:
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            now = time.time()
            for job in queued:
                self._finish_locked(job, protocol.INTERRUPTED, now, SHUTDOWN, INTERRUPTED_ERROR)
            running = list(self._running)
            for job in running:
                if job.cancel_reason is None:
                    job.cancel_reason = SHUTDOWN
            self._wake.notify_all()
        for job in queued:
            self._persist(job)
            log.info("job %s interrupted (%s)", job.id, SHUTDOWN)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in running:
            with self._lock:
                if job.state in protocol.FINAL_STATES:
                    continue
                self._finish_locked(
                    job, protocol.INTERRUPTED, time.time(), SHUTDOWN, INTERRUPTED_ERROR
                )
            self._save_snapshot(job)
            self._persist(job)
            log.info("job %s interrupted (it did not stop in %.0f s)", job.id, grace_s)

    # --- requests from the HTTP side -----------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue ``job``; its queue position. Raises ProtocolError when full or closing, and
        507 ``insufficient_storage`` when its record cannot be saved."""
        with self._submit_lock:
            return self._submit(job)

    def _submit(self, job: Job) -> int:
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
            record = job.record()
        try:  # a job that cannot be remembered is refused, not run and then lost
            self.store.save_record(record)
        except OSError as exc:
            log.error("refused a job: cannot save its record: %s", exc)
            raise protocol.ProtocolError(
                "insufficient_storage",
                f"the daemon cannot save the job in its state folder "
                f"({exc.strerror or type(exc).__name__}); free some disk space and try again",
            ) from None
        with self._wake:
            self._jobs[job.id] = job
            if self._closing:  # shut down while the record was written
                self._finish_locked(
                    job, protocol.INTERRUPTED, time.time(), SHUTDOWN, INTERRUPTED_ERROR
                )
            else:
                # arrival order is queue order: another submission may have saved its record
                # first (the record written above is corrected when the job starts)
                job.created_at = time.time()
                self._queue.append(job)
                position = self._position_locked(job)
                self._wake.notify()
        if job.state == protocol.INTERRUPTED:
            self._persist(job)
            raise protocol.ProtocolError("shutting_down", "the daemon is shutting down")
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
            return None if job is None else self._status_locked(job, time.time())

    def statuses(self) -> list[dict[str, Any]]:
        """Every known job's status body, newest first, under one hold of the lock (the web
        page lists them every second)."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
            now = time.time()
            return [self._status_locked(job, now) for job in jobs]

    def _status_locked(self, job: Job, now: float) -> dict[str, Any]:
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
            "steps_per_s": (round(1.0 / job.step_time_s, 4) if job.step_time_s else None),
            "detached": job.detached,
            "warning": self._warning_locked(job),
        }

    def partial(self, job_id: str) -> dict[str, Any] | None:
        """The latest best-so-far result body of a job still in memory, or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None or job.snapshot is None else job.snapshot

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
                for job in (*self._queue, *self._running)
                if job.cancel_reason is None and not job.detached and now - job.last_seen > after_s
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
            return len(self._queue) + len(self._running)

    # --- the dispatch threads -----------------------------------------------------------

    def _work(self, runner: Runner) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                job = self._queue.popleft()
                job.state = protocol.RUNNING
                job.started_at = time.time()
                if self._sketch_step_s is not None:
                    job.prior_step_s = self._sketch_step_s * job.sketches()
                self._running.append(job)
            self._persist(job)
            log.info("job %s started", job.id)
            self._run(job, runner)

    def _run(self, job: Job, runner: Runner) -> None:
        def progress(report: Progress, snapshot: dict[str, Any] | None = None) -> None:
            with self._lock:
                job.step, job.total = report.step, report.total
                job.best_loss = {
                    str(k): float(v) for k, v in report.best_loss.items() if math.isfinite(v)
                }
                if snapshot is not None:
                    job.snapshot = snapshot
                if report.step_time_s:  # the engine's own measurement (None before step 1)
                    job.step_time_s = float(report.step_time_s)
                if job.step_time_s is not None:
                    self._sketch_step_s = job.step_time_s / job.sketches()
            if snapshot is not None and self._snapshot_due(job):
                # on this (the dispatch) thread, so it can never land after the final result
                self._save_snapshot(job)
                self._persist(job)  # the step it reached, for the status after a crash

        def should_stop() -> bool:
            return job.cancel_reason is not None

        state, error, outcome = protocol.DONE, None, ""
        try:
            result = runner(job, progress, should_stop)
            self._save_result(job, result_json({"id": job.id, **result}))
            outcome = "done"
        except Cancelled as exc:
            carried = getattr(exc, "snapshot_body", None)
            if carried is not None:
                with self._lock:
                    job.snapshot = carried
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
            message = internal_error_message(exc)
            state, error = protocol.FAILED, {"error": "internal", "message": message}
            outcome = f"failed: {message}"
        with self._lock:
            if job.state not in protocol.FINAL_STATES:
                reason = job.cancel_reason if state != protocol.DONE else None
                self._finish_locked(job, state, time.time(), reason, error)
            if job in self._running:
                self._running.remove(job)
        if state != protocol.DONE:
            self._save_snapshot(job)
        else:
            with self._lock:
                job.snapshot = None  # the result is on disk
            self._drop_snapshot(job)
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
        return ahead + len(self._running)

    def _eta_locked(self, job: Job) -> float | None:
        """Seconds until the job finishes; None while unknown.

        A running job's from its own measured step time (and its time budget; before that
        like a queued one's). A queued job's
        from the step cost per sketch (levels x seeds) measured on the latest job, scaled by
        its own levels x seeds and iterations, plus its share of the work queued ahead of it
        spread over the workers: an estimate right after submitting, before anything ran.
        """
        now = time.time()
        if job.state == protocol.RUNNING:
            step_s = _expected_step_s(job)
            if step_s is None:
                return None
            return round(_capped(job, job.remaining_steps() * step_s, now), 2)
        if job.state != protocol.QUEUED:
            return 0.0
        cost = self._sketch_step_s
        if cost is None:
            return None
        ahead = sum(
            _capped(running, running.remaining_steps() * running.sketches() * cost, now)
            for running in self._running
        )
        for queued in self._queue:
            if queued is job:
                break
            ahead += _capped(queued, _iterations(queued) * queued.sketches() * cost, None)
        own = _capped(job, _iterations(job) * job.sketches() * cost, None)
        return round(ahead / max(1, len(self.runners)) + own, 2)

    def _snapshot_due(self, job: Job) -> bool:
        """Whether a running job's latest snapshot should go to disk now."""
        last = job.snapshot_saved_at
        return last is None or time.monotonic() - last >= self.save_every_s

    def _save_snapshot(self, job: Job) -> None:
        """Keep an unfinished job's best strokes so far on disk (apart from results: only a
        done job's result is ever served as final or cached)."""
        with self._lock:
            snapshot = job.snapshot
            job.snapshot_saved_at = time.monotonic()
        if snapshot is None:
            return
        try:
            self.store.save_partial(job.id, {**snapshot, "id": job.id, "partial": True})
        except OSError as exc:
            log.error("cannot save the best strokes so far of job %s: %s", job.id, exc)

    def _drop_snapshot(self, job: Job) -> None:
        """A finished job's saved snapshot is stale: its result replaces it."""
        try:
            self.store.drop_partial(job.id)
        except OSError as exc:
            log.warning("cannot delete the best strokes so far of job %s: %s", job.id, exc)

    def _persist(self, job: Job) -> bool:
        """Write the job's record; False (logged, retried later) when the write failed."""
        # The snapshot is taken inside the persist lock, so a later write never carries an
        # older state than an earlier one.
        with self._persist_lock:
            with self._lock:
                record = job.record()
            try:
                self.store.save_record(record)
            except OSError as exc:
                first = job.id not in self._unsaved_records
                self._unsaved_records.add(job.id)
                if first:
                    log.error(
                        "cannot save the record of job %s (%s); retrying", job.id, exc.strerror
                    )
                return False
            self._unsaved_records.discard(job.id)
            return True

    # --- results and records a failed write left in memory -------------------------------

    def _save_result(self, job: Job, body: bytes) -> None:
        """Store a finished job's result; if the disk refuses, keep it in memory (served from
        there, written by :meth:`retry_unsaved`), so a finished sketch is never lost."""
        try:
            self.store.save_result(job.id, body)
        except OSError as exc:
            with self._lock:
                self._unsaved_results[job.id] = body
            log.error(
                "cannot save the result of job %s (%s); it is kept in memory and saving is retried",
                job.id,
                exc.strerror or exc,
            )
            return
        self._store_cache_entry(job)

    def _store_cache_entry(self, job: Job) -> None:
        if not job.cache_key:
            return
        try:
            self.store.cache_store(job.cache_key, job.id)
        except OSError as exc:  # only costs a later identical request its shortcut
            log.warning("cannot save the cache entry of job %s: %s", job.id, exc.strerror)

    def retry_unsaved(self) -> int:
        """Write the results and records that could not be written before; how many are
        still unsaved. Called periodically and at shutdown."""
        with self._lock:
            results = list(self._unsaved_results.items())
            records = [self._jobs[i] for i in self._unsaved_records if i in self._jobs]
        for job_id, body in results:
            try:
                self.store.save_result(job_id, body)
            except OSError:
                continue
            with self._lock:
                self._unsaved_results.pop(job_id, None)
                job = self._jobs.get(job_id)
            log.info("the result of job %s is saved now", job_id)
            if job is not None:
                self._store_cache_entry(job)
        for job in records:
            if self._persist(job):
                log.info("the record of job %s is saved now", job.id)
        with self._lock:
            return len(self._unsaved_results) + len(self._unsaved_records)

    def result_in_memory(self, job_id: str) -> bytes | None:
        """The result body of a finished job that is not on disk yet, else None."""
        with self._lock:
            return self._unsaved_results.get(job_id)

    def result_lost(self, job_id: str, message: str) -> None:
        """A done job whose stored result turned out damaged: it is failed from now on."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != protocol.DONE:
                return
            job.state = protocol.FAILED
            job.error = {"error": "internal", "message": message}
        self._persist(job)
        log.info("job %s failed: %s", job_id, message)

    def _warning_locked(self, job: Job) -> str | None:
        if job.id in self._unsaved_results:
            return (
                "the result could not be saved to disk yet; it is kept in memory and saving "
                "is retried (is the disk full?)"
            )
        if job.id in self._unsaved_records:
            return "the job's record could not be saved to disk yet; saving is retried"
        return None


def _capped(job: Job, seconds: float, now: float | None) -> float:
    """``seconds`` of work left, no more than what the job's time budget leaves (``now``:
    the job is running, so the time spent counts against its budget)."""
    budget = job.settings.get("time_budget_s")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        return seconds
    spent = job.elapsed_s(now) if now is not None else 0.0
    return min(seconds, max(0.0, budget - spent))


#: how many of its own steps a running job needs before its own step time counts as much as
#: the earlier jobs' in its ETA
PRIOR_WEIGHT_STEPS = 50


def _expected_step_s(job: Job) -> float | None:
    """The seconds a running job's remaining steps will take each, on average.

    Its own mean so far knows this machine's speed now but not that later steps cost more
    (strokes grow, and with them what the renderer draws: with the tiny models a step at 150
    costs ~25 % more than at 20). The earlier jobs' mean over their whole run knows that, but
    not today's load. So the two are blended, the job's own weighing more as its steps add up.
    """
    own, prior = job.step_time_s, job.prior_step_s
    if own is None or prior is None:
        return own if own is not None else prior
    weight = job.step / (job.step + PRIOR_WEIGHT_STEPS)
    return weight * own + (1.0 - weight) * prior


def _iterations(job: Job) -> int:
    value = job.settings.get("iterations", 0)
    return value if isinstance(value, int) else 0
