"""Reading users' images: every common mode, orientation, and every way an image can be bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso_server.engine.errors import BadImageError, ImageTooLargeError
from clipasso_server.engine.image_input import decode_image, image_to_canvas, load_image_file


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_rgba_is_composited_over_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (255, 0, 0, 255))
    rgb = decode_image(encode(image))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 1)) == (255, 0, 0)


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    image.putpixel((2, 2), 1)
    rgb = decode_image(encode(image, transparency=0))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((2, 2)) == (0, 255, 0)


def test_sixteen_bit_greyscale():
    array = np.full((4, 4), 65535, dtype=np.uint16)
    array[0, 0] = 0
    array[1, 1] = 32768
    rgb = decode_image(
        encode(
            Image.fromarray(array).convert("I;16")
            if array.dtype != np.uint16
            else Image.frombytes("I;16", (4, 4), array.astype("<u2").tobytes())
        )
    )
    assert rgb.getpixel((0, 0)) == (0, 0, 0)
    assert rgb.getpixel((3, 3)) == (255, 255, 255)
    assert rgb.getpixel((1, 1))[0] == pytest.approx(128, abs=1)


def test_cmyk_jpeg():
    rgb = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    red, green, blue = rgb.getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 3), (255, 255, 255))
    image.putpixel((0, 0), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgb = decode_image(encode(image, "PNG", exif=exif))
    assert rgb.size == (3, 6)
    assert rgb.getpixel((2, 0)) == (0, 0, 0)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", bytes(range(256)) * 4],
    ids=["empty", "text", "noise"],
)
def test_unreadable_data(data):
    with pytest.raises(BadImageError):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images(fmt):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    data = encode(noise, fmt)
    with pytest.raises(BadImageError):
        decode_image(data[: len(data) // 2])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (its pixel data is absent)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(_png_header_claiming(100_000, 100_000))
    with pytest.raises(ImageTooLargeError):
        decode_image(encode(Image.new("RGB", (100, 100))), max_pixels=9_999)


def test_files(tmp_path):
    with pytest.raises(BadImageError, match="no such file"):
        load_image_file(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        load_image_file(tmp_path / "empty.png")
    (tmp_path / "ok.png").write_bytes(encode(Image.new("RGB", (5, 7), (1, 2, 3))))
    assert load_image_file(tmp_path / "ok.png").size == (5, 7)


def test_canvas_keeps_pixels_when_sizes_match():
    array = np.random.default_rng(1).integers(0, 255, (224, 224, 3), np.uint8)
    tensor, placement = image_to_canvas(Image.fromarray(array))
    assert placement.scale == 1.0 and placement.offset_x == 0 and placement.offset_y == 0
    assert torch.equal(
        (tensor * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(array)
    )


@pytest.mark.parametrize("size", [(448, 224), (100, 300)])
def test_canvas_pads_with_white_and_maps_corners(size):
    tensor, placement = image_to_canvas(Image.new("RGB", size, (0, 0, 0)))
    corners = torch.tensor([[0.0, 0.0], [size[0], size[1]]], dtype=torch.float64)
    canvas = placement.to_canvas(corners)
    assert torch.allclose(placement.to_image(canvas), corners)
    # the image fills one axis fully and is centred on the other
    (x0, y0), (x1, y1) = canvas.tolist()
    assert min(x0, y0) == pytest.approx(0, abs=0.5) and max(x1, y1) == pytest.approx(224, abs=0.5)
    assert x0 + x1 == pytest.approx(224, abs=1.5) and y0 + y1 == pytest.approx(224, abs=1.5)
    assert tensor[:, 112, 112].max() < 0.05  # the black image in the middle
    if size[0] > size[1]:
        assert tensor[:, 2, 112].min() == 1.0  # white padding above
    else:
        assert tensor[:, 112, 2].min() == 1.0  # white padding left
