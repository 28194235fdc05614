"""Placing users' images on the square optimisation canvas.

Decoding lives in :mod:`clipasso_server.engine.image_decode` (torch-free, so the daemon's HTTP
process can use it); it is re-exported here. The canvas keeps the aspect ratio by padding with
white (the reference squashes the photo), and :class:`CanvasPlacement` maps stroke points back
to the original image's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipasso_server.engine.errors import BadImageError
from clipasso_server.engine.image_decode import (  # noqa: F401 (re-exported)
    DEFAULT_MAX_PIXELS,
    _to_rgb_over_white,
    decode_image,
    load_image_file,
    original_size,
)


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
    exact enough for a 224 px canvas). A working copy decoded at a reduced size is placed as
    the photo it came from: the placement maps to the photo's own pixels.
    """
    width, height = original_size(image)
    if width <= 0 or height <= 0:
        raise BadImageError(f"the image has no pixels ({width} x {height})")
    scale = canvas / max(width, height)
    new_width = max(1, min(canvas, round(width * scale)))
    new_height = max(1, min(canvas, round(height * scale)))
    rgb = _to_rgb_over_white(image)
    if (new_width, new_height) != rgb.size:
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
