"""Strokes land on the image's pixels: every placement case, checked to 1e-3 user units.

The fake daemon puts stroke control points at known bitmap pixels (corners, centre, quarter
points); the expected document positions are computed here by hand from the SVG rules, with
matrix maths written out in ext_helpers, not with the extension's code or inkex's Transform.
"""

from __future__ import annotations

import math

import pytest
from ext_helpers import (
    apply,
    by_id,
    data_uri,
    make_png,
    matmul,
    path_points,
    rotate,
    run_extension,
    scale,
    svg_doc,
    translate,
)
from fake_daemon import pattern_points

TOLERANCE = 1e-3


def sketch(tmp_path, fake, body: str, *args: str, **doc: str):
    path = tmp_path / "in.svg"
    path.write_text(svg_doc(body, **doc))
    run = run_extension(path, "--id=img1", f"--url={fake.url}", "--levels=2,3", *args)
    assert run.status == 0, run.stderr
    assert run.stderr == ""
    return run.svg


def assert_strokes_at(root, pixel_to_doc, width: int, height: int, levels=(2, 3)) -> None:
    """Every stroke's points equal pixel_to_doc(pattern pixel) within TOLERANCE."""
    for count in levels:
        for index in range(count):
            path = by_id(root, f"clipasso-img1-level-{count}-stroke-{index + 1}")
            assert path.get("transform") is None
            found = path_points(path.get("d"))
            expected = [pixel_to_doc(x, y) for x, y in pattern_points(index, width, height)]
            assert len(found) == 4
            for (fx, fy), (ex, ey) in zip(found, expected, strict=True):
                assert abs(fx - ex) < TOLERANCE and abs(fy - ey) < TOLERANCE, (found, expected)


def image(png: bytes, x=20, y=30, w=64, h=48, extra="") -> str:
    return (
        f'<image id="img1" x="{x}" y="{y}" width="{w}" height="{h}" {extra} '
        f'xlink:href="{data_uri(png)}"/>'
    )


def test_plain_image_scales_pixels_to_its_box(tmp_path, fake_daemon):
    root = sketch(
        tmp_path, fake_daemon, image(make_png(32, 24), extra='preserveAspectRatio="none"')
    )
    assert_strokes_at(root, lambda px, py: (20 + px * 2, 30 + py * 2), 32, 24)


def test_rotated_image(tmp_path, fake_daemon):
    png = make_png(32, 24)
    root = sketch(
        tmp_path,
        fake_daemon,
        image(png, extra='transform="rotate(30)" preserveAspectRatio="none"'),
    )
    r = math.radians(30)

    def to_doc(px, py):
        x, y = 20 + px * 2, 30 + py * 2
        return (x * math.cos(r) - y * math.sin(r), x * math.sin(r) + y * math.cos(r))

    assert_strokes_at(root, to_doc, 32, 24)


def test_nested_in_transformed_groups_and_layers(tmp_path, fake_daemon):
    body = (
        '<g id="layer1" inkscape:groupmode="layer" transform="translate(10,5)">'
        '<g id="g1" transform="scale(0.5,1.5) rotate(-20)">'
        '<g id="g2" transform="matrix(1,0.2,0.1,1,3,-4)">'
        + image(make_png(40, 20), x=5, y=7, w=80, h=40, extra='transform="rotate(90,40,20)"')
        + "</g></g></g>"
    )
    root = sketch(tmp_path, fake_daemon, body)
    chain = matmul(
        translate(10, 5),
        matmul(
            matmul(scale(0.5, 1.5), rotate(-20)),
            matmul((1, 0.2, 0.1, 1, 3, -4), rotate(90, 40, 20)),
        ),
    )
    # 80 x 40 box for a 40 x 20 bitmap: the same aspect ratio, so the default meet changes nothing
    assert_strokes_at(root, lambda px, py: apply(chain, 5 + px * 2, 7 + py * 2), 40, 20)


def test_viewbox_scaled_document_and_document_unit_width(tmp_path, fake_daemon):
    # 1 mm of paper = 4 user units; strokes live in user units like the image does.
    root = sketch(
        tmp_path,
        fake_daemon,
        image(make_png(30, 30), x=100, y=50, w=60, h=60),
        "--width_mode=document",
        "--width=0.5",
        width="100mm",
        height="50mm",
        viewbox="0 0 400 200",
    )
    assert_strokes_at(root, lambda px, py: (100 + px * 2, 50 + py * 2), 30, 30)
    style = by_id(root, "clipasso-img1-level-2-stroke-1").get("style")
    assert "stroke-width:2;" in style  # 0.5 mm * 4 user units per mm
    # the optimisation got the matching canvas width: 2 uu = 1 bitmap px = 224/30 canvas px
    (settings,) = fake_daemon.submitted_settings()
    assert settings.width == pytest.approx(224 / 30, abs=1e-3)


