"""The user's paths as start strokes in the photo's pixels (stroke_import, issue 18 part 3).

Expected values are worked out here by hand from the SVG rules (path commands, transforms,
preserveAspectRatio), with the matrix maths of ext_helpers, not with the extension's code or
inkex's Transform; the round trip goes the other way through today's placement.
"""

from __future__ import annotations

import itertools
import math
import random

import inkex
import pytest
from ext_helpers import apply, data_uri, make_png, matmul, rotate, scale, svg_doc, translate

from inkscape_clipasso.placement import place_image
from inkscape_clipasso.stroke_import import (
    all_strokes,
    element_cubics,
    import_strokes,
    stroke_elements,
)

EXACT = 1e-9


def load(body: str, **doc: str) -> inkex.SvgDocumentElement:
    return inkex.load_svg(svg_doc(body, **doc).encode()).getroot()


def cubics_of(d: str) -> list[tuple]:
    return element_cubics(inkex.PathElement.new(d))


def assert_close(found, expected, tolerance=EXACT):
    assert len(found) == len(expected), (found, expected)
    for stroke, want in zip(found, expected, strict=True):
        assert len(stroke) == 4
        for (fx, fy), (ex, ey) in zip(stroke, want, strict=True):
            assert abs(fx - ex) <= tolerance and abs(fy - ey) <= tolerance, (found, expected)


def line(a, b):
    """A straight segment as a cubic: inkex puts the handles on the end points."""
    return (a, a, b, b)


def quad(p0, q, p2):
    """The exact cubic of a quadratic: handles two thirds of the way to its control point."""
    return (
        p0,
        (p0[0] + 2 / 3 * (q[0] - p0[0]), p0[1] + 2 / 3 * (q[1] - p0[1])),
        (p2[0] + 2 / 3 * (q[0] - p2[0]), p2[1] + 2 / 3 * (q[1] - p2[1])),
        p2,
    )


# --- every path command -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        ("M 1,2 L 5,6", [line((1, 2), (5, 6))]),
        ("m 1,2 l 4,4", [line((1, 2), (5, 6))]),
        ("M 1,2 H 7", [line((1, 2), (7, 2))]),
        ("M 1,2 h 6", [line((1, 2), (7, 2))]),
        ("M 1,2 V 9", [line((1, 2), (1, 9))]),
        ("M 1,2 v 7", [line((1, 2), (1, 9))]),
        ("M 0,0 C 1,2 3,4 5,6", [((0, 0), (1, 2), (3, 4), (5, 6))]),
        ("m 1,1 c 1,2 3,4 5,6", [((1, 1), (2, 3), (4, 5), (6, 7))]),
        (
            "M 0,0 C 1,2 3,4 5,6 S 9,8 10,10",
            [((0, 0), (1, 2), (3, 4), (5, 6)), ((5, 6), (7, 8), (9, 8), (10, 10))],
        ),
        (
            "M 0,0 c 1,2 3,4 5,6 s 4,2 5,4",
            [((0, 0), (1, 2), (3, 4), (5, 6)), ((5, 6), (7, 8), (9, 8), (10, 10))],
        ),
        ("M 0,0 Q 3,6 6,0", [quad((0, 0), (3, 6), (6, 0))]),
        ("m 0,0 q 3,6 6,0", [quad((0, 0), (3, 6), (6, 0))]),
        (
            "M 0,0 Q 3,6 6,0 T 12,0",
            [quad((0, 0), (3, 6), (6, 0)), quad((6, 0), (9, -6), (12, 0))],
        ),
        (
            "M 0,0 q 3,6 6,0 t 6,0",
            [quad((0, 0), (3, 6), (6, 0)), quad((6, 0), (9, -6), (12, 0))],
        ),
        (
            "M 0,0 q 3,6 6,0 t 6,0 t 6,0",
            [
                quad((0, 0), (3, 6), (6, 0)),
                quad((6, 0), (9, -6), (12, 0)),
                quad((12, 0), (15, 6), (18, 0)),
            ],
        ),
        ("M 1,1 L 4,4 T 7,1", [line((1, 1), (4, 4)), quad((4, 4), (4, 4), (7, 1))]),
        (
            "M 0,0 c 1,2 3,4 5,6 s 4,2 5,4 s 1,1 2,2",
            [
                ((0, 0), (1, 2), (3, 4), (5, 6)),
                ((5, 6), (7, 8), (9, 8), (10, 10)),
                ((10, 10), (11, 12), (11, 11), (12, 12)),
            ],
        ),
        ("M 0,0 L 1,1 S 3,3 4,0", [line((0, 0), (1, 1)), ((1, 1), (1, 1), (3, 3), (4, 0))]),
        (
            "M 0,0 L 4,0 L 4,3 Z",
            [line((0, 0), (4, 0)), line((4, 0), (4, 3)), line((4, 3), (0, 0))],
        ),
        (
            "m 0,0 l 4,0 l 0,3 z",
            [line((0, 0), (4, 0)), line((4, 0), (4, 3)), line((4, 3), (0, 0))],
        ),
        # two subpaths: a stroke per segment of each, nothing joins them
        ("M 0,0 L 1,0 M 5,5 L 6,6", [line((0, 0), (1, 0)), line((5, 5), (6, 6))]),
    ],
)
def test_each_command_gives_its_cubics(d, expected):
    assert_close(cubics_of(d), expected)


