"""The differentiable stroke renderer, in plain PyTorch (no compile step; CPU, CUDA, anything).

Why our own: the reference renders with diffvg, which is not on PyPI and is the first thing
that fails when people install CLIPasso. This renderer draws the same thing (open cubic
Bézier strokes with round caps, about one pixel of antialiased edge, composited over white) with
gradients to the control points, widths and colours.

How: each cubic is flattened into a short polyline. A pixel's coverage by a stroke is
``clamp(w/2 + 1/2 - d, 0, 1)`` where ``d`` is its distance to the polyline, i.e. a one-pixel
linear ramp across the edge, which is exact box filtering for straight edges. Distances are
only computed on a small square patch around each *segment* (not over the whole canvas), and
the patches are merged per stroke with a max, so memory grows with pixels x strokes, never with
pixels x segments. Strokes are then composited in order with the "over" operator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clipasso_server.engine.errors import SettingsError

#: polyline segments per cubic: the chord error of a stroke of length L and turning angle
#: theta is about L * theta / (8 * SEGMENTS), well under a tenth of a pixel for our strokes.
SEGMENTS = 24

Renderer = Callable[..., Tensor]

_BERNSTEIN_CACHE: dict[tuple[int, str, str], Tensor] = {}


def _bernstein(segments: int, device: torch.device) -> Tensor:
    """[segments+1, 4] cubic Bernstein weights at evenly spaced parameters."""
    key = (segments, device.type, str(device.index))
    weights = _BERNSTEIN_CACHE.get(key)
    if weights is None:
        t = torch.linspace(0.0, 1.0, segments + 1, dtype=torch.float32)
        u = 1.0 - t
        weights = torch.stack([u**3, 3 * u * u * t, 3 * u * t * t, t**3], dim=-1).to(device)
        _BERNSTEIN_CACHE[key] = weights
    return weights


def flatten_cubics(points: Tensor, segments: int = SEGMENTS) -> Tensor:
    """Control points [..., 4, 2] -> polyline vertices [..., segments + 1, 2] on the curve."""
    return torch.einsum("kc,...cd->...kd", _bernstein(segments, points.device), points)


def render_strokes(
    points: Tensor,
    widths: Tensor | float,
    colors: Tensor,
    height: int,
    width: int,
    stroke_mask: Tensor | None = None,
) -> Tensor:
    """Render open cubic strokes over white.

    ``points`` [B, S, 4, 2] holds (x, y) control points in canvas pixels (pixel ``i`` covers
    ``[i, i+1)``, its centre is ``i + 0.5``). ``widths`` is the full stroke width in pixels,
    a float or a tensor broadcastable to [B, S]; ``colors`` RGBA in [0, 1] broadcastable to
    [B, S, 4]; ``stroke_mask`` bool [B, S] with False for absent strokes (so sketches of
    different stroke counts can share a batch). Returns [B, 3, H, W] in [0, 1], stroke 0 drawn
    first. Computed in float32 even under autocast.
    """
    if points.dim() != 4 or points.shape[-2:] != (4, 2):
        raise ValueError(f"points must be [B, S, 4, 2], got {tuple(points.shape)}")
    device = points.device
    with torch.autocast(device_type=device.type, enabled=False):
        return _render(points.float(), widths, colors, int(height), int(width), stroke_mask)


def _render(
    points: Tensor,
    widths: Tensor | float,
    colors: Tensor,
    height: int,
    width: int,
    stroke_mask: Tensor | None,
) -> Tensor:
    batch, strokes = points.shape[:2]
    device = points.device
    pixels = height * width
    if strokes == 0:
        return torch.ones(batch, 3, height, width, device=device)
    widths = torch.as_tensor(widths, dtype=torch.float32, device=device)
    widths = widths.expand(batch, strokes) if widths.dim() <= 2 else widths
    colors = torch.as_tensor(colors, dtype=torch.float32, device=device)
    uniform_color = colors.numel() == 4
    colors = colors.expand(batch, strokes, 4)

    # Segments of every stroke: a, b [B, S, K, 2].
    vertices = flatten_cubics(points)
    a, b = vertices[:, :, :-1], vertices[:, :, 1:]
    half = widths.detach()[..., None] / 2 + 1.0  # reach of the coverage ramp, [B, S, 1]

    # One square patch per segment, big enough for the largest segment plus the ramp. Its size
    # is the only host synchronisation of a render.
    # Patches are clipped to the canvas, so a stroke running off it costs no more than the canvas.
    limit = torch.tensor([float(width), float(height)], device=device)
    low = torch.minimum(torch.minimum(a, b).detach() - half[..., None], limit).clamp_min(0.0)
    high = torch.minimum(torch.maximum(a, b).detach() + half[..., None], limit).clamp_min(0.0)
    origin = torch.floor(low)  # [B, S, K, 2]
    patch = int(torch.ceil((high - origin).amax()).clamp_min(1).item()) + 1
    offsets = torch.arange(patch, device=device, dtype=torch.float32) + 0.5
    grid_x = origin[..., 0:1] + offsets  # [B, S, K, P]
    grid_y = origin[..., 1:2] + offsets

    # Distance from each patch pixel centre to its segment: [B, S, K, P, P] (y, x).
    ab = b - a
    length2 = (ab * ab).sum(-1).clamp_min(1e-12)  # [B, S, K]
    px = grid_x[..., None, :] - a[..., 0, None, None]  # [B, S, K, 1, P]
    py = grid_y[..., :, None] - a[..., 1, None, None]  # [B, S, K, P, 1]
    t = (px * ab[..., 0, None, None] + py * ab[..., 1, None, None]) / length2[..., None, None]
    t = t.clamp(0.0, 1.0)
    dx = px - t * ab[..., 0, None, None]
    dy = py - t * ab[..., 1, None, None]
    distance = torch.sqrt(dx * dx + dy * dy + 1e-12)
    coverage = (widths[..., None, None, None] / 2 + 0.5 - distance).clamp(0.0, 1.0)

    # Merge each stroke's segment patches (max) into one patch per stroke around its bounding box.
    stroke_origin = origin.amin(dim=2)  # [B, S, 2]
    side = int(torch.ceil((high.amax(dim=2) - stroke_origin).amax()).clamp_min(1).item()) + 1
    steps = torch.arange(patch, device=device)
    local_x = (origin[..., 0:1] - stroke_origin[:, :, None, 0:1]).long() + steps  # [B, S, K, P]
    local_y = (origin[..., 1:2] - stroke_origin[:, :, None, 1:2]).long() + steps
    local_ok = ((local_y >= 0) & (local_y < side))[..., :, None] & (
        (local_x >= 0) & (local_x < side)
    )[..., None, :]
    local_index = (
        local_y.clamp(0, side - 1)[..., :, None] * side + local_x.clamp(0, side - 1)[..., None, :]
    )
    stroke_patch = torch.zeros(batch, strokes, side * side, device=device).scatter_reduce(
        2,
        local_index.reshape(batch, strokes, -1),
        (coverage * local_ok).reshape(batch, strokes, -1),
        reduce="amax",
        include_self=True,
    )
    alpha = stroke_patch * colors[..., 3:4]
    if stroke_mask is not None:
        alpha = alpha * stroke_mask.to(device=device, dtype=alpha.dtype)[..., None]

    # Where each stroke patch pixel lands on the canvas (off-canvas pixels are dropped).
    cells = torch.arange(side, device=device)
    canvas_x = stroke_origin[..., 0:1].long() + cells  # [B, S, side]
    canvas_y = stroke_origin[..., 1:2].long() + cells
    on_canvas = (
        (((canvas_y >= 0) & (canvas_y < height))[..., :, None])
        & (((canvas_x >= 0) & (canvas_x < width))[..., None, :])
    )
    canvas_index = (
        canvas_y.clamp(0, height - 1)[..., :, None] * width
        + canvas_x.clamp(0, width - 1)[..., None, :]
    ).reshape(batch, strokes, -1)
    alpha = alpha * on_canvas.reshape(batch, strokes, -1)

    if uniform_color:
        # One colour for every stroke: over-compositing collapses to paper*T + colour*(1-T) with
        # transmittance T = prod_s (1 - a_s), summed in log space straight from the patches.
        log_transmit = torch.log1p(-alpha.clamp(max=1.0 - 1e-6))
        total = torch.zeros(batch, pixels, device=device).scatter_add(
            1, canvas_index.reshape(batch, -1), log_transmit.reshape(batch, -1)
        )
        transmit = torch.exp(total)[:, None, :]  # [B, 1, HW]
        color = colors[:, 0, :3, None]  # [B, 3, 1]
        image = transmit + color * (1.0 - transmit)
        return image.reshape(batch, 3, height, width)

    # Strokes of different colours: ordered "over" on a dense [B, S, HW] alpha,
    # out = prod_s (1 - a_s) + sum_s c_s a_s prod_{t>s} (1 - a_t).
    dense = torch.zeros(batch, strokes, pixels, device=device).scatter_add(2, canvas_index, alpha)
    log_transmit = torch.log1p(-dense.clamp(max=1.0 - 1e-6))
    # suffix sums: behind_s = sum_{t>s} log(1 - a_t)
    suffix = torch.flip(torch.cumsum(torch.flip(log_transmit, [1]), dim=1), [1])
    behind = torch.exp(suffix - log_transmit)
    paper = torch.exp(suffix[:, 0])  # [B, HW]
    ink = torch.einsum("bsc,bsp->bcp", colors[..., :3], dense * behind)
    image = paper[:, None, :] + ink
    return image.reshape(batch, 3, height, width)


def _diffvg_available() -> bool:
    try:
        import pydiffvg  # noqa: F401
    except ImportError:
        return False
    return True


def get_renderer(name: str) -> Renderer:
    """The renderer a setting names: "torch", "diffvg", or "auto" (diffvg when it imports)."""
    if name == "torch":
        return render_strokes
    if name == "diffvg" or (name == "auto" and _diffvg_available()):
        from clipasso_server.engine.render_diffvg import render_strokes_diffvg

        return render_strokes_diffvg
    if name == "auto":
        return render_strokes
    raise SettingsError(f"unknown renderer {name!r}; choose torch, diffvg or auto")
