"""A job's time left: a running job's own step time so far blended with the earlier jobs',
never more than its time budget leaves; a queued job's own work plus the work ahead of it."""

from __future__ import annotations

import pytest

from clipasso_server.daemon.estimates import PRIOR_WEIGHT_STEPS, eta_locked, expected_step_s
from clipasso_server.daemon.job import Job
from clipasso_server.daemon.job_table import JobTable
from inkscape_clipasso import protocol


def running(step: int, own: float | None, prior: float | None) -> Job:
    job = Job(id="0" * 32, settings={"levels": [4], "seeds": 1, "iterations": 200})
    job.step, job.total, job.step_time_s, job.prior_step_s = step, 200, own, prior
    return job


def test_without_an_earlier_job_the_own_step_time_is_used():
    assert expected_step_s(running(20, 0.4, None)) == 0.4


def test_before_its_own_is_measured_the_earlier_jobs_cost_is_used():
    assert expected_step_s(running(0, None, 0.5)) == 0.5


def test_the_earlier_cost_weighs_most_early_and_less_as_steps_add_up():
    early = expected_step_s(running(20, 0.4, 0.6))
    late = expected_step_s(running(2000, 0.4, 0.6))
    own_weight = 20 / (20 + PRIOR_WEIGHT_STEPS)
    assert early == pytest.approx(0.4 * own_weight + 0.6 * (1 - own_weight))
    assert 0.4 < late < early < 0.6
    assert late == pytest.approx(0.4, abs=0.01)


# --- a job's eta_s, composed from the queue's memory at a given moment ---------------------

NOW = 1_000.0


def _job(n: int, *, iterations: int = 200, levels: int = 1, budget: float | None = None) -> Job:
    settings = {"levels": [4] * levels, "seeds": 1, "iterations": iterations}
    if budget is not None:
        settings["time_budget_s"] = budget
    job = Job(id=f"{n:032x}", settings=settings)
    job.total = iterations
    return job


def _start(table: JobTable, job: Job, started: float, step: int, step_s: float) -> None:
    job.state, job.started_at, job.step, job.step_time_s = protocol.RUNNING, started, step, step_s
    table.running.append(job)


def test_a_running_jobs_eta_is_never_more_than_its_budget_leaves():
    table = JobTable()
    job = _job(1, iterations=1000, budget=60.0)
    _start(table, job, started=NOW - 20.0, step=10, step_s=1.0)  # 990 steps of 1 s left
    assert eta_locked(table, job, 1, NOW) == 40.0  # the budget's 60 s, 20 of them spent
    assert eta_locked(table, job, 1, NOW + 45.0) == 0.0  # past it: never negative
    unbudgeted = _job(2, iterations=1000)
    _start(table, unbudgeted, started=NOW - 20.0, step=10, step_s=1.0)
    assert eta_locked(table, unbudgeted, 1, NOW) == 990.0


def test_a_queued_jobs_eta_counts_the_work_ahead_of_it():
    table = JobTable()
    table.sketch_step_s = 0.5  # per step per sketch, measured on the latest job
    running = _job(1, iterations=100)
    _start(table, running, started=NOW - 10.0, step=20, step_s=0.5)  # 80 steps: 40 s left
    first = _job(2, iterations=40, levels=2)  # 40 steps x 2 sketches x 0.5 s = 40 s
    second = _job(3, iterations=10)  # its own 5 s
    table.queue.extend([first, second])
    assert eta_locked(table, first, 1, NOW) == 40.0 + 40.0
    assert eta_locked(table, second, 1, NOW) == 40.0 + 40.0 + 5.0
    # two workers share the work ahead; the job's own time is not shared
    assert eta_locked(table, second, 2, NOW) == (40.0 + 40.0) / 2 + 5.0


def test_the_work_ahead_is_capped_by_each_jobs_budget():
    table = JobTable()
    table.sketch_step_s = 1.0
    running = _job(1, iterations=1000, budget=30.0)
    _start(table, running, started=NOW - 10.0, step=5, step_s=1.0)  # 20 s of budget left
    ahead = _job(2, iterations=1000, budget=15.0)  # 1000 s of work, 15 s allowed
    mine = _job(3, iterations=1000, budget=7.0)
    table.queue.extend([ahead, mine])
    assert eta_locked(table, mine, 1, NOW) == 20.0 + 15.0 + 7.0


def test_a_finished_job_has_nothing_left_and_an_unmeasured_queue_no_estimate():
    table = JobTable()
    queued = _job(1)
    table.queue.append(queued)
    assert eta_locked(table, queued, 1, NOW) is None  # nothing measured yet
    done = _job(2)
    done.state = protocol.DONE
    assert eta_locked(table, done, 1, NOW) == 0.0