@pytest.mark.parametrize("d", ["M 10,0 A 10,10 0 0 1 -10,0", "m 10,0 a 10,10 0 0 1 -20,0"])
def test_an_arc_becomes_cubics_on_its_circle(d):
    cubics = cubics_of(d)
    assert len(cubics) >= 2
    assert cubics[0][0] == pytest.approx((10, 0), abs=EXACT)
    assert cubics[-1][3] == pytest.approx((-10, 0), abs=1e-9)
    for first, second in itertools.pairwise(cubics):
        assert first[3] == pytest.approx(second[0], abs=EXACT)  # joined end to start
    for p0, p1, p2, p3 in cubics:
        for t in (0.25, 0.5, 0.75):
            s = 1 - t
            x = s**3 * p0[0] + 3 * s * s * t * p1[0] + 3 * s * t * t * p2[0] + t**3 * p3[0]
            y = s**3 * p0[1] + 3 * s * s * t * p1[1] + 3 * s * t * t * p2[1] + t**3 * p3[1]
            assert math.hypot(x, y) == pytest.approx(10, abs=0.01)
            assert y >= -1e-9  # sweep 1: the positive angle direction, through (0, 10)


def test_zero_length_segments_are_dropped():
    # a repeated point, a closing Z on the start point, and a lone moveto give nothing
    assert_close(
        cubics_of("M 0,0 L 0,0 L 3,4 L 0,0 Z M 7,7"),
        [line((0, 0), (3, 4)), line((3, 4), (0, 0))],
    )
    assert cubics_of("M 5,5") == []
    assert cubics_of("M 5,5 Z") == []
    # a loop that ends where it started is not of zero length
    assert len(cubics_of("M 0,0 C 5,5 -5,5 0,0")) == 1


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ('<line x1="1" y1="2" x2="5" y2="6"/>', [line((1, 2), (5, 6))]),
        (
            '<polyline points="0,0 4,0 4,3"/>',
            [line((0, 0), (4, 0)), line((4, 0), (4, 3))],
        ),
        (
            '<polygon points="0,0 4,0 4,3"/>',
            [line((0, 0), (4, 0)), line((4, 0), (4, 3)), line((4, 3), (0, 0))],
        ),
        (
            '<rect x="1" y="2" width="3" height="4"/>',
            [
                line((1, 2), (4, 2)),
                line((4, 2), (4, 6)),
                line((4, 6), (1, 6)),
                line((1, 6), (1, 2)),
            ],
        ),
    ],
)
def test_basic_shapes(element, expected):
    root = load(f'<g id="g1">{element}</g>')
    (shape,) = stroke_elements([root.getElementById("g1")])
    assert_close(element_cubics(shape), expected)


