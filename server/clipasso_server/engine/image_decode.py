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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageMode, UnidentifiedImageError

from clipasso_server.engine.errors import BadImageError, ImageTooLargeError, without_paths

#: Decompression-bomb cap: 50 megapixels is more than any phone photo and far below what
#: would exhaust memory (a 50 MP RGB image is 200 MB decoded: Pillow keeps 4 bytes a pixel).
DEFAULT_MAX_PIXELS = 50_000_000
#: what the decoders of one process may hold at once, in bytes: one decode never needs more
#: (a 50 MP photo in any 8-bit, 16-bit or float mode fits, but for a TIFF stored as a single
#: strip, which libtiff holds whole beside the image: 25 MP), and the daemon's HTTP process
#: stays well under half a gigabyte however many images arrive together
DECODE_BUDGET_BYTES = 256 * 1024 * 1024
#: the longest side the engine's working copy keeps: the canvas is 224 px, and a few times that
#: keeps the Lanczos resize to the canvas as sharp as from the full photo
WORKING_SIZE = 1024
ORIGINAL_SIZE = "clipasso_original_size"
#: pixels converted at a time: the full-size image is never copied whole
STRIP_PIXELS = 1_000_000
#: JPEG 2000 decodes at 1/2**n of its size; OpenJPEG's default is 6 resolution levels
_J2K_MAX_REDUCE = 5
#: EXIF orientation -> the turn that shows the photo as the user sees it
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: the limit's name in messages from the daemon and its workers
MAX_PIXELS_OPTION = "clipasso serve --max-pixels"

# This module's own checks (max_pixels before decoding, the byte cost below) replace Pillow's
# decompression-bomb limit, whose messages name a limit the user cannot change.
Image.MAX_IMAGE_PIXELS = None


def _check_size(width: int, height: int, max_pixels: int, what: str, option: str) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(f"{what} has no pixels ({width} x {height})")
    if width * height > max_pixels:
        named = f" ({option})" if option else ""
        raise ImageTooLargeError(
            f"{what} is {width} x {height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}{named}; scale it down first"
        )


