"""Refine from an edited level in the real Inkscape with the real daemon (tiny test models;
issue 18 part 3), as a designer would: Sketch a photo, edit one stroke of a level by hand
(moved, written as Inkscape writes a node edit, restyled), then select the photo and that
level and Sketch again with Start from "my selected strokes: keep mine and add N". The result
is a new layer just above the level whose first strokes are the user's own path elements,
byte for byte, and the daemon's job shows the engine kept them exactly as sent.

Runs under Inkscape 1.2 on the host and 1.4 in tests/inkscape14 (the photo is embedded: 1.4's
trouble with relative links under its temporary folder does not arise).
"""

from __future__ import annotations

import pytest
from ext_helpers import (
    CLIPASSO,
    INKSCAPE_NS,
    SVG,
    by_id,
    data_uri,
    make_png,
    run_extension,
    svg_doc,
)
from inkscape_runner import apply_and_read, write_preferences
from lxml import etree
from serve_daemon import VIEWER, get_json, install_extension, jobs

pytestmark = [pytest.mark.inkscape, pytest.mark.slow]

LABEL = f"{{{INKSCAPE_NS}}}label"
LEVEL = "clipasso-img1-level-3"
REFINED = "clipasso-img1-refined"
EDITED_D = "m 30,40 c 8,-6 16,6 24,0"
EDITED_STYLE = "fill:none;stroke:#c83c28;stroke-width:1.5;stroke-linecap:round"


def settings(url: str, **extra: str) -> dict[str, str]:
    return {
        "url": url,
        "levels": "2,3",
        "iterations": "5",
        "seeds": "1",
        "loss_model": "test-tiny-rn",
        "saliency_model": "test-tiny-vit",
        "time_limit": "0",
        "when": "wait",
        "visible_level": "all",
        "timeout": "600",
        "poll_interval": "0.2",
        "live_view": "false",
        **extra,
    }


def test_refine_from_an_edited_level_keeps_the_users_strokes(daemon, tmp_path):
    profile = tmp_path / "profile"
    install_extension(profile)
    photo = data_uri(make_png(48, 48, (150, 90, 40)))
    document = tmp_path / "in.svg"
    document.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:inkscape="{INKSCAPE_NS}" width="100mm" height="100mm" viewBox="0 0 100 100">
  <g id="layer1" inkscape:groupmode="layer" inkscape:label="Photos">
    <image id="img1" x="10" y="10" width="60" height="60" preserveAspectRatio="none"
           xlink:href="{photo}"/>
  </g>
</svg>
""",
        encoding="utf-8",
    )

    # 1. the sketch
    write_preferences(profile, settings(daemon))
    root = apply_and_read(profile, document, tmp_path / "sketched.svg", ["img1"])
    level = by_id(root, LEVEL)
    assert len(level.findall(SVG + "path")) == 3

    # 2. the user moves and restyles one stroke of the 3-stroke level
    edited_path = level.findall(SVG + "path")[1]
    edited_path.set("d", EDITED_D)
    edited_path.set("style", EDITED_STYLE)
    edited = tmp_path / "edited.svg"
    edited.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
    mine = [dict(path.attrib) for path in level.findall(SVG + "path")]

    # 3. refine from that level: keep mine, add 2
    write_preferences(profile, settings(daemon, start="keep", add_strokes="2"))
    # the level and its strokes (what Edit > Select All in it selects): the same strokes
    # whether Inkscape keeps the layer itself in the selection or only its paths
    strokes = [path["id"] for path in mine]
    root = apply_and_read(profile, edited, tmp_path / "refined.svg", ["img1", LEVEL, *strokes])
    level, layer = by_id(root, LEVEL), by_id(root, REFINED)
    assert [dict(path.attrib) for path in level.findall(SVG + "path")] == mine  # untouched
    assert level.getnext() is layer  # just above it, in the same parent
    assert layer.get(LABEL) == "5 strokes (3 kept + 2)"
    assert layer.get(CLIPASSO + "state") == "done"
    paths = layer.findall(SVG + "path")
    assert len(paths) == 5
    for theirs, copy in zip(mine, paths[:3], strict=True):
        # the user's own element, byte for byte: every attribute but the (new) id
        assert copy.get("d") == theirs["d"] and copy.get("style") == theirs["style"]
        assert {k: v for k, v in copy.attrib.items() if k not in ("id", CLIPASSO + "kept")} == {
            k: v for k, v in theirs.items() if k != "id"
        }
        assert copy.get(CLIPASSO + "kept") == "true"
    assert paths[1].get("d") == EDITED_D and paths[1].get("style") == EDITED_STYLE
    for path in paths[3:]:
        assert path.get(CLIPASSO + "kept") is None

    # the daemon's job: its kept strokes came back exactly as sent
    job_id = layer.get(CLIPASSO + "job")
    (job,) = [job for job in jobs(daemon) if job["id"] == job_id]
    assert job["state"] == "done", job
    result = get_json(f"{daemon}/v1/jobs/{job_id}/result", headers=VIEWER)
    sent = result["settings"]["start_strokes"]
    assert result["settings"]["keep_start_strokes"] is True and len(sent) == 3
    (level_result,) = result["levels"]
    assert [path["points"] for path in level_result["paths"][:3]] == sent


def test_strokes_far_outside_the_photo_get_the_daemons_refusal(daemon, tmp_path):
    """Run as Inkscape runs the script (an abort's message would open a dialog in batch
    mode): the real daemon's 400, one line, exit 251, no document written."""
    photo = data_uri(make_png(48, 48, (150, 90, 40)))
    document = tmp_path / "far.svg"
    document.write_text(
        svg_doc(
            f'<image id="img1" x="10" y="10" width="60" height="60" preserveAspectRatio="none" '
            f'xlink:href="{photo}"/><path id="far" d="M 900,40 L 950,60"/>'
        )
    )
    before = len(jobs(daemon))
    run = run_extension(
        document, f"--url={daemon}", "--id=img1", "--id=far", "--start=keep", "--seeds=1"
    )
    assert run.status % 256 == 251 and run.output == b""
    message = run.stderr.strip()
    assert message.startswith("The daemon refused the request: start stroke 1 has a point at")
    assert "too far outside the 48 x 48 photo" in message and "\n" not in message
    assert len(jobs(daemon)) == before
