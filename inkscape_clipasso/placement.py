"""Where an image's pixels lie in the document: the map from bitmap pixels to root user units.

The daemon answers in the bitmap's own pixels. To lay strokes exactly over the picture, each
point goes through everything that places the bitmap: the ``<image>`` element's viewport
(x, y, width, height), its ``preserveAspectRatio`` (letterboxing with meet, cropping with slice,
stretching with none), its own transform and those of every ancestor group. New layers are
children of the root ``<svg>``, so the result is in root user units and the root's viewBox
scaling applies to the strokes just as it does to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import inkex
from inkex.units import convert_unit

_ALIGNS = {
    f"x{x}Y{y}": (fx, fy)
    for x, fx in (("Min", 0.0), ("Mid", 0.5), ("Max", 1.0))
    for y, fy in (("Min", 0.0), ("Mid", 0.5), ("Max", 1.0))
}


@dataclass(frozen=True)
class AspectRatio:
    """A parsed ``preserveAspectRatio``: ``align`` is None for "none"."""

    align: tuple[float, float] | None = (0.5, 0.5)
    slice: bool = False


def parse_preserve_aspect_ratio(value: str | None) -> AspectRatio:
    """SVG's ``[defer] <align> [meet|slice]``; missing or malformed means the default
    ``xMidYMid meet``, as browsers and Inkscape read it."""
    words = (value or "").split()
    if words and words[0] == "defer":
        words = words[1:]
    if not words:
        return AspectRatio()
    if words[0] == "none":
        return AspectRatio(align=None)
    align = _ALIGNS.get(words[0])
    if align is None:
        return AspectRatio()
    return AspectRatio(align=align, slice=len(words) > 1 and words[1] == "slice")


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in the image element's own user space."""

    x: float
    y: float
    width: float
    height: float


def _length(image: inkex.BaseElement, name: str) -> float | None:
    value = image.get(name)
    if value is None or value.strip() in ("", "auto"):
        return None
    return float(convert_unit(value, "px"))


def image_viewport(image: inkex.BaseElement, pixel_width: int, pixel_height: int) -> Box:
    """The ``<image>``'s x, y, width, height; a missing or ``auto`` size comes from the bitmap
    (SVG 2), keeping its aspect ratio when only one side is given."""
    x = _length(image, "x") or 0.0
    y = _length(image, "y") or 0.0
    width, height = _length(image, "width"), _length(image, "height")
    if width is None and height is None:
        width, height = float(pixel_width), float(pixel_height)
    elif width is None:
        width = height * pixel_width / pixel_height
    elif height is None:
        height = width * pixel_height / pixel_width
    return Box(x, y, width, height)


def bitmap_box(viewport: Box, aspect: AspectRatio, pixel_width: int, pixel_height: int) -> Box:
    """Where the whole bitmap is drawn inside ``viewport`` (it may overflow it with slice)."""
    if aspect.align is None:
        return viewport
    scale_x, scale_y = viewport.width / pixel_width, viewport.height / pixel_height
    scale = max(scale_x, scale_y) if aspect.slice else min(scale_x, scale_y)
    width, height = pixel_width * scale, pixel_height * scale
    fx, fy = aspect.align
    return Box(
        viewport.x + (viewport.width - width) * fx,
        viewport.y + (viewport.height - height) * fy,
        width,
        height,
    )


@dataclass(frozen=True)
class ImagePlacement:
    """The bitmap-pixel -> root-user-unit map of one image, and its visible area.

    ``visible`` is where the bitmap is actually drawn, in the image's own user space: the
    bitmap's box within the viewport (smaller with ``meet``, cropped to the viewport with
    ``slice``). ``element_transform`` maps that space to root user units.
    """

    transform: inkex.Transform
    element_transform: inkex.Transform
    visible: Box

    def point(self, x: float, y: float) -> tuple[float, float]:
        """A bitmap pixel position -> root user units."""
        out = self.transform.apply_to_point((x, y))
        return (out.x, out.y)

    @property
    def linear_scale(self) -> float:
        """How much a length grows on average (sqrt of the determinant): for stroke widths."""
        m = self.transform.matrix
        return math.sqrt(abs(m[0][0] * m[1][1] - m[0][1] * m[1][0]))


def own_transform(element: inkex.BaseElement) -> inkex.Transform:
    """The element's ``transform`` attribute, parsed without touching the element.

    Reading inkex's ``element.transform`` (which ``composed_transform()`` does) writes the
    attribute back as a 6-digit ``matrix(...)``: the user's photo and groups must keep their
    exact geometry, so the raw attribute is parsed into a free-standing Transform instead.
    """
    return inkex.Transform(element.attrib.get("transform"))


def composed_transform(element: inkex.BaseElement) -> inkex.Transform:
    """Every transform from the root's user space down to ``element``'s own, inclusive
    (the root's viewBox scaling excluded), leaving every element's attributes as they were."""
    chain = []
    node = element
    while isinstance(node, inkex.BaseElement) and node.getparent() is not None:
        chain.append(own_transform(node))
        node = node.getparent()
    total = inkex.Transform()
    for transform in reversed(chain):
        total = total @ transform
    return total


def place_image(image: inkex.BaseElement, pixel_width: int, pixel_height: int) -> ImagePlacement:
    """The placement of ``image`` whose bitmap is ``pixel_width`` x ``pixel_height`` pixels
    (as the daemon reports it: after EXIF orientation, as Inkscape draws it)."""
    viewport = image_viewport(image, pixel_width, pixel_height)
    aspect = parse_preserve_aspect_ratio(image.get("preserveAspectRatio"))
    box = bitmap_box(viewport, aspect, pixel_width, pixel_height)
    element = composed_transform(image)
    transform = (
        element
        @ inkex.Transform(translate=(box.x, box.y))
        @ inkex.Transform(scale=(box.width / pixel_width, box.height / pixel_height))
    )
    return ImagePlacement(transform, element, intersect(box, viewport))


def intersect(first: Box, second: Box) -> Box:
    """The overlap of two boxes (empty boxes have zero width or height)."""
    left, top = max(first.x, second.x), max(first.y, second.y)
    right = min(first.x + first.width, second.x + second.width)
    bottom = min(first.y + first.height, second.y + second.height)
    return Box(left, top, max(0.0, right - left), max(0.0, bottom - top))
