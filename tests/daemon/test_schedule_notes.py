"""A time budget that cannot hold the work is planned (issue 22), and the plan is never
silent: the job's status says it while the job runs, and the result, its record and its SVG
say it afterwards. Real daemon on a loopback socket, real tiny models through the real
ModelStore, real HTTP.

Nothing depends on the machine's speed: 20000 iterations of even a millisecond each cannot
fit in 8 s, so the planner always keeps one seed a level and cuts the iterations; every wait
is on an event, with a limit that only catches a hang.
"""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

from clipasso_server.engine.svg_output import CLIPASSO_NS
from inkscape_clipasso import protocol

BUDGET_S = 8.0


def test_the_plan_is_said_in_the_status_while_running_and_in_the_result(shared_daemon):
    client, daemon = shared_daemon
    job = client.submit(seeds=3, iterations=20000, time_budget_s=BUDGET_S, seed=2207)
    said = client.wait(
        job["id"],
        until=lambda s: s.get("schedule_notes") or s["state"] in protocol.FINAL_STATES,
    )
    assert said["state"] == protocol.RUNNING, said  # said while it runs, not only at the end
    (note,) = said["schedule_notes"]
    assert re.fullmatch(
        r"1 seed instead of 3 and about \d+ iterations instead of 20000 to fit 8 s "
        r"\(a step of 6 sketches took [0-9.e-]+ s; all the work would take .+\)",
        note,
    ), note

    final = client.wait(job["id"])
    result = client.result(job["id"])
    assert final["state"] == protocol.DONE and final["stop_reason"] == "budget"
    notes = result["schedule_notes"]
    assert final["schedule_notes"] == notes and notes[0] == note
    # as the reduced batch's steps are measured the iterations follow them, said when they
    # move by more than a fifth
    for later in notes[1:]:
        assert re.fullmatch(
            r"re-planned from the measured step \(a step of 2 sketches took [0-9.e-]+ s\): "
            r"about \d+ iterations instead of \d+ to fit 8 s",
            later,
        ), notes
    assert result["steps_run"] < 20000
    assert result["stop_reason"] == "budget"
    svg = ElementTree.fromstring(result["svg"].encode())
    metadata = svg.find(f".//{{{CLIPASSO_NS}}}result")
    assert json.loads(metadata.text)["schedule_notes"] == notes
    # the record on disk keeps them for a status after a restart
    record = json.loads((daemon.config.state_dir / "jobs" / f"{job['id']}.json").read_text())
    assert record["schedule_notes"] == notes


def test_a_job_whose_work_fits_carries_no_note(shared_daemon):
    client, _ = shared_daemon
    job = client.submit(seeds=3, iterations=2, time_budget_s=600.0, seed=2208)
    final = client.wait(job["id"])
    result = client.result(job["id"])
    assert final["state"] == protocol.DONE and final["schedule_notes"] == []
    assert "schedule_notes" not in result and result["steps_run"] == 2


def test_the_protocol_takes_the_notes_as_a_list_of_sentences():
    import pytest

    status = {
        "id": "0123456789abcdef0123456789abcdef",
        "state": "running",
        "queue_position": 0,
        "step": 3,
        "total": 20,
        "best_loss": {},
        "elapsed_s": 1.0,
        "error": None,
    }
    assert protocol.validate_status({**status, "schedule_notes": ["fewer seeds"]})
    assert protocol.validate_status(status)  # optional
    for bad in ("fewer seeds", [1], {"note": "x"}):
        with pytest.raises(protocol.ProtocolError, match="schedule_notes"):
            protocol.validate_status({**status, "schedule_notes": bad})
