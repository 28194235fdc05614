"""Submit and return (issue 18): "When to insert" now, update later; automatic when the daemon
expects more than a minute; layers of a job that is not finished say so in every name.

The daemon is the fake one (real HTTP on loopback); nothing here waits on the clock: the fake
never finishes a job unless told, so a run that returns has not waited for it.
"""

from __future__ import annotations

import json

import pytest
from ext_helpers import CLIPASSO, SVG, by_id, data_uri, make_png, run_extension, svg_doc

from inkscape_clipasso import clipasso_sketch

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
HANG_S = 600


@pytest.fixture
def photo_svg(tmp_path):
    path = tmp_path / "in.svg"
    body = (
        f'<image id="img1" width="8" height="8" xlink:href="{data_uri(make_png(8, 8))}"/>'
        f'<image id="img2" x="20" width="8" height="8" '
        f'xlink:href="{data_uri(make_png(4, 4, (1, 2, 3)))}"/>'
    )
    path.write_text(svg_doc(body))
    return path


def methods(fake) -> list[str]:
    return [request.method for request in fake.requests]


def level_labels(root, base: str, levels) -> list[str]:
    return [by_id(root, f"{base}-level-{count}").get(LABEL) for count in levels]


def test_now_with_no_strokes_yet_inserts_empty_running_levels(photo_svg, fake_daemon):
    fake_daemon.polls_before_done = -1  # the job never ends by itself
    fake_daemon.partial_after_polls = -1  # and has no strokes to show
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3", "--when=now"
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    assert fake_daemon.requests[0].body["detached"] is True
    assert "DELETE" not in methods(fake_daemon)
    assert methods(fake_daemon).count("GET") <= 3  # one status, one best-so-far: no waiting
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.get(LABEL) == "CLIPasso: img1, running: no strokes yet"
    assert level_labels(run.svg, "clipasso-img1", (2, 3)) == [
        "2 strokes, running: no strokes yet",
        "3 strokes, running: no strokes yet",
    ]
    assert len(by_id(run.svg, "clipasso-img1-level-3")) == 0
    (job_id,) = fake_daemon.jobs
    assert parent.get(CLIPASSO + "job") == job_id
    assert parent.get(CLIPASSO + "url") == fake_daemon.url
    assert parent.get(CLIPASSO + "state") == "running"
    assert json.loads(parent.get(CLIPASSO + "settings"))["levels"] == [2, 3]
    assert "Update sketches" in parent.find(SVG + "desc").text
    # the visible level is still chosen, so the strokes appear where the user expects them
    assert by_id(run.svg, "clipasso-img1-level-2").get("style") == "display:none"


def test_now_with_strokes_inserts_the_best_so_far(photo_svg, fake_daemon):
    fake_daemon.polls_before_done = -1
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3", "--when=now"
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    (job,) = fake_daemon.jobs.values()
    step = job["polls"]
    assert by_id(run.svg, "clipasso-img1").get(LABEL) == (
        f"CLIPasso: img1, running: step {step} of 2000"
    )
    assert level_labels(run.svg, "clipasso-img1", (2, 3)) == [
        f"2 strokes, running: step {step} of 2000",
        f"3 strokes, running: step {step} of 2000",
    ]
    assert len(by_id(run.svg, "clipasso-img1-level-3")) == 3


def test_now_opens_the_live_view(photo_svg, fake_daemon, monkeypatch):
    opened = []
    monkeypatch.setattr(clipasso_sketch, "open_page", opened.append)
    fake_daemon.polls_before_done = -1
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--when=now", "--live_view=true"
    )
    assert run.status == 0, run.stderr
    (job_id,) = fake_daemon.jobs
    assert opened == [f"{fake_daemon.url}/jobs/{job_id}"]


