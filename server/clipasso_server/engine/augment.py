"""Paired augmentations: the same random perspective and crop applied to sketch and photo.

CLIPasso compares the sketch and the photo under several random views so that the strokes match
the photo robustly rather than exploiting one pixel grid. Each view is a random perspective
(distortion 0.5, empty area black) followed by a random resized crop of exactly 80 % of the
area, aspect 1, back to the model's input size. Both transforms are projective, so each view is
one homography from output pixels to input pixels, and one ``grid_sample`` applies it: a single
bilinear resampling, batched over views and images, differentiable with respect to the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DISTORTION = 0.5
CROP_AREA = 0.8


@dataclass(frozen=True)
class Views:
    """``count`` random views: homographies [count,3,3] from output px to input px."""

    homographies: Tensor
    input_size: int
    output_size: int

    @property
    def count(self) -> int:
        return int(self.homographies.shape[0])


def _homography(source: Tensor, target: Tensor) -> Tensor:
    """[N,4,2] point pairs -> [N,3,3] homographies mapping each ``source`` onto its ``target``."""
    x, y = source[..., 0], source[..., 1]
    u, v = target[..., 0], target[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)
    rhs = torch.cat([u, v], dim=1)
    h = torch.linalg.solve(system, rhs)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).view(-1, 3, 3)


def random_views(
    count: int,
    input_size: int,
    output_size: int = 224,
    generator: torch.Generator | None = None,
    distortion: float = DISTORTION,
    crop_area: float = CROP_AREA,
) -> Views:
    """Draw ``count`` views of a square ``input_size`` image, each ``output_size`` square.

    Perspective as torchvision's RandomPerspective draws it (each corner moves inwards by up to
    ``distortion`` x half the side, per axis), continuous instead of whole pixels; then a square
    crop of ``crop_area`` of the area at a uniform position. Parameters come from ``generator``
    on the CPU, in float64, so a seed gives the same views on every device.
    """
    size = float(input_size)
    half = size / 2
    reach = distortion * half
    corners = torch.tensor(
        [[0.0, 0.0], [size, 0.0], [size, size], [0.0, size]], dtype=torch.float64
    ).expand(count, 4, 2)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)
    moved = corners + inward * reach * torch.rand(
        count, 4, 2, generator=generator, dtype=torch.float64
    )
    # the perspective moves the corners onto ``moved``; sampling needs the way back
    unwarp = _homography(moved, corners)
    side = math.sqrt(crop_area) * size
    offset = (size - side) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    crop = torch.zeros(count, 3, 3, dtype=torch.float64)
    crop[:, 0, 0] = side / output_size
    crop[:, 1, 1] = side / output_size
    crop[:, :2, 2] = offset
    crop[:, 2, 2] = 1.0
    return Views(unwarp @ crop, input_size, output_size)


class GridMaker:
    """Turns views into ``grid_sample`` coordinates on the device where the images are.

    Only the [count,3,3] homographies travel to the device each step; the output pixel
    centres are made once.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int = 224,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.input_size = input_size
        self.output_size = output_size
        self.device = torch.device(device)
        self.dtype = dtype
        centres = torch.arange(output_size, dtype=torch.float64) + 0.5
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        pixels = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, -1, 3)
        self._pixels = pixels.to(device=self.device, dtype=dtype)

    def __call__(self, views: Views) -> Tensor:
        """[count,out,out,2] coordinates (align_corners=False) of every view."""
        if views.input_size != self.input_size or views.output_size != self.output_size:
            raise ValueError("views were drawn for other image sizes")
        homographies = views.homographies.to(device=self.device, dtype=self.dtype)
        mapped = self._pixels @ homographies.transpose(1, 2)
        grid = 2 * (mapped[..., :2] / mapped[..., 2:]) / self.input_size - 1
        return grid.view(views.count, self.output_size, self.output_size, 2)


def apply_views(images: Tensor, grid: Tensor) -> Tensor:
    """images [N,3,H,W], grid [V,out,out,2] -> [V,N,3,out,out]: every view of every image.

    Points mapped outside the image read black (zeros), as in the reference's perspective.
    The N images are stacked as channels of one image per view, so the bilinear weights are
    computed once per output pixel for all of them and the images are not copied V times
    (forward and backward ~30 % faster on the CPU than a batch of V x N).
    """
    count, n, channels = grid.shape[0], images.shape[0], images.shape[1]
    stacked = images.reshape(1, n * channels, *images.shape[2:]).expand(count, -1, -1, -1)
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.view(count, n, channels, *out.shape[2:])
