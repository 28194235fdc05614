"""Refine from my strokes against the fake daemon (real HTTP on loopback; issue 18 part 3).

The starting document is what a designer has: a sketch Sketch made of the photo (levels 2 and
3), one of whose strokes the user then moved. The fake daemon answers a job that keeps its
start strokes with their points exactly as sent (as the real engine does), and one that
refines them with each moved one pixel right, then its usual pattern for the new strokes.
"""

from __future__ import annotations

import inkex
import pytest
from ext_helpers import (
    CLIPASSO,
    SVG,
    by_id,
    data_uri,
    make_png,
    path_points,
    run_extension,
    svg_doc,
)
from fake_daemon import pattern_points
from lxml import etree
from test_update_sketches import run_update

from inkscape_clipasso import protocol
from inkscape_clipasso.layer_state import read_record
from inkscape_clipasso.refine import NOTHING_TO_REFINE

LABEL = "{http://www.inkscape.org/namespaces/inkscape}label"
PNG_W, PNG_H = 32, 24
#: the photo is drawn 2 user units per pixel at (20, 30)
SCALE, LEFT, TOP = 2.0, 20.0, 30.0
LEVEL = "clipasso-img1-level-3"
REFINED = "clipasso-img1-refined"


def to_document(x: float, y: float) -> tuple[float, float]:
    return (LEFT + SCALE * x, TOP + SCALE * y)


def to_pixels(x: float, y: float) -> tuple[float, float]:
    return ((x - LEFT) / SCALE, (y - TOP) / SCALE)


@pytest.fixture
def edited(tmp_path, fake_daemon):
    """A sketch of the photo whose 3-stroke level the user edited (moved stroke 2)."""
    source = tmp_path / "photo.svg"
    photo = data_uri(make_png(PNG_W, PNG_H))
    source.write_text(
        svg_doc(
            f'<image id="img1" x="{LEFT}" y="{TOP}" width="{SCALE * PNG_W}" '
            f'height="{SCALE * PNG_H}" preserveAspectRatio="none" xlink:href="{photo}"/>'
        )
    )
    run = run_extension(source, "--id=img1", f"--url={fake_daemon.url}", "--levels=2,3")
    assert run.status == 0 and run.stderr == "", run.stderr
    root = run.svg
    moved = by_id(root, f"{LEVEL}-stroke-2")
    moved.set("d", "m 30,40 c 10,-5 20,5 30,0")  # as Inkscape writes an edited path
    moved.set("style", "fill:none;stroke:#c83c28;stroke-width:1.25")
    document = tmp_path / "edited.svg"
    document.write_bytes(etree.tostring(root))
    return document


def refine(document, fake, *args: str):
    run = run_extension(document, f"--url={fake.url}", *args)
    assert run.status == 0, run.stderr
    assert run.stderr == ""
    return run.svg


def flat(points) -> list[float]:
    """Nested points as one list of numbers (pytest.approx compares flat sequences)."""
    if isinstance(points, (int, float)):
        return [float(points)]
    return [value for item in points for value in flat(item)]


def posts(fake) -> int:
    return sum(r.method == "POST" for r in fake.requests)


def strokes_sent(fake) -> list:
    return [[list(p) for p in stroke] for stroke in fake.submitted_settings()[-1].start_strokes]


def user_strokes(root) -> list:
    """The edited level's strokes in the photo's pixels, worked out by hand."""
    level = by_id(root, LEVEL)
    return [
        [list(to_pixels(*point)) for point in path_points(path.get("d"))]
        for path in level.findall(SVG + "path")
    ]


