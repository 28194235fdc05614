"""A job's record on disk keeps why it stopped, so a restarted daemon's live page still says
that a job its time budget stopped did not run all its steps."""

from __future__ import annotations

from clipasso_server.daemon.job import Job
from inkscape_clipasso import protocol


def test_the_stop_reason_survives_the_record():
    job = Job(id="c" * 32, settings={"time_budget_s": 60.0}, state=protocol.DONE, step=212)
    job.total, job.stop_reason = 2000, "budget"
    again = Job.from_record(job.record())
    assert (again.stop_reason, again.step, again.total) == ("budget", 212, 2000)
    assert again.settings["time_budget_s"] == 60.0
    # a record from before the field, or a damaged one, says nothing rather than anything
    assert Job.from_record({**job.record(), "stop_reason": "tired"}).stop_reason is None
    old = job.record()
    del old["stop_reason"]
    assert Job.from_record(old).stop_reason is None
