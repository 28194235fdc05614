"""The SVG -> start strokes converter (issue 18, part 3) shared by the CLI and the daemon.

Every path command (absolute and relative), the basic shapes, nested transforms, an
``<image>``'s placement under each preserveAspectRatio, the viewBox fallback, and clear
errors. Expected numbers are worked out by hand here, not by the library under test.
"""

from __future__ import annotations

import itertools
import math

import pytest

from clipasso_server.start_svg import StartSvgError, strokes_from_svg

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def _svg(body: str, root: str = 'viewBox="0 0 200 100"') -> str:
    return f"<svg {NS} {root}>{body}</svg>"


def _close(strokes, expected, tolerance=1e-9) -> None:
    assert len(strokes) == len(expected), (len(strokes), len(expected))
    for got, want in zip(strokes, expected, strict=True):
        for (x, y), (u, v) in zip(got, want, strict=True):
            assert abs(x - u) <= tolerance and abs(y - v) <= tolerance, (got, want)


def _line(a, b):
    third = ((b[0] - a[0]) / 3, (b[1] - a[1]) / 3)
    return (a, (a[0] + third[0], a[1] + third[1]), (a[0] + 2 * third[0], a[1] + 2 * third[1]), b)


ABSOLUTE = (
    "M 10,10 L 20,10 H 30 V 20 C 30,30 40,30 40,20 S 50,10 50,20 Q 60,30 70,20 T 90,20 "
    "A 10 10 0 0 1 110,20 Z"
)
RELATIVE = (
    "m 10,10 l 10,0 h 10 v 10 c 0,10 10,10 10,0 s 10,-10 10,0 q 10,10 20,0 t 20,0 "
    "a 10 10 0 0 1 20,0 z"
)


@pytest.mark.parametrize("d", [ABSOLUTE, RELATIVE], ids=["absolute", "relative"])
def test_every_path_command_becomes_cubic_strokes(d):
    strokes = strokes_from_svg(_svg(f'<path d="{d}"/>'), 200, 100, limit=256)
    two_thirds = 2 / 3
    before_arc = [
        _line((10, 10), (20, 10)),
        _line((20, 10), (30, 10)),
        _line((30, 10), (30, 20)),
        ((30, 20), (30, 30), (40, 30), (40, 20)),
        # S reflects the previous second control point (40,30) about (40,20)
        ((40, 20), (40, 10), (50, 10), (50, 20)),
        # Q raised to a cubic: the controls at 2/3 of the way to the quadratic's control
        (
            (50, 20),
            (50 + two_thirds * 10, 20 + two_thirds * 10),
            (70 - two_thirds * 10, 20 + two_thirds * 10),
            (70, 20),
        ),
        # T reflects (60,30) about (70,20): control (80,10)
        (
            (70, 20),
            (70 + two_thirds * 10, 20 - two_thirds * 10),
            (90 - two_thirds * 10, 20 - two_thirds * 10),
            (90, 20),
        ),
    ]
    _close(strokes[: len(before_arc)], before_arc)
    arc, closing = strokes[len(before_arc) : -1], strokes[-1]
    assert len(arc) >= 2
    assert arc[0][0] == pytest.approx((90, 20)) and arc[-1][3] == pytest.approx((110, 20))
    for stroke in arc:
        # each piece ends on the circle around (100, 20), on its upper half (sweep flag 1)
        x, y = stroke[3]
        assert math.hypot(x - 100, y - 20) == pytest.approx(10, abs=1e-9)
        assert y <= 20 + 1e-9
    for a, b in itertools.pairwise(arc):
        assert a[3] == pytest.approx(b[0])
    _close([closing], [_line((110, 20), (10, 10))])


def test_shapes_become_strokes_and_zero_length_segments_are_left_out():
    body = (
        '<polyline points="0,0 10,0 10,10"/>'
        '<polygon points="20,0 30,0 30,10"/>'
        '<line x1="40" y1="0" x2="50" y2="5"/>'
        '<path d="M 60,0 L 70,0 L 60,0 Z"/>'  # the close is where the path began: no stroke
        '<path d="M 80,0 A 0 0 0 0 1 90,0"/>'  # an arc of radius 0 is a line
    )
    strokes = strokes_from_svg(_svg(body), 200, 100, limit=256)
    _close(
        strokes,
        [
            _line((0, 0), (10, 0)),
            _line((10, 0), (10, 10)),
            _line((20, 0), (30, 0)),
            _line((30, 0), (30, 10)),
            _line((30, 10), (20, 0)),
            _line((40, 0), (50, 5)),
            _line((60, 0), (70, 0)),
            _line((70, 0), (60, 0)),
            _line((80, 0), (90, 0)),
        ],
    )


def test_hidden_and_unrendered_paths_are_not_strokes():
    body = (
        '<defs><path id="p" d="M 0,0 L 1,1"/></defs>'
        '<clipPath id="c"><path d="M 0,0 L 2,2"/></clipPath>'
        '<path d="M 0,0 L 3,3" style="display:none"/>'
        '<use xlink:href="#p" transform="translate(10,0)"/>'
    )
    strokes = strokes_from_svg(_svg(body), 200, 100, limit=256)
    _close(strokes, [_line((10, 0), (11, 1))])


