"""Reading users' images and placing them on the square optimisation canvas.

Users bring anything Pillow reads: RGBA with transparency, palettes, 16-bit scans, CMYK JPEGs,
phone photos rotated by an EXIF tag. Everything becomes plain RGB over white (the sketch's
paper), turned the way the user sees it. The canvas keeps the aspect ratio by padding with
white (the reference squashes the photo), and :class:`CanvasPlacement` maps stroke points back
to the original image's pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from clipasso_server.engine.errors import BadImageError, ImageTooLargeError

#: Decompression-bomb cap: 50 megapixels is more than any phone photo and far below what
#: would exhaust memory (a 50 MP RGB image is 150 MB decoded).
DEFAULT_MAX_PIXELS = 50_000_000


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(f"{what} has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width} x {height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}; scale it down first"
        )


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale -> 8-bit "L".

    ``I;16*`` modes are 16-bit by definition. Mode ``I`` does not say how many bits were used,
    so its values decide: up to 255 is 8-bit data, up to 65535 16-bit, beyond that the image is
    stretched to its own maximum. Float images are taken as 0..1 when they fit, else 0..255.
    """
    array = np.asarray(image, dtype=np.float64)
    top = float(array.max(initial=0.0))
    if image.mode == "F":
        full = 1.0 if top <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or 255 < top <= 65535:
        full = 65535.0
    else:
        full = max(top, 255.0)
    array = np.clip(array / full * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(array, "L")


def _to_rgb_over_white(image: Image.Image) -> Image.Image:
    """Any mode -> RGB, transparency composited over white."""
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_l(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


def _open(source: io.BytesIO | Path, max_pixels: int, what: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{what} is too large: {exc}") from None
        except Image.DecompressionBombWarning as exc:
            raise ImageTooLargeError(f"{what} is too large: {exc}") from None
        except UnidentifiedImageError:
            raise BadImageError(
                f"{what} is not an image that can be read (unknown format, or a damaged header)"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadImageError(f"{what} cannot be read: {exc}") from None
    with image:
        _check_size(image.width, image.height, max_pixels, what)
        try:
            image.seek(0)  # animated images: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb_over_white(image)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImageError(f"{what} is truncated or corrupt ({exc})") from None
    return rgb


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Image bytes -> RGB over white, turned by its EXIF orientation.

    Raises BadImageError for empty, unreadable, truncated or corrupt data and
    ImageTooLargeError when the header claims more than ``max_pixels`` (checked before the
    pixels are decoded).
    """
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    return _open(io.BytesIO(data), max_pixels, "the image")


def load_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An image file -> RGB over white; file problems are BadImageError naming the path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadImageError(f"{path} is a folder, not an image") from None
    except OSError as exc:
        raise BadImageError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise BadImageError(f"{path} is empty (0 bytes)")
    return _open(io.BytesIO(data), max_pixels, str(path))


@dataclass(frozen=True)
class CanvasPlacement:
    """Where the image sits on the square canvas: canvas = image * scale + offset."""

    canvas: int
    scale: float  # canvas px per image px
    offset_x: float
    offset_y: float
    image_width: int
    image_height: int

    def to_image(self, points: Tensor) -> Tensor:
        """Canvas px -> original image px, for any tensor shaped [..., 2] of (x, y)."""
        offset = torch.tensor([self.offset_x, self.offset_y], dtype=points.dtype)
        return (points - offset.to(points.device)) / self.scale

    def to_canvas(self, points: Tensor) -> Tensor:
        """Original image px -> canvas px, for any tensor shaped [..., 2] of (x, y)."""
        offset = torch.tensor([self.offset_x, self.offset_y], dtype=points.dtype)
        return points * self.scale + offset.to(points.device)


def image_to_canvas(image: Image.Image, canvas: int = 224) -> tuple[Tensor, CanvasPlacement]:
    """RGB image -> ([3, canvas, canvas] float32 in [0, 1], placement).

    The image is scaled to fit, centred, and padded with white; a canvas-sized image is used
    pixel for pixel. Resampling is Pillow's Lanczos filter, which antialiases when shrinking
    (``reducing_gap`` first reduces big photos by whole factors, which is fast and still
    exact enough for a 224 px canvas).
    """
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadImageError(f"the image has no pixels ({width} x {height})")
    scale = canvas / max(width, height)
    new_width = max(1, min(canvas, round(width * scale)))
    new_height = max(1, min(canvas, round(height * scale)))
    rgb = _to_rgb_over_white(image)
    if (new_width, new_height) != (width, height):
        rgb = rgb.resize((new_width, new_height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    offset_x = (canvas - new_width) // 2
    offset_y = (canvas - new_height) // 2
    paper = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    paper.paste(rgb, (offset_x, offset_y))
    tensor = torch.from_numpy(np.array(paper, dtype=np.uint8)).permute(2, 0, 1)
    placement = CanvasPlacement(
        canvas=canvas,
        # the fitted (longer) axis's exact scale; the other axis's new/old differs from it by
        # its rounding to whole pixels, under half a canvas pixel
        scale=new_width / width if width >= height else new_height / height,
        offset_x=float(offset_x),
        offset_y=float(offset_y),
        image_width=width,
        image_height=height,
    )
    return tensor.to(torch.float32) / 255.0, placement
