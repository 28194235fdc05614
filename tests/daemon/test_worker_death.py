"""How a worker's death is told: out of memory only when the kernel's OOM killer did it.

The OOM counters are the kernel's files (``/proc/vmstat``, the cgroup's ``memory.events``),
pointed at real files here so that a rise can be made; a real worker killed by hand is in
``test_workers.py``.
"""

from __future__ import annotations

import signal

from clipasso_server.daemon import workers


def test_sigkill_is_out_of_memory_only_when_the_oom_count_rose(tmp_path, monkeypatch):
    vmstat = tmp_path / "vmstat"
    monkeypatch.setattr(workers, "_VMSTAT", str(vmstat))
    monkeypatch.setattr(workers, "_CGROUP_EVENTS", str(tmp_path / "absent"))
    vmstat.write_text("pgfault 10\noom_kill 5\n")
    before = workers.oom_kills()
    assert before == 5
    what, code = workers.describe_death(-signal.SIGKILL, before)
    assert (code, "not by the kernel's OOM killer" in what) == ("internal", True), what
    vmstat.write_text("pgfault 10\noom_kill 6\n")
    what, code = workers.describe_death(-signal.SIGKILL, before)
    assert code == "insufficient_memory" and "OOM killer" in what, what
    # nothing to tell by: not claimed either way
    vmstat.unlink()
    what, code = workers.describe_death(-signal.SIGKILL, workers.oom_kills())
    assert code == "internal" and "cannot be told" in what, what
    assert workers.describe_death(-signal.SIGTERM, 0) == ("it was killed by SIGTERM", "internal")


def test_the_cgroup_count_counts_too(tmp_path, monkeypatch):
    events = tmp_path / "memory.events"
    monkeypatch.setattr(workers, "_VMSTAT", str(tmp_path / "absent"))
    monkeypatch.setattr(workers, "_CGROUP_EVENTS", str(events))
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    before = workers.oom_kills()
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    assert workers.describe_death(-signal.SIGKILL, before)[1] == "insufficient_memory"


def test_the_cancel_grace_follows_the_measured_step_time():
    from clipasso_server.daemon.worker_process import CANCEL_GRACE_STEPS, StepClock
    from clipasso_server.engine.types import Progress

    seen = []
    clock = StepClock(lambda report, snapshot=None: seen.append(report.step))
    assert clock.grace_s(5.0) == 5.0  # nothing measured yet: the configured grace
    clock(Progress(step=1, total=10, best_loss={}, elapsed_s=1.0, step_time_s=0.5), None)
    assert clock.grace_s(5.0) == 5.0  # fast steps: the configured grace still
    clock(Progress(step=2, total=10, best_loss={}, elapsed_s=30.0, step_time_s=12.0), None)
    assert clock.grace_s(5.0) == CANCEL_GRACE_STEPS * 12.0  # a loaded machine's slow steps
    clock(Progress(step=3, total=10, best_loss={}, elapsed_s=31.0, step_time_s=None), None)
    assert clock.grace_s(5.0) == CANCEL_GRACE_STEPS * 12.0 and seen == [1, 2, 3]
