"""Bitmap sizes from headers (as displayed), used to convert document widths to canvas px."""

from __future__ import annotations

import io
import struct

import pytest
from ext_helpers import make_png

from inkscape_clipasso.bitmap_size import bitmap_size


def jpeg(width: int, height: int, orientation: int | None) -> bytes:
    """A JPEG header: SOI, an optional EXIF orientation (little-endian TIFF), SOF0, SOS."""
    out = b"\xff\xd8"
    if orientation is not None:
        tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
        tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
        app1 = b"Exif\x00\x00" + tiff
        out += b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    out += b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
    return out + b"\xff\xda\x00\x02"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (make_png(13, 7), (13, 7)),
        (jpeg(40, 30, None), (40, 30)),
        (jpeg(40, 30, 1), (40, 30)),
        (jpeg(40, 30, 6), (30, 40)),  # a quarter turn swaps the sides
        (jpeg(40, 30, 8), (30, 40)),
        (b"GIF89a" + struct.pack("<HH", 21, 9) + b"\x00" * 8, (21, 9)),
        (b"BM" + b"\x00" * 16 + struct.pack("<ii", 12, -5) + b"\x00" * 30, (12, 5)),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8X"
            + b"\x00" * 8
            + (99).to_bytes(3, "little")
            + (49).to_bytes(3, "little"),
            (100, 50),
        ),
        (b"not an image", None),
        (b"\x89PNG\r\n\x1a\n", None),
    ],
)
def test_sizes(data, size):
    assert bitmap_size(data) == size


def test_agrees_with_pillow_on_a_rotated_phone_photo():
    image_module = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    buffer = io.BytesIO()
    exif = image_module.Exif()
    exif[0x0112] = 6
    image_module.new("RGB", (64, 24), (10, 20, 30)).save(buffer, "JPEG", exif=exif)
    data = buffer.getvalue()
    expected = ImageOps.exif_transpose(image_module.open(io.BytesIO(data))).size
    assert bitmap_size(data) == expected == (24, 64)
