"""The queue's shared memory: every known job, the FIFO of queued ones, the running ones.

One lock guards all of it and every :class:`~clipasso_server.daemon.job.Job`'s fields, so the
HTTP side reads a consistent picture under a short hold while the dispatch threads (one per
worker: :mod:`clipasso_server.daemon.dispatch`) update it at every optimisation step. The
``wake`` condition (on the same lock) tells a waiting dispatch thread that a job was queued or
that the daemon is closing.
"""

from __future__ import annotations

import collections
import threading

from clipasso_server.daemon.job import Job
from inkscape_clipasso import protocol


class JobTable:
    """Every job by id, the queued ones in order, the running ones; fields under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        #: no more jobs are taken (the daemon is shutting down)
        self.closing = False
        #: seconds per step per sketch (levels x seeds) of the latest job, for queued jobs' ETA
        self.sketch_step_s: float | None = None

    def position_locked(self, job: Job) -> int:
        """Jobs that run before this one starts (the running ones included); 0 when running."""
        if job.state != protocol.QUEUED:
            return 0
        ahead = 0
        for queued in self.queue:
            if queued is job:
                break
            ahead += 1
        return ahead + len(self.running)
