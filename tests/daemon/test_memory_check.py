"""The memory check at submission, at its threshold: a job sized just over the free memory is
refused with ``insufficient_memory``, one just under (or exactly at) it is let through. The free
memory on the CPU is a fake MemAvailable reading, so the sizes do not depend on this machine;
the job's need is the engine's own estimate (the real ``estimate_peak_bytes``)."""

from __future__ import annotations

import pytest

from clipasso_server.daemon import memory_check
from clipasso_server.engine.memory_estimate import estimate_peak_bytes, format_bytes, peak_bytes
from inkscape_clipasso import protocol

SETTINGS = protocol.SketchSettings(levels=(4, 8), seeds=2)
RSS = 300 * 10**6  # what the CPU worker already holds (its own memory counts as free)


def _cpu_need() -> int:
    return estimate_peak_bytes(SETTINGS.levels, SETTINGS.seeds, "cpu", SETTINGS.loss_model)


def _gpu_need() -> int:
    return estimate_peak_bytes(SETTINGS.levels, SETTINGS.seeds, "cuda", SETTINGS.loss_model)


@pytest.fixture
def host_free(monkeypatch):
    """Set the host's MemAvailable as the check reads it."""

    def set_free(free: int) -> None:
        reading = {"free_bytes": free, "total_bytes": 64 * 10**9}
        monkeypatch.setattr(memory_check, "mem_available_bytes", lambda: dict(reading))

    return set_free


def _cpu_worker() -> dict:
    return {"device": "cpu", "rss_bytes": RSS}


def _refused(workers: list[dict]) -> str:
    with pytest.raises(protocol.ProtocolError) as refused:
        memory_check.check_fits(SETTINGS, workers)
    assert refused.value.code == "insufficient_memory"
    return refused.value.message


def test_a_cpu_job_just_over_the_free_memory_is_refused(host_free):
    need = _cpu_need()
    host_free(need - RSS - 1)
    message = _refused([_cpu_worker()])
    assert "2 levels x 2 seeds" in message and "on cpu" in message


def test_a_cpu_job_just_under_the_free_memory_fits(host_free):
    need = _cpu_need()
    host_free(need - RSS)  # exactly what it needs, the worker's own memory included
    memory_check.check_fits(SETTINGS, [_cpu_worker()])
    host_free(need - RSS + 10**6)
    memory_check.check_fits(SETTINGS, [_cpu_worker()])


def test_a_gpu_job_is_judged_on_what_its_worker_reported(host_free):
    host_free(0)  # the host's memory does not count for a GPU
    need = _gpu_need()
    memory_check.check_fits(SETTINGS, [{"device": "cuda:0", "free_bytes": need}])
    message = _refused([{"device": "cuda:0", "free_bytes": need - 1}])
    assert "on cuda:0" in message


def test_one_worker_with_room_is_enough_and_an_unknown_reading_counts_as_room(host_free):
    need = _gpu_need()
    host_free(0)
    tight = {"device": "cuda:0", "free_bytes": need - 1}
    memory_check.check_fits(SETTINGS, [tight, {"device": "cuda:1", "free_bytes": need}])
    memory_check.check_fits(SETTINGS, [tight, {"device": "cuda:1"}])  # still starting
    memory_check.check_fits(SETTINGS, [])  # no worker yet: nothing to judge


def test_the_refusal_states_the_peak_users_are_told_and_the_headroom(host_free):
    """One figure everywhere (issue 21): the refusal's peak is the README's and ``serve --help``'s
    (``peak_bytes``), and the headroom figure is named as such."""
    host_free(10**6)
    message = _refused([_cpu_worker()])
    peak = format_bytes(peak_bytes(SETTINGS.levels, SETTINGS.seeds, "cpu", SETTINGS.loss_model))
    assert f"peaks at about {peak} " in message, message
    assert f"{format_bytes(_cpu_need())} with 15 % headroom" in message, message
