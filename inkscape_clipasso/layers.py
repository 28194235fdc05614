"""The sketch as Inkscape layers: "CLIPasso: <image>" holding one sublayer per level.

Every stroke is one plain ``<path>`` whose ``d`` already has the image's whole placement baked
in (no ``transform=``), so it edits like any hand-drawn path; its width is scaled the same way.
Ids are deterministic (``clipasso-<image id>-level-8-stroke-3``) and a second run on the same
image gets a suffix (``clipasso-<image id>-2``), so later runs and tests can find the layers.
The settings, seeds, models and daemon version are recorded on the parent layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import inkex

from inkscape_clipasso.placement import Box, ImagePlacement

#: Namespace of the attributes that record how a sketch was made.
CLIPASSO_NS = "https://clipasso-inkscape.invalid/ns/1"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def ns(name: str) -> str:
    """An attribute name in the CLIPasso namespace."""
    return f"{{{CLIPASSO_NS}}}{name}"


def visible_levels(levels: Sequence[int], choice: str) -> set[int]:
    """Which levels stay visible: "most" strokes, "fewest", "all", or the level nearest to a
    stroke count (the larger one on a tie). Raises ValueError for anything else."""
    choice = choice.strip().lower()
    if choice == "all":
        return set(levels)
    if choice == "most":
        return {max(levels)}
    if choice == "fewest":
        return {min(levels)}
    try:
        wanted = int(choice)
    except ValueError:
        raise ValueError(
            f"the visible level must be most, fewest, all or a stroke count, got {choice!r}"
        ) from None
    return {min(levels, key=lambda level: (abs(level - wanted), -level))}


def unique_base(image_id: str, taken: Iterable[str]) -> str:
    """``clipasso-<image id>``, or with ``-2``, ``-3``... so that neither it nor any id
    derived from it (``<base>-...``) is already in the document."""
    taken = set(taken)
    stem = "clipasso-" + _ID_UNSAFE.sub("_", image_id or "image")
    candidate, number = stem, 1
    while candidate in taken or any(other.startswith(candidate + "-") for other in taken):
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def _num(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def stroke_d(points: Sequence[Sequence[float]], placement: ImagePlacement) -> str:
    """One cubic Bézier (4 control points in bitmap pixels) as path data in root user units."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (placement.point(x, y) for x, y in points)
    return (
        f"M {_num(x0)},{_num(y0)} "
        f"C {_num(x1)},{_num(y1)} {_num(x2)},{_num(y2)} {_num(x3)},{_num(y3)}"
    )


def _stroke_style(color: str, width: float) -> str:
    opacity = ""
    if len(color) == 9:
        opacity = f";stroke-opacity:{_num(int(color[7:9], 16) / 255)}"
        color = color[:7]
    return (
        f"fill:none;stroke:{color};stroke-width:{_num(width)};"
        f"stroke-linecap:round;stroke-linejoin:round{opacity}"
    )


@dataclass(frozen=True)
class LayerOptions:
    """How to draw: ``stroke_width`` in root user units, or None to scale the daemon's widths
    with the image; ``visible`` as :func:`visible_levels` takes it."""

    stroke_width: float | None = None
    visible: str = "most"


def build_sketch_layer(
    image: inkex.BaseElement,
    label: str,
    placement: ImagePlacement,
    result: dict[str, Any],
    options: LayerOptions,
    taken_ids: set[str],
) -> tuple[inkex.Layer, list[inkex.BaseElement]]:
    """(the parent layer, the defs it needs) for one image's result, not yet in the document.

    ``taken_ids`` gets the new ids added, so several images in one run never collide.
    """
    base = unique_base(image.get("id") or "", taken_ids)
    parent = inkex.Layer(nsmap={"clipasso": CLIPASSO_NS})
    parent.set("id", base)
    parent.set("inkscape:groupmode", "layer")
    parent.set("inkscape:label", f"CLIPasso: {label}")
    parent.set(ns("source"), image.get("id") or "")
    parent.set(ns("job"), result["id"])
    parent.set(ns("version"), result["version"])
    parent.set(ns("seed"), str(result["settings"].get("seed", 0)))
    parent.set(ns("settings"), json.dumps(result["settings"], sort_keys=True))
    parent.set(ns("models"), json.dumps(result["models"], sort_keys=True))
    new_ids = [base]
    defs: list[inkex.BaseElement] = []

    image_clip = _copy_image_clip(image, placement, f"{base}-clip")
    if image_clip is not None:
        defs.append(image_clip)
        parent.set("clip-path", f"url(#{image_clip.get('id')})")
        new_ids.append(image_clip.get("id"))
    viewport_clip = None
    if placement.clip is not None:
        viewport_clip = _viewport_clip(placement.clip, placement, f"{base}-viewport")
        defs.append(viewport_clip)
        new_ids.append(viewport_clip.get("id"))

    levels = result["levels"]
    shown = visible_levels([level["strokes"] for level in levels], options.visible)
    for level in levels:
        count = level["strokes"]
        layer = inkex.Layer.new(f"{count} strokes")
        layer.set("id", f"{base}-level-{count}")
        layer.set(ns("strokes"), str(count))
        layer.set(ns("seed"), str(level["seed"]))
        layer.set(ns("loss"), repr(float(level["loss"])))
        if count not in shown:
            layer.set("style", "display:none")
        if viewport_clip is not None:
            layer.set("clip-path", f"url(#{viewport_clip.get('id')})")
        new_ids.append(layer.get("id"))
        for index, stroke in enumerate(level["paths"], start=1):
            width = (
                options.stroke_width
                if options.stroke_width is not None
                else float(stroke["width"]) * placement.linear_scale
            )
            path = inkex.PathElement()
            path.set("id", f"{base}-level-{count}-stroke-{index}")
            path.set("d", stroke_d(stroke["points"], placement))
            path.set("style", _stroke_style(stroke["color"], width))
            layer.append(path)
            new_ids.append(path.get("id"))
        parent.append(layer)
    taken_ids.update(new_ids)
    return parent, defs


def _viewport_clip(box: Box, placement: ImagePlacement, clip_id: str) -> inkex.BaseElement:
    """A clipPath of the image's viewport, for bitmaps cropped by ``slice``."""
    clip = inkex.ClipPath()
    clip.set("id", clip_id)
    clip.set("clipPathUnits", "userSpaceOnUse")
    rect = inkex.Rectangle()
    for name, value in (("x", box.x), ("y", box.y), ("width", box.width), ("height", box.height)):
        rect.set(name, _num(value))
    rect.set("transform", str(placement.element_transform))
    clip.append(rect)
    return clip


def _copy_image_clip(
    image: inkex.BaseElement, placement: ImagePlacement, clip_id: str
) -> inkex.BaseElement | None:
    """The image's own clip-path, moved into root user space; None when it has none usable."""
    reference = image.get("clip-path") or ""
    match = re.fullmatch(r"\s*url\(\s*#([^)\s]+)\s*\)\s*", reference)
    if not match:
        return None
    original = image.getroottree().getroot().getElementById(match.group(1))
    if original is None or original.get("clipPathUnits") == "objectBoundingBox":
        return None
    clip = inkex.ClipPath()
    clip.set("id", clip_id)
    clip.set("clipPathUnits", "userSpaceOnUse")
    for index, child in enumerate(original, start=1):
        if not isinstance(child, inkex.ShapeElement):
            continue
        copy = child.copy()
        copy.set("id", f"{clip_id}-{index}")
        copy.transform = placement.element_transform @ child.transform
        clip.append(copy)
    return clip if len(clip) else None
