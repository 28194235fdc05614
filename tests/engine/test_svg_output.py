"""The layered SVG: layers, labels, ids, exact coordinates and the reproducibility record."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from clipasso_server.engine.svg_output import INKSCAPE_NS, SVG_NS, read_metadata, result_to_svg
from clipasso_server.engine.types import LevelResult, SketchResult, Stroke


def _result() -> SketchResult:
    def stroke(i: int) -> Stroke:
        return Stroke(((i, 1.5), (i + 10.25, 2), (i + 20, 3.125), (i + 30, 40)), 2.5, "#11223380")

    return SketchResult(
        image_width=640,
        image_height=480,
        levels=(
            LevelResult(1, 7, 0.5, (stroke(0),)),
            LevelResult(3, 8, 0.25, tuple(stroke(i) for i in range(3))),
        ),
        settings={"levels": [1, 3], "iterations": 10, "seed": 7},
        models={"loss": "RN101 sha256:abc", "saliency": "ViT-B-32 sha256:def"},
        version="0.1.0",
        device="cpu",
        steps_run=10,
    )


def test_layers_paths_and_geometry():
    root = ET.fromstring(result_to_svg(_result()))
    assert root.get("viewBox") == "0 0 640 480"
    layers = root.findall(f"{{{SVG_NS}}}g")
    assert [g.get(f"{{{INKSCAPE_NS}}}label") for g in layers] == ["1 stroke", "3 strokes"]
    assert [g.get("id") for g in layers] == ["clipasso-level-1", "clipasso-level-3"]
    assert all(g.get(f"{{{INKSCAPE_NS}}}groupmode") == "layer" for g in layers)
    assert [g.get("style") for g in layers] == ["display:none", None]  # most detailed shown
    paths = layers[1].findall(f"{{{SVG_NS}}}path")
    assert len(paths) == 3
    assert paths[2].get("d") == "M 2,1.5 C 12.25,2 22,3.125 32,40"
    style = dict(item.split(":") for item in paths[0].get("style").split(";"))
    assert style["fill"] == "none" and style["stroke-linecap"] == "round"
    assert style["stroke"] == "#112233"
    assert float(style["stroke-opacity"]) == pytest.approx(0x80 / 255, abs=1e-3)
    assert float(style["stroke-width"]) == 2.5
    ids = [p.get("id") for p in root.iter(f"{{{SVG_NS}}}path")]
    assert len(ids) == len(set(ids))


def test_metadata_round_trips():
    record = read_metadata(result_to_svg(_result()))
    assert record["settings"] == {"levels": [1, 3], "iterations": 10, "seed": 7}
    assert record["models"]["loss"] == "RN101 sha256:abc"
    assert [level["seed"] for level in record["levels"]] == [7, 8]
    assert record["generator"] == "clipasso 0.1.0"


def test_photo_layer_is_optional_and_locked():
    root = ET.fromstring(result_to_svg(_result(), image_href="photo.jpg"))
    first = root.findall(f"{{{SVG_NS}}}g")[0]
    assert first.get(f"{{{INKSCAPE_NS}}}label") == "Photo"
    image = first.find(f"{{{SVG_NS}}}image")
    assert image.get("{http://www.w3.org/1999/xlink}href") == "photo.jpg"
    assert (image.get("width"), image.get("height")) == ("640", "480")
    assert ET.fromstring(result_to_svg(_result())).find(f".//{{{SVG_NS}}}image") is None


def test_coordinates_and_widths_match_the_strokes():
    strokes = tuple(
        Stroke(
            tuple((x / 3 + 100 * i, -y / 7 - i) for x, y in ((1, 2), (3, 4), (5, 6), (7, 8))),
            0.1 + i / 3,
            "#000000",
        )
        for i in range(4)
    )
    result = SketchResult(
        image_width=3,
        image_height=2,
        levels=(LevelResult(4, 0, 1.0, strokes),),
        settings={},
        models={},
        version="x",
        device="cpu",
    )
    root = ET.fromstring(result_to_svg(result))
    assert (root.get("width"), root.get("height")) == ("3px", "2px")
    paths = root.findall(f".//{{{SVG_NS}}}path")
    for path, stroke in zip(paths, strokes, strict=True):
        command, rest = path.get("d").split(" ", 1)
        numbers = [float(v) for v in rest.replace("C ", "").replace(",", " ").split()]
        assert command == "M" and "C " in rest
        assert numbers == pytest.approx([v for point in stroke.points for v in point], abs=5e-4)
        style = dict(item.split(":") for item in path.get("style").split(";"))
        assert float(style["stroke-width"]) == pytest.approx(stroke.width, abs=5e-4)
        assert "stroke-opacity" not in style


def test_metadata_records_steps_run_and_the_stop_reason():
    finished = dataclasses.replace(_result(), stop_reason="budget", steps_run=6)
    svg = result_to_svg(finished)
    record = read_metadata(svg)
    assert (record["steps_run"], record["stop_reason"]) == (6, "budget")
    assert "partial" not in record and "unfinished" not in svg


def test_a_partial_result_is_marked_unfinished_in_every_layer_and_the_metadata():
    partial = dataclasses.replace(_result(), steps_run=4, partial=True, step=4)
    root = ET.fromstring(result_to_svg(partial))
    labels = [g.get(f"{{{INKSCAPE_NS}}}label") for g in root.findall(f"{{{SVG_NS}}}g")]
    assert labels == ["1 stroke, unfinished (step 4 of 10)", "3 strokes, unfinished (step 4 of 10)"]
    record = read_metadata(result_to_svg(partial))
    assert (record["partial"], record["step"]) == (True, 4)
    assert record["note"] == "unfinished (step 4 of 10)"
    assert partial.to_json()["partial"] is True and partial.to_json()["step"] == 4
    assert "partial" not in _result().to_json() and "stop_reason" not in _result().to_json()
