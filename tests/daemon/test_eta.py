"""A running job's time left: its own step time so far blended with the earlier jobs'."""

from __future__ import annotations

import pytest

from clipasso_server.daemon.estimates import PRIOR_WEIGHT_STEPS, expected_step_s
from clipasso_server.daemon.job import Job


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