@pytest.mark.parametrize(
    ("aspect", "to_doc"),
    [
        # a 50 x 25 bitmap in a 100 x 100 box at (10, 20)
        ("", lambda px, py: (10 + 2 * px, 20 + 25 + 2 * py)),  # default xMidYMid meet
        ("xMidYMid meet", lambda px, py: (10 + 2 * px, 20 + 25 + 2 * py)),
        ("xMinYMin meet", lambda px, py: (10 + 2 * px, 20 + 2 * py)),
        ("xMaxYMax", lambda px, py: (10 + 2 * px, 20 + 50 + 2 * py)),
        ("none", lambda px, py: (10 + 2 * px, 20 + 4 * py)),
        ("xMidYMid slice", lambda px, py: (10 - 50 + 4 * px, 20 + 4 * py)),
        ("xMaxYMin slice", lambda px, py: (10 - 100 + 4 * px, 20 + 4 * py)),
    ],
)
def test_preserve_aspect_ratio(tmp_path, fake_daemon, aspect, to_doc):
    extra = f'preserveAspectRatio="{aspect}"' if aspect else ""
    root = sketch(
        tmp_path, fake_daemon, image(make_png(50, 25), x=10, y=20, w=100, h=100, extra=extra)
    )
    assert_strokes_at(root, to_doc, 50, 25)


def test_reference_width_scales_with_the_image(tmp_path, fake_daemon):
    root = sketch(tmp_path, fake_daemon, image(make_png(32, 24), extra='transform="scale(3)"'))
    (settings,) = fake_daemon.submitted_settings()
    assert settings.width == 3.0
    # the daemon's width in bitmap px (3 canvas px = 3 * 32 / 224 px), times 2 (box) times 3
    style = by_id(root, "clipasso-img1-level-3-stroke-2").get("style")
    width = float(style.split("stroke-width:")[1].split(";")[0])
    assert width == pytest.approx(3 * 32 / 224 * 2 * 3, abs=1e-4)


def test_image_clip_path_is_carried_over(tmp_path, fake_daemon):
    body = (
        '<defs><clipPath id="c1"><circle id="circ" cx="50" cy="50" r="20"/></clipPath></defs>'
        '<g transform="translate(7,0)">'
        + image(make_png(32, 24), extra='clip-path="url(#c1)" preserveAspectRatio="none"')
        + "</g>"
    )
    root = sketch(tmp_path, fake_daemon, body)
    parent = by_id(root, "clipasso-img1")
    assert parent.get("clip-path") == "url(#clipasso-img1-clip)"
    circle = by_id(root, "clipasso-img1-clip-1")
    assert circle.get("transform").replace(" ", "") in ("translate(7,0)", "translate(7)")


def test_colour_is_sent_and_applied(tmp_path, fake_daemon):
    # Inkscape passes colours as unsigned RGBA integers: 0x33669980 (alpha 128)
    root = sketch(tmp_path, fake_daemon, image(make_png(8, 8)), f"--color={0x33669980}")
    (settings,) = fake_daemon.submitted_settings()
    assert settings.color == "#33669980"
    style = by_id(root, "clipasso-img1-level-2-stroke-1").get("style")
    assert "stroke:#336699;" in style and "stroke-opacity:0.50196" in style


@pytest.mark.parametrize("turn", ["rotate(90)", "rotate(90) scale(2,2)", "rotate(-90,30,30)"])
def test_stroke_widths_survive_rotation(tmp_path, fake_daemon, turn):
    """A quarter turn zeroes the matrix's diagonal: a width scale read from one coefficient
    (a or d) would draw hairlines; the widths must equal those of the unrotated image."""
    png = make_png(32, 24)

    def widths(extra):
        root = sketch(
            tmp_path, fake_daemon, image(png, extra=f"{extra} " + 'preserveAspectRatio="none"')
        )
        style = by_id(root, "clipasso-img1-level-3-stroke-2").get("style")
        return float(style.split("stroke-width:")[1].split(";")[0])

    zoom = 2.0 if "scale" in turn else 1.0
    # 3 canvas px = 3 * 32 / 224 bitmap px, times 2 (the 64 x 48 box for 32 x 24 pixels)
    expected = 3 * 32 / 224 * 2 * zoom
    assert widths(f'transform="{turn}"') == pytest.approx(expected, abs=1e-4)
    assert widths("") == pytest.approx(3 * 32 / 224 * 2, abs=1e-4)
