"""The diffvg backend: the reference's rasteriser, used when ``pydiffvg`` is installed.

diffvg is not on PyPI; people who have built it from source (https://github.com/BachiLi/diffvg)
can select it with ``renderer = "diffvg"``. It takes the same arguments as
:func:`clipasso_server.engine.render.render_strokes` and draws the same lines: diffvg's stroke
width is a half-width, so the full widths we use are halved on the way in.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from clipasso_server.engine.errors import RendererUnavailableError

DIFFVG_URL = "https://github.com/BachiLi/diffvg"


def require_pydiffvg() -> ModuleType:
    """The pydiffvg module, or a RendererUnavailableError saying how to get it."""
    try:
        import pydiffvg
    except ImportError:
        raise RendererUnavailableError(
            "the diffvg renderer needs the pydiffvg module, which is not installed: diffvg is "
            f"built from source, see {DIFFVG_URL}. The 'torch' and 'auto' renderers need "
            "nothing extra"
        ) from None
    return pydiffvg


def render_strokes_diffvg(
    points: Tensor,
    widths: Tensor | float,
    colors: Tensor,
    height: int,
    width: int,
    stroke_mask: Tensor | None = None,
) -> Tensor:
    """Same contract as ``render_strokes``; renders each sketch of the batch with diffvg."""
    pydiffvg = require_pydiffvg()
    device = points.device
    pydiffvg.set_use_gpu(device.type == "cuda")
    pydiffvg.set_device(device)
    batch, strokes = points.shape[:2]
    widths = torch.broadcast_to(
        torch.as_tensor(widths, dtype=torch.float32, device=device), (batch, strokes)
    )
    colors = torch.broadcast_to(
        torch.as_tensor(colors, dtype=torch.float32, device=device), (batch, strokes, 4)
    )
    present = (
        [[True] * strokes] * batch
        if stroke_mask is None
        else torch.broadcast_to(stroke_mask.bool(), (batch, strokes)).tolist()
    )
    images = []
    with torch.autocast(device_type=device.type, enabled=False):
        for b in range(batch):
            shapes, groups = [], []
            for s in range(strokes):
                if not present[b][s]:
                    continue
                shapes.append(
                    pydiffvg.Path(
                        num_control_points=torch.tensor([2], dtype=torch.int32),
                        points=points[b, s].float().contiguous(),
                        stroke_width=widths[b, s] / 2,  # diffvg's width is a half-width
                        is_closed=False,
                    )
                )
                groups.append(
                    pydiffvg.ShapeGroup(
                        shape_ids=torch.tensor([len(shapes) - 1]),
                        fill_color=None,
                        stroke_color=colors[b, s],
                    )
                )
            if not shapes:
                images.append(torch.ones(3, height, width, device=device))
                continue
            scene = pydiffvg.RenderFunction.serialize_scene(width, height, shapes, groups)
            rgba = pydiffvg.RenderFunction.apply(width, height, 2, 2, b, None, *scene)
            alpha = rgba[:, :, 3:4]
            over_white = rgba[:, :, :3] * alpha + (1.0 - alpha)
            images.append(over_white.permute(2, 0, 1).to(device))
    return torch.stack(images)
