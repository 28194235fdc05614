"""The job queue as the rest of the daemon sees it: submit, look up, cancel, start, stop.

A new reader finds each part by name:

- :mod:`~clipasso_server.daemon.job` — one job's state, its record on disk, how it ends;
- :mod:`~clipasso_server.daemon.job_table` — the shared memory (every job, the FIFO, the
  running ones) under one lock;
- :mod:`~clipasso_server.daemon.dispatch` — one thread per worker running the next job;
- :mod:`~clipasso_server.daemon.statuses` — a job's status body;
- :mod:`~clipasso_server.daemon.estimates` — its ETA;
- :mod:`~clipasso_server.daemon.persistence` — records, snapshots and results on disk, and
  the writes a full disk refused, retried;
- :mod:`~clipasso_server.daemon.cache_entries` — the result cache's entries;
- :mod:`~clipasso_server.daemon.housekeeping` — abandoned jobs cancelled, old ones pruned.

A daemon shutdown cancels the running jobs with the reason :data:`SHUTDOWN`; they end as
``interrupted`` rather than ``cancelled``, the state a restart gives jobs that were cut off by
a crash: the user did not ask for them to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from clipasso_server.daemon import housekeeping
from clipasso_server.daemon.config import DEFAULT_SAVE_EVERY_S
from clipasso_server.daemon.dispatch import Dispatcher, Runner
from clipasso_server.daemon.job import (
    CRASHED_ERROR,
    INTERRUPTED_ERROR,
    SHUTDOWN,
    Job,
    finish,
    new_job_id,
)
from clipasso_server.daemon.job_store import JobStore
from clipasso_server.daemon.job_table import JobTable
from clipasso_server.daemon.persistence import Persistence
from clipasso_server.daemon.statuses import status_locked
from inkscape_clipasso import protocol

__all__ = ["SHUTDOWN", "Job", "JobQueue", "Runner", "new_job_id"]

log = logging.getLogger("clipasso.daemon")


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
        self.table = JobTable()
        self.persistence = Persistence(store, self.table, save_every_s)
        self.dispatcher = Dispatcher(self.table, self.persistence, self.runners)
        #: one submission at a time: its record is on disk before it is queued, in order
        self._submit_lock = threading.Lock()

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
            self.table.jobs[job.id] = job
            if job.step_time_s:  # records come oldest first: the latest measurement wins
                self.table.sketch_step_s = job.step_time_s / job.sketches()
        for job in cut_off:
            self.persistence.persist(job)
            log.info("job %s interrupted (the daemon stopped while it was unfinished)", job.id)

    def start(self) -> None:
        """Start one dispatch thread per worker."""
        self.dispatcher.start()

    def shutdown(self, grace_s: float) -> None:
        """Take no more jobs, interrupt the queued and the running ones, persist, stop the
        dispatch threads.

        Waits up to ``grace_s`` in all for the running jobs to reach their next step; one that
        does not (a model still loading, say) is marked interrupted here and its worker is left
        to the caller to stop.
        """
        table = self.table
        with table.wake:
            table.closing = True
            queued = list(table.queue)
            table.queue.clear()
            now = time.time()
            for job in queued:
                finish(job, protocol.INTERRUPTED, now, SHUTDOWN, INTERRUPTED_ERROR)
            running = list(table.running)
            for job in running:
                if job.cancel_reason is None:
                    job.cancel_reason = SHUTDOWN
            table.wake.notify_all()
        for job in queued:
            self.persistence.persist(job)
            log.info("job %s interrupted (%s)", job.id, SHUTDOWN)
        self.dispatcher.join(time.monotonic() + grace_s)
        for job in running:
            with table.lock:
                if job.state in protocol.FINAL_STATES:
                    continue
                finish(job, protocol.INTERRUPTED, time.time(), SHUTDOWN, INTERRUPTED_ERROR)
            self.persistence.save_snapshot(job)
            self.persistence.persist(job)
            log.info("job %s interrupted (it did not stop in %.0f s)", job.id, grace_s)

    # --- requests from the HTTP side -----------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue ``job``; its queue position. Raises ProtocolError when full or closing, and
        507 ``insufficient_storage`` when its record cannot be saved."""
        with self._submit_lock:
            return self._submit(job)

    def _submit(self, job: Job) -> int:
        table = self.table
        with table.wake:
            if table.closing:
                raise protocol.ProtocolError("shutting_down", "the daemon is shutting down")
            if len(table.queue) >= self.max_queue:
                raise protocol.ProtocolError(
                    "queue_full",
                    f"{len(table.queue)} jobs are already waiting (the limit is "
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
        with table.wake:
            table.jobs[job.id] = job
            if table.closing:  # shut down while the record was written
                finish(job, protocol.INTERRUPTED, time.time(), SHUTDOWN, INTERRUPTED_ERROR)
            else:
                # arrival order is queue order: another submission may have saved its record
                # first (the record written above is corrected when the job starts)
                job.created_at = time.time()
                table.queue.append(job)
                position = table.position_locked(job)
                table.wake.notify()
        if job.state == protocol.INTERRUPTED:
            self.persistence.persist(job)
            raise protocol.ProtocolError("shutting_down", "the daemon is shutting down")
        log.info("job %s queued (position %d)", job.id, position)
        return position

    def known(self, job_id: str) -> bool:
        with self.table.lock:
            return job_id in self.table.jobs

    def state(self, job_id: str) -> str | None:
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            return None if job is None else job.state

    def touch(self, job_id: str) -> None:
        """Note that a client still cares about this job (any GET of it)."""
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            if job is not None:
                job.last_seen = time.monotonic()

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The protocol's status body of a job, or None for an unknown id."""
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            return None if job is None else self._status_locked(job, time.time())

    def statuses(self) -> list[dict[str, Any]]:
        """Every known job's status body, newest first, under one hold of the lock (the web
        page lists them every second)."""
        with self.table.lock:
            jobs = sorted(
                self.table.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True
            )
            now = time.time()
            return [self._status_locked(job, now) for job in jobs]

    def _status_locked(self, job: Job, now: float) -> dict[str, Any]:
        warning = self.persistence.warning_locked(job.id)
        return status_locked(self.table, job, len(self.runners), warning, now)

    def partial(self, job_id: str) -> dict[str, Any] | None:
        """The latest best-so-far result body of a job still in memory, or None."""
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            return None if job is None or job.snapshot is None else job.snapshot

    def cancel(self, job_id: str, reason: str) -> bool:
        """Cancel a queued job now, or ask the running one to stop; False for unknown ids.

        Finished jobs are left as they are (cancelling twice is harmless).
        """
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            if job is None:
                return False
            if job.state == protocol.QUEUED:
                self.table.queue.remove(job)
                finish(job, protocol.CANCELLED, time.time(), reason, None)
            elif job.state == protocol.RUNNING:
                if job.cancel_reason is None:
                    job.cancel_reason = reason
                return True
            else:
                return True
        self.persistence.persist(job)
        log.info("job %s cancelled (%s)", job.id, reason)
        return True

    def cancel_abandoned(self, after_s: float) -> list[str]:
        """Cancel every queued or running job that no client has asked about for ``after_s``."""
        return housekeeping.cancel_abandoned(self.table, after_s, self.cancel)

    def prune_finished(self, older_than_s: float) -> list[str]:
        """Forget and delete jobs that ended more than ``older_than_s`` ago (results included);
        their ids. Queued and running jobs are never touched."""
        return housekeeping.prune_finished(self.table, self.persistence, older_than_s)

    def queue_length(self) -> int:
        """Jobs waiting plus the ones running."""
        with self.table.lock:
            return len(self.table.queue) + len(self.table.running)

    # --- results and records a failed write left in memory -------------------------------

    def retry_unsaved(self) -> int:
        """Write the results and records that could not be written before; how many are
        still unsaved. Called periodically and at shutdown."""
        return self.persistence.retry_unsaved()

    def result_in_memory(self, job_id: str) -> bytes | None:
        """The result body of a finished job that is not on disk yet, else None."""
        return self.persistence.result_in_memory(job_id)

    def result_lost(self, job_id: str, message: str) -> None:
        """A done job whose stored result turned out damaged: it is failed from now on."""
        with self.table.lock:
            job = self.table.jobs.get(job_id)
            if job is None or job.state != protocol.DONE:
                return
            job.state = protocol.FAILED
            job.error = {"error": "internal", "message": message}
        self.persistence.persist(job)
        log.info("job %s failed: %s", job_id, message)