def test_keep_mine_copies_the_users_paths_verbatim(edited, fake_daemon):
    before = etree.parse(str(edited)).getroot()
    original = etree.tostring(by_id(before, LEVEL))
    root = refine(edited, fake_daemon, "--id=img1", f"--id={LEVEL}", "--start=keep")

    (settings,) = fake_daemon.submitted_settings()[-1:]
    assert settings.levels == (3 + 8,) and settings.keep_start_strokes is True
    assert flat(strokes_sent(fake_daemon)) == pytest.approx(flat(user_strokes(before)), abs=1e-9)

    level, layer = by_id(root, LEVEL), by_id(root, REFINED)
    # the user's level is untouched but hidden: one level shows at a time
    assert level.attrib.pop("style") == "display:none"
    assert etree.tostring(level) == original
    assert "is hidden below it" in layer.findtext(SVG + "desc")
    assert level.getnext() is layer  # beside it, just above, same parent
    assert layer.get(LABEL) == "11 strokes (3 kept + 8)"
    assert layer.get("{http://www.inkscape.org/namespaces/inkscape}groupmode") == "layer"
    assert layer.get(CLIPASSO + "strokes") == "11"
    record = read_record(layer)
    assert record is not None and record.source == "img1" and record.progress.state == "done"
    assert protocol.parse_settings(record.settings) == settings

    paths = layer.findall(SVG + "path")
    assert len(paths) == 11
    for mine, copy in zip(level.findall(SVG + "path"), paths[:3], strict=True):
        assert copy.get("d") == mine.get("d") and copy.get("style") == mine.get("style")
        assert copy.get(CLIPASSO + "kept") == "true"
        theirs = {k: v for k, v in mine.attrib.items() if k != "id"}
        assert {k: v for k, v in copy.attrib.items() if k not in ("id", CLIPASSO + "kept")} == (
            theirs
        )  # nothing added: the same coordinates, so no transform
    for index, path in enumerate(paths[3:]):
        expected = [to_document(*p) for p in pattern_points(index, PNG_W, PNG_H)]
        assert flat(path_points(path.get("d"))) == pytest.approx(flat(expected), abs=1e-6)
    assert len({path.get("id") for path in root.iter(SVG + "path")}) == len(
        list(root.iter(SVG + "path"))
    )  # every id unique


def test_refine_all_draws_the_daemons_strokes(edited, fake_daemon):
    before = etree.parse(str(edited)).getroot()
    root = refine(edited, fake_daemon, "--id=img1", f"--id={LEVEL}", "--start=refine")
    settings = fake_daemon.submitted_settings()[-1]
    assert settings.levels == (3,) and settings.keep_start_strokes is False
    layer = by_id(root, REFINED)
    assert layer.get(LABEL) == "3 strokes (3 refined)"
    paths = layer.findall(SVG + "path")
    assert [path.get(CLIPASSO + "kept") for path in paths] == [None] * 3
    for path, stroke in zip(paths, user_strokes(before), strict=True):
        moved = [to_document(x + 1.0, y) for x, y in stroke]  # what the fake made of it
        assert flat(path_points(path.get("d"))) == pytest.approx(flat(moved), abs=1e-6)


def test_refine_ignores_the_levels_field_it_does_not_use(edited, fake_daemon):
    root = refine(edited, fake_daemon, "--id=img1", f"--id={LEVEL}", "--start=refine", "--levels=x")
    assert fake_daemon.submitted_settings()[-1].levels == (3,)
    assert by_id(root, REFINED).get(LABEL) == "3 strokes (3 refined)"


def test_refine_all_adds_strokes_when_asked(edited, fake_daemon):
    root = refine(
        edited, fake_daemon, "--id=img1", f"--id={LEVEL}", "--start=refine", "--refine_add=2"
    )
    assert fake_daemon.submitted_settings()[-1].levels == (5,)
    assert by_id(root, REFINED).get(LABEL) == "5 strokes (3 refined + 2)"


