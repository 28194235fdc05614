"""Small JPEG copies of jobs' photos, for the web page's job list and live previews.

A job's image is dropped once it has run, but the page still shows each job's photo, and draws
the best strokes so far over a faint copy of it. So a thumbnail is made at submission and kept
with the job. It is decoded the way the engine decodes (EXIF orientation applied, transparency
over white), so stroke coordinates, which are in the turned image's pixels, fit over it.
"""

from __future__ import annotations

import io
import logging

from PIL import Image

from clipasso_server.daemon.job_store import JobStore

log = logging.getLogger("clipasso.daemon")

#: longest side of a thumbnail in pixels: sharp enough for a preview card on a HiDPI screen
THUMBNAIL_SIZE = 256
JPEG_QUALITY = 82


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """JPEG bytes of a decoded photo (see ``image_decode.decode_image``: the submission check
    decodes it anyway) shrunk to fit ``size`` x ``size`` (aspect kept, never enlarged)."""
    image = image.copy()
    image.thumbnail((size, size), reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def save_thumbnail(store: JobStore, job_id: str, jpeg: bytes) -> None:
    """Store a job's thumbnail; a failure only costs the page its picture, so it is logged and
    the job goes ahead."""
    try:
        store.save_thumbnail(job_id, jpeg)
    except OSError as exc:
        log.warning("no thumbnail for job %s: %s", job_id, exc)
