"""How long a job will take: the ``eta_s`` of its status.

A running job's from its own measured step time blended with the earlier jobs' (see
:func:`expected_step_s`), never more than what its time budget leaves. A queued job's from the
step cost per sketch (levels x seeds) measured on the latest job, scaled by its own levels x
seeds and iterations, plus its share of the work ahead of it (the running jobs' time left and
the queued jobs' before it) spread over the workers: an estimate right after submitting,
before anything ran.
"""

from __future__ import annotations

from clipasso_server.daemon.job import Job
from clipasso_server.daemon.job_table import JobTable
from inkscape_clipasso import protocol

#: how many of its own steps a running job needs before its own step time counts as much as
#: the earlier jobs' in its ETA
PRIOR_WEIGHT_STEPS = 50


def eta_locked(table: JobTable, job: Job, workers: int, now: float) -> float | None:
    """Seconds until ``job`` finishes; None while unknown; 0 once finished. Call with the
    table's lock held; ``workers``: how many jobs run at once."""
    if job.state == protocol.RUNNING:
        step_s = expected_step_s(job)
        if step_s is None:
            return None
        return round(capped(job, job.remaining_steps() * step_s, now), 2)
    if job.state != protocol.QUEUED:
        return 0.0
    cost = table.sketch_step_s
    if cost is None:
        return None
    ahead = sum(
        capped(running, running.remaining_steps() * running.sketches() * cost, now)
        for running in table.running
    )
    for queued in table.queue:
        if queued is job:
            break
        ahead += capped(queued, iterations(queued) * queued.sketches() * cost, None)
    own = capped(job, iterations(job) * job.sketches() * cost, None)
    return round(ahead / max(1, workers) + own, 2)


def capped(job: Job, seconds: float, now: float | None) -> float:
    """``seconds`` of work left, no more than what the job's time budget leaves (``now``:
    the job is running, so the time spent counts against its budget)."""
    budget = job.settings.get("time_budget_s")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        return seconds
    spent = job.elapsed_s(now) if now is not None else 0.0
    return min(seconds, max(0.0, budget - spent))


def expected_step_s(job: Job) -> float | None:
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


def iterations(job: Job) -> int:
    """The job's maximum optimisation steps (0 when its settings lack them)."""
    value = job.settings.get("iterations", 0)
    return value if isinstance(value, int) else 0