@pytest.mark.parametrize(("eta", "waits"), [(9600.0, False), (30.0, True)])
def test_automatic_inserts_now_only_beyond_a_minute(photo_svg, fake_daemon, eta, waits):
    fake_daemon.polls_before_done = 3
    fake_daemon.eta_s = eta
    fake_daemon.steps_per_s = 0.21
    run = run_extension(
        photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--levels=2",
        "--poll_interval=0.05",
        f"--timeout={HANG_S}",
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    parent = by_id(run.svg, "clipasso-img1")
    if waits:
        assert parent.get(LABEL) == "CLIPasso: img1"
        assert parent.get(CLIPASSO + "state") == "done"
    else:
        assert parent.get(LABEL).startswith("CLIPasso: img1, running: step ")
        assert parent.get(CLIPASSO + "state") == "running"
        assert "estimated 2 h 40 min" in parent.find(SVG + "desc").text
    assert "DELETE" not in methods(fake_daemon)


def test_wait_never_inserts_early(photo_svg, fake_daemon):
    fake_daemon.polls_before_done = 3
    fake_daemon.eta_s = 9600.0
    run = run_extension(
        photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--levels=2",
        "--when=wait",
        "--poll_interval=0.05",
        f"--timeout={HANG_S}",
    )
    assert run.status == 0, run.stderr
    assert by_id(run.svg, "clipasso-img1").get(LABEL) == "CLIPasso: img1"


def _budget_stopped(result):
    """A job its time budget stopped at step 300 (a final result, not a snapshot)."""
    return {**result, "steps_run": 300, "stop_reason": "budget"}


def test_a_sketch_cut_short_by_the_time_limit_is_named_unfinished(photo_svg, fake_daemon):
    fake_daemon.result_override = _budget_stopped
    run = run_extension(photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3")
    assert run.status == 0 and run.stderr == "", run.stderr
    note = "unfinished: step 300 of 2000 (time limit)"
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.get(LABEL) == f"CLIPasso: img1, {note}"
    assert level_labels(run.svg, "clipasso-img1", (2, 3)) == [
        f"2 strokes, {note}",
        f"3 strokes, {note}",
    ]
    assert parent.get(CLIPASSO + "state") == "stopped"  # nothing more will come: not updated
    assert "It ran 300 of 2000 steps" in parent.find(SVG + "desc").text


def test_multi_photo_and_cached_runs_keep_the_step_count(photo_svg, fake_daemon, tmp_path):
    fake_daemon.result_override = _budget_stopped
    args = ("--id=img1", "--id=img2", f"--url={fake_daemon.url}", "--levels=2")
    first = run_extension(photo_svg, *args)
    assert first.status == 0, first.stderr
    again = run_extension(photo_svg, *args)  # the same work: answered from the cache
    assert again.status == 0, again.stderr
    assert len(fake_daemon.jobs) == 2
    for run in (first, again):
        for image in ("img1", "img2"):
            desc = by_id(run.svg, f"clipasso-{image}").find(SVG + "desc").text
            assert "It ran 300 of 2000 steps" in desc, desc
    assert "had this sketch already" in by_id(again.svg, "clipasso-img1").find(SVG + "desc").text


def test_a_rerun_after_the_job_finished_fills_the_running_layer(photo_svg, fake_daemon, tmp_path):
    fake_daemon.polls_before_done = -1
    fake_daemon.partial_after_polls = -1
    args = ("--id=img1", f"--url={fake_daemon.url}", "--levels=2,3")
    first = run_extension(photo_svg, *args, "--when=now")
    assert first.status == 0, first.stderr
    fake_daemon.finish_all()
    saved = tmp_path / "saved.svg"
    saved.write_bytes(first.output)
    second = run_extension(saved, *args)
    assert second.status == 0 and second.stderr == "", second.stderr
    assert "POST" not in methods(fake_daemon)[1:]  # the job was found, not submitted again
    parents = second.svg.xpath(
        "//*[starts-with(@id, 'clipasso-img1') and @inkscape:label]",
        namespaces={"inkscape": LABEL[1:].split("}")[0]},
    )
    assert [p.get("id") for p in parents if p.getparent().tag == SVG + "svg"] == ["clipasso-img1"]
    parent = by_id(second.svg, "clipasso-img1")
    assert parent.get(LABEL) == "CLIPasso: img1"
    assert level_labels(second.svg, "clipasso-img1", (2, 3)) == ["2 strokes", "3 strokes"]
    assert len(by_id(second.svg, "clipasso-img1-level-3")) == 3
    assert parent.get(CLIPASSO + "state") == "done"


def test_not_waiting_submits_detached_whatever_the_limit_would_do(photo_svg, fake_daemon):
    """The job must outlive the run: the daemon cancels a job nobody polls unless detached."""
    fake_daemon.polls_before_done = -1
    run = run_extension(
        photo_svg, "--id=img1", f"--url={fake_daemon.url}", "--when=now", "--on_time_limit=cancel"
    )
    assert run.status == 0, run.stderr
    assert fake_daemon.requests[0].body["detached"] is True
    assert "DELETE" not in methods(fake_daemon)


def test_automatic_inserts_now_rather_than_refuse_a_job_too_long_for_the_limit(
    photo_svg, fake_daemon
):
    """With "cancel" at the limit, a job far beyond it is refused when the user waits; not
    waiting loses no work, so automatic inserts it now and lets it run."""
    fake_daemon.polls_before_done = -1
    fake_daemon.eta_s = 9600.0
    fake_daemon.steps_per_s = 0.21
    run = run_extension(
        photo_svg,
        "--id=img1",
        f"--url={fake_daemon.url}",
        "--timeout=60",
        "--on_time_limit=cancel",
        "--poll_interval=0.05",
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    assert by_id(run.svg, "clipasso-img1").get(CLIPASSO + "state") == "running"
    assert fake_daemon.requests[0].body["detached"] is True
    assert "DELETE" not in methods(fake_daemon)
