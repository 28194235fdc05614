"""Putting a job's newer strokes into the sketch layer that is already in the document.

Used by Extensions > CLIPasso > Update sketches and by a new Sketch run of the same photo and
settings: the level layers stay where they are (same element, place in the z-order, visibility
and clip), only their strokes and names change. A level the user has edited since its strokes
were inserted (its digest no longer matches, see layer_state) is never overwritten: the newer
strokes go into a hidden sibling layer just above it, whose description says why; a later
update refreshes that sibling instead of adding another.
"""

from __future__ import annotations

from typing import Any

import inkex

from inkscape_clipasso import protocol
from inkscape_clipasso.layer_state import (
    DONE,
    NOT_CONTENT,
    SketchRecord,
    is_edited,
    ns,
    progress_of,
    with_progress,
    write_progress,
)
from inkscape_clipasso.layers import (
    REDUCED,
    fill_level,
    level_label,
    record_result,
    reduced_line,
)
from inkscape_clipasso.placement import composed_transform, place_image
from inkscape_clipasso.refine import has_kept, is_kept, layer_placement, new_strokes

_SVG = "{http://www.w3.org/2000/svg}"
_UPDATED = " Updated: "


class UpdateError(Exception):
    """This layer cannot take the result; the message is for the user and the layer is
    untouched."""


def _level_layers(parent: inkex.BaseElement) -> dict[int, list[inkex.BaseElement]]:
    """The parent's level layers by stroke count (the original first, then its siblings); a
    refined level carries its own job and is its own (and no other sketch's) level."""
    found: dict[int, list[inkex.BaseElement]] = {}
    own = parent.get(ns("strokes"))
    if own is not None and own.isdigit():
        return {int(own): [parent]}
    for child in parent:
        count = child.get(ns("strokes")) if isinstance(child.tag, str) else None
        if child.get(ns("job")) is not None:
            continue
        if count is not None and count.isdigit():
            found.setdefault(int(count), []).append(child)
    return found


def _set_description(element: inkex.BaseElement, text: str) -> None:
    desc = element.find(f"{_SVG}desc")
    if desc is None:
        desc = inkex.Desc()
        element.insert(0, desc)
    desc.text = text


def _replace_strokes(level: inkex.BaseElement, taken_ids: set[str]) -> None:
    for child in list(level):
        if isinstance(child.tag, str) and child.tag not in NOT_CONTENT and not is_kept(child):
            taken_ids.discard(child.get("id") or "")
            level.remove(child)


def _sibling(level: inkex.BaseElement, count: int, taken_ids: set[str]) -> inkex.BaseElement:
    """A new hidden layer just above ``level`` (its next sibling), same clip."""
    sibling = inkex.Layer.new(f"{count} strokes")
    stem = f"{level.get('id') or 'clipasso-level'}-update"
    sibling_id, number = stem, 1
    while sibling_id in taken_ids or any(i.startswith(sibling_id + "-") for i in taken_ids):
        number += 1
        sibling_id = f"{stem}-{number}"
    sibling.set("id", sibling_id)
    taken_ids.add(sibling_id)
    sibling.set(ns("strokes"), str(count))
    sibling.set(ns("beside"), level.get("id") or "")
    if level.get("clip-path"):
        sibling.set("clip-path", level.get("clip-path"))
    sibling.set("style", "display:none")
    level.addnext(sibling)
    return sibling


def apply_result(
    document: inkex.BaseElement,
    parent: inkex.BaseElement,
    record: SketchRecord,
    result: dict[str, Any],
    taken_ids: set[str],
    url: str = "",
) -> list[str]:
    """Put ``result`` (final, or a best-so-far snapshot) into the sketch layer ``parent``;
    returns the notes for the user (levels kept because edited). ``url``, when given, is the
    daemon the result came from: the layer then records it (a layer taken over by a new Sketch
    run may have had another address, or none). Raises UpdateError, before changing anything,
    when the layer cannot take it."""
    photo = document.getElementById(record.source) if record.source else None
    if photo is None:
        raise UpdateError(
            f"its photo (id {record.source or '?'}) is no longer in the document, so the "
            "strokes cannot be placed"
        )
    if protocol.parse_settings(result["settings"]) != protocol.parse_settings(record.settings):
        raise UpdateError("the daemon's job has other settings than this layer; left as it is")
    placement = place_image(photo, result["image"]["width"], result["image"]["height"])
    progress = progress_of(result, record.progress.total)
    shown = None if progress.state == DONE else progress
    stroke_width = record.stroke_width
    # in the layer's own coordinates (a refined layer takes its user layer's transform)
    local = layer_placement(placement, composed_transform(parent))
    if stroke_width is not None and placement.linear_scale:
        stroke_width *= local.linear_scale / placement.linear_scale
    placement = local
    by_count = _level_layers(parent)
    notes: list[str] = []
    for level in result["levels"]:
        count = level["strokes"]
        layers = by_count.get(count, [])
        originals = [layer for layer in layers if not layer.get(ns("beside"))]
        if not originals:
            notes.append(f"the {count}-stroke level was deleted, so it was not added back")
            continue
        original = originals[0]
        if not is_edited(original):
            _replace_strokes(original, taken_ids)
            # a refined level keeps the user's own copies of its kept strokes: draw the others
            drawn = new_strokes(level, record.settings) if has_kept(original) else level
            fill_level(original, drawn, placement, stroke_width, taken_ids)
            original.set("inkscape:label", with_progress(original.get("inkscape:label"), shown))
            continue
        name = original.get("inkscape:label") or f"{count} strokes"
        siblings = [
            layer
            for layer in layers
            if layer.get(ns("beside")) == original.get("id") and not is_edited(layer)
        ]
        target = siblings[0] if siblings else _sibling(original, count, taken_ids)
        _replace_strokes(target, taken_ids)
        fill_level(target, level, placement, stroke_width, taken_ids)
        target.set("inkscape:label", level_label(count, shown) + " (from the daemon)")
        what = "the finished strokes" if shown is None else f"the strokes at {shown.note()}"
        _set_description(
            target,
            f'The layer "{name}" was edited after its strokes were inserted, so it was left as '
            f"it is; {what} are here instead, hidden: show this layer to compare.",
        )
        notes.append(f'"{name}" was edited, so the newer strokes went into a layer beside it')
    parent.set("inkscape:label", with_progress(parent.get("inkscape:label"), progress))
    parent.set(ns("job"), result["id"])
    if url:
        parent.set(ns("url"), url)
    write_progress(parent, progress)
    record_result(parent, result)
    desc = parent.find(f"{_SVG}desc")
    before = (desc.text or "").split(_UPDATED)[0] if desc is not None else ""
    # the reduction said at insertion gives way to the one the daemon says now
    before = "\n".join(line for line in before.split("\n") if not line.startswith(REDUCED))
    now = "the finished sketch" if shown is None else f"the best strokes so far ({shown.note()})"
    extra = f" ({'; '.join(notes)})" if notes else ""
    text = f"{before}{_UPDATED}{now}{extra}.".strip()
    _set_description(parent, "\n".join(filter(None, (text, reduced_line(result)))))
    return notes


__all__ = ["UpdateError", "apply_result"]
