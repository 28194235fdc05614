"""What of a job goes to disk, and what a failed write leaves in memory until it is retried.

Records go to disk at state changes only (queued, running, final), not per step, so polling
costs the worker nothing; a running job's latest best-so-far snapshot at most every
``save_every_s`` (with its record), and when it ends unfinished, so the best strokes of a
cancelled, interrupted or crashed job survive a restart. A result or record the disk refuses
(full, too many open files) stays in memory: a result is served from there, both are written
by :meth:`Persistence.retry_unsaved`, and the job's status warns meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time

from clipasso_server.daemon import cache_entries
from clipasso_server.daemon.job import Job
from clipasso_server.daemon.job_store import JobStore
from clipasso_server.daemon.job_table import JobTable

log = logging.getLogger("clipasso.daemon")


class Persistence:
    """Writes a table's jobs (records, snapshots, results) to ``store``, keeping what fails."""

    def __init__(self, store: JobStore, table: JobTable, save_every_s: float) -> None:
        self.store = store
        self.table = table
        self.save_every_s = save_every_s
        #: held while a record is written, so no write can be under way while a job's files
        #: are deleted, and a later write never carries an older state than an earlier one
        self.write_lock = threading.Lock()
        #: results and records a failed write left in memory only (the result is served from
        #: here meanwhile); guarded by the table's lock, the records' set by ``write_lock``
        self.unsaved_results: dict[str, bytes] = {}
        self.unsaved_records: set[str] = set()

    # --- records ------------------------------------------------------------------------

    def persist(self, job: Job) -> bool:
        """Write the job's record; False (logged, retried later) when the write failed."""
        # The record is taken inside the write lock, so a later write never carries an older
        # state than an earlier one.
        with self.write_lock:
            with self.table.lock:
                record = job.record()
            try:
                self.store.save_record(record)
            except OSError as exc:
                first = job.id not in self.unsaved_records
                self.unsaved_records.add(job.id)
                if first:
                    log.error(
                        "cannot save the record of job %s (%s); retrying", job.id, exc.strerror
                    )
                return False
            self.unsaved_records.discard(job.id)
            return True

    # --- best-so-far snapshots ----------------------------------------------------------

    def snapshot_due(self, job: Job) -> bool:
        """Whether a running job's latest snapshot should go to disk now."""
        last = job.snapshot_saved_at
        return last is None or time.monotonic() - last >= self.save_every_s

    def save_snapshot(self, job: Job) -> None:
        """Keep an unfinished job's best strokes so far on disk (apart from results: only a
        done job's result is ever served as final or cached)."""
        with self.table.lock:
            snapshot = job.snapshot
            job.snapshot_saved_at = time.monotonic()
        if snapshot is None:
            return
        try:
            self.store.save_partial(job.id, {**snapshot, "id": job.id, "partial": True})
        except OSError as exc:
            log.error("cannot save the best strokes so far of job %s: %s", job.id, exc)

    def drop_snapshot(self, job: Job) -> None:
        """A finished job's saved snapshot is stale: its result replaces it."""
        try:
            self.store.drop_partial(job.id)
        except OSError as exc:
            log.warning("cannot delete the best strokes so far of job %s: %s", job.id, exc)

    # --- results ------------------------------------------------------------------------

    def save_result(self, job: Job, body: bytes) -> None:
        """Store a finished job's result and its cache entry; if the disk refuses, keep it in
        memory (served from there, written by :meth:`retry_unsaved`), so a finished sketch is
        never lost."""
        try:
            self.store.save_result(job.id, body)
        except OSError as exc:
            with self.table.lock:
                self.unsaved_results[job.id] = body
            log.error(
                "cannot save the result of job %s (%s); it is kept in memory and saving is retried",
                job.id,
                exc.strerror or exc,
            )
            return
        cache_entries.store_entry(self.store, job)

    def retry_unsaved(self) -> int:
        """Write the results and records that could not be written before; how many are
        still unsaved. Called periodically and at shutdown."""
        with self.write_lock:  # the set's own lock: persist() adds to it meanwhile
            unsaved_records = list(self.unsaved_records)
        with self.table.lock:
            results = list(self.unsaved_results.items())
            records = [self.table.jobs[i] for i in unsaved_records if i in self.table.jobs]
        for job_id, body in results:
            try:
                self.store.save_result(job_id, body)
            except OSError:
                continue
            with self.table.lock:
                self.unsaved_results.pop(job_id, None)
                job = self.table.jobs.get(job_id)
            log.info("the result of job %s is saved now", job_id)
            if job is not None:
                cache_entries.store_entry(self.store, job)
        for job in records:
            if self.persist(job):
                log.info("the record of job %s is saved now", job.id)
        with self.table.lock:
            return len(self.unsaved_results) + len(self.unsaved_records)

    def result_in_memory(self, job_id: str) -> bytes | None:
        """The result body of a finished job that is not on disk yet, else None."""
        with self.table.lock:
            return self.unsaved_results.get(job_id)

    def warning_locked(self, job_id: str) -> str | None:
        """What the job's status warns about a write still to be retried (lock held)."""
        if job_id in self.unsaved_results:
            return (
                "the result could not be saved to disk yet; it is kept in memory and saving "
                "is retried (is the disk full?)"
            )
        if job_id in self.unsaved_records:
            return "the job's record could not be saved to disk yet; saving is retried"
        return None
