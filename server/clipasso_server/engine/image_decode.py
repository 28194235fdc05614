"""Decoding users' image bytes into plain RGB over white, without torch.

Users bring anything Pillow reads: RGBA with transparency, palettes, 16-bit scans, CMYK JPEGs,
phone photos rotated by an EXIF tag. Everything becomes plain RGB over white (the sketch's
paper), turned the way the user sees it. Torch-free (Pillow and numpy only), so the daemon's
HTTP process can fully decode an image at submission without importing the engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipasso_server.engine.errors import BadImageError, ImageTooLargeError

#: Decompression-bomb cap: 50 megapixels is more than any phone photo and far below what
#: would exhaust memory (a 50 MP RGB image is 150 MB decoded).
DEFAULT_MAX_PIXELS = 50_000_000
#: the longest side the engine's working copy keeps: the canvas is 224 px, and a few times that
#: keeps the Lanczos resize to the canvas as sharp as from the full photo
WORKING_SIZE = 1024
ORIGINAL_SIZE = "clipasso_original_size"
#: modes whose pixels can be averaged as they are (not palette indices, not straight alpha)
_REDUCE_BEFORE_CONVERTING = frozenset({"L", "RGB", "CMYK", "YCbCr", "I", "F"})


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


class PixelBudget:
    """A bound on the pixels being decoded at once, shared by every thread of a process.

    A 150 KB PNG can decode to 7000 x 7000 pixels (150 MB); a dozen submitted at once would
    hold gigabytes. Each decode takes its pixel count from the budget and waits while the
    budget is spent; an image larger than the whole budget waits until it has it all.
    """

    def __init__(self, pixels: int) -> None:
        self.capacity = max(1, int(pixels))
        self._free = self.capacity
        self._ready = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget (at most all of it) for the ``with`` block."""
        wanted = min(max(1, int(pixels)), self.capacity)
        with self._ready:
            self._ready.wait_for(lambda: self._free >= wanted)
            self._free -= wanted
        try:
            yield
        finally:
            with self._ready:
                self._free += wanted
                idle = self._free == self.capacity
                self._ready.notify_all()
            if idle:
                _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the freed pixel buffers back to the system once no decode is running.

    glibc keeps big freed blocks in its heaps (its mmap threshold grows after the first
    large free); after a flood of big images the daemon otherwise held on to hundreds of MB.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _find_malloc_trim():  # glibc only; elsewhere a no-op
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


#: the process's decode budget: 64 MP at once, about 200-260 MB of decoded pixels
DECODE_BUDGET = PixelBudget(64_000_000)


def _reduce_factor(size: tuple[int, int], working_size: int | None) -> int:
    """The largest whole factor that keeps the longer side at least ``working_size``."""
    if not working_size:
        return 1
    return max(1, max(size) // max(1, working_size))


def _open(
    source: io.BytesIO | Path, max_pixels: int, what: str, working_size: int | None = None
) -> Image.Image:
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
            full = image.size
            factor = _reduce_factor(full, working_size)
            if factor > 1 and image.format == "JPEG":
                # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: the full size is never held
                image.draft(image.mode, (full[0] // factor, full[1] // factor))
            with DECODE_BUDGET.hold(image.width * image.height):
                image.load()
                loaded = image.size
                # in place: a copy would hold the full-size pixels twice
                image = ImageOps.exif_transpose(image, in_place=True) or image
                if image.size != loaded:  # turned a quarter: the photo's own size turns too
                    full = (full[1], full[0])
                factor = _reduce_factor(image.size, working_size)
                if factor > 1 and image.mode in _REDUCE_BEFORE_CONVERTING:
                    image = image.reduce(factor)
                    factor = 1
                rgb = _to_rgb_over_white(image)
                if factor > 1:  # palettes, alpha and 16-bit: averaged once they are RGB
                    rgb = rgb.reduce(factor)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImageError(f"{what} is truncated or corrupt ({exc})") from None
    rgb.info[ORIGINAL_SIZE] = full
    return rgb


def original_size(image: Image.Image) -> tuple[int, int]:
    """The (width, height) of the photo ``image`` was decoded from, turned as the user sees
    it; a working copy decoded at a reduced size remembers it in ``info``."""
    size = image.info.get(ORIGINAL_SIZE)
    return (int(size[0]), int(size[1])) if size else image.size


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, working_size: int | None = WORKING_SIZE
) -> Image.Image:
    """Image bytes -> RGB over white, turned by its EXIF orientation.

    With ``working_size`` (None: full size), a big photo is decoded at a whole fraction of
    its size whose longer side is still at least ``working_size`` (JPEG by decoding at that
    scale, other formats by reducing right after the decode), and :func:`original_size`
    still gives the photo's own size. Every pixel is decoded either way, so truncated files
    are caught.

    Raises BadImageError for empty, unreadable, truncated or corrupt data and
    ImageTooLargeError when the header claims more than ``max_pixels`` (checked before the
    pixels are decoded).
    """
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    return _open(io.BytesIO(data), max_pixels, "the image", working_size)


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
