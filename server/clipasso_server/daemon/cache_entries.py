"""The result cache's entries: a done job's result is reused by an identical later request.

A job's cache key is computed at submission (:meth:`~clipasso_server.daemon.engine_bridge.
EngineBridge.cache_key`: image, settings, models, engine); once its result is on disk the
entry ``key -> job id`` is written, so the next identical submission is answered with that
result at once.
"""

from __future__ import annotations

import logging

from clipasso_server.daemon.job import Job
from clipasso_server.daemon.job_store import JobStore

log = logging.getLogger("clipasso.daemon")


def store_entry(store: JobStore, job: Job) -> None:
    """Write the cache entry of a done job whose result is saved (none without a key)."""
    if not job.cache_key:
        return
    try:
        store.cache_store(job.cache_key, job.id)
    except OSError as exc:  # only costs a later identical request its shortcut
        log.warning("cannot save the cache entry of job %s: %s", job.id, exc.strerror)
