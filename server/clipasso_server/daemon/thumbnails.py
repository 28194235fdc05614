"""Small JPEG copies of jobs' photos, for the web page's job list and live previews.

A job's image is dropped once it has run, but the page still shows each job's photo, and draws
the best strokes so far over a faint copy of it. So a thumbnail is made at submission and kept
with the job. It is decoded the way the engine decodes (EXIF orientation applied, transparency
over white), so stroke coordinates, which are in the turned image's pixels, fit over it.
"""

from __future__ import annotations

import io
import logging

from clipasso_server.daemon.job_store import JobStore
from clipasso_server.engine.errors import EngineError
from clipasso_server.engine.image_decode import decode_image

log = logging.getLogger("clipasso.daemon")

#: longest side of a thumbnail in pixels: sharp enough for a preview card on a HiDPI screen
THUMBNAIL_SIZE = 256
JPEG_QUALITY = 82


def make_thumbnail(data: bytes, max_pixels: int, size: int = THUMBNAIL_SIZE) -> bytes:
    """JPEG bytes of ``data`` shrunk to fit ``size`` x ``size`` (aspect kept, never enlarged).

    Raises the engine's BadImageError / ImageTooLargeError like the submission check does.
    """
    image = decode_image(data, max_pixels=max_pixels)
    image.thumbnail((size, size), reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def save_thumbnail(store: JobStore, job_id: str, data: bytes, max_pixels: int) -> None:
    """Make and store a job's thumbnail; a failure only costs the page its picture, so it is
    logged and the job goes ahead (the image itself was checked before)."""
    try:
        store.save_thumbnail(job_id, make_thumbnail(data, max_pixels))
    except (EngineError, OSError) as exc:
        log.warning("no thumbnail for job %s: %s", job_id, exc)