def test_paths_in_other_coordinates_get_a_transform_and_stay_put(tmp_path, fake_daemon):
    photo = data_uri(make_png(PNG_W, PNG_H))
    document = tmp_path / "mine.svg"
    document.write_text(
        svg_doc(
            f'<image id="img1" x="{LEFT}" y="{TOP}" width="{SCALE * PNG_W}" '
            f'height="{SCALE * PNG_H}" preserveAspectRatio="none" xlink:href="{photo}"/>'
            '<g id="mine" inkscape:groupmode="layer" inkscape:label="Mine" '
            'transform="translate(3,-2)">'
            '  <path id="flat" d="m 30,40 h 10" style="stroke:red"/>'
            '  <g transform="rotate(10,40,40)">'
            '    <path id="turned" d="M 30,40 Q 40,50 50,40" style="stroke:blue" '
            '          transform="translate(1,2)"/>'
            "  </g>"
            "</g>"
        )
    )
    root = refine(document, fake_daemon, "--id=img1", "--id=mine", "--start=keep")
    layer = by_id(root, REFINED)
    assert by_id(root, "mine").getnext() is layer
    assert "display" not in (by_id(root, "mine").get("style") or "")  # not a sketch level: shown
    assert layer.get("transform") == "translate(3,-2)"  # the user's layer's coordinates
    straight, turned = layer.findall(SVG + "path")[:2]
    assert straight.get("d") == "m 30,40 h 10" and straight.get("transform") is None
    assert turned.get("d") == "M 30,40 Q 40,50 50,40" and turned.get("style") == "stroke:blue"
    # the copy lies where the original lay: rotate(10,40,40) @ translate(1,2), written out
    expected = inkex.Transform("rotate(10,40,40) translate(1,2)")
    found = inkex.Transform(turned.get("transform"))
    assert [v for row in found.matrix for v in row] == pytest.approx(
        [v for row in expected.matrix for v in row], abs=1e-12
    )
    # the new strokes land on the photo through the layer's transform
    sent = len(fake_daemon.submitted_settings()[-1].start_strokes)
    for index, path in enumerate(layer.findall(SVG + "path")[2:]):
        assert index < 8 and sent == 2
        on_page = [(x + 3, y - 2) for x, y in path_points(path.get("d"))]
        expected = [to_document(*p) for p in pattern_points(index, PNG_W, PNG_H)]
        assert flat(on_page) == pytest.approx(flat(expected), abs=1e-6)


def finished_new_strokes(result):
    """The finished job's new strokes differ from the snapshot's (one pixel down); the kept
    ones come back as sent."""
    if result.get("partial"):
        return result
    given = len(result["settings"]["start_strokes"])
    for level in result["levels"]:
        for path in level["paths"][given:]:
            path["points"] = [[x, y + 1.0] for x, y in path["points"]]
    return protocol.validate_result(result)


def test_a_running_refinement_is_updated_with_the_copies_kept(edited, fake_daemon):
    fake_daemon.polls_before_done = -1
    fake_daemon.result_override = finished_new_strokes
    run = run_extension(
        edited,
        f"--url={fake_daemon.url}",
        "--id=img1",
        f"--id={LEVEL}",
        "--start=keep",
        "--add_strokes=2",
        "--when=now",
    )
    assert run.status == 0 and run.stderr == "", run.stderr
    layer = by_id(run.svg, REFINED)
    assert layer.get(LABEL).startswith("5 strokes (3 kept + 2), running: step ")
    copies = [etree.tostring(p) for p in layer.findall(SVG + "path")[:3]]
    running = edited.parent / "running.svg"
    running.write_bytes(run.output)
    fake_daemon.finish_all()
    update = run_update(running)
    assert update.status == 0 and update.stderr == "", update.stderr
    layer = by_id(update.svg, REFINED)
    assert layer.get(LABEL) == "5 strokes (3 kept + 2)"
    paths = layer.findall(SVG + "path")
    assert len(paths) == 5
    assert [etree.tostring(p) for p in paths[:3]] == copies  # the user's copies, as they were
    assert [p.get(CLIPASSO + "kept") for p in paths[3:]] == [None, None]
    for index, path in enumerate(paths[3:]):  # the finished strokes, in place
        expected = [to_document(x, y + 1.0) for x, y in pattern_points(index, PNG_W, PNG_H)]
        assert flat(path_points(path.get("d"))) == pytest.approx(flat(expected), abs=1e-6)


def aborts(document, fake, *args: str) -> str:
    run = run_extension(document, f"--url={fake.url}", *args)
    assert run.status % 256 == 251, run.stderr  # inkex's abort (-5): the document is kept
    assert run.output == b""
    message = run.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_paths_but_no_photo(edited, fake_daemon):
    submitted = posts(fake_daemon)
    message = aborts(edited, fake_daemon, f"--id={LEVEL}", "--start=keep")
    assert "not the photo" in message
    assert posts(fake_daemon) == submitted


