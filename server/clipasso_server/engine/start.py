"""Where a job's strokes start: the photo's saliency, then one start per (level, seed).

The pure pieces (edge map, attention on edges, sampling, random walks) are in ``saliency``;
this module applies them to a job: the saliency model on the photo, and a separate generator
per sketch so that each seed of a level starts from its own strokes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipasso_server.engine.optimise import resize
from clipasso_server.engine.saliency import (
    initial_strokes,
    saliency_map,
    sample_start_points,
    xdog_edges,
)

#: the reference's sampling temperature for start points
START_TEMPERATURE = 0.3


@torch.no_grad()
def photo_saliency(photo: Tensor, saliency_model) -> Tensor:
    """Photo [3,C,C] -> saliency [C,C] on the CPU: the model's attention kept on XDoG edges."""
    size = int(saliency_model.input_size)
    attention = saliency_model.cls_attention(resize(photo[None], size))[0]
    return saliency_map(attention.cpu(), xdog_edges(photo), int(photo.shape[-1]))


def start_points(
    saliency: Tensor,
    levels: Sequence[int],
    seeds: Sequence[int],
    canvas: int,
    given: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Initial strokes of every (level, seed) -> points [B,S,4,2] and stroke mask [B,S].

    Sketch ``b = level_index * len(seeds) + seed_index`` draws from its own generator seeded with
    its seed value, so its start does not depend on the other sketches. ``given`` [K,4,2]
    (canvas px): every sketch's first K strokes, exactly these; its other ``level - K`` are
    drawn as usual. Padding strokes repeat the sketch's first stroke (valid geometry, hidden by
    the mask).
    """
    most = max(levels)
    given = torch.zeros(0, 4, 2) if given is None else given.detach().to("cpu", torch.float32)
    sketches, masks = [], []
    for level in levels:
        drawn = level - int(given.shape[0])
        if drawn < 0:
            raise ValueError(f"{int(given.shape[0])} given strokes do not fit in {level}")
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            strokes = (
                initial_strokes(
                    sample_start_points(saliency, drawn, START_TEMPERATURE, generator),
                    canvas,
                    generator,
                )
                if drawn
                else given.new_zeros(0, 4, 2)
            )
            strokes = torch.cat([given, strokes])
            padding = strokes[:1].expand(most - level, 4, 2)
            sketches.append(torch.cat([strokes, padding]))
            masks.append(torch.arange(most) < level)
    return torch.stack(sketches), torch.stack(masks)
