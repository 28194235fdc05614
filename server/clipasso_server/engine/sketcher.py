"""The optimisation loop and the public ``sketch()``: every level and seed of a job in one batch.

One job is B = levels x seeds sketches of up to max(levels) strokes; a stroke mask hides the
strokes a level does not have. Each step renders all B sketches in one renderer call and runs
one CLIP forward/backward over their plain and augmented views. The photo's plain features are
computed once per job; its augmented views are shared by all sketches of a step (one
augmentation generator per job), so they cost ``augmentations`` images per step, not
``augmentations x B``.

Randomness is arranged so that a sketch's trajectory does not depend on the other sketches in
the batch: each (level, seed) draws its start from its own generator seeded with its seed
value, the views come from a job generator seeded with ``config.seed``, and each sketch's loss
is its own (the batch objective is their sum, so each gradient is that sketch's alone). A batched
job therefore reproduces separate per-level jobs up to floating-point noise.

Evaluation reuses the step's forward pass: the loss of the plain (unaugmented) view at step
``k`` is the evaluation loss of the points before that step's update, so evaluating every
``eval_every`` steps costs no extra forward; only the final iterate needs one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

import clipasso_server
from clipasso_server.engine import augment
from clipasso_server.engine.errors import Cancelled, SettingsError
from clipasso_server.engine.losses import clip_loss
from clipasso_server.engine.saliency import (
    initial_strokes,
    saliency_map,
    sample_start_points,
    to_gray,
    xdog_edges,
)
from clipasso_server.engine.types import (
    LevelResult,
    Progress,
    ProgressCallback,
    SketchConfig,
    SketchResult,
    StopCheck,
    Stroke,
)

#: the reference's sampling temperature for start points
START_TEMPERATURE = 0.3

Features = tuple[Sequence[Tensor], Tensor]
LossFunction = Callable[[Features, Features], Tensor]
Renderer = Callable[..., Tensor]


class FeatureModel(Protocol):
    """What the loop needs of a loss model: ``LossModel`` is one."""

    input_size: int

    def features(self, images: Tensor) -> Features: ...


@dataclass(frozen=True)
class Outcome:
    """What the loop found: the best iterate and its evaluation loss per sketch (on the CPU)."""

    points: Tensor  # [B,S,4,2] canvas px
    loss: Tensor  # [B] float64
    steps_run: int


def _resize(images: Tensor, size: int) -> Tensor:
    """[N,3,H,W] -> [N,3,size,size]; identity when already that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def _split(features: Features, count: int) -> tuple[Features, Features]:
    maps, embedding = features
    head = ([m[:count] for m in maps], embedding[:count])
    tail = ([m[count:] for m in maps], embedding[count:])
    return head, tail


def _group(features: Features, views: int) -> Features:
    """Features of [views*N] images -> leading [views, N] for broadcasting against the photo."""
    maps, embedding = features
    return (
        [m.reshape(views, -1, *m.shape[1:]) for m in maps],
        embedding.reshape(views, -1, *embedding.shape[1:]),
    )


