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


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0, 1000, 65535], [0, 4, 255]), ([0, 100, 255], [0, 100, 255])],
    ids=["16-bit-range", "8-bit-range"],
)
def test_thirty_two_bit_greyscale(values, expected):
    image = Image.fromarray(np.array([values], dtype=np.int32))
    assert image.mode == "I"
    rgb = decode_image(encode(image, "TIFF"))
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]


def test_float_greyscale():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    rgb = decode_image(encode(image, "TIFF"))
    assert [rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert decode_image(data).getpixel((1, 1)) == (255, 0, 0)


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


def test_zero_size_image_is_refused():
    with pytest.raises(BadImageError):
        decode_image(_png_header_claiming(0, 5))


def test_decompression_bomb_is_refused_before_decoding():
    # 64 megapixels: under Pillow's own limits, over ours; the header has no pixel data, so a
    # decoding attempt would fail as truncated instead
    with pytest.raises(ImageTooLargeError, match="limit of 50,000,000"):
        decode_image(_png_header_claiming(8000, 8000))
    with pytest.raises(ImageTooLargeError):
        decode_image(encode(Image.new("RGB", (100, 100))), max_pixels=9_999)
    assert decode_image(encode(Image.new("RGB", (100, 100))), max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize("side", [10_000, 100_000], ids=["pillow-warning", "pillow-error"])
def test_pillows_bomb_checks_become_image_too_large(side):
    with pytest.raises(ImageTooLargeError):
        decode_image(_png_header_claiming(side, side), max_pixels=10**12)


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


def test_canvas_composites_transparency_over_white():
    tensor, _ = image_to_canvas(Image.new("RGBA", (224, 224), (0, 0, 0, 0)))
    assert tensor.min() == 1.0


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (3000, 7), (1, 1)])
def test_placement_round_trips(size):
    _, placement = image_to_canvas(Image.new("RGB", size))
    points = torch.rand(5, 3, 2, dtype=torch.float64) * torch.tensor(size, dtype=torch.float64)
    assert torch.allclose(placement.to_image(placement.to_canvas(points)), points)
    assert torch.allclose(placement.to_canvas(placement.to_image(points)), points)


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
