"""The sketch as Inkscape layers: "CLIPasso: <image>" holding one sublayer per level.

Every stroke is one plain ``<path>`` whose ``d`` already has the image's whole placement baked
in (no ``transform=``), so it edits like any hand-drawn path; its width is scaled the same way.
Ids are deterministic (``clipasso-<image id>-level-8-stroke-3``) and a second run on the same
image gets a suffix (``clipasso-<image id>-2``), so later runs and tests can find the layers.
The settings, seeds, models and daemon version are recorded on the parent layer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import inkex

from inkscape_clipasso import protocol
from inkscape_clipasso.placement import Box, ImagePlacement, own_transform

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


def parent_label(name: str, existing_labels: Iterable[str]) -> str:
    """``CLIPasso: <name>``, numbered ``(2)``, ``(3)``... when the document already has a
    sketch layer of that name (a second run on the same photo), so layers stay tellable apart."""
    stem = f"CLIPasso: {name}"
    pattern = re.compile(re.escape(stem) + r"(?: \((\d+)\))?(?:,.*)?")
    numbers = [
        int(match.group(1) or 1)
        for match in (pattern.fullmatch(label or "") for label in existing_labels)
        if match
    ]
    return stem if not numbers else f"{stem} ({max(numbers) + 1})"


def unfinished_note(result: dict[str, Any]) -> str | None:
    """ "unfinished (step k of N)" for a best-so-far result, None for a finished one."""
    if not result.get("partial"):
        return None
    total = result["settings"].get("iterations")
    return f"unfinished (step {int(result.get('step') or 0)} of {total})"


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
    with the image; ``visible`` as :func:`visible_levels` takes it; ``clip``: clip the level
    layers to the photo's visible area (the paths themselves stay whole and editable)."""

    stroke_width: float | None = None
    visible: str = "most"
    clip: bool = True


def build_sketch_layer(
    image: inkex.BaseElement,
    label: str,
    placement: ImagePlacement,
    result: dict[str, Any],
    options: LayerOptions,
    taken_ids: set[str],
    description: str = "",
    image_data: bytes | None = None,
) -> tuple[inkex.Layer, list[inkex.BaseElement]]:
    """(the parent layer, the defs it needs) for one image's result, not yet in the document.

    ``label`` is the parent layer's full label (see :func:`parent_label`); a best-so-far
    result adds "unfinished (step k of N)" to it. ``description`` (how long it took or was
    estimated to take) becomes the layer's ``<desc>``, which Inkscape shows in Object
    Properties. ``image_data`` (the bitmap sent) is recorded as its hash, so a later run can
    tell a layer of the very same photo. ``taken_ids`` gets the new ids added, so several
    images in one run never collide.
    """
    base = unique_base(image.get("id") or "", taken_ids)
    parent = inkex.Layer(nsmap={"clipasso": CLIPASSO_NS})
    parent.set("id", base)
    parent.set("inkscape:groupmode", "layer")
    note = unfinished_note(result)
    parent.set("inkscape:label", label if note is None else f"{label}, {note}")
    if description:
        desc = inkex.Desc()
        desc.text = description
        parent.append(desc)
    parent.set(ns("source"), image.get("id") or "")
    if image_data is not None:
        parent.set(ns("image-sha256"), hashlib.sha256(image_data).hexdigest())
    parent.set(ns("job"), result["id"])
    parent.set(ns("version"), result["version"])
    parent.set(ns("seed"), str(result["settings"].get("seed", 0)))
    parent.set(ns("settings"), json.dumps(result["settings"], sort_keys=True))
    parent.set(ns("models"), json.dumps(result["models"], sort_keys=True))
    for key in ("steps_run", "stop_reason", "step"):
        if result.get(key) is not None:
            parent.set(ns(key.replace("_", "-")), str(result[key]))
    if note is not None:
        parent.set(ns("partial"), "true")
    new_ids = [base]
    defs: list[inkex.BaseElement] = []

    viewport_clip = None
    if options.clip:
        image_clip = _copy_image_clip(image, placement, f"{base}-clip")
        if image_clip is not None:
            defs.append(image_clip)
            parent.set("clip-path", f"url(#{image_clip.get('id')})")
            new_ids.append(image_clip.get("id"))
        viewport_clip = _viewport_clip(placement.visible, placement, f"{base}-photo-area")
        defs.append(viewport_clip)
        new_ids.extend([viewport_clip.get("id"), viewport_clip[0].get("id")])

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


def unfinished_job(
    document: inkex.BaseElement,
    image_id: str,
    image_data: bytes,
    settings: protocol.SketchSettings,
) -> str | None:
    """The job id of the latest unfinished layer (best strokes so far, job left running) of
    this image, bitmap and settings in the document, or None."""
    digest = hashlib.sha256(image_data).hexdigest()
    found = None
    for layer in document.iter("{http://www.w3.org/2000/svg}g"):
        if layer.get(ns("partial")) != "true" or layer.get(ns("source")) != image_id:
            continue
        if layer.get(ns("image-sha256")) != digest:
            continue
        try:
            recorded = protocol.parse_settings(json.loads(layer.get(ns("settings")) or "null"))
        except ValueError:  # ProtocolError is one too
            continue
        if recorded == settings and layer.get(ns("job")):
            found = layer.get(ns("job"))
    return found


def _viewport_clip(box: Box, placement: ImagePlacement, clip_id: str) -> inkex.BaseElement:
    """A clipPath of the photo's visible area (``box`` in the image's user space)."""
    clip = inkex.ClipPath()
    clip.set("id", clip_id)
    clip.set("clipPathUnits", "userSpaceOnUse")
    rect = inkex.Rectangle()
    rect.set("id", f"{clip_id}-rect")
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
        copy.transform = placement.element_transform @ own_transform(child)
        clip.append(copy)
    return clip if len(clip) else None
