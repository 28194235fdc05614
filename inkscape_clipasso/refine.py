"""Refine from my strokes: the job that starts from the user's paths, and the layer it gives.

The user selects the photo and either a level layer or paths lying over the photo; their
strokes (stroke_import) become the job's start strokes, with one level of those strokes plus
N new ones. *Keep mine* fixes the user's strokes (the daemon only places the new ones, and
returns the kept strokes' points exactly as sent); *refine all* optimises every stroke from
where it is.

The result is a new level layer beside the original one (same parent, just above it), named so
the user sees what it is ("24 strokes (16 kept + 8)"), carrying the usual job record so that
Update sketches finishes it. In that layer the kept strokes are the user's own path elements,
copied verbatim (same ``d`` and ``style``; the new layer takes the user's layer's transform, so
a ``transform`` is added only to a path that lay in other coordinates, such as a transformed
group), marked with ``clipasso:kept``; the new strokes are drawn as usual. A later update
keeps the marked copies and draws only the other strokes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import inkex

from inkscape_clipasso import protocol
from inkscape_clipasso.layer_state import (
    CLIPASSO_NS,
    SketchRecord,
    ns,
    progress_of,
    with_progress,
    write_record,
)
from inkscape_clipasso.layers import (
    LayerOptions,
    _viewport_clip,
    fill_level,
    record_result,
    unique_base,
)
from inkscape_clipasso.placement import ImagePlacement, composed_transform
from inkscape_clipasso.stroke_import import UserPath, all_strokes, stroke_elements

#: "Start from": the photo only (a plain sketch), my strokes kept, my strokes refined.
START_CHOICES = ("photo", "keep", "refine")
_LAYER = "{http://www.inkscape.org/namespaces/inkscape}groupmode"
#: Two transforms this close (relative) are the same coordinate system.
_SAME_TRANSFORM = 1e-12


NOTHING_TO_REFINE = (
    "Nothing to refine: select the photo together with your strokes (a level layer, or "
    "paths lying over the photo), or choose Start from: the photo only."
)


class RefineError(ValueError):
    """The selection cannot be refined; the message is for the user (one line)."""


def refine_selection(
    selected: Sequence[inkex.BaseElement],
) -> tuple[inkex.BaseElement, list[inkex.BaseElement], inkex.BaseElement | None]:
    """(the photo, the user's stroke elements, the layer the result goes beside) of a
    selection; RefineError when it is not one photo with strokes."""
    photos = [element for element in selected if isinstance(element, inkex.Image)]
    others = [element for element in selected if not isinstance(element, inkex.Image)]
    strokes = stroke_elements(others)
    if not photos:
        raise RefineError(
            "Your strokes are selected but not the photo: select the photo too (Shift+click "
            "it), then run Sketch again."
            if strokes
            else NOTHING_TO_REFINE
        )
    if len(photos) > 1:
        raise RefineError(
            f"{len(photos)} photos are selected: refining from your strokes works on one "
            "photo at a time."
        )
    if not strokes:
        raise RefineError(NOTHING_TO_REFINE)
    return photos[0], strokes, anchor_layer(others, strokes)


def refine_settings(
    settings: protocol.SketchSettings, paths: Sequence[UserPath], keep: bool, added: int
) -> protocol.SketchSettings:
    """``settings`` for one level of the user's strokes plus ``added`` new ones, starting
    from those strokes (kept or not). Raises RefineError for a level the daemon cannot take."""
    strokes = all_strokes(paths)
    if not strokes:
        raise RefineError(NOTHING_TO_REFINE)
    if keep and added < 1:
        raise RefineError('"Keep mine" needs at least 1 new stroke to add.')
    total = len(strokes) + max(0, added)
    if total > protocol.MAX_STROKES:
        raise RefineError(
            f"Too many strokes: your selection gives {len(strokes)} strokes (one per curve "
            f"segment), plus {added} new make {total}; a sketch holds at most "
            f"{protocol.MAX_STROKES}. Select fewer paths or add fewer strokes."
        )
    data = settings.to_json()
    data.update(
        levels=[total],
        start_strokes=[[list(point) for point in stroke] for stroke in strokes],
        keep_start_strokes=keep,
    )
    return protocol.parse_settings(data)


def anchor_layer(selected: Iterable[inkex.BaseElement], strokes: Sequence[inkex.BaseElement]):
    """The layer the refined one goes beside: a selected layer, else the layer holding the
    first stroke; None when the strokes are in no layer (the new one goes on top)."""
    for element in selected:
        if isinstance(element, inkex.Group) and element.get(_LAYER) == "layer":
            return element
    for element in strokes[:1]:
        node = element.getparent()
        while node is not None and node.getparent() is not None:
            if node.get(_LAYER) == "layer":
                return node
            node = node.getparent()
    return None


def refined_label(total: int, given: int, keep: bool, progress=None) -> str:
    """``24 strokes (16 kept + 8)``, ``16 strokes (16 refined)``, with the job's progress."""
    added = total - given
    how = "kept" if keep else "refined"
    label = f"{total} strokes ({given} {how}{f' + {added}' if added else ''})"
    return with_progress(label, progress)


def kept_points(settings: dict[str, Any]) -> Counter:
    """The strokes a job keeps as sent (its start strokes when it keeps them), as point
    tuples, counted: the daemon returns those points exactly."""
    parsed = protocol.parse_settings(settings)
    if not parsed.keep_start_strokes:
        return Counter()
    return Counter(parsed.start_strokes)


def _points(stroke: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in stroke["points"])


def new_strokes(level: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``level`` without the strokes the job kept (the layer holds the user's own copies of
    them): the strokes to draw."""
    return _without(level, kept_points(settings))


def _without(level: dict[str, Any], kept: Counter) -> dict[str, Any]:
    """``level`` without one stroke per count of its points in ``kept``."""
    kept = Counter(kept)
    paths = []
    for stroke in level["paths"]:
        points = _points(stroke)
        if kept[points] > 0:
            kept[points] -= 1
        else:
            paths.append(stroke)
    return {**level, "paths": paths}


def split_kept(
    paths: Sequence[UserPath], level: dict[str, Any], keep: bool
) -> tuple[list[UserPath], dict[str, Any]]:
    """(the user's paths to copy verbatim, the level's strokes to draw).

    A path is copied when the daemon kept every one of its strokes (their points came back as
    sent); before the daemon has any strokes, every path of a kept job is (it will keep them).
    """
    if not keep:
        return [], level
    if not level["paths"]:
        return list(paths), level
    returned = Counter(_points(stroke) for stroke in level["paths"])
    copied, kept = [], Counter()
    for path in paths:
        need = Counter(path.strokes)
        if all(returned[points] - kept[points] >= n for points, n in need.items()):
            copied.append(path)
            kept.update(need)
    return copied, _without(level, kept)


def _matrix_text(transform: inkex.Transform) -> str:
    """``matrix(a,b,c,d,e,f)`` at full precision (inkex writes 6 digits)."""
    (a, c, e), (b, d, f) = transform.matrix
    return "matrix(" + ",".join(repr(float(v)) for v in (a, b, c, d, e, f)) + ")"


def _same(first: inkex.Transform, second: inkex.Transform) -> bool:
    values = [v for row in first.matrix for v in row], [v for row in second.matrix for v in row]
    scale = max(1.0, *(abs(v) for v in values[0] + values[1]))
    return all(abs(a - b) <= _SAME_TRANSFORM * scale for a, b in zip(*values, strict=True))


def is_kept(element: inkex.BaseElement) -> bool:
    """Whether ``element`` is a verbatim copy of a stroke the job kept."""
    return isinstance(element.tag, str) and element.get(ns("kept")) == "true"


def has_kept(layer: inkex.BaseElement) -> bool:
    """Whether ``layer`` holds copies of kept strokes (a refined level that kept them)."""
    return any(is_kept(child) for child in layer)


def copy_user_path(
    element: inkex.BaseElement, layer_transform: inkex.Transform, new_id: str
) -> inkex.BaseElement:
    """A verbatim copy of the user's path for a layer whose coordinates are
    ``layer_transform`` (root user units): ``d``, ``style`` and every other attribute as they
    were; ``transform`` replaced only when the copy would otherwise move."""
    copy = element.copy()
    copy.tail = None
    copy.set("id", new_id)
    for number, child in enumerate(copy.iterdescendants(), start=1):
        if isinstance(child.tag, str) and child.get("id"):
            child.set("id", f"{new_id}-{number}")
    parent = element.getparent()
    where_it_was = composed_transform(parent) if parent is not None else inkex.Transform()
    if not _same(where_it_was, layer_transform):
        moved = -layer_transform @ composed_transform(element)
        copy.attrib["transform"] = _matrix_text(moved)  # inkex's set() would round it
    copy.set(ns("kept"), "true")
    return copy


def layer_placement(placement: ImagePlacement, layer_transform: inkex.Transform) -> ImagePlacement:
    """``placement`` for strokes drawn in a layer whose coordinates are ``layer_transform``
    (root user units from the layer's content; see placement.composed_transform)."""
    inverse = -layer_transform
    return ImagePlacement(
        inverse @ placement.transform, inverse @ placement.element_transform, placement.visible
    )


@dataclass(frozen=True)
class RefineJob:
    """What the refined layer is built from: the photo, the user's paths and where they go."""

    photo: inkex.BaseElement
    paths: tuple[UserPath, ...]
    anchor: inkex.BaseElement | None
    keep: bool
    image_sha256: str


def build_refined_layer(
    job: RefineJob,
    placement: ImagePlacement,
    result: dict[str, Any],
    options: LayerOptions,
    taken_ids: set[str],
    description: str = "",
) -> tuple[inkex.Layer, list[inkex.BaseElement]]:
    """(the refined level layer, the defs it needs), not yet in the document."""
    # the new layer takes the user's layer's transform: the paths that lay directly in it are
    # then copied without one, and everything else is placed in the same coordinates
    own, layer_transform = None, inkex.Transform()
    if job.anchor is not None:
        own, layer_transform = job.anchor.attrib.get("transform"), composed_transform(job.anchor)
    base = unique_base(f"{job.photo.get('id') or 'image'}-refined", taken_ids)
    settings = result["settings"]
    progress = progress_of(result, int(settings["iterations"]))
    (level,) = result["levels"]
    given = len(protocol.parse_settings(settings).start_strokes)
    layer = inkex.Layer(nsmap={"clipasso": CLIPASSO_NS})
    layer.set("id", base)
    layer.set("inkscape:groupmode", "layer")
    if own:
        layer.attrib["transform"] = own  # as written (inkex's set() would round it)
    shown = progress if progress.state != "done" else None
    layer.set("inkscape:label", refined_label(level["strokes"], given, job.keep, shown))
    layer.set(ns("strokes"), str(level["strokes"]))
    if job.anchor is not None and job.anchor.get("id"):
        layer.set(ns("refined-from"), job.anchor.get("id"))
    source = job.anchor.get("inkscape:label") if job.anchor is not None else None
    origin = f'the strokes of "{source}"' if source else "your selected strokes"
    how = "kept as they were" if job.keep else "optimised from where they were"
    text = f"Refined from {origin} ({how}). {description}".strip()
    desc = inkex.Desc()
    desc.text = text
    layer.append(desc)
    width = options.stroke_width
    write_record(
        layer,
        SketchRecord(
            job=result["id"],
            url=options.url,
            settings=settings,
            source=job.photo.get("id") or "",
            progress=progress,
            image_sha256=job.image_sha256,
            stroke_width=width,
        ),
    )
    record_result(layer, result)
    defs: list[inkex.BaseElement] = []
    local = layer_placement(placement, layer_transform)
    scale = local.linear_scale / placement.linear_scale if placement.linear_scale else 1.0
    new_ids = [base]
    if options.clip:
        clip = _viewport_clip(placement.visible, local, f"{base}-photo-area")
        defs.append(clip)
        layer.set("clip-path", f"url(#{clip.get('id')})")
        new_ids.extend([clip.get("id"), clip[0].get("id")])
    copied, drawn = split_kept(job.paths, level, job.keep)
    for number, path in enumerate(copied, start=1):
        copy_id = f"{base}-kept-{number}"
        while copy_id in taken_ids:
            copy_id += "-new"
        layer.append(copy_user_path(path.element, layer_transform, copy_id))
        new_ids.append(copy_id)
    taken_ids.update(new_ids)
    # last: fill_level seals the layer's digest over the copies and the new strokes
    fill_level(layer, drawn, local, None if width is None else width * scale, taken_ids)
    return layer, defs


def image_digest(data: bytes) -> str:
    """The photo's hash as the record keeps it (a later run tells the very same photo)."""
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "START_CHOICES",
    "RefineError",
    "RefineJob",
    "anchor_layer",
    "build_refined_layer",
    "copy_user_path",
    "has_kept",
    "image_digest",
    "is_kept",
    "kept_points",
    "layer_placement",
    "new_strokes",
    "refine_selection",
    "refine_settings",
    "refined_label",
    "split_kept",
]