def optimise(
    photo: Tensor,
    points: Tensor,
    stroke_mask: Tensor,
    *,
    renderer: Renderer,
    loss_model: FeatureModel,
    width: float,
    color: Tensor,
    iterations: int,
    eval_every: int = 10,
    augmentations: int = 4,
    learning_rate: float = 1.0,
    plateau_patience: int | None = None,
    generator: torch.Generator | None = None,
    loss_fn: LossFunction = clip_loss,
    on_step: Callable[[int, list[float]], None] | None = None,
    should_stop: StopCheck | None = None,
    photo_views_in_batch: bool = False,
) -> Outcome:
    """Optimise the control points of B sketches of one photo; return each one's best iterate.

    ``photo`` [3,C,C] in [0,1] on the device; ``points`` [B,S,4,2] canvas px; ``stroke_mask``
    [B,S] bool. ``loss_fn(sketch_features, photo_features) -> per-image loss`` defaults to
    CLIPasso's loss; with ``loss_model`` it is the hook that lets other objectives drive the
    same loop (any object with ``input_size`` and ``features(images)`` works). ``on_step(step,
    best_losses)`` runs after every step with the best evaluation loss per sketch so far.
    ``should_stop`` is checked before every step; Cancelled is raised when it says so.
    ``photo_views_in_batch`` runs the photo's augmented views in the sketches' forward pass
    instead of a separate no-grad pass (bench/step.py measures which is cheaper).
    """
    device = photo.device
    canvas = int(photo.shape[-1])
    size = int(loss_model.input_size)
    count = int(points.shape[0])
    points = points.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    stroke_mask = stroke_mask.to(device)
    color = color.to(device=device, dtype=torch.float32)
    optimizer = torch.optim.Adam([points], lr=learning_rate)
    photo_batch = photo[None].to(torch.float32)
    with torch.no_grad():
        photo_plain = loss_model.features(_resize(photo_batch, size))
    if augmentations:
        views_grid = augment.GridMaker(canvas, size, device)

    best_points = points.detach().clone()
    best_loss = [math.inf] * count
    stale = [0] * count
    frozen: Tensor | None = None
    all_stopped = [False]

    def render(p: Tensor) -> Tensor:
        return renderer(p, width, color, canvas, canvas, stroke_mask)

    def evaluate(losses: Tensor, iterate: Tensor) -> None:
        nonlocal frozen
        values = losses.detach().to("cpu", torch.float64).tolist()
        improved = [v < b for v, b in zip(values, best_loss, strict=True)]
        for i, (better, value) in enumerate(zip(improved, values, strict=True)):
            if better:
                best_loss[i], stale[i] = value, 0
            else:
                stale[i] += 1
        mask = torch.tensor(improved, device=device).view(-1, 1, 1, 1)
        best_points.copy_(torch.where(mask, iterate, best_points))
        if plateau_patience is not None:
            stopped = [s >= plateau_patience for s in stale]
            if any(stopped):
                frozen = torch.tensor(stopped, device=device)
                all_stopped[0] = all(stopped)

    steps_run = 0
    for step in range(iterations):
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled before step {step + 1} of {iterations}")
        sketches = render(points)
        batch = [_resize(sketches, size)]
        photo_views = None
        if augmentations:
            grid = views_grid(augment.random_views(augmentations, canvas, size, generator))
            batch.append(augment.apply_views(sketches, grid).flatten(0, 1))
            photo_views = augment.apply_views(photo_batch, grid).flatten(0, 1)
            if photo_views_in_batch:
                batch.append(photo_views)
        features = loss_model.features(torch.cat(batch) if len(batch) > 1 else batch[0])
        plain, rest = _split(features, count)
        loss = loss_fn(plain, photo_plain)
        if augmentations:
            if photo_views_in_batch:
                sketch_views, photo_view_features = _split(rest, count * augmentations)
                photo_view_features = (
                    [m.detach() for m in photo_view_features[0]],
                    photo_view_features[1].detach(),
                )
            else:
                sketch_views = rest
                with torch.no_grad():
                    photo_view_features = loss_model.features(photo_views)
            view_loss = loss_fn(
                _group(sketch_views, augmentations), _group(photo_view_features, augmentations)
            )
            per_sketch = (loss + view_loss.sum(dim=0)) / (1 + augmentations)
        else:
            per_sketch = loss
        optimizer.zero_grad(set_to_none=True)
        per_sketch.sum().backward()
        evaluating = step % eval_every == 0
        before = points.detach().clone() if evaluating or frozen is not None else None
        if frozen is not None:
            points.grad.masked_fill_(frozen.view(-1, 1, 1, 1), 0.0)
        optimizer.step()
        if frozen is not None:
            with torch.no_grad():
                points.copy_(torch.where(frozen.view(-1, 1, 1, 1), before, points))
        steps_run = step + 1
        if evaluating:
            evaluate(loss, before)
        if on_step is not None:
            on_step(steps_run, list(best_loss))
        if all_stopped[0]:
            break

    with torch.no_grad():
        final = render(points)
        evaluate(loss_fn(loss_model.features(_resize(final, size)), photo_plain), points.detach())
    return Outcome(best_points.cpu(), torch.tensor(best_loss, dtype=torch.float64), steps_run)


def parse_color(color: str) -> Tensor:
    """``#rrggbb`` or ``#rrggbbaa`` -> RGBA [4] in [0,1]."""
    text = color.strip().lstrip("#")
    if len(text) not in (6, 8):
        raise SettingsError(f"colour {color!r} is not #rrggbb or #rrggbbaa")
    try:
        channels = [int(text[i : i + 2], 16) / 255 for i in range(0, len(text), 2)]
    except ValueError as exc:
        raise SettingsError(f"colour {color!r} is not #rrggbb or #rrggbbaa") from exc
    if len(channels) == 3:
        channels.append(1.0)
    return torch.tensor(channels, dtype=torch.float32)


def _check(config: SketchConfig) -> None:
    if not config.levels or min(config.levels) < 1:
        raise SettingsError("levels must be a non-empty list of positive stroke counts")
    if config.seeds < 1:
        raise SettingsError("seeds must be at least 1")
    if config.iterations < 0:
        raise SettingsError("iterations must not be negative")
    if config.eval_every < 1:
        raise SettingsError("eval_every must be at least 1")
    if config.augmentations < 0:
        raise SettingsError("augmentations must not be negative")
    if config.canvas < 16 or max(config.levels) > config.canvas**2:
        raise SettingsError("canvas is too small for the stroke counts asked for")
    if config.plateau_patience is not None and config.plateau_patience < 1:
        raise SettingsError("plateau_patience must be at least 1 (or None)")


