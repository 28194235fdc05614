"""Helpers for the extension's tests: tiny PNGs, test documents, running the effect.

Only the standard library, lxml and inkex: these tests also run under Inkscape's own Python
(Debian's /usr/bin/python3 with the bundled inkex 1.2.0), which has no torch and no Pillow.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import inkex
from lxml import etree

from inkscape_clipasso.clipasso_sketch import ClipassoSketch

REPO = Path(__file__).resolve().parents[2]
SVG_NS = "http://www.w3.org/2000/svg"
INKSCAPE_NS = "http://www.inkscape.org/namespaces/inkscape"
NSS = {"svg": SVG_NS, "inkscape": INKSCAPE_NS}
#: Clark-notation prefixes of the SVG namespace and of the layers' clipasso: record
SVG = f"{{{SVG_NS}}}"
CLIPASSO = "{https://clipasso-inkscape.invalid/ns/1}"


def make_png(width: int, height: int, rgb: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    """A solid-colour 8-bit RGB PNG, written with zlib (no Pillow in Inkscape's Python)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def data_uri(png: bytes) -> str:
    """An embedded image href, as Inkscape writes it."""
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_doc(
    body: str,
    width: str = "210mm",
    height: str = "297mm",
    viewbox: str = "0 0 210 297",
    units: str = "mm",
) -> str:
    """A small Inkscape document around ``body``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"
     xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
     width="{width}" height="{height}" viewBox="{viewbox}" id="svg1">
  <sodipodi:namedview id="namedview1" inkscape:document-units="{units}"/>
  <defs id="defs1"/>
  {body}
</svg>
"""


@dataclass
class Run:
    """What one run of the effect gave: exit status, the output document, stderr."""

    status: int
    output: bytes
    stderr: str

    @property
    def svg(self) -> etree._Element:
        assert self.output, f"no output document; stderr: {self.stderr}"
        return etree.fromstring(self.output)


def run_extension(svg_file: str | os.PathLike, *args: str, document_path: str | None = None) -> Run:
    """Run the effect like Inkscape does (argv, input file, DOCUMENT_PATH); capture everything.

    inkex writes the document to ``output`` only on success; an AbortExtension prints its
    message to stderr and exits with a non-zero status.
    """
    output, stdout, stderr = io.BytesIO(), io.StringIO(), io.StringIO()
    previous = os.environ.get("DOCUMENT_PATH")
    os.environ["DOCUMENT_PATH"] = str(document_path or svg_file)
    status = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                # no browser window from tests: the live view has its own test
                ClipassoSketch().run(["--live_view=false", *args, str(svg_file)], output=output)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        if previous is None:
            os.environ.pop("DOCUMENT_PATH", None)
        else:
            os.environ["DOCUMENT_PATH"] = previous
    assert stdout.getvalue() == "", "the extension printed to stdout (which carries the document)"
    return Run(status, output.getvalue(), stderr.getvalue())


def layers(root: etree._Element) -> list[etree._Element]:
    """Every layer of a document, in document order."""
    return root.xpath("//svg:g[@inkscape:groupmode='layer']", namespaces=NSS)


def by_id(root: etree._Element, element_id: str) -> etree._Element:
    found = root.xpath(f"//*[@id='{element_id}']")
    assert len(found) == 1, f"{len(found)} elements with id {element_id}"
    return found[0]


def path_points(d: str) -> list[tuple[float, float]]:
    """The 4 points of ``M x,y C x,y x,y x,y`` (absolute coordinates)."""
    path = inkex.Path(d).to_absolute()
    points: list[tuple[float, float]] = []
    for segment in path:
        args = list(segment.args)
        points += [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    return points


# --- affine maths written out by hand, independent of inkex's Transform --------------------


def matmul(a: tuple, b: tuple) -> tuple:
    """(a, b, c, d, e, f) matrices as in SVG's matrix(); returns a @ b."""
    a1, b1, c1, d1, e1, f1 = a
    a2, b2, c2, d2, e2, f2 = b
    return (
        a1 * a2 + c1 * b2,
        b1 * a2 + d1 * b2,
        a1 * c2 + c1 * d2,
        b1 * c2 + d1 * d2,
        a1 * e2 + c1 * f2 + e1,
        b1 * e2 + d1 * f2 + f1,
    )


def translate(x: float, y: float) -> tuple:
    return (1.0, 0.0, 0.0, 1.0, x, y)


def scale(sx: float, sy: float | None = None) -> tuple:
    return (sx, 0.0, 0.0, sx if sy is None else sy, 0.0, 0.0)


def rotate(degrees: float, cx: float = 0.0, cy: float = 0.0) -> tuple:
    r = math.radians(degrees)
    about = (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0.0, 0.0)
    return matmul(translate(cx, cy), matmul(about, translate(-cx, -cy)))


def apply(m: tuple, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = m
    return (a * x + c * y + e, b * x + d * y + f)
