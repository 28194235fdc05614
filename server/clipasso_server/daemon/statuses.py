"""A job's status body (``GET /v1/jobs/{id}``, the job list, the live page), composed from
the queue's memory under one hold of its lock: state, place in the queue, progress, time spent
and left, and any warning about a write still to be retried."""

from __future__ import annotations

from typing import Any

from clipasso_server.daemon.estimates import eta_locked
from clipasso_server.daemon.job import Job
from clipasso_server.daemon.job_table import JobTable
from inkscape_clipasso import protocol


def status_locked(
    table: JobTable, job: Job, workers: int, warning: str | None, now: float
) -> dict[str, Any]:
    """The protocol's status body of ``job`` at ``now`` (call with the table's lock held)."""
    return {
        "id": job.id,
        "state": job.state,
        "queue_position": table.position_locked(job),
        "step": job.step,
        "total": job.total,
        "best_loss": dict(job.best_loss),
        "elapsed_s": round(job.elapsed_s(now), 3),
        "eta_s": eta_locked(table, job, workers, now),
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
        "warning": warning,
        # what the live page says of a job its time budget stopped early
        "time_budget_s": job.settings.get("time_budget_s"),
        "stop_reason": job.stop_reason,
        # what the engine's schedule reduced and why ("1 seed instead of 3 ... to fit 10 min")
        "schedule_notes": list(job.schedule_notes),
    }
