"""The differentiable stroke renderer, in plain PyTorch (no compile step; CPU, CUDA, anything).

Why our own: the reference renders with diffvg, which is not on PyPI and is the first thing
that fails when people install CLIPasso. This renderer draws the same thing (open cubic
Bézier strokes with round caps, about one pixel of antialiased edge, composited over white) with
gradients to the control points, widths and colours.

How: each cubic is flattened into a short polyline. A pixel's coverage by a stroke is
``clamp(w/2 + 1/2 - d, 0, 1)`` where ``d`` is its distance to the polyline, i.e. a one-pixel
linear ramp across the edge, which is exact box filtering for straight edges. Distances are
only computed on a small patch around each *segment* (not over the whole canvas), merged per
stroke with a max into a patch around the stroke's bounding box, and the stroke patches are
composited in order with the "over" operator. Memory therefore grows with strokes x (stroke
box + segments x segment box), both clipped to the canvas, never with canvas x segments; the
segment-level tensors are not even kept for the backward, which is written by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clipasso_server.engine.errors import SettingsError

#: polyline segments per cubic: the chord error of a stroke of length L and turning angle
#: theta is about L * theta / (8 * SEGMENTS**2), under a tenth of a pixel for a half circle
#: 100 px long.
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
    if height < 1 or width < 1:
        raise ValueError(f"canvas must be at least 1x1, got {height}x{width}")
    device = points.device
    batch, strokes = points.shape[:2]
    with torch.autocast(device_type=device.type, enabled=False):
        if isinstance(widths, Tensor):
            widths = torch.broadcast_to(widths.to(device, torch.float32), (batch, strokes))
        else:  # filled on the device: a host-to-device copy would wait for the GPU
            widths = torch.full((batch, strokes), float(widths), device=device)
        colors = torch.as_tensor(colors, dtype=torch.float32, device=device)
        one_colour = colors.dim() < 2 or colors.shape[-2] == 1  # the same for every stroke
        colors = torch.broadcast_to(colors, (batch, strokes, 4))
        keep = None
        if stroke_mask is not None:
            keep = torch.broadcast_to(
                stroke_mask.to(device=device, dtype=torch.bool), (batch, strokes)
            )
        return _render(points.float(), widths, colors, one_colour, int(height), int(width), keep)


def _render(
    points: Tensor,
    widths: Tensor,
    colors: Tensor,
    one_colour: bool,
    height: int,
    width: int,
    keep: Tensor | None,
) -> Tensor:
    batch, strokes = points.shape[:2]
    device = points.device
    if batch * strokes == 0:
        return torch.ones(batch, 3, height, width, device=device)

    vertices = flatten_cubics(points)
    a, b = vertices[:, :, :-1], vertices[:, :, 1:]  # segments, [B, S, K, 2]
    origin, patch, stroke_origin, side = _patch_layout(a, b, widths, height, width, keep)

    # Where each segment-patch pixel lies in its stroke's patch (which holds it, see
    # _patch_layout); a stroke's coverage is the max over its segments.
    local = (origin - stroke_origin[:, :, None]).long()  # [B, S, K, 2]
    rows = (local[..., 1:2] + torch.arange(patch[1], device=device)) * side[0]  # [B, S, K, Py]
    cols = local[..., 0:1] + torch.arange(patch[0], device=device)  # [B, S, K, Px]
    index = (rows[..., :, None] + cols[..., None, :]).reshape(batch, strokes, -1)
    reach = widths / 2 + 0.5  # coverage = clamp(reach - distance, 0, 1)
    cover = _StrokeCoverage.apply(a, b, reach, origin, patch, index, side[0] * side[1])

    opacity = colors[..., 3:4]  # [B, S, 1]
    if keep is not None:
        opacity = opacity * keep[..., None]
    alpha = cover * opacity  # [B, S, side_y * side_x]
    corner = stroke_origin.long()
    rows = (corner[..., 1:2] + torch.arange(side[1], device=device)) * width  # [B, S, Sy]
    cols = corner[..., 0:1] + torch.arange(side[0], device=device)  # [B, S, Sx]
    canvas_index = (rows[..., :, None] + cols[..., None, :]).reshape(batch, strokes, -1)
    return _composite(alpha, canvas_index, colors, one_colour, height, width)


def _segment_frame(
    a: Tensor, b: Tensor, origin: Tensor, patch: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each segment's patch pixel centres in the segment's own frame.

    Returns ``along`` and ``across`` [B, S, K, Py, Px], the coordinates of (pixel centre - a) on
    the segment's unit direction u and on the normal n = (-u_y, u_x); the lengths
    [B, S, K, 1, 1]; and u [B, S, K, 2]. A segment of zero length (a point) gets u = (1, 0):
    any unit vector gives the right distance to a point.
    """
    ab = b - a
    length2 = (ab * ab).sum(-1, keepdim=True)  # [B, S, K, 1]
    length = length2.clamp_min(1e-12).sqrt()
    flat = length2 < 1e-12
    unit = torch.where(flat, _pair(1.0, 0.0, a.device), ab / length)
    steps_x = torch.arange(patch[0], device=a.device)
    steps_y = torch.arange(patch[1], device=a.device)
    qx = (origin[..., 0:1] - a[..., 0:1] + 0.5 + steps_x)[..., None, :]  # [B, S, K, 1, Px]
    qy = (origin[..., 1:2] - a[..., 1:2] + 0.5 + steps_y)[..., :, None]  # [B, S, K, Py, 1]
    ux, uy = unit[..., 0, None, None], unit[..., 1, None, None]
    return qx * ux + qy * uy, qy * ux - qx * uy, length[..., None], unit