def test_circle_is_cubics_on_the_circle():
    root = load('<circle id="c" cx="5" cy="5" r="2"/>')
    cubics = element_cubics(root.getElementById("c"))
    assert len(cubics) >= 4  # inkex 1.2: 4 arcs' cubics; 1.4: 6
    assert cubics[0][0] == pytest.approx(cubics[-1][3], abs=EXACT)  # closed
    for p0, *_ in cubics:
        assert math.hypot(p0[0] - 5, p0[1] - 5) == pytest.approx(2, abs=EXACT)


# --- which elements are strokes -----------------------------------------------------------


def test_a_selected_layer_gives_its_visible_paths_in_document_order():
    root = load(
        '<g id="layer" inkscape:groupmode="layer">'
        '  <path id="a" d="M 0,0 L 1,1"/>'
        '  <g id="hidden" style="display:none"><path id="h" d="M 0,0 L 2,2"/></g>'
        '  <g id="inner" transform="translate(1,1)"><path id="b" d="M 0,0 L 3,3"/></g>'
        '  <clipPath id="cp"><rect id="r" width="1" height="1"/></clipPath>'
        '  <text id="t">not a stroke</text>'
        '  <path id="c" d="M 0,0 L 4,4"/>'
        "</g>"
    )
    layer, c, a = (root.getElementById(i) for i in ("layer", "c", "a"))
    found = stroke_elements([c, layer, a])  # a path selected with its layer counts once
    assert [element.get("id") for element in found] == ["a", "b", "c"]


# --- through transforms and the photo's placement -------------------------------------------

PNG_W, PNG_H = 40, 20


def photo(extra: str = "", x=10, y=20, w=80, h=40, transform="") -> str:
    attribute = f' transform="{transform}"' if transform else ""
    return (
        f'<image id="img1" x="{x}" y="{y}" width="{w}" height="{h}" {extra}{attribute} '
        f'xlink:href="{data_uri(make_png(PNG_W, PNG_H))}"/>'
    )


def strokes_in_pixels(root, *ids):
    image = root.getElementById("img1")
    placement = place_image(image, PNG_W, PNG_H)
    elements = stroke_elements([root.getElementById(i) for i in ids])
    return all_strokes(import_strokes(placement, elements))


def test_nested_transforms_on_both_sides_are_undone():
    photo_side = matmul(translate(5, -3), rotate(30, 40, 40))
    path_side = matmul(matmul(translate(2, 7), scale(1.5, 0.5)), rotate(-20))
    root = load(
        '<g inkscape:groupmode="layer" transform="translate(5,-3)">'
        f'  <g transform="rotate(30,40,40)">{photo("", 10, 20, 80, 40)}</g>'
        "</g>"
        '<g id="mine" inkscape:groupmode="layer" transform="translate(2,7)">'
        '  <g transform="scale(1.5,0.5)">'
        '    <path id="p" transform="rotate(-20)" d="M 30,40 C 35,45 40,45 50,40"/>'
        "  </g>"
        "</g>"
    )
    # photo px -> document: photo_side @ translate(x, y) @ scale(w/W, h/H); invert by hand
    a, b, c, d, e, f = matmul(photo_side, matmul(translate(10, 20), scale(80 / PNG_W, 40 / PNG_H)))
    det = a * d - b * c
    inverse = (d / det, -b / det, -c / det, a / det, (c * f - d * e) / det, (b * e - a * f) / det)
    expected = [
        tuple(
            apply(inverse, *apply(path_side, x, y))
            for x, y in ((30, 40), (35, 45), (40, 45), (50, 40))
        )
    ]
    assert_close(strokes_in_pixels(root, "mine"), expected)


def test_the_root_viewbox_plays_no_part():
    """Strokes and photo share the root's user space, so its viewBox scaling cancels out."""
    body = photo("") + '<path id="p" d="M 10,20 L 90,60"/>'
    for doc in ({}, {"width": "100px", "height": "50px", "viewbox": "0 0 400 200"}):
        assert_close(strokes_in_pixels(load(body, **doc), "p"), [line((0, 0), (PNG_W, PNG_H))])


