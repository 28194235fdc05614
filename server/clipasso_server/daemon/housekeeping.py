"""What the daemon's periodic tasks clear away: jobs no client asks about any more (cancelled,
so a closed Inkscape does not keep a worker busy for an hour) and finished jobs past their
retention (forgotten and deleted, results included)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from clipasso_server.daemon.job_table import JobTable
from clipasso_server.daemon.persistence import Persistence
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")


def cancel_abandoned(
    table: JobTable, after_s: float, cancel: Callable[[str, str], bool]
) -> list[str]:
    """Cancel (with ``cancel(job_id, reason)``) every queued or running job that no client
    has asked about for ``after_s`` and that is not detached; their ids."""
    now = time.monotonic()
    with table.lock:
        stale = [
            job.id
            for job in (*table.queue, *table.running)
            if job.cancel_reason is None and not job.detached and now - job.last_seen > after_s
        ]
    for job_id in stale:
        cancel(job_id, f"abandoned: no client asked about it for {after_s:g} s")
    return stale


def prune_finished(table: JobTable, persistence: Persistence, older_than_s: float) -> list[str]:
    """Forget and delete jobs that ended more than ``older_than_s`` ago (results included);
    their ids. Queued and running jobs are never touched."""
    cut_off = time.time() - older_than_s
    with table.lock:
        old = [
            job.id
            for job in table.jobs.values()
            if job.state in protocol.FINAL_STATES
            and (job.finished_at if job.finished_at is not None else job.created_at) < cut_off
        ]
        for job_id in old:
            del table.jobs[job_id]
            persistence.unsaved_results.pop(job_id, None)  # never retried onto the disk
    store = persistence.store
    with persistence.write_lock:  # no record write of these jobs can be under way
        for job_id in old:
            persistence.unsaved_records.discard(job_id)
            try:
                store.delete_job(job_id)
            except OSError as exc:
                log.error("cannot delete the files of job %s: %s", job_id, exc)
        if old:
            store.prune_cache()
    return old