def test_nothing_to_refine(edited, fake_daemon, tmp_path):
    assert aborts(edited, fake_daemon, "--id=img1", "--start=refine") == NOTHING_TO_REFINE
    root = etree.parse(str(edited)).getroot()
    by_id(root, LEVEL).set("style", "display:none")  # both levels hidden: nothing is seen
    hidden = tmp_path / "hidden.svg"
    hidden.write_bytes(etree.tostring(root))
    message = aborts(hidden, fake_daemon, "--id=img1", "--id=clipasso-img1", "--start=keep")
    assert message == NOTHING_TO_REFINE
    zero = tmp_path / "zero.svg"
    zero.write_text(edited.read_text().replace("</svg>", '<path id="dot" d="M 30,40 Z"/></svg>'))
    assert aborts(zero, fake_daemon, "--id=img1", "--id=dot", "--start=keep") == (NOTHING_TO_REFINE)


def test_too_many_strokes(edited, fake_daemon, tmp_path):
    many = " ".join(f"L {31 + i % 2},{40 + i * 0.1}" for i in range(300))
    document = tmp_path / "many.svg"
    document.write_text(
        edited.read_text().replace("</svg>", f'<path id="many" d="M 30,40 {many}"/></svg>')
    )
    message = aborts(document, fake_daemon, "--id=img1", "--id=many", "--start=keep")
    assert message.startswith("Too many strokes: your selection gives 300 strokes")
    assert posts(fake_daemon) == 1  # the sketch the document was made with


def test_strokes_far_outside_the_photo(edited, fake_daemon, tmp_path):
    document = tmp_path / "far.svg"
    document.write_text(
        edited.read_text().replace("</svg>", '<path id="far" d="M 5000,40 L 5100,60"/></svg>')
    )
    message = aborts(document, fake_daemon, "--id=img1", "--id=far", "--start=keep")
    assert message.startswith("The daemon refused the request: start stroke 1 has a point at")
    assert "too far outside the 32 x 24 photo" in message


def test_one_photo_at_a_time(edited, fake_daemon, tmp_path):
    root = etree.parse(str(edited)).getroot()
    second = etree.fromstring(etree.tostring(by_id(root, "img1")))
    second.set("id", "img2")
    root.append(second)
    document = tmp_path / "two.svg"
    document.write_bytes(etree.tostring(root))
    message = aborts(
        document, fake_daemon, "--id=img1", "--id=img2", f"--id={LEVEL}", "--start=keep"
    )
    assert message.startswith("2 photos are selected")


def test_a_selected_sketch_layer_gives_its_visible_level(edited, fake_daemon):
    """The whole "CLIPasso: img1" layer selected: only the level the user sees is refined."""
    before = etree.parse(str(edited)).getroot()
    root = refine(edited, fake_daemon, "--id=img1", "--id=clipasso-img1", "--start=refine")
    assert flat(strokes_sent(fake_daemon)) == pytest.approx(flat(user_strokes(before)), abs=1e-9)
    assert by_id(root, "clipasso-img1").getnext() is by_id(root, REFINED)


def test_the_same_refinement_again_updates_its_running_layer(edited, fake_daemon, tmp_path):
    """Sketch run again on the same selection while the refinement runs: the job is waited
    for and its layer updated, not a second layer added."""
    fake_daemon.polls_before_done = -1
    args = ("--id=img1", f"--id={LEVEL}", "--start=keep", "--add_strokes=2", "--when=now")
    first = run_extension(edited, f"--url={fake_daemon.url}", *args)
    assert first.status == 0 and first.stderr == "", first.stderr
    running = tmp_path / "running.svg"
    running.write_bytes(first.output)
    fake_daemon.finish_all()
    root = refine(running, fake_daemon, *args)
    assert posts(fake_daemon) == 2  # the sketch and the one refinement
    assert (
        len(
            root.xpath(
                f"//*[starts-with(@id, '{REFINED}')][@inkscape:groupmode]",
                namespaces={"inkscape": "http://www.inkscape.org/namespaces/inkscape"},
            )
        )
        == 1
    )
    assert by_id(root, REFINED).get(LABEL) == "5 strokes (3 kept + 2)"
