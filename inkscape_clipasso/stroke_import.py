"""The user's own strokes as start strokes: selected paths in the photo's pixel coordinates.

"Refine from my strokes" sends paths the user drew or edited over the photo to the daemon,
which speaks only the photo's own pixels and draws every stroke as one cubic Bézier. So each
path goes through the exact inverse of today's placement (placement.place_image): its own and
every ancestor's transform up to the root, then the photo's viewport (x, y, width, height),
preserveAspectRatio (letterboxed with meet, cropped with slice, stretched with none) and the
photo's own transforms, undone. Clipping hides part of a stroke but does not move it, so it
plays no part in the map; points on the hidden part keep their place outside the photo's
visible area (the daemon refuses only strokes far off the photo).

Every SVG path command (M L H V C S Q T A Z, absolute or relative) and the basic shapes
(line, polyline, polygon, rect, circle, ellipse) become cubic segments through inkex's
CubicSuperPath (lines and quadratics exactly, arcs as inkex approximates them; S and T
spelled out first); each segment
is one stroke, as the method draws, and a segment of no length is dropped. The affine map is
applied to the cubic's control points, which is exact for a Bézier curve.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import inkex

from inkscape_clipasso.placement import ImagePlacement, composed_transform

#: One start stroke: 4 (x, y) control points in the photo's pixels.
Stroke = tuple[tuple[float, float], ...]
#: Elements whose outline is a path inkex can give (``.path``): what counts as a stroke.
STROKE_TYPES = (
    inkex.PathElement,
    inkex.Line,
    inkex.Polyline,
    inkex.Polygon,
    inkex.Rectangle,
    inkex.Circle,
    inkex.Ellipse,
)
#: Control points this close (in the element's own units, relative to the segment's size)
#: make a segment of no length.
_SAME_POINT = 1e-12


@dataclass(frozen=True)
class UserPath:
    """One of the user's path elements and the strokes it gives, in the photo's pixels."""

    element: inkex.BaseElement
    strokes: tuple[Stroke, ...]


def stroke_elements(selected: Iterable[inkex.BaseElement]) -> list[inkex.BaseElement]:
    """The path-like elements among ``selected`` and inside any selected group or layer, in
    document order, each once (a layer selected together with one of its paths)."""
    found: dict[int, inkex.BaseElement] = {}
    for element in selected:
        candidates = [element] if isinstance(element, STROKE_TYPES) else []
        if isinstance(element, inkex.Group):
            candidates = [
                node
                for node in element.iterdescendants()
                if isinstance(node, STROKE_TYPES)
                and not _in_definitions(node, element)
                and not _hidden_below(node, element)
            ]
        for node in candidates:
            found.setdefault(id(node), node)
    order = {id(node): index for index, node in enumerate(_document(found.values()).iter())}
    return sorted(found.values(), key=lambda node: order.get(id(node), 0))


def _document(elements: Iterable[inkex.BaseElement]) -> inkex.BaseElement:
    for element in elements:
        return element.getroottree().getroot()
    return inkex.Group()


def _in_definitions(node: inkex.BaseElement, top: inkex.BaseElement) -> bool:
    """Whether ``node`` is a clip path's, mask's or marker's content below ``top``: part of
    how something is drawn, not a stroke."""
    parent = node.getparent()
    while parent is not None and parent is not top:
        if isinstance(parent, (inkex.ClipPath, inkex.Defs, inkex.Mask, inkex.Marker)):
            return True
        parent = parent.getparent()
    return False


def _hidden_below(node: inkex.BaseElement, top: inkex.BaseElement) -> bool:
    """Whether ``node`` or a group between it and ``top`` is hidden: a selected sketch layer's
    hidden levels are not what the user sees, so not their strokes."""
    while node is not None and node is not top:
        if "display:none" in (node.get("style") or "").replace(" ", "") or (
            node.get("display") == "none"
        ):
            return True
        node = node.getparent()
    return False


def element_cubics(element: inkex.BaseElement) -> list[Stroke]:
    """Every segment of ``element``'s outline as a cubic (4 points in its own user units, its
    own transform not applied), zero-length ones dropped."""
    cubics: list[Stroke] = []
    # S and T spelled out first: inkex's CubicSuperPath reflects the wrong handle for a T
    # (that of the cubic it made of the previous Q, not the Q's own control point)
    for subpath in inkex.CubicSuperPath(element.path.to_non_shorthand()):
        for start, end in itertools.pairwise(subpath):
            points = (
                (float(start[1][0]), float(start[1][1])),
                (float(start[2][0]), float(start[2][1])),
                (float(end[0][0]), float(end[0][1])),
                (float(end[1][0]), float(end[1][1])),
            )
            if not _zero_length(points):
                cubics.append(points)
    return cubics


def _zero_length(points: Sequence[tuple[float, float]]) -> bool:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    size = max(1.0, *(abs(value) for value in xs + ys))
    return max(xs) - min(xs) <= _SAME_POINT * size and max(ys) - min(ys) <= _SAME_POINT * size


def document_to_pixels(placement: ImagePlacement) -> inkex.Transform:
    """Root user units -> the photo's pixels: the inverse of ``placement``'s map. ValueError
    (a message for the user) when the photo is drawn flat, so no point maps back."""
    if placement.linear_scale <= 0:
        raise ValueError("the photo has no area in the document (zero width, height or scale)")
    return -placement.transform


def import_strokes(
    placement: ImagePlacement, elements: Iterable[inkex.BaseElement]
) -> list[UserPath]:
    """Each element's strokes in the photo's pixels (``placement``: the photo's, from
    place_image with the bitmap's size); elements that give no stroke are left out."""
    to_pixels = document_to_pixels(placement)
    found = []
    for element in elements:
        transform = to_pixels @ composed_transform(element)
        strokes = tuple(
            tuple(_apply(transform, x, y) for x, y in cubic) for cubic in element_cubics(element)
        )
        if strokes:
            found.append(UserPath(element, strokes))
    return found


def _apply(transform: inkex.Transform, x: float, y: float) -> tuple[float, float]:
    point = transform.apply_to_point((x, y))
    return (float(point.x), float(point.y))


def all_strokes(paths: Iterable[UserPath]) -> tuple[Stroke, ...]:
    """The strokes of ``paths`` in order, as the job's ``start_strokes``."""
    return tuple(stroke for path in paths for stroke in path.strokes)


__all__ = [
    "STROKE_TYPES",
    "Stroke",
    "UserPath",
    "all_strokes",
    "document_to_pixels",
    "element_cubics",
    "import_strokes",
    "stroke_elements",
]
