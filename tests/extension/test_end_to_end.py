"""End to end with the real programs: the real daemon (tiny test models) on loopback, the real
Inkscape running the installed extension headless (1.2 on the host, 1.4 in the Debian 13 root
of tests/inkscape14/run.sh), then Inkscape's own PNG export.

The daemon runs in the project's venv (CLIPASSO_PYTHON, default .venv/bin/python), because
these tests also run under Inkscape's Python, which has no torch. The strokes come from a
real, short optimisation, so their exact positions are unknown; what must hold is that they lie
over their image (within the reach of the start strokes' random spread) and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from ext_helpers import (
    INKSCAPE_NS,
    by_id,
    data_uri,
    make_png,
    matmul,
    path_points,
    rotate,
    translate,
)
from inkscape_runner import export_png, read_png, write_preferences
from inkscape_runner import run_extension as run_inkscape
from lxml import etree
from serve_daemon import install_extension

pytestmark = [pytest.mark.inkscape, pytest.mark.slow]

PIXELS = 48  # square bitmaps: the canvas has no padding, so strokes start inside the image
#: How far a stroke may reach past its image, in bitmap pixels: the start strokes' control
#: points are spread 0.05 x canvas around a point of the image, and a few steps move them a
#: pixel or so each, plus half the stroke width.
MARGIN = 0.15 * PIXELS
#: Ink in the PNG may pass the clipped photo's edge by antialiasing only (bitmap pixels).
CLIP_SLACK = 1.0
LEVELS = (2, 4)

# img1: embedded, rotated, in a translated layer; img2: linked, at the root.
IMG1_BOX = (20.0, 30.0, 60.0, 60.0)
IMG2_BOX = (120.0, 40.0, 50.0, 50.0)
IMG1_MATRIX = matmul(translate(10, 5), rotate(10))
IMG2_MATRIX = translate(0, 0)


@pytest.fixture(scope="module")
def sketched(daemon, tmp_path_factory):
    """One Inkscape run on a document with an embedded and a linked image."""
    work = tmp_path_factory.mktemp("inkscape")
    profile = work / "profile"
    install_extension(profile)
    write_preferences(
        profile,
        {
            "url": daemon,
            "levels": ",".join(map(str, LEVELS)),
            "iterations": "2",
            "seeds": "1",
            "loss_model": "test-tiny-rn",
            "saliency_model": "test-tiny-vit",
            "visible_level": "all",
            "timeout": "600",
            "poll_interval": "0.2",
            "live_view": "false",
            # strokes 16 mm wide on 50-60 mm photos spill over the photo's edge unless the
            # level layers' clip path holds (1.2 and 1.4 render group clip paths alike)
            "clip": "true",
            "width_mode": "document",
            "width": "16",
        },
    )
    photos = work / "photos"
    photos.mkdir()
    (photos / "photo.png").write_bytes(make_png(PIXELS, PIXELS, (250, 210, 120)))
    embedded = data_uri(make_png(PIXELS, PIXELS, (140, 220, 250)))
    x1, y1, w1, h1 = IMG1_BOX
    x2, y2, w2, h2 = IMG2_BOX
    document = photos / "in.svg"
    document.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:inkscape="{INKSCAPE_NS}" width="200mm" height="150mm" viewBox="0 0 200 150">
  <g id="layer1" inkscape:groupmode="layer" inkscape:label="Photos" transform="translate(10,5)">
    <image id="img1" x="{x1}" y="{y1}" width="{w1}" height="{h1}" transform="rotate(10)"
           preserveAspectRatio="none" xlink:href="{embedded}"/>
  </g>
  <image id="img2" x="{x2}" y="{y2}" width="{w2}" height="{h2}" preserveAspectRatio="none"
         xlink:href="photo.png"/>
</svg>
""",
        encoding="utf-8",
    )
    output = work / "out.svg"
    done = run_inkscape(profile, document, output, ["img1", "img2"], timeout_s=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert output.is_file(), f"Inkscape wrote nothing; stderr: {done.stderr[-2000:]}"
    return profile, output


def _pixel_of(matrix, box, x: float, y: float) -> tuple[float, float]:
    """Document point -> the image's bitmap pixel (inverse of box then matrix)."""
    a, b, c, d, e, f = matrix
    det = a * d - b * c
    u, v = x - e, y - f
    local = ((d * u - c * v) / det, (-b * u + a * v) / det)
    bx, by, bw, bh = box
    return ((local[0] - bx) * PIXELS / bw, (local[1] - by) * PIXELS / bh)


def _inside(matrix, box, x: float, y: float, margin: float) -> bool:
    px, py = _pixel_of(matrix, box, x, y)
    return -margin <= px <= PIXELS + margin and -margin <= py <= PIXELS + margin


IMAGES = {"img1": (IMG1_MATRIX, IMG1_BOX), "img2": (IMG2_MATRIX, IMG2_BOX)}
XLINK_NS = "http://www.w3.org/1999/xlink"


def test_layers_and_paths_per_level(sketched):
    _, output = sketched
    root = etree.parse(str(output)).getroot()
    for image_id in IMAGES:
        parent = by_id(root, f"clipasso-{image_id}")
        assert parent.getparent() is root
        # img2 is linked and has no label: it is named after its file
        name = {"img1": "img1", "img2": "photo.png"}[image_id]
        assert parent.get(f"{{{INKSCAPE_NS}}}label") == f"CLIPasso: {name}"
        for count in LEVELS:
            level = by_id(root, f"clipasso-{image_id}-level-{count}")
            assert level.get(f"{{{INKSCAPE_NS}}}label") == f"{count} strokes"
            assert level.getparent() is parent
            paths = level.findall("{http://www.w3.org/2000/svg}path")
            assert len(paths) == count


def test_the_linked_photo_still_links_its_file(sketched):
    """The document lies under Inkscape's temporary folder (pytest's tmp_path): Inkscape 1.4
    then breaks relative links after any effect and, in batch mode, hangs on a dialog saying so
    unless the extension returns them absolute (inkscape_clipasso/links.py)."""
    _, output = sketched
    href = by_id(etree.parse(str(output)).getroot(), "img2").get(f"{{{XLINK_NS}}}href")
    parts = urlsplit(href)
    path = Path(url2pathname(parts.path)) if parts.scheme == "file" else output.parent / href
    assert path.resolve() == (output.parent / "photos" / "photo.png").resolve(), href


def test_strokes_lie_over_their_image(sketched):
    _, output = sketched
    root = etree.parse(str(output)).getroot()
    for image_id, (matrix, box) in IMAGES.items():
        other = next(value for key, value in IMAGES.items() if key != image_id)
        for count in LEVELS:
            for index in range(1, count + 1):
                path = by_id(root, f"clipasso-{image_id}-level-{count}-stroke-{index}")
                points = path_points(path.get("d"))
                # end points of the Bézier are on the drawn stroke itself
                for x, y in (points[0], points[-1]):
                    assert _inside(matrix, box, x, y, MARGIN), (image_id, x, y)
                    assert not _inside(*other, x, y, 0.0), (image_id, x, y)


def test_png_ink_only_over_the_images(sketched):
    profile, output = sketched
    png = output.with_suffix(".png")
    dpi = 96.0
    done = export_png(profile, output, png, dpi)
    assert done.returncode == 0, done.stderr[-2000:]
    width, height, rows = read_png(png)
    assert height == round(150 * dpi / 25.4)
    per_unit = dpi / 25.4  # 1 user unit = 1 mm here
    assert width == round(200 * per_unit)
    ink = {name: 0 for name in IMAGES}
    for py, row in enumerate(rows):
        for px in range(width):
            red, green, blue, alpha = row[4 * px : 4 * px + 4]
            if alpha < 128 or red + green + blue > 250:  # not dark: paper or the light photos
                continue
            x, y = (px + 0.5) / per_unit, (py + 0.5) / per_unit
            owners = [n for n, (m, b) in IMAGES.items() if _inside(m, b, x, y, CLIP_SLACK)]
            assert owners, f"ink at ({x:.1f}, {y:.1f}) mm, outside both images"
            for name in owners:
                ink[name] += 1
    assert all(count > 0 for count in ink.values()), ink
