"""Extensions > CLIPasso > Update sketches against the fake daemon (real HTTP on loopback):
in place, edited levels kept, and a clear message with the document untouched for every layer
that cannot be updated (issue 18). The documents are made by the Sketch effect itself with
"Now, update later"."""

from __future__ import annotations

import contextlib
import io
import os
import socket

import pytest
from ext_helpers import Run, by_id, data_uri, layers, make_png, run_extension, svg_doc
from lxml import etree

from inkscape_clipasso import protocol
from inkscape_clipasso.clipasso_update import NO_URL, NOTHING_TO_UPDATE, ClipassoUpdate

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
CLIPASSO = "{https://clipasso-inkscape.invalid/ns/1}"
SVG = "{http://www.w3.org/2000/svg}"


def run_update(svg_file, *args: str) -> Run:
    """Run Update sketches as Inkscape does; capture the document and stderr."""
    output, stdout, stderr = io.BytesIO(), io.StringIO(), io.StringIO()
    os.environ["DOCUMENT_PATH"] = str(svg_file)
    status = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                ClipassoUpdate().run([*args, str(svg_file)], output=output)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.pop("DOCUMENT_PATH", None)
    assert stdout.getvalue() == ""
    return Run(status, output.getvalue(), stderr.getvalue())


def sketch_now(tmp_path, fake, *extra: str, images=("img1",), name="running.svg"):
    """A document with the layers Sketch inserts when it does not wait."""
    source = tmp_path / "in.svg"
    body = "".join(
        f'<image id="{image}" x="{20 * n}" width="8" height="8" '
        f'xlink:href="{data_uri(make_png(8, 8, (10 * n, 2, 3)))}"/>'
        for n, image in enumerate(images)
    )
    source.write_text(svg_doc(body))
    ids = [f"--id={image}" for image in images]
    run = run_extension(source, *ids, f"--url={fake.url}", "--levels=2,3", "--when=now", *extra)
    assert run.status == 0 and run.stderr == "", run.stderr
    path = tmp_path / name
    path.write_bytes(run.output)
    return path


def z_order(root) -> list[str]:
    return [layer.get("id") for layer in layers(root)]


@pytest.fixture
def running(fake_daemon):
    fake_daemon.polls_before_done = -1
    return fake_daemon


def test_finished_job_replaces_the_strokes_in_place(tmp_path, running):
    document = sketch_now(tmp_path, running)
    before = etree.parse(str(document)).getroot()
    running.finish_all()
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    root = run.svg
    assert z_order(root) == z_order(before)  # same layers, same places
    for count in (2, 3):
        old, new = (
            by_id(before, f"clipasso-img1-level-{count}"),
            by_id(root, f"clipasso-img1-level-{count}"),
        )
        assert new.get("style") == old.get("style")  # the same visibility
        assert new.get(LABEL) == f"{count} strokes"
        assert len(new.findall(SVG + "path")) == count
    parent = by_id(root, "clipasso-img1")
    assert parent.get(LABEL) == "CLIPasso: img1"
    assert parent.get(CLIPASSO + "state") == "done"
    # done: a second update has nothing to do, says so, and changes nothing
    again = tmp_path / "again.svg"
    again.write_bytes(run.output)
    second = run_update(again)
    assert second.status != 0 and second.output == b""
    assert NOTHING_TO_UPDATE in second.stderr


def test_a_running_job_gives_its_newer_best_strokes(tmp_path, running):
    document = sketch_now(tmp_path, running)
    (job,) = running.jobs.values()
    first_step = job["polls"]
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    step = job["polls"]  # the status request counts as a poll, as the daemon's step moves on
    assert step > first_step
    parent = by_id(run.svg, "clipasso-img1")
    assert parent.get(LABEL) == f"CLIPasso: img1, running: step {step} of 2000"
    assert by_id(run.svg, "clipasso-img1-level-3").get(LABEL) == (
        f"3 strokes, running: step {step} of 2000"
    )
    assert parent.get(CLIPASSO + "state") == "running"


