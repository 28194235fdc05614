"""What a sketch layer records (job, daemon URL, settings, progress) reads back as written, and
the digest of a level tells an edited level from an untouched one (issue 18)."""

from __future__ import annotations

import inkex
import pytest

from inkscape_clipasso import protocol
from inkscape_clipasso.layer_state import (
    DONE,
    RUNNING,
    STOPPED,
    Progress,
    SketchRecord,
    is_edited,
    ns,
    progress_of,
    read_record,
    seal_level,
    sketch_layers,
    with_progress,
    write_record,
)

JOB = "0123456789abcdef0123456789abcdef"


def record(**changes) -> SketchRecord:
    settings = protocol.SketchSettings(levels=(4, 16), iterations=2000, time_budget_s=600.0)
    fields = {
        "job": JOB,
        "url": "http://127.0.0.1:8765",
        "settings": settings.to_json(),
        "source": "img1",
        "progress": Progress(RUNNING, 40, 2000, "budget"),
        "image_sha256": "ab" * 32,
        "stroke_width": 0.5,
    }
    fields.update(changes)
    return SketchRecord(**fields)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"progress": Progress(RUNNING, None, 2000)},
        {"progress": Progress(DONE, 2000, 2000, "iterations"), "stroke_width": None},
        {"progress": Progress(STOPPED, 300, 2000, "budget"), "image_sha256": None},
    ],
)
def test_record_round_trip(changes):
    layer = inkex.Layer.new("CLIPasso: img1")
    original = record(**changes)
    write_record(layer, original)
    if original.progress.stop_reason:  # the daemon's word, recorded with the result
        layer.set(ns("stop-reason"), original.progress.stop_reason)
    assert read_record(layer) == original
    # through the document's text too, as Inkscape saves and reopens it
    document = inkex.load_svg(b"<svg xmlns='http://www.w3.org/2000/svg'/>").getroot()
    document.append(layer)
    reread = inkex.load_svg(document.tostring()).getroot()
    ((_, found),) = sketch_layers(reread)
    assert found == original


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("job", "not-a-job"),
        ("state", "paused"),
        ("settings", "{]"),
        ("settings", '{"levels": [0]}'),
        ("step", "forty"),
    ],
)
def test_a_damaged_record_is_not_a_sketch(attribute, value):
    layer = inkex.Layer.new("CLIPasso: img1")
    write_record(layer, record())
    layer.set(ns(attribute), value)
    assert read_record(layer) is None


def test_layers_made_before_the_state_was_recorded():
    """An unfinished layer of the extension before issue 18: job, settings, partial; no URL."""
    layer = inkex.Layer.new("CLIPasso: img1, unfinished (step 3 of 2000)")
    write_record(layer, record())
    for name in ("url", "state", "total"):
        layer.attrib.pop(ns(name))
    found = read_record(layer)
    assert found is not None and found.url == ""
    assert found.progress == Progress(RUNNING, 40, 2000)
    layer.attrib.pop(ns("partial"))
    assert read_record(layer).progress.state == DONE


def test_unrecorded_layers_are_not_sketches():
    assert read_record(inkex.Layer.new("Photos")) is None


def _level() -> inkex.Layer:
    level = inkex.Layer.new("4 strokes")
    for index, d in enumerate(("M 1,2 C 3,4 5,6 7,8", "M 0,0 C 1,1 2,2 3,3"), start=1):
        path = inkex.PathElement()
        path.set("id", f"s{index}")
        path.set("d", d)
        path.set("style", "fill:none;stroke:#000000;stroke-width:0.5")
        level.append(path)
    seal_level(level)
    return level


def test_a_sealed_level_is_not_edited():
    level = _level()
    assert level.get(ns("digest"))
    assert not is_edited(level)


@pytest.mark.parametrize(
    "edit",
    [
        lambda level: level[0].set("d", "M 1,2 C 3,4 5,6 7,9"),  # a node moved
        lambda level: level[0].set("transform", "translate(1,0)"),  # moved as a whole
        lambda level: level[1].set("style", "fill:none;stroke:#ff0000;stroke-width:0.5"),
        lambda level: level.remove(level[1]),  # a stroke deleted
        lambda level: level.append(inkex.Rectangle.new(0, 0, 1, 1)),  # something drawn
        lambda level: level.insert(0, level[1]),  # the order changed
    ],
)
def test_any_edit_of_the_strokes_is_seen(edit):
    level = _level()
    edit(level)
    assert is_edited(level)


@pytest.mark.parametrize(
    "change",
    [
        lambda level: level.set("style", "display:none"),  # the level hidden or shown
        lambda level: level.set("inkscape:label", "my name"),  # the level renamed
        lambda level: level[0].set("id", "path42"),  # ids Inkscape may give
        lambda level: level[0].set("d", "M 1,2  C 3,4 5,6\n 7,8"),  # whitespace only
    ],
)
def test_what_is_not_an_edit_of_the_strokes(change):
    level = _level()
    change(level)
    assert not is_edited(level)


def test_a_level_without_digest_counts_as_edited():
    level = _level()
    level.attrib.pop(ns("digest"))
    assert is_edited(level)


@pytest.mark.parametrize(
    ("result", "expected", "note"),
    [
        ({"partial": True}, Progress(RUNNING, None, 2000), "running: no strokes yet"),
        (
            {"partial": True, "step": 40, "stop_reason": "budget"},
            Progress(RUNNING, 40, 2000, "budget"),
            "running: step 40 of 2000",
        ),
        (
            {"steps_run": 300, "stop_reason": "budget"},
            Progress(STOPPED, 300, 2000, "budget"),
            "unfinished: step 300 of 2000 (time limit)",
        ),
        (
            {"steps_run": 70, "stop_reason": "cancel"},
            Progress(STOPPED, 70, 2000, "cancel"),
            "unfinished: step 70 of 2000 (cancelled)",
        ),
        ({"steps_run": 800, "stop_reason": "plateau"}, Progress(DONE, 800, 2000, "plateau"), None),
        (
            {"steps_run": 2000, "stop_reason": "iterations"},
            Progress(DONE, 2000, 2000, "iterations"),
            None,
        ),
    ],
)
def test_progress_of_a_result(result, expected, note):
    progress = progress_of(result, 2000)
    assert progress == expected
    assert progress.note() == note


def test_names_keep_what_the_user_typed():
    running = Progress(RUNNING, 40, 2000)
    assert with_progress("16 strokes", running) == "16 strokes, running: step 40 of 2000"
    assert with_progress("16 strokes, running: step 40 of 2000", None) == "16 strokes"
    assert with_progress("My cat, running: no strokes yet", running) == (
        "My cat, running: step 40 of 2000"
    )
    # the names before issue 18 said "unfinished (step k of N)"
    assert with_progress("CLIPasso: img1, unfinished (step 3 of 20)", None) == "CLIPasso: img1"
    assert with_progress("Mine, not yours", None) == "Mine, not yours"