def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per pixel of ``mode``: every multi-band mode takes 4 bytes (RGB
    too), a single band its sample size (2 for ``I;16``, 4 for ``I`` and ``F``)."""
    try:
        described = ImageMode.getmode(mode)
    except KeyError:
        return 8  # a mode this Pillow does not know: assume the worst it has
    if len(described.bands) > 1:
        return 4
    digits = described.typestr[2:]
    return int(digits) if digits.isdigit() else 4


def decode_cost(image: Image.Image, size: tuple[int, int] | None = None) -> int:
    """The bytes decoding ``image`` (opened, not loaded) at ``size`` (default its size) holds
    at its peak: the decoded pixels, plus what the format's decoder keeps beside them
    (OpenJPEG holds every component as 32-bit integers; libtiff one strip or tile, the
    whole image for a file stored as one strip). Converting happens in strips and costs
    little on top."""
    width, height = size or image.size
    pixels = width * height
    cost = pixels * bytes_per_pixel(image.mode)
    if image.format == "JPEG2000":
        cost += pixels * 4 * len(image.getbands())
    elif image.format == "TIFF":
        cost += _tiff_strip_pixels(image) * bytes_per_pixel(image.mode)
    return cost


def _tiff_strip_pixels(image: Image.Image) -> int:
    """The pixels of one strip (or tile) of a TIFF: what libtiff's buffer holds beside the
    decoded image. Most files keep strips of a few KB; one stored as a single strip (no
    RowsPerStrip) holds the whole image twice."""
    tags = image.tag_v2  # type: ignore[attr-defined]
    width, height = image.size

    def tag(number: int, default: int) -> int:
        value = tags.get(number, default)
        return int(value[0] if isinstance(value, tuple) else value)

    if 322 in tags:  # TileWidth x TileLength
        return tag(322, width) * tag(323, height)
    return width * min(height, max(1, tag(278, height)))  # RowsPerStrip


class DecodeBudget:
    """A bound on the bytes being decoded at once, shared by every thread of a process.

    A 97 KB 16-bit PNG can decode to 50 megapixels; a dozen submitted at once would hold
    gigabytes. Each decode takes its cost in bytes (:func:`decode_cost`) from the budget and
    waits while the budget is spent; no decode may cost more than the whole budget.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._free = self.capacity
        self._ready = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Hold ``amount`` of the budget (at most all of it) for the ``with`` block."""
        wanted = min(max(1, int(amount)), self.capacity)
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


#: the process's decode budget
DECODE_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)


def _reduce_factor(size: tuple[int, int], working_size: int | None) -> int:
    """The largest whole factor that keeps the longer side at least ``working_size``."""
    if not working_size:
        return 1
    return max(1, max(size) // max(1, working_size))


def _high_depth_scale(image: Image.Image) -> float:
    """The value that becomes white when a 16-bit, 32-bit or float image becomes 8-bit.

    ``I;16*`` modes are 16-bit by definition. Mode ``I`` does not say how many bits were used,
    so its values decide: up to 255 is 8-bit data, up to 65535 16-bit, beyond that the image is
    stretched to its own maximum. Float images are taken as 0..1 when they fit, else 0..255.
    Taken once from the whole image, so that every strip is scaled alike.
    """
    _, top = image.getextrema()
    top = float(max(top, 0))
    if image.mode == "F":
        return 1.0 if top <= 1.0 else 255.0
    if image.mode.startswith("I;16") or 255 < top <= 65535:
        return 65535.0
    return max(top, 255.0)


def _high_depth_to_l(image: Image.Image, full: float) -> Image.Image:
    """A 16-bit, 32-bit or float strip -> 8-bit "L", ``full`` (and above) as white."""
    array = np.array(image, dtype=np.float32)  # a copy: scaled in place below
    array *= np.float32(255.0 / full)
    array += np.float32(0.5)
    np.clip(array, 0, 255, out=array)
    return Image.fromarray(array.astype(np.uint8), "L")


def _to_rgb_over_white(image: Image.Image, full: float | None = None) -> Image.Image:
    """Any mode -> RGB, transparency composited over white (16-bit and float data scaled by
    ``full``, by default taken from ``image`` itself)."""
    if image.mode.startswith("I") or image.mode == "F":
        scale = full if full is not None else _high_depth_scale(image)
        return _high_depth_to_l(image, scale).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


def _working_copy(image: Image.Image, factor: int) -> Image.Image:
    """The loaded ``image`` as RGB over white, averaged down by ``factor``, converted a strip
    of rows at a time: a full-size copy in another mode (4 bytes a pixel for RGBA, 8 for the
    float64 arrays 16-bit data once went through) is never held."""
    width, height = image.size
    full = _high_depth_scale(image) if image.mode.startswith("I") or image.mode == "F" else None
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)), "white")
    rows = max(factor, STRIP_PIXELS // max(1, width) // factor * factor)
    for top in range(0, height, rows):
        strip = _to_rgb_over_white(image.crop((0, top, width, min(height, top + rows))), full)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def _jpeg_is_whole(data: bytes) -> bool:
    """Whether JPEG bytes reach their end-of-image marker, walked from the start.

    The one rule for cut-off JPEGs: libjpeg quietly fills the missing part of a file whose
    data ends early with grey, while Pillow refuses one that lost only its end marker; both
    are refused. The markers are walked from SOI (each segment skipped by its length, the
    entropy-coded data after a scan searched for the next marker), so bytes after the end
    marker, such as the video a phone's "motion photo" appends, are never looked at.
    """
    size = len(data)
    if not data.startswith(b"\xff\xd8"):
        return False
    at = 2
    while True:
        start = at
        while at < size and data[at] == 0xFF:  # a marker's 0xFF, and fill bytes before it
            at += 1
        if at >= size or at == start:
            return False
        code = data[at]
        at += 1
        if code == 0xD9:
            return True
        if code == 0x01 or 0xD0 <= code <= 0xD8:
            continue  # markers without a length
        if at + 2 > size:
            return False
        at += int.from_bytes(data[at : at + 2], "big")
        if code != 0xDA:
            continue
        while True:  # entropy-coded data: up to the next marker that is not a restart
            at = data.find(b"\xff", at)
            if at < 0:
                return False
            follow = at + 1
            while follow < size and data[follow] == 0xFF:
                follow += 1
            if follow >= size:
                return False
            if data[follow] == 0x00 or 0xD0 <= data[follow] <= 0xD7:
                at = follow + 1
                continue
            at = follow - 1  # the marker's own 0xFF: the walk above takes it from here
            break


def _opened(source: io.BytesIO, what: str) -> Image.Image:
    try:
        return Image.open(source)
    except UnidentifiedImageError:
        raise BadImageError(
            f"{what} is not an image that can be read (unknown format, or a damaged header)"
        ) from None
    except Exception as exc:  # every decoder failure is the file's: NotImplementedError too
        raise BadImageError(f"{what} cannot be read: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = without_paths(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:200]


def _open(
    data: bytes, max_pixels: int, what: str, working_size: int | None = None, option: str = ""
) -> Image.Image:
    image = _opened(io.BytesIO(data), what)
    with image:
        _check_size(image.width, image.height, max_pixels, what, option)
        try:
            image.seek(0)  # animated images: the first frame
            full = image.size
            factor = _reduce_factor(full, working_size)
            decoded = full
            if factor > 1 and image.format == "JPEG":
                # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: the full size is never held
                image.draft(image.mode, (full[0] // factor, full[1] // factor))
                decoded = image.size
            elif factor > 1 and image.format == "JPEG2000":
                # and JPEG 2000 at 1/2**n, which also spares OpenJPEG's own full-size buffers
                steps = min(factor.bit_length() - 1, _J2K_MAX_REDUCE)
                image.reduce = steps  # type: ignore[assignment,method-assign]
                power = 1 << steps
                decoded = tuple((side + (power >> 1)) // power for side in full)
            cost = decode_cost(image, decoded)
            if cost > DECODE_BUDGET.capacity:
                raise ImageTooLargeError(
                    f"{what} is {full[0]} x {full[1]} pixels of mode {image.mode}; decoding it "
                    f"would take about {cost / 2**20:,.0f} MB, more than the "
                    f"{DECODE_BUDGET.capacity / 2**20:,.0f} MB one image may use; scale it "
                    "down or save it as 8-bit JPEG or PNG"
                )
            if image.format == "JPEG" and not _jpeg_is_whole(data):
                raise BadImageError(f"{what} is truncated: the JPEG data ends before its end")
            with DECODE_BUDGET.hold(cost):
                image.load()
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                rgb = _working_copy(image, _reduce_factor(image.size, working_size))
        except (BadImageError, ImageTooLargeError):
            raise
        except MemoryError:
            raise ImageTooLargeError(f"{what} is too large to decode in memory here") from None
        except Exception as exc:  # Pillow's decoders raise much more than OSError
            raise BadImageError(f"{what} is truncated or corrupt ({_reason(exc)})") from None
    turn = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    if turn is not None:
        rgb = rgb.transpose(turn)
        if turn in (
            Image.Transpose.TRANSPOSE,
            Image.Transpose.TRANSVERSE,
            Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_270,
        ):  # turned a quarter: the photo's own size turns too
            full = (full[1], full[0])
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
    scale, JPEG 2000 at 1/2**n, other formats by averaging strips right after the decode),
    and :func:`original_size` still gives the photo's own size. Every pixel is decoded either
    way, so truncated files are caught.

    Raises BadImageError for empty, unreadable, truncated or corrupt data (whatever a Pillow
    decoder raises) and ImageTooLargeError when the header claims more than ``max_pixels``
    or a decode that would cost more bytes than :data:`DECODE_BUDGET` holds (both checked
    before the pixels are decoded).
    """
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    return _open(bytes(data), max_pixels, "the image", working_size, MAX_PIXELS_OPTION)


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
    return _open(data, max_pixels, str(path))
