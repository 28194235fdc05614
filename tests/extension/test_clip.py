"""Keep strokes inside the photo: the level layers are clipped to the photo's visible area.

The paths themselves stay whole (their points are checked in test_placement); only a clipPath
on each level layer hides what runs past the photo's edges. Expected areas are computed here
from the SVG rules for preserveAspectRatio, not with the extension's code.
"""

from __future__ import annotations

import inkex
import pytest
from ext_helpers import (
    apply,
    by_id,
    data_uri,
    make_png,
    matmul,
    rotate,
    run_extension,
    svg_doc,
    translate,
)

TOLERANCE = 1e-3


def sketch(tmp_path, fake, body: str, *args: str):
    path = tmp_path / "in.svg"
    path.write_text(svg_doc(body))
    run = run_extension(path, "--id=img1", f"--url={fake.url}", "--levels=2,3", *args)
    assert run.status == 0, run.stderr
    assert run.stderr == ""
    return run.svg


def clip_rect(root, layer_id: str):
    """The one rect of the clipPath a layer points at."""
    reference = by_id(root, layer_id).get("clip-path")
    assert reference and reference.startswith("url(#"), reference
    clip = by_id(root, reference[5:-1])
    assert clip.tag.endswith("clipPath") and clip.get("clipPathUnits") == "userSpaceOnUse"
    (rect,) = list(clip)
    return rect


def rect_box(rect) -> tuple[float, ...]:
    return tuple(float(rect.get(name)) for name in ("x", "y", "width", "height"))


@pytest.mark.parametrize(
    ("aspect", "area"),
    [
        # a 50 x 25 bitmap in a 100 x 100 box at (10, 20): where it is drawn
        ("", (10, 45, 100, 50)),  # default xMidYMid meet: letterboxed
        ("xMinYMin meet", (10, 20, 100, 50)),
        ("xMaxYMax", (10, 70, 100, 50)),
        ("none", (10, 20, 100, 100)),
        ("xMidYMid slice", (10, 20, 100, 100)),  # cropped to the viewport
    ],
)
def test_level_layers_are_clipped_to_the_visible_area(tmp_path, fake_daemon, aspect, area):
    extra = f'preserveAspectRatio="{aspect}"' if aspect else ""
    png = data_uri(make_png(50, 25))
    body = f'<image id="img1" x="10" y="20" width="100" height="100" {extra} xlink:href="{png}"/>'
    root = sketch(tmp_path, fake_daemon, body)
    for count in (2, 3):
        rect = clip_rect(root, f"clipasso-img1-level-{count}")
        assert rect_box(rect) == pytest.approx(area, abs=TOLERANCE)
    # the paths are not cut: every stroke keeps its 4 points
    assert by_id(root, "clipasso-img1-level-3-stroke-1").get("d").count(",") == 4


def test_clip_follows_a_rotated_image_in_a_group(tmp_path, fake_daemon):
    png = data_uri(make_png(20, 10))
    body = (
        '<g id="g1" transform="translate(30,5)">'
        f'<image id="img1" x="2" y="3" width="40" height="20" transform="rotate(90)" '
        f'preserveAspectRatio="none" xlink:href="{png}"/></g>'
    )
    root = sketch(tmp_path, fake_daemon, body)
    rect = clip_rect(root, "clipasso-img1-level-2")
    x, y, w, h = rect_box(rect)
    expected = matmul(translate(30, 5), rotate(90))
    found = inkex.Transform(rect.get("transform"))
    for px, py in ((x, y), (x + w, y + h)):
        ex, ey = apply(expected, px, py)
        point = found.apply_to_point((px, py))
        assert abs(point.x - ex) < TOLERANCE and abs(point.y - ey) < TOLERANCE
    assert (x, y, w, h) == pytest.approx((2, 3, 40, 20), abs=TOLERANCE)


def test_an_image_clip_is_respected_too(tmp_path, fake_daemon):
    png = data_uri(make_png(32, 24))
    body = (
        '<defs><clipPath id="c1"><circle id="circ" cx="50" cy="50" r="20"/></clipPath></defs>'
        f'<image id="img1" x="20" y="30" width="64" height="48" clip-path="url(#c1)" '
        f'preserveAspectRatio="none" xlink:href="{png}"/>'
    )
    root = sketch(tmp_path, fake_daemon, body)
    assert by_id(root, "clipasso-img1").get("clip-path") == "url(#clipasso-img1-clip)"
    assert rect_box(clip_rect(root, "clipasso-img1-level-2")) == pytest.approx((20, 30, 64, 48))


def test_clip_off_leaves_no_clip_paths(tmp_path, fake_daemon):
    png = data_uri(make_png(32, 24))
    body = (
        '<defs><clipPath id="c1"><circle id="circ" cx="50" cy="50" r="20"/></clipPath></defs>'
        f'<image id="img1" width="64" height="48" clip-path="url(#c1)" xlink:href="{png}"/>'
    )
    root = sketch(tmp_path, fake_daemon, body, "--clip=false")
    assert root.xpath("//*[starts-with(@id, 'clipasso')][@clip-path]") == []
    assert root.xpath("//*[local-name()='clipPath'][starts-with(@id, 'clipasso')]") == []