PHOTO = (200, 50)
#: image box x=10 y=20 width=100 height=50 for a 200 x 50 photo: photo px -> image user units
PLACEMENTS = {
    "none": lambda u, v: (10 + 0.5 * u, 20 + v),
    "": lambda u, v: (10 + 0.5 * u, 32.5 + 0.5 * v),  # default: xMidYMid meet
    "xMaxYMax meet": lambda u, v: (10 + 0.5 * u, 45 + 0.5 * v),
    "xMidYMid slice": lambda u, v: (-40 + u, 20 + v),
    "xMinYMin slice": lambda u, v: (10 + u, 20 + v),
}
STROKES = (
    ((0.0, 0.0), (33.25, 12.5), (150.125, 40.0), (200.0, 50.0)),
    ((-20.5, 7.75), (3.0, -4.0), (210.0, 60.0), (99.999, 0.001)),
)


def _d(points) -> str:
    (a, b), (c, d), (e, f), (g, h) = points
    return f"M {a!r},{b!r} C {c!r},{d!r} {e!r},{f!r} {g!r},{h!r}"


@pytest.mark.parametrize("aspect", list(PLACEMENTS), ids=lambda a: a or "default")
def test_strokes_map_into_the_images_pixels_through_nested_transforms(aspect):
    """Photo px -> document -> photo px within 1e-6: the image sits in a scaled, moved group;
    one path is drawn beside it in the same group, one at the root in root coordinates, one
    in a rotated group with the rotation undone by its own transform."""
    place = PLACEMENTS[aspect]
    group = "translate(5,7) scale(2)"

    def in_root(u, v):
        x, y = place(u, v)
        return 5 + 2 * x, 7 + 2 * y

    def path(points, mapping, transform=""):
        mapped = [mapping(u, v) for u, v in points]
        attribute = f' transform="{transform}"' if transform else ""
        return f'<path d="{_d(mapped)}"{attribute}/>'

    pa = f' preserveAspectRatio="{aspect}"' if aspect else ""
    body = (
        f'<g transform="{group}">'
        f'<image x="10" y="20" width="100" height="50"{pa} xlink:href="photo.png"/>'
        f"{path(STROKES[0], place)}</g>"
        f"{path(STROKES[1], in_root)}"
        f'<g transform="rotate(30)"><g transform="rotate(-30)">{path(STROKES[0], in_root)}</g></g>'
    )
    # the root's own size and viewBox scale everything alike: they must not matter
    svg = _svg(body, 'width="150mm" height="90mm" viewBox="-3 -4 300 180"')
    strokes = strokes_from_svg(svg, *PHOTO, limit=256)
    _close(strokes, [STROKES[0], STROKES[1], STROKES[0]], tolerance=1e-6)


@pytest.mark.parametrize(
    ("root", "photo", "mapping"),
    [
        # the viewBox is the photo, scaled to its size
        (
            'width="400" height="200" viewBox="5 10 100 50"',
            (200, 100),
            lambda x, y: ((x - 5) * 2, (y - 10) * 2),
        ),
        # no viewBox: the document's size is the photo
        ('width="100" height="50"', (200, 100), lambda x, y: (2 * x, 2 * y)),
        # nothing at all: user units are photo pixels
        ("", (200, 100), lambda x, y: (x, y)),
    ],
    ids=["viewbox", "size", "nothing"],
)
def test_without_an_image_the_viewbox_is_the_photo(root, photo, mapping):
    points = ((6.0, 11.0), (20.0, 30.0), (50.0, 12.5), (104.0, 59.0))
    strokes = strokes_from_svg(_svg(f'<path d="{_d(points)}"/>', root), *photo, limit=256)
    _close(strokes, [tuple(mapping(x, y) for x, y in points)], tolerance=1e-9)


@pytest.mark.parametrize(
    ("svg", "words"),
    [
        ("<svg", "not a readable SVG"),
        ("", "not a readable SVG"),
        (b"\xff\xfe<svg>", "not a readable SVG"),
        (_svg('<text x="1" y="1">no strokes</text>'), "no paths"),
        (_svg('<path d="M 0,0 L 1,1" style="display:none"/>'), "no paths"),
        (_svg('<path d="M 0,0' + " l 1,1" * 9 + '"/>'), "more than 8 strokes"),
    ],
)
def test_svgs_without_usable_strokes_are_one_clear_line(svg, words):
    with pytest.raises(StartSvgError, match=words) as caught:
        strokes_from_svg(svg, 200, 100, limit=8)
    assert "\n" not in caught.value.message


def test_the_converter_imports_no_torch():
    """The daemon's HTTP process runs it, and that process never loads torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from clipasso_server.start_svg import strokes_from_svg\n"
        'strokes_from_svg(\'<svg xmlns="http://www.w3.org/2000/svg"><path d="M0,0 L1,1"/>'
        "</svg>', 10, 10, limit=5)\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
