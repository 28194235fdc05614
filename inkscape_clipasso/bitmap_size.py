"""A bitmap's pixel size read from its header, with the standard library only.

Inkscape's Python has no Pillow. The size is only needed before a job is submitted, to turn a
stroke width in document units into pixels of the daemon's 224-pixel canvas; placement itself
uses the size the daemon reports. Sizes are as displayed: a JPEG's EXIF orientation 5-8
(a quarter turn) swaps width and height, as the daemon and Inkscape both do.
"""

from __future__ import annotations

import struct

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def bitmap_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in displayed pixels of a PNG, JPEG, GIF, WebP or BMP; None otherwise."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data.startswith(b"BM"):
            width, height = struct.unpack("<ii", data[18:26])
            return (width, abs(height))
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height)
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return (width & 0x3FFF, height & 0x3FFF)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position, orientation, size = 2, 1, None
    while position + 4 <= len(data) and size is None:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:]) or orientation
        elif marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", segment[1:5])
            size = (width, height)
        elif marker == 0xDA:
            return None
        position += 2 + length
    if size is None:
        return None
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _exif_orientation(tiff: bytes) -> int | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    (first_ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[first_ifd : first_ifd + 2])
    for index in range(count):
        entry = first_ifd + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
        if tag == 0x0112 and kind == 3:
            return struct.unpack(order + "H", tiff[entry + 8 : entry + 10])[0]
    return None
