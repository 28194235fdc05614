"""A job's own start strokes ("refine from my strokes"): checked, placed, kept.

A user's strokes (4 control points each, in the photo's pixels) become the first K strokes of
every (level, seed) sketch; the rest of a level starts from the saliency map as always. With
``keep_start_strokes`` they never move (the reference's ``--path_svg``): the loop masks their
gradients (:func:`kept_strokes` is that mask) and the result hands back the user's numbers
themselves (:func:`with_given_strokes`), not a float32 round trip through the canvas, so a
client finds its own strokes byte-identical in the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipasso_server.engine.errors import SettingsError
from clipasso_server.engine.image_input import CanvasPlacement
from clipasso_server.engine.types import SketchConfig, Stroke

StartStrokes = tuple[tuple[tuple[float, float], ...], ...]


def check_start_strokes(config: SketchConfig) -> None:
    """SettingsError unless the start strokes fit every level (the protocol's rule, repeated
    here because the CLI and library callers reach the engine without the protocol)."""
    strokes, levels = config.start_strokes, config.levels
    for number, stroke in enumerate(strokes, 1):
        if len(stroke) != 4:
            raise SettingsError(
                f"start stroke {number} has {len(stroke)} control points; a stroke has 4"
            )
    if not strokes:
        if config.keep_start_strokes:
            raise SettingsError("keep_start_strokes needs start strokes")
        return
    smallest = min(levels)
    if config.keep_start_strokes and len(strokes) >= smallest:
        raise SettingsError(
            f"{len(strokes)} kept start strokes leave nothing to add to the level of "
            f"{smallest} strokes: every level needs more than {len(strokes)} strokes"
        )
    if len(strokes) > smallest:
        raise SettingsError(
            f"{len(strokes)} start strokes do not fit in the level of {smallest} strokes: "
            f"every level needs at least {len(strokes)} strokes"
        )


def on_canvas(strokes: StartStrokes, placement: CanvasPlacement) -> Tensor:
    """The start strokes in canvas pixels: [K,4,2] float32 (K may be 0)."""
    if not strokes:
        return torch.zeros(0, 4, 2)
    image_points = torch.tensor(strokes, dtype=torch.float64)
    return placement.to_canvas(image_points).to(torch.float32)


def kept_strokes(
    config: SketchConfig, sketches: int, most: int, device: torch.device | str = "cpu"
) -> Tensor | None:
    """[B,S] bool, True for the strokes that never move (every sketch's first K), or None
    when nothing is kept."""
    count = len(config.start_strokes)
    if not config.keep_start_strokes or count == 0:
        return None
    row = torch.arange(most, device=device) < count
    return row.expand(sketches, most).clone()


def with_given_strokes(paths: Sequence[Stroke], config: SketchConfig) -> tuple[Stroke, ...]:
    """A level's strokes with the first K replaced by the user's own numbers when they are
    kept (the optimised copies are equal up to float32 rounding only)."""
    if not config.keep_start_strokes:
        return tuple(paths)
    given = config.start_strokes
    return tuple(
        Stroke(points=given[i], width=path.width, color=path.color) if i < len(given) else path
        for i, path in enumerate(paths)
    )