def _segment_coverage(
    a: Tensor, b: Tensor, reach: Tensor, origin: Tensor, patch: tuple[int, int]
) -> tuple[Tensor, ...]:
    """Coverage [B, S, K, Py, Px] of each segment's patch, and the pieces its gradient needs."""
    along, across, length, unit = _segment_frame(a, b, origin, patch)
    t = (along / length).clamp(0.0, 1.0)  # parameter of the nearest point of the segment
    beyond = along - t * length
    distance = torch.sqrt(across * across + beyond * beyond + 1e-12)
    ramp = reach[..., None, None, None] - distance
    return ramp.clamp(0.0, 1.0), ramp, distance, t, beyond, across, unit


class _StrokeCoverage(torch.autograd.Function):
    """Per-stroke coverage patches: the max over segments of clamp(reach - distance, 0, 1).

    The backward is written by hand: autograd through a dozen [B, S, K, Py, Px] operations and
    the max costs several times the forward in memory traffic and kernel launches, while the
    gradient has a closed form. With t the parameter of a segment's nearest point to a pixel
    centre and r the vector from that point to the centre (distance d = |r|), on the ramp
    d coverage/d a = (1 - t) r / d, d coverage/d b = t r / d, d coverage/d reach = 1 (t's own
    change does not count at a minimum). Only the segment that gives a pixel its coverage gets
    gradient; exact ties (a shared vertex nearest) split it, as autograd's max would.
    """

    @staticmethod
    def forward(ctx, a, b, reach, origin, patch, index, area):
        coverage = _segment_coverage(a, b, reach, origin, patch)[0]
        batch, strokes = a.shape[:2]
        cover = coverage.new_zeros(batch, strokes, area).scatter_reduce(
            2, index, coverage.reshape(batch, strokes, -1), reduce="amax", include_self=True
        )
        ctx.save_for_backward(a, b, reach, origin, index, cover)
        ctx.patch = patch
        return cover

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_cover):
        a, b, reach, origin, index, cover = ctx.saved_tensors
        _, ramp, distance, t, beyond, across, unit = _segment_coverage(
            a, b, reach, origin, ctx.patch
        )
        batch, strokes = a.shape[:2]
        best = cover.gather(2, index)  # the stroke's coverage at each segment-patch pixel
        # a segment gets gradient where it gives the pixel its coverage, on the ramp
        wins = (ramp.reshape(batch, strokes, -1) == best) & (best > 0.0) & (best < 1.0)
        share = torch.zeros_like(cover).scatter_add(2, index, wins.float()).gather(2, index)
        grad = torch.where(wins, grad_cover.gather(2, index) / share.clamp_min(1.0), 0.0)
        grad_reach = grad.sum(-1) if ctx.needs_input_grad[2] else None
        grad = grad.view_as(distance) / distance
        along_sum = (grad * beyond).sum((-2, -1))  # [B, S, K]: components of sum(grad * r)
        across_sum = (grad * across).sum((-2, -1))
        along_t = (grad * beyond * t).sum((-2, -1))  # ... and of sum(grad * r * t)
        across_t = (grad * across * t).sum((-2, -1))
        normal = torch.stack([-unit[..., 1], unit[..., 0]], dim=-1)
        grad_b = along_t[..., None] * unit + across_t[..., None] * normal
        grad_a = along_sum[..., None] * unit + across_sum[..., None] * normal - grad_b
        return grad_a, grad_b, grad_reach, None, None, None, None


