"""A sketch whose schedule the daemon reduced to fit the time limit says so in Inkscape: the
layer's description (Object Properties) carries the daemon's notes, and a sketch whose
iterations were cut is named unfinished (issue 22: a reduced schedule is never silent)."""

from __future__ import annotations

from ext_helpers import SVG, by_id, run_extension

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
NOTE = (
    "1 seed instead of 3 and 120 iterations instead of 2000 to fit 10 min (a step of 12 "
    "sketches took 55.6 s; all the work would take 31 h)"
)


def _planned(result):
    return {**result, "steps_run": 120, "stop_reason": "budget", "schedule_notes": [NOTE]}


def test_a_planned_sketch_says_what_was_reduced_and_is_named_unfinished(
    single_photo_svg, fake_daemon
):
    fake_daemon.result_override = _planned
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3")
    assert run.status == 0, run.stderr
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.find(f"{SVG}desc").text.endswith(f"\nReduced: {NOTE}.")
    assert parent.get(LABEL) == "CLIPasso: img1, unfinished: step 120 of 2000 (time limit)"


def test_a_sketch_nothing_was_reduced_for_has_no_such_line(single_photo_svg, fake_daemon):
    run = run_extension(single_photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3")
    assert run.status == 0, run.stderr
    parent = by_id(run.svg, "clipasso-img1")
    assert "Reduced" not in parent.find(f"{SVG}desc").text
    assert parent.get(LABEL) == "CLIPasso: img1"