def test_no_newer_strokes_changes_nothing(tmp_path, running):
    running.partial_after_polls = -1  # no strokes ever: the layers stay empty
    document = sketch_now(tmp_path, running)
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert "no newer strokes yet" in run.stderr


def test_an_edited_level_is_never_overwritten(tmp_path, running):
    document = sketch_now(tmp_path, running)
    root = etree.parse(str(document)).getroot()
    edited = by_id(root, "clipasso-img1-level-3-stroke-2")
    edited.set("d", "M 1,1 C 2,2 3,3 4,4")
    document.write_bytes(etree.tostring(root))
    kept = etree.tostring(by_id(root, "clipasso-img1-level-3"))
    running.finish_all()
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    assert etree.tostring(by_id(run.svg, "clipasso-img1-level-3")) == kept
    sibling = by_id(run.svg, "clipasso-img1-level-3-update")
    assert sibling.getprevious().get("id") == "clipasso-img1-level-3"  # just above it
    assert sibling.get("style") == "display:none"
    assert len(sibling.findall(SVG + "path")) == 3
    assert "was edited" in sibling.find(SVG + "desc").text
    assert "was edited" in by_id(run.svg, "clipasso-img1").find(SVG + "desc").text
    # the untouched level was updated in place
    assert by_id(run.svg, "clipasso-img1-level-2").get(LABEL) == "2 strokes"


def test_a_second_update_refreshes_the_sibling_instead_of_adding_one(tmp_path, running):
    document = sketch_now(tmp_path, running)
    root = etree.parse(str(document)).getroot()
    by_id(root, "clipasso-img1-level-2").remove(by_id(root, "clipasso-img1-level-2-stroke-1"))
    document.write_bytes(etree.tostring(root))
    first = run_update(document)  # still running: newer best strokes
    assert first.status == 0, first.stderr
    again = tmp_path / "again.svg"
    again.write_bytes(first.output)
    running.finish_all()
    second = run_update(again)
    assert second.status == 0 and second.stderr == "", second.stderr
    siblings = second.svg.xpath("//*[@*[local-name()='beside']='clipasso-img1-level-2']")
    assert [s.get("id") for s in siblings] == ["clipasso-img1-level-2-update"]
    assert siblings[0].get(LABEL) == "2 strokes (from the daemon)"


def test_a_job_the_daemon_no_longer_knows(tmp_path, running):
    document = sketch_now(tmp_path, running)
    running.jobs.clear()  # pruned, or another daemon with another state folder
    run = run_update(document)
    assert run.status != 0 and run.output == b""  # exit 251 (AbortExtension): untouched
    assert "CLIPasso: img1" in run.stderr and "does not know its job" in run.stderr


def test_a_daemon_that_is_down(tmp_path, running):
    document = sketch_now(tmp_path, running)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = document.read_text().replace(running.url, f"http://127.0.0.1:{port}")
    document.write_text(text)
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert f"Could not reach the CLIPasso daemon at http://127.0.0.1:{port}" in run.stderr


def test_a_failed_job(tmp_path, running):
    document = sketch_now(tmp_path, running)
    running.final_state = protocol.FAILED
    running.error = {"error": "internal", "message": "the worker died"}
    running.finish_all()
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert "its job failed in the daemon: the worker died" in run.stderr


def test_some_updated_others_left_with_a_message(tmp_path, running):
    """One layer's daemon is down: the other is updated, the message names the one left."""
    document = sketch_now(tmp_path, running, images=("img1", "img2"))
    root = etree.parse(str(document)).getroot()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    by_id(root, "clipasso-img2").set(CLIPASSO + "url", down)
    document.write_bytes(etree.tostring(root))
    kept = etree.tostring(by_id(root, "clipasso-img2"))
    running.finish_all()
    run = run_update(document)
    assert run.status == 0, run.stderr
    assert by_id(run.svg, "clipasso-img1").get(LABEL) == "CLIPasso: img1"
    assert etree.tostring(by_id(run.svg, "clipasso-img2")) == kept
    assert "Updated 1 sketch(es)" in run.stderr and "CLIPasso: img2" in run.stderr
    assert "CLIPasso: img1" not in run.stderr