def _patch_layout(
    a: Tensor, b: Tensor, widths: Tensor, height: int, width: int, keep: Tensor | None
) -> tuple[Tensor, tuple[int, int], Tensor, tuple[int, int]]:
    """Where each segment's and each stroke's square of pixels lies, and their common sizes.

    A segment's patch holds every pixel its coverage ramp can reach, clipped to the canvas; a
    stroke's patch holds all its segments' patches. All patches share one size (the largest
    needed), read back once: the render's only host synchronisation. Patches that would cross
    the far edge of the canvas are shifted back inside it (they still hold the pixels they
    need), so every index is valid without masks. Masked strokes are parked at the corner.
    Returns segment origins [B, S, K, 2], (Px, Py), stroke origins [B, S, 2], (Sx, Sy).
    """
    device = a.device
    limit = _pair(width, height, device)
    reach = widths.detach()[..., None, None] / 2 + 1.0
    a, b = a.detach(), b.detach()
    low = torch.nan_to_num(torch.minimum(a, b) - reach, nan=0.0)
    high = torch.nan_to_num(torch.maximum(a, b) + reach, nan=0.0)
    low = torch.minimum(low.clamp_min(0.0), limit)
    high = torch.minimum(high.clamp_min(0.0), limit)
    if keep is not None:
        low = low * keep[..., None, None]
        high = high * keep[..., None, None]
    origin = torch.floor(low)
    need = (high - origin).flatten(0, 2).amax(0)
    spread = (origin.amax(2) - origin.amin(2)).flatten(0, 1).amax(0)
    need_x, need_y, spread_x, spread_y = (int(v) for v in torch.cat([need, spread]).ceil().tolist())
    patch = (max(1, min(need_x, width)), max(1, min(need_y, height)))
    side = (min(spread_x + patch[0], width), min(spread_y + patch[1], height))
    origin = torch.minimum(origin, _pair(width - patch[0], height - patch[1], device))
    stroke_origin = torch.minimum(origin.amin(2), _pair(width - side[0], height - side[1], device))
    return origin, patch, stroke_origin, side


def _pair(x: float, y: float, device: torch.device) -> Tensor:
    """The float32 vector (x, y), made on the device: torch.tensor([x, y]) would be copied from
    the host, which waits for the GPU."""
    return torch.arange(2, device=device, dtype=torch.float32) * (y - x) + x


def _composite(
    alpha: Tensor, canvas_index: Tensor, colors: Tensor, one_colour: bool, height: int, width: int
) -> Tensor:
    """Composite stroke patches in order with "over" on white.

    ``alpha`` [B, S, N] are the strokes' patch opacities, ``canvas_index`` [B, S, N] where each
    lands (unique per stroke). Opaque pixels are kept just below 1 so that log(1 - alpha) and its
    gradient stay finite.
    """
    batch, strokes = alpha.shape[:2]
    pixels = height * width
    log_clear = torch.log1p(-alpha.clamp(max=1.0 - 1e-6))
    if one_colour:
        # Same colour c for every stroke: "over" collapses to c + (white - c) * prod_s (1 - a_s),
        # and the product is a sum of logs scattered straight from the patches.
        total = torch.zeros(batch, pixels, device=alpha.device).scatter_add(
            1, canvas_index.reshape(batch, -1), log_clear.reshape(batch, -1)
        )
        clear = torch.exp(total)[:, None, :]  # [B, 1, HW]
        ink = colors[:, 0, :3, None]  # [B, 3, 1]
        return (ink + (1.0 - ink) * clear).reshape(batch, 3, height, width)

    # Strokes of different colours need the order: on a dense [B, S, HW] opacity,
    # out = prod_s (1 - a_s) + sum_s c_s a_s prod_{t>s} (1 - a_t).
    dense_alpha = torch.zeros(batch, strokes, pixels, device=alpha.device)
    dense_alpha = dense_alpha.scatter_add(2, canvas_index, alpha)
    dense_log = torch.zeros_like(dense_alpha).scatter_add(2, canvas_index, log_clear)
    behind = torch.flip(torch.cumsum(torch.flip(dense_log, [1]), dim=1), [1])  # sum_{t>=s}
    paper = torch.exp(behind[:, 0])  # [B, HW]
    ink = torch.einsum("bsc,bsp->bcp", colors[..., :3], dense_alpha * torch.exp(behind - dense_log))
    return (paper[:, None, :] + ink).reshape(batch, 3, height, width)


def _diffvg_available() -> bool:
    try:
        import pydiffvg  # noqa: F401
    except ImportError:
        return False
    return True


def get_renderer(name: str) -> Renderer:
    """The renderer a setting names: "torch", "diffvg", or "auto" (diffvg when it imports).

    Raises RendererUnavailableError for "diffvg" without pydiffvg, SettingsError for others.
    """
    if name == "torch":
        return render_strokes
    if name == "diffvg" or (name == "auto" and _diffvg_available()):
        from clipasso_server.engine.render_diffvg import render_strokes_diffvg, require_pydiffvg

        require_pydiffvg()  # fail now, with how to install it, not in the first step
        return render_strokes_diffvg
    if name == "auto":
        return render_strokes
    raise SettingsError(f"unknown renderer {name!r}; choose torch, diffvg or auto")
