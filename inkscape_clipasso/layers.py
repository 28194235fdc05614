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
from inkscape_clipasso.layer_state import (
    CLIPASSO_NS,
    RUNNING,
    Progress,
    SketchRecord,
    ns,
    progress_of,
    seal_level,
    sketch_layers,
    with_progress,
    write_record,
)
from inkscape_clipasso.placement import Box, ImagePlacement, own_transform

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


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
    layers to the photo's visible area (the paths themselves stay whole and editable);
    ``url``: the daemon's, recorded so that Update sketches can find the job again."""

    stroke_width: float | None = None
    visible: str = "most"
    clip: bool = True
    url: str = ""


def empty_result(
    job_id: str, settings: protocol.SketchSettings, size: tuple[int, int]
) -> dict[str, Any]:
    """A result with every level and no strokes yet, for a job inserted before the daemon had
    any (``size``: the bitmap's pixels, for the photo's clip); its progress is running."""
    return {
        "id": job_id,
        "image": {"width": size[0], "height": size[1]},
        "levels": [{"strokes": count, "paths": []} for count in settings.levels],
        "settings": settings.to_json(),
        "models": {},
        "version": "",
        "partial": True,
    }


def level_label(count: int, progress: Progress | None) -> str:
    """``16 strokes``, with the job's progress when it is not finished."""
    return with_progress(f"{count} strokes", progress)


def fill_level(
    layer: inkex.BaseElement,
    level: dict[str, Any],
    placement: ImagePlacement,
    stroke_width: float | None,
    taken_ids: set[str],
) -> None:
    """Put ``level``'s strokes (bitmap pixels) into ``layer`` as plain paths in root user
    units, record its seed and loss, and seal the digest that tells a later update whether
    the user has changed them. Path ids are ``<layer id>-stroke-<n>``, made unique against
    ``taken_ids`` (which gets them)."""
    for key in ("seed", "loss"):
        if level.get(key) is None:
            layer.attrib.pop(ns(key), None)
    if level.get("seed") is not None:
        layer.set(ns("seed"), str(level["seed"]))
    if level.get("loss") is not None:
        layer.set(ns("loss"), repr(float(level["loss"])))
    stem = layer.get("id") or "clipasso-level"
    for index, stroke in enumerate(level["paths"], start=1):
        width = (
            stroke_width
            if stroke_width is not None
            else float(stroke["width"]) * placement.linear_scale
        )
        path = inkex.PathElement()
        path_id = f"{stem}-stroke-{index}"
        while path_id in taken_ids:
            path_id += "-new"
        path.set("id", path_id)
        path.set("d", stroke_d(stroke["points"], placement))
        path.set("style", _stroke_style(stroke["color"], width))
        layer.append(path)
        taken_ids.add(path_id)
    seal_level(layer)


def record_result(parent: inkex.BaseElement, result: dict[str, Any]) -> None:
    """The daemon's side of the record: version, models, seed, steps and why it stopped."""
    if result.get("version"):
        parent.set(ns("version"), result["version"])
    if result.get("models"):
        parent.set(ns("models"), json.dumps(result["models"], sort_keys=True))
    parent.set(ns("seed"), str(result["settings"].get("seed", 0)))
    for key in ("steps_run", "stop_reason"):
        name = ns(key.replace("_", "-"))
        if result.get(key) is not None:
            parent.set(name, str(result[key]))
        else:
            parent.attrib.pop(name, None)


#: starts the description line saying what the daemon's schedule reduced
REDUCED = "Reduced: "


def reduced_line(result: dict[str, Any]) -> str:
    """What the daemon's schedule reduced and why ("Reduced: 1 seed instead of 3 ... to fit
    10 min."), from the result's ``schedule_notes``; "" when nothing was."""
    notes = [n for n in result.get("schedule_notes") or () if isinstance(n, str)]
    return f"{REDUCED}{'; '.join(notes)}." if notes else ""


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

    ``label`` is the parent layer's full label (see :func:`parent_label`); a sketch that is not
    finished says so in every layer's name ("running: step 40 of 2000", "unfinished: step 300
    of 2000 (time limit)"). ``description`` (how long it took or was estimated to take) becomes
    the layer's ``<desc>``, which Inkscape shows in Object Properties, followed by what the
    engine's schedule reduced to fit the time limit (the result's ``schedule_notes``).
    ``image_data`` (the bitmap sent) is recorded as its hash, so a later run can tell a layer
    of the very same photo. The job, the daemon's URL and the settings are recorded
    (layer_state) so Update sketches can finish it. ``taken_ids`` gets the new ids added, so
    several images in one run never collide.
    """
    base = unique_base(image.get("id") or "", taken_ids)
    parent = inkex.Layer(nsmap={"clipasso": CLIPASSO_NS})
    parent.set("id", base)
    parent.set("inkscape:groupmode", "layer")
    settings = result["settings"]
    progress = progress_of(result, int(settings["iterations"]))
    parent.set("inkscape:label", with_progress(label, progress))
    description = "\n".join(filter(None, (description, reduced_line(result))))
    if description:
        desc = inkex.Desc()
        desc.text = description
        parent.append(desc)
    write_record(
        parent,
        SketchRecord(
            job=result["id"],
            url=options.url,
            settings=settings,
            source=image.get("id") or "",
            progress=progress,
            image_sha256=None if image_data is None else hashlib.sha256(image_data).hexdigest(),
            stroke_width=options.stroke_width,
        ),
    )
    record_result(parent, result)
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
    level_progress = progress if progress.state != "done" else None
    for level in levels:
        count = level["strokes"]
        layer = inkex.Layer.new(level_label(count, level_progress))
        layer.set("id", f"{base}-level-{count}")
        layer.set(ns("strokes"), str(count))
        if count not in shown:
            layer.set("style", "display:none")
        if viewport_clip is not None:
            layer.set("clip-path", f"url(#{viewport_clip.get('id')})")
        new_ids.append(layer.get("id"))
        fill_level(layer, level, placement, options.stroke_width, taken_ids)
        parent.append(layer)
    taken_ids.update(new_ids)
    return parent, defs


def unfinished_layer(
    document: inkex.BaseElement,
    image_id: str,
    image_data: bytes,
    settings: protocol.SketchSettings,
) -> inkex.BaseElement | None:
    """The latest sketch layer of this image, bitmap and settings whose job was still running
    when it was inserted, or None: a new run of the same sketch updates it instead of adding
    a second one."""
    digest = hashlib.sha256(image_data).hexdigest()
    found = None
    for layer, record in sketch_layers(document):
        if record.progress.state != RUNNING or record.source != image_id:
            continue
        if record.image_sha256 != digest:
            continue
        if protocol.parse_settings(record.settings) == settings:
            found = layer
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