def start_points(saliency: Tensor, levels: Sequence[int], seeds: Sequence[int], canvas: int):
    """Initial strokes of every (level, seed) -> points [B,S,4,2] and stroke mask [B,S].

    Sketch ``b = level_index * len(seeds) + seed_index`` draws from its own generator seeded with
    its seed value, so its start does not depend on the other sketches. Padding strokes repeat
    the sketch's first stroke (valid geometry, hidden by the mask).
    """
    most = max(levels)
    sketches, masks = [], []
    for level in levels:
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            strokes = initial_strokes(
                sample_start_points(saliency, level, START_TEMPERATURE, generator),
                canvas,
                generator,
            )
            padding = strokes[:1].expand(most - level, 4, 2)
            sketches.append(torch.cat([strokes, padding]))
            masks.append(torch.arange(most) < level)
    return torch.stack(sketches), torch.stack(masks)


def photo_saliency(photo: Tensor, saliency_model) -> Tensor:
    """Photo [3,C,C] -> saliency [C,C] on the CPU: the model's attention kept on XDoG edges."""
    size = int(saliency_model.input_size)
    attention = saliency_model.cls_attention(_resize(photo[None], size))[0]
    edges = xdog_edges(to_gray(photo.detach().cpu()))
    return saliency_map(attention.cpu(), edges, int(photo.shape[-1]))


def sketch(
    image: Image.Image,
    config: SketchConfig,
    models,
    *,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> SketchResult:
    """Sketch ``image`` at every level of ``config``; the best seed of each level is returned.

    ``models`` is a ModelStore. Points come back in the original image's pixels, widths in
    image pixels. Same image, settings and device give the same result.
    """
    from clipasso_server.engine.image_input import image_to_canvas
    from clipasso_server.engine.render import get_renderer

    _check(config)
    started = time.perf_counter()
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled before starting")
    loss_model = models.loss_model(config.loss_model)
    saliency_model = models.saliency_model(config.saliency_model)
    renderer = get_renderer(config.renderer)
    device = models.device

    photo, placement = image_to_canvas(image, config.canvas)
    photo = photo.to(device=device, dtype=torch.float32)
    if config.remove_background:
        mask = models.background_mask(photo).to(device=device, dtype=torch.float32)
        photo = photo * mask + (1 - mask)

    levels = tuple(config.levels)
    seeds = tuple(config.seed + i for i in range(config.seeds))
    with torch.no_grad():
        saliency = photo_saliency(photo, saliency_model)
    points, stroke_mask = start_points(saliency, levels, seeds, config.canvas)

    def on_step(step: int, best: list[float]) -> None:
        if progress is None:
            return
        per_level = {
            level: min(best[li * len(seeds) : (li + 1) * len(seeds)])
            for li, level in enumerate(levels)
        }
        progress(
            Progress(
                step=step,
                total=config.iterations,
                best_loss={k: v for k, v in per_level.items() if math.isfinite(v)},
                elapsed_s=time.perf_counter() - started,
            )
        )

    outcome = optimise(
        photo,
        points,
        stroke_mask,
        renderer=renderer,
        loss_model=loss_model,
        width=config.width,
        color=parse_color(config.color),
        iterations=config.iterations,
        eval_every=config.eval_every,
        augmentations=config.augmentations,
        learning_rate=config.learning_rate,
        plateau_patience=config.plateau_patience,
        generator=torch.Generator().manual_seed(config.seed),
        on_step=on_step,
        should_stop=should_stop,
    )

    width = config.width / float(placement.scale)
    results, seed_losses = [], {}
    for li, level in enumerate(levels):
        losses = outcome.loss[li * len(seeds) : (li + 1) * len(seeds)]
        pick = int(losses.argmin())
        b = li * len(seeds) + pick
        image_points = placement.to_image(outcome.points[b, :level].to(torch.float64))
        paths = tuple(
            Stroke(
                points=tuple((float(x), float(y)) for x, y in stroke.tolist()),
                width=width,
                color=config.color,
            )
            for stroke in image_points
        )
        results.append(LevelResult(level, seeds[pick], float(losses[pick]), paths))
        seed_losses[str(level)] = [float(v) for v in losses]

    return SketchResult(
        image_width=image.width,
        image_height=image.height,
        levels=tuple(results),
        settings=config.settings_json(),
        models={
            "loss": models.describe(config.loss_model),
            "saliency": models.describe(config.saliency_model),
        },
        version=clipasso_server.__version__,
        device=str(device),
        steps_run=outcome.steps_run,
        extra={
            "engine": config.engine_json(),
            "seed_losses": seed_losses,
            "elapsed_s": time.perf_counter() - started,
        },
    )
