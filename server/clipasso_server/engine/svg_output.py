"""The layered SVG a sketch job produces: one Inkscape layer per abstraction level.

The SVG's user units are the original image's pixels (``viewBox="0 0 W H"``), so the strokes
lie exactly over the photo when both are placed at the same spot. Everything needed to
reproduce the result (settings, seed per level, model names and versions, engine version) is
recorded in ``<metadata>`` and on each layer, because a sketch file that cannot be reproduced is
a dead end for the illustrator who wants "the same, but with 12 strokes".
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from clipasso_server.engine.types import SketchResult, Stroke

SVG_NS = "http://www.w3.org/2000/svg"
INKSCAPE_NS = "http://www.inkscape.org/namespaces/inkscape"
SODIPODI_NS = "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"
XLINK_NS = "http://www.w3.org/1999/xlink"
CLIPASSO_NS = "https://github.com/clipasso-inkscape/clipasso/ns"

ET.register_namespace("", SVG_NS)
ET.register_namespace("inkscape", INKSCAPE_NS)
ET.register_namespace("sodipodi", SODIPODI_NS)
ET.register_namespace("xlink", XLINK_NS)
ET.register_namespace("clipasso", CLIPASSO_NS)


def _number(value: float) -> str:
    """Compact decimal text with three decimals (a thousandth of an image pixel)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def path_data(stroke: Stroke) -> str:
    """``M x,y C x,y x,y x,y`` for one cubic stroke."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = stroke.points
    n = _number
    return f"M {n(x0)},{n(y0)} C {n(x1)},{n(y1)} {n(x2)},{n(y2)} {n(x3)},{n(y3)}"


def stroke_style(stroke: Stroke) -> str:
    """The CSS of one stroke: no fill, round caps and joins, colour with optional opacity."""
    colour = stroke.color.lower()
    parts = ["fill:none", f"stroke:{colour[:7]}"]
    if len(colour) == 9:
        parts.append(f"stroke-opacity:{_number(int(colour[7:9], 16) / 255)}")
    parts += [
        f"stroke-width:{_number(stroke.width)}",
        "stroke-linecap:round",
        "stroke-linejoin:round",
    ]
    return ";".join(parts)


def level_label(strokes: int) -> str:
    """The layer name users see: "1 stroke", "16 strokes"."""
    return f"{strokes} stroke" if strokes == 1 else f"{strokes} strokes"


def unfinished_note(result: SketchResult) -> str | None:
    """ "unfinished (step k of N)" for a partial result (the extension's wording), else None."""
    if not result.partial:
        return None
    return f"unfinished (step {result.step} of {result.settings.get('iterations')})"


def result_to_svg(result: SketchResult, image_href: str | None = None) -> str:
    """The result as a standalone SVG document (text, UTF-8, with an XML declaration).

    ``image_href`` adds the source image as a locked bottom layer (a file path or a ``data:``
    URI), so the sketch opens over its photo. The metadata records the steps run and why the
    optimisation stopped and what a schedule reduced (``schedule_notes``); a partial result
    says "unfinished (step k of N)" in its metadata and in every layer's name, so it is never
    mistaken for a finished sketch.
    """
    width, height = result.image_width, result.image_height
    root = ET.Element(
        f"{{{SVG_NS}}}svg",
        {
            "version": "1.1",
            "width": f"{width}px",
            "height": f"{height}px",
            "viewBox": f"0 0 {width} {height}",
        },
    )
    metadata = ET.SubElement(root, f"{{{SVG_NS}}}metadata", {"id": "clipasso-metadata"})
    record = {
        "generator": f"clipasso {result.version}",
        "settings": result.settings,
        "engine": result.extra.get("engine", {}),
        "models": result.models,
        "device": result.device,
        "steps_run": result.steps_run,
        "stop_reason": result.stop_reason,
        # what a schedule reduced and why (a time budget's plan, seed pruning): never silent
        "schedule_notes": list(result.schedule_notes),
        "levels": [
            {"strokes": level.strokes, "seed": level.seed, "loss": level.loss}
            for level in result.levels
        ],
    }
    note = unfinished_note(result)
    if note is not None:
        record.update(partial=True, step=result.step, note=note)
    info = ET.SubElement(metadata, f"{{{CLIPASSO_NS}}}result")
    info.text = json.dumps(record, sort_keys=True)

    if image_href is not None:
        photo_layer = ET.SubElement(
            root,
            f"{{{SVG_NS}}}g",
            {
                "id": "clipasso-photo",
                f"{{{INKSCAPE_NS}}}groupmode": "layer",
                f"{{{INKSCAPE_NS}}}label": "Photo",
                f"{{{SODIPODI_NS}}}insensitive": "true",
            },
        )
        ET.SubElement(
            photo_layer,
            f"{{{SVG_NS}}}image",
            {
                "id": "clipasso-photo-image",
                "x": "0",
                "y": "0",
                "width": str(width),
                "height": str(height),
                "preserveAspectRatio": "none",
                f"{{{XLINK_NS}}}href": image_href,
            },
        )

    most = max(level.strokes for level in result.levels)
    for level in result.levels:
        # Only the most detailed level is shown at first: overprinted levels read as a mess.
        hidden = {"style": "display:none"} if level.strokes != most else {}
        layer = ET.SubElement(
            root,
            f"{{{SVG_NS}}}g",
            {
                "id": f"clipasso-level-{level.strokes}",
                f"{{{INKSCAPE_NS}}}groupmode": "layer",
                f"{{{INKSCAPE_NS}}}label": level_label(level.strokes)
                + ("" if note is None else f", {note}"),
                f"{{{CLIPASSO_NS}}}strokes": str(level.strokes),
                f"{{{CLIPASSO_NS}}}seed": str(level.seed),
                f"{{{CLIPASSO_NS}}}loss": repr(level.loss),
                **hidden,
            },
        )
        for index, stroke in enumerate(level.paths):
            ET.SubElement(
                layer,
                f"{{{SVG_NS}}}path",
                {
                    "id": f"clipasso-level-{level.strokes}-stroke-{index + 1}",
                    "d": path_data(stroke),
                    "style": stroke_style(stroke),
                },
            )
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode", xml_declaration=False).join(
        ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n', "\n"]
    )


def read_metadata(svg_text: str) -> dict:
    """The record :func:`result_to_svg` stored, read back from an SVG document."""
    root = ET.fromstring(svg_text)
    node = root.find(f".//{{{CLIPASSO_NS}}}result")
    if node is None or not node.text:
        raise ValueError("this SVG has no clipasso metadata")
    return json.loads(node.text)