def test_no_sketch_to_update(tmp_path):
    document = tmp_path / "plain.svg"
    document.write_text(svg_doc('<rect id="r1" width="5" height="5"/>'))
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert NOTHING_TO_UPDATE in run.stderr


def test_strokes_no_newer_than_the_layers_are_not_put_in(tmp_path, running):
    document = sketch_now(tmp_path, running)
    root = etree.parse(str(document)).getroot()
    by_id(root, "clipasso-img1").set(CLIPASSO + "step", "1999")  # the layer's are newer
    document.write_bytes(etree.tostring(root))
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert "no newer strokes yet" in run.stderr


def test_a_layer_from_before_the_url_was_recorded(tmp_path, running):
    document = sketch_now(tmp_path, running)
    root = etree.parse(str(document)).getroot()
    parent = by_id(root, "clipasso-img1")
    for name in ("url", "state", "total"):
        del parent.attrib[CLIPASSO + name]
    document.write_bytes(etree.tostring(root))
    run = run_update(document)
    assert run.status != 0 and run.output == b""
    assert NO_URL in run.stderr


def test_sketch_again_takes_over_a_layer_without_a_url_and_records_it(tmp_path, running):
    """The NO_URL message tells the user to run Sketch again: that run must leave the layer
    with the daemon's address, so Update sketches can then reach it."""
    document = sketch_now(tmp_path, running)
    root = etree.parse(str(document)).getroot()
    del by_id(root, "clipasso-img1").attrib[CLIPASSO + "url"]
    document.write_bytes(etree.tostring(root))
    again = run_extension(
        document, "--id=img1", f"--url={running.url}", "--levels=2,3", "--when=now"
    )
    assert again.status == 0 and again.stderr == "", again.stderr
    parent = by_id(again.svg, "clipasso-img1")
    assert parent.get(CLIPASSO + "url") == running.url
    assert len(by_id(again.svg, "clipasso-img1").getparent().findall(SVG + "g")) == 1
    retaken = tmp_path / "retaken.svg"
    retaken.write_bytes(again.output)
    running.finish_all()
    run = run_update(retaken)
    assert run.status == 0 and run.stderr == "", run.stderr


def test_a_daemon_that_does_not_answer_is_asked_once(tmp_path, running, monkeypatch):
    """A daemon that takes the connection but never answers times out once, not once per
    layer (each wait is the request timeout)."""
    from inkscape_clipasso import clipasso_update

    document = sketch_now(tmp_path, running, images=("img1", "img2"))
    monkeypatch.setattr(clipasso_update, "REQUEST_TIMEOUT_S", 0.5)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes connections; nobody ever reads or answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        document.write_text(document.read_text().replace(running.url, url))
        run = run_update(document)
        hung.setblocking(False)
        connections = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connections.append(hung.accept()[0])
        for connection in connections:
            connection.close()
    assert run.status != 0 and run.output == b""
    assert run.stderr.count("which does not answer") == 2, run.stderr
    assert len(connections) == 1


def test_an_update_says_what_the_schedule_reduced_now(tmp_path, running):
    """The daemon planned the job to fit its time limit: the update's description says so,
    and a later update replaces the line rather than adding a second."""
    document = sketch_now(tmp_path, running)
    note = "1 seed instead of 3 to fit 10 min (a step of 6 sketches took 9.0 s)"
    running.result_override = lambda result: {**result, "schedule_notes": [note]}
    running.finish_all()
    run = run_update(document)
    assert run.status == 0 and run.stderr == "", run.stderr
    text = by_id(run.svg, "clipasso-img1").find(SVG + "desc").text
    assert text.endswith(f"\nReduced: {note}.") and text.count("Reduced:") == 1
    assert "Updated: the finished sketch." in text
