"""Where the strokes start: CLIP attention kept on XDoG edges, sampled, then tiny random walks.

The paper's initialisation puts strokes where the saliency model looks and where there are
edges, so the optimisation starts near the object's salient contours instead of anywhere on
the canvas. Everything here is a pure function of its inputs and an explicit generator, so a
sketch's start depends only on its own seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clipasso_server.engine.clip_models import CLIP_MEAN, CLIP_STD

#: the luminance weights the reference greys the normalised photo with
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
#: Gaussian kernels reach this many sigmas on each side (scipy's ``truncate`` default)
TRUNCATE = 4.0


def clip_gray(image: Tensor) -> Tensor:
    """RGB [3,H,W] in [0,1] -> grey [H,W] of the CLIP-normalised photo, in float64.

    The reference runs its edge detector on the photo as CLIP sees it (mean/std normalised),
    not on [0,1] values; this changes the contrast per channel and so which edges survive.
    """
    x = image.detach().to("cpu", torch.float64)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float64).view(3, 1, 1)
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).view(3, 1, 1)
    return (((x - mean) / std) * weights).sum(dim=0)


def otsu_threshold(values: Tensor, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the bin centre maximising the between-class variance.

    The lower class is the bins up to and including the threshold's bin, as scikit-image
    splits them. A constant input has no threshold to find; its value is returned.
    """
    v = values.detach().flatten().to("cpu", torch.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    weight_low = hist.cumsum(0)
    weight_high = hist.sum() - weight_low
    mass_low = (hist * centres).cumsum(0)
    mean_low = mass_low / weight_low.clamp_min(1e-12)
    mean_high = (mass_low[-1] - mass_low) / weight_high.clamp_min(1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(between[:-1].argmax())])


def _reflect_index(size: int, radius: int) -> Tensor:
    """Indices of a line of ``size`` padded by ``radius`` with half-sample symmetric reflection
    (``d c b a | a b c d | d c b a``, scipy.ndimage's "reflect"), for any radius."""
    index = torch.arange(-radius, size + radius) % (2 * size)
    return torch.where(index < size, index, 2 * size - 1 - index)


def gaussian_blur(gray: Tensor, sigma: float, truncate: float = TRUNCATE) -> Tensor:
    """[H,W] -> [H,W]: separable Gaussian blur, radius ``int(truncate * sigma + 0.5)``, edges
    reflected as scipy.ndimage.gaussian_filter reflects them (the reference's blur)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=gray.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    height, width = gray.shape
    rows = gray[_reflect_index(height, radius)]  # [H+2r, W]
    blurred = F.conv1d(rows.T[:, None], kernel.view(1, 1, -1))[:, 0].T  # along H
    columns = blurred[:, _reflect_index(width, radius)]  # [H, W+2r]
    return F.conv1d(columns[:, None], kernel.view(1, 1, -1))[:, 0]


def xdog_edges(
    image: Tensor,
    sigma: float = 0.8,
    k: float = 10.0,
    gamma: float = 0.98,
    phi: float = 200.0,
    epsilon: float = -0.1,
) -> Tensor:
    """RGB canvas [3,H,W] in [0,1] -> bool [H,W], True where the reference keeps attention.

    Not the textbook XDoG but the reference's rule (method.md, "Edge map"): on the grey
    CLIP-normalised photo, ``D = G(sigma) - gamma * G(k sigma)``; the map is 1 where
    ``D < epsilon`` and ``1 + tanh(phi * D)`` elsewhere; min-max normalised, binarised by Otsu
    (at or above the threshold is 1). Edge pixels are those binarised to 0. On real photos
    this keeps about half of the pixels, dark areas included. A flat image has no edges.
    """
    gray = clip_gray(image)
    diff = gaussian_blur(gray, sigma) - gamma * gaussian_blur(gray, k * sigma)
    xdog = torch.where(diff < epsilon, torch.ones_like(diff), 1 + torch.tanh(phi * diff))
    lo, hi = float(xdog.min()), float(xdog.max())
    if hi <= lo:
        return torch.zeros_like(xdog, dtype=torch.bool)
    xdog = (xdog - lo) / (hi - lo)
    return xdog < otsu_threshold(xdog)


def saliency_map(attention: Tensor, edges: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Attention grid [g,g] and edge mask [H,W] -> saliency [H,W] in [0,1], zero off the edges.

    The grid is upsampled bicubically to ``size`` and min-max normalised. When the edge mask is
    empty (a flat image) the attention is kept everywhere, so there is still somewhere to start.
    """
    if isinstance(size, int):
        size = (size, size)
    grid = attention.detach().to(torch.float32)[None, None]
    up = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)[0, 0]
    lo, hi = up.min(), up.max()
    up = (up - lo) / (hi - lo) if float(hi - lo) > 0 else torch.ones_like(up)
    edges = edges.to(up.device)
    if tuple(edges.shape) != tuple(size):
        raise ValueError(f"edge mask {list(edges.shape)} does not match size {list(size)}")
    return up * edges if bool(edges.any()) else up


def sample_start_points(
    saliency: Tensor, n: int, temperature: float = 0.3, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``n`` distinct pixels, p ∝ exp(A / temperature) over pixels with A > 0 -> [n,2].

    Returned as canvas coordinates (x, y) of the pixel centres. When fewer than ``n`` pixels
    are positive, all of them are taken and the rest are drawn uniformly from the other pixels
    (still without replacement). Runs on the CPU so a seed gives the same points on every
    device.
    """
    sal = saliency.detach().to("cpu", torch.float64)
    height, width = sal.shape
    if n > height * width:
        raise ValueError(f"cannot draw {n} distinct points from {height}x{width} pixels")
    flat = sal.flatten()
    positive = flat > 0
    count = int(positive.sum())
    weights = torch.where(positive, torch.exp((flat - flat.max()) / temperature), 0.0)
    if count >= n:
        index = torch.multinomial(weights, n, replacement=False, generator=generator)
    else:
        chosen = positive.nonzero().flatten()
        rest = torch.multinomial(
            (~positive).to(torch.float64), n - count, replacement=False, generator=generator
        )
        index = torch.cat([chosen, rest])
    x = (index % width).to(torch.float32) + 0.5
    y = (index // width).to(torch.float32) + 0.5
    return torch.stack([x, y], dim=-1)


def initial_strokes(
    start_points: Tensor, canvas: int, generator: torch.Generator | None = None
) -> Tensor:
    """Start points [n,2] -> strokes [n,4,2]: each a tiny random walk from its start point.

    Each next control point is the previous one plus ``0.05 * canvas * (U - 0.5)`` per axis,
    U uniform in [0,1), so strokes begin as short squiggles the optimisation then stretches.
    """
    n = start_points.shape[0]
    steps = 0.05 * canvas * (torch.rand(n, 3, 2, generator=generator) - 0.5)
    walk = torch.cat([torch.zeros(n, 1, 2), steps.cumsum(dim=1)], dim=1)
    return start_points.detach().to("cpu", torch.float32)[:, None, :] + walk
