"""An SVG drawing's paths as start strokes in the photo's pixels ("refine from my strokes").

One converter for ``clipasso sketch --start-svg`` and the daemon's ``POST /v1/start-strokes``
(the web page), so both read a drawing the same way; it imports no torch (the daemon's HTTP
process runs it). svgelements parses the SVG and applies every transform (groups, ``<use>``,
nested viewports); every shape's segments become cubic Béziers, one stroke each as CLIPasso
draws (lines and quadratics exactly, arcs as svgelements' cubic approximation).

Which pixels: an SVG holding an ``<image>`` is drawn over that photo, so the strokes are mapped
into the image's pixels through its x, y, width, height, preserveAspectRatio and transforms
(the first ``<image>`` in document order: the bottom one, where a sketch keeps its photo).
Without one, the SVG's viewBox (or its width x height) is the photo, scaled to its size.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET

import svgelements as se

Point = tuple[float, float]
Strokes = tuple[tuple[Point, Point, Point, Point], ...]


class StartSvgError(ValueError):
    """An SVG that gives no start strokes; ``message`` is one line for the user, ``code`` the
    protocol's error code ("bad_request", or "out_of_range" for too many strokes)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def strokes_from_svg(svg: str | bytes, width: int, height: int, limit: int) -> Strokes:
    """The paths of ``svg`` as cubic strokes in the pixels of a ``width`` x ``height`` photo.

    StartSvgError when the text is not an SVG, holds no path, or gives more than ``limit``
    strokes. Zero-length segments (a close path ending where it began) are left out.
    """
    data = svg.encode("utf-8") if isinstance(svg, str) else svg
    try:
        document = se.SVG.parse(io.BytesIO(data), reify=True)
    except ET.ParseError as exc:
        raise StartSvgError(f"not a readable SVG: {exc}") from None
    except (ValueError, TypeError, ZeroDivisionError, IndexError, AttributeError) as exc:
        raise StartSvgError(f"not a usable SVG: {exc or type(exc).__name__}") from None
    if not isinstance(document, se.SVG):
        raise StartSvgError("not an SVG document (its root element is not <svg>)")
    to_photo = ~_photo_to_document(document, width, height)
    strokes = []
    for element in document.elements():
        if not isinstance(element, se.Shape):
            continue
        path = element if isinstance(element, se.Path) else se.Path(element)
        for cubic in _cubics(path):
            strokes.append(tuple(_apply(to_photo, point) for point in cubic))
            if len(strokes) > limit:
                raise StartSvgError(
                    f"the SVG has more than {limit} strokes (each cubic segment is one); "
                    f"at most {limit} start strokes fit in a sketch",
                    "out_of_range",
                )
    if not strokes:
        raise StartSvgError("the SVG has no paths to start from (no visible path or shape)")
    for stroke in strokes:
        if not all(math.isfinite(c) for point in stroke for c in point):
            raise StartSvgError("the SVG's paths have coordinates that are not finite numbers")
    return tuple(strokes)


def _photo_to_document(document: se.SVG, width: int, height: int) -> se.Matrix:
    """Photo px -> the document coordinates svgelements reifies paths into."""
    image = next((e for e in document.elements() if isinstance(e, se.Image)), None)
    if image is not None:
        box_width = image.width if isinstance(image.width, (int, float)) else width
        box_height = image.height if isinstance(image.height, (int, float)) else height
        fit = se.Viewbox.viewbox_transform(
            image.x or 0.0,
            image.y or 0.0,
            box_width,
            box_height,
            0.0,
            0.0,
            float(width),
            float(height),
            image.preserve_aspect_ratio,
        )
        return se.Matrix(fit) * se.Matrix(image.transform)
    root = se.Matrix(f"{document.values.get('transform', '')} {document.viewbox_transform}")
    view = document.viewbox
    if view is not None and view.width and view.height:
        box = (view.x, view.y, view.width, view.height)
    elif document.values.get("width") is not None and document.values.get("height") is not None:
        box = (0.0, 0.0, float(document.width), float(document.height))
    else:  # no size at all: the user units are the photo's pixels
        box = (0.0, 0.0, float(width), float(height))
    scale = se.Matrix(
        f"translate({box[0]!r}, {box[1]!r}) scale({box[2] / width!r}, {box[3] / height!r})"
    )
    return scale * root


def _apply(matrix: se.Matrix, point: Point) -> Point:
    x, y = point
    return (
        matrix.a * x + matrix.c * y + matrix.e,
        matrix.b * x + matrix.d * y + matrix.f,
    )


def _xy(point: se.Point) -> Point:
    return float(point[0]), float(point[1])


def _between(a: Point, b: Point, t: float) -> Point:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _cubics(path: se.Path):
    """Each drawn segment of ``path`` as 4 control points (x, y)."""
    for segment in path:
        if isinstance(segment, se.Move) or segment.start is None or segment.end is None:
            continue
        start, end = _xy(segment.start), _xy(segment.end)
        if isinstance(segment, se.CubicBezier):
            yield start, _xy(segment.control1), _xy(segment.control2), end
        elif isinstance(segment, se.QuadraticBezier):
            # the same curve raised to degree 3
            control = _xy(segment.control)
            yield start, _between(start, control, 2 / 3), _between(end, control, 2 / 3), end
        elif isinstance(segment, se.Arc) and segment.rx and segment.ry:
            for cubic in segment.as_cubic_curves():
                yield (
                    _xy(cubic.start),
                    _xy(cubic.control1),
                    _xy(cubic.control2),
                    _xy(cubic.end),
                )
        elif start != end:  # a line, a close path, or an arc of radius 0 (a line, says SVG)
            yield start, _between(start, end, 1 / 3), _between(start, end, 2 / 3), end