ALIGNS = [f"x{x}Y{y}" for x in ("Min", "Mid", "Max") for y in ("Min", "Mid", "Max")]


@pytest.mark.parametrize("mode", ["meet", "slice"])
@pytest.mark.parametrize("align", ALIGNS)
def test_preserve_aspect_ratio(align, mode):
    # viewport 100 x 100 for a 40 x 20 bitmap: meet scales by 2.5, slice by 5
    x, y, w, h = 10.0, 20.0, 100.0, 100.0
    s = min(w / PNG_W, h / PNG_H) if mode == "meet" else max(w / PNG_W, h / PNG_H)
    fx = {"Min": 0.0, "Mid": 0.5, "Max": 1.0}[align[1:4]]
    fy = {"Min": 0.0, "Mid": 0.5, "Max": 1.0}[align[5:8]]
    left, top = x + (w - PNG_W * s) * fx, y + (h - PNG_H * s) * fy
    pixels = [(1.0, 2.0), (13.0, 5.0), (30.0, 17.0), (39.0, 19.0)]
    doc = [(left + px * s, top + py * s) for px, py in pixels]
    d = "M {} C {} {} {}".format(*(f"{X!r},{Y!r}" for X, Y in doc))
    root = load(
        photo(f'preserveAspectRatio="{align} {mode}"', x, y, w, h) + f'<path id="p" d="{d}"/>'
    )
    assert_close(strokes_in_pixels(root, "p"), [tuple(pixels)], 1e-9)


def test_preserve_aspect_ratio_none_stretches():
    root = load(
        photo('preserveAspectRatio="none"', 0, 0, 100, 100) + '<path id="p" d="M 0,0 L 50,100"/>'
    )
    assert_close(strokes_in_pixels(root, "p"), [line((0, 0), (20, 20))])


def test_clipping_does_not_move_a_stroke():
    """A stroke partly under the photo's clip keeps its points: clipping hides, not maps."""
    body = (
        '<clipPath id="clip"><rect x="10" y="20" width="20" height="20"/></clipPath>'
        + photo('clip-path="url(#clip)"')
        + '<path id="p" d="M 10,20 L 90,60"/>'
    )
    assert_close(strokes_in_pixels(load(body), "p"), [line((0, 0), (PNG_W, PNG_H))])


@pytest.mark.parametrize(
    "extra",
    ['preserveAspectRatio="none"', "", 'preserveAspectRatio="xMaxYMin slice"'],
)
def test_round_trip_pixels_to_document_and_back(extra):
    """Photo pixels -> document by today's placement -> photo pixels, within 1e-6."""
    rng = random.Random(18)
    pixels = [
        tuple((rng.uniform(-5, PNG_W + 5), rng.uniform(-5, PNG_H + 5)) for _ in range(4))
        for _ in range(20)
    ]
    root = load(
        '<g inkscape:groupmode="layer" transform="matrix(0.9,0.2,-0.3,1.1,7,-4)">'
        '  <g transform="rotate(17,30,30) scale(1.3)">'
        f"    {photo(extra, 3.5, 7.25, 70, 90, 'skewX(8)')}"
        "  </g>"
        "</g>"
        '<g id="mine" inkscape:groupmode="layer"/>',
        width="100px",
        height="80px",
        viewbox="-10 5 50 40",
    )
    placement = place_image(root.getElementById("img1"), PNG_W, PNG_H)
    layer = root.getElementById("mine")
    for stroke in pixels:
        points = [placement.point(x, y) for x, y in stroke]
        d = "M {} C {} {} {}".format(*(f"{x!r},{y!r}" for x, y in points))
        path = inkex.PathElement()
        path.set("d", d)  # as written (PathElement.new would round it)
        layer.append(path)
    back = all_strokes(import_strokes(placement, stroke_elements([layer])))
    assert_close(back, pixels, 1e-6)


def test_a_flat_photo_is_a_clear_error():
    root = load(photo("", transform="scale(1,0)") + '<path id="p" d="M 10,20 L 90,60"/>')
    with pytest.raises(ValueError, match="the photo has no area"):
        strokes_in_pixels(root, "p")
