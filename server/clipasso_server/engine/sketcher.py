"""The public ``sketch()``: every level and seed of a job optimised together in one batch.

One job is B = levels x seeds sketches of up to max(levels) strokes; a stroke mask hides the
strokes a level does not have. Each step renders all B sketches in one renderer call and runs
one CLIP forward/backward over their plain and augmented views (see ``optimise``). The photo's
plain features are computed once per job; its augmented views are shared by all sketches of a
step (one augmentation generator per job, seeded with ``config.seed``), so they cost
``augmentations`` images per step, not ``augmentations x B``. Each (level, seed) starts from its
own generator (see ``start``), so a batched job reproduces separate per-level jobs up to
floating-point noise.

``sketch()`` itself only strings the jobs together: check the settings, prepare the photo
(canvas, background removal), place the starts, run the loop with progress and snapshots, and
turn the best iterates into a :class:`SketchResult`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

import clipasso_server
from clipasso_server.engine import weight_check
from clipasso_server.engine.background import whiten_background
from clipasso_server.engine.clip_models import check_precision
from clipasso_server.engine.errors import Cancelled, SettingsError
from clipasso_server.engine.image_input import CanvasPlacement, image_to_canvas
from clipasso_server.engine.optimise import (
    Clock,
    Drawing,
    LoopSettings,
    Outcome,
    StepBudget,
    StepReport,
    Target,
    combine_policies,
    optimise,
)
from clipasso_server.engine.planning import BudgetPlanner
from clipasso_server.engine.pruning import check_schedule, seed_pruning
from clipasso_server.engine.start import photo_saliency, start_points
from clipasso_server.engine.start_strokes import (
    check_start_strokes,
    kept_strokes,
    on_canvas,
    with_given_strokes,
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

__all__ = ["parse_color", "prepare_photo", "sketch", "start_points"]

#: at most one snapshot of the best strokes per this many seconds (they cross a process pipe)
SNAPSHOT_EVERY_S = 1.0


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
    if config.time_budget_s is not None and not config.time_budget_s > 0:
        raise SettingsError("time_budget_s must be a positive number of seconds (or None)")
    check_start_strokes(config)
    check_schedule(config.schedule)
    check_precision(config.precision)


def prepare_photo(
    image: Image.Image, config: SketchConfig, models
) -> tuple[Tensor, CanvasPlacement]:
    """The photo on the square canvas, on the models' device, its background whitened when
    ``config.remove_background`` asks (with the segmentation model's mask)."""
    photo, placement = image_to_canvas(image, config.canvas)
    photo = photo.to(device=models.device, dtype=torch.float32)
    if config.remove_background:
        mask = models.background_mask(photo).to(device=models.device, dtype=torch.float32)
        photo = whiten_background(photo, mask)
    return photo, placement


@dataclass(frozen=True)
class Job:
    """What turns the loop's best iterates into a :class:`SketchResult`.

    Sketch ``b = level_index * len(seeds) + seed_index``; the best seed of each level is kept.
    """

    config: SketchConfig
    placement: CanvasPlacement
    seeds: tuple[int, ...]
    models: dict[str, str]
    device: str

    def best_loss(self, losses: Sequence[float]) -> dict[int, float]:
        """Per level, the best loss over its seeds (levels not yet evaluated left out)."""
        count = len(self.seeds)
        per_level = {
            level: min(losses[i * count : (i + 1) * count])
            for i, level in enumerate(self.config.levels)
        }
        return {k: v for k, v in per_level.items() if math.isfinite(v)}

    def result(
        self,
        points: Tensor,
        losses: Sequence[float],
        *,
        steps_run: int,
        stop_reason: str | None,
        partial: bool = False,
        elapsed_s: float = 0.0,
        schedule_notes: Sequence[str] = (),
    ) -> SketchResult:
        """Best points [B,S,4,2] (canvas px, CPU) and losses [B] -> the result in image pixels."""
        config, count = self.config, len(self.seeds)
        width = config.width / float(self.placement.scale)
        levels, seed_losses = [], {}
        for li, level in enumerate(config.levels):
            level_losses = [float(v) for v in losses[li * count : (li + 1) * count]]
            pick = min(range(count), key=level_losses.__getitem__)
            image_points = self.placement.to_image(points[li * count + pick, :level].double())
            paths = with_given_strokes(
                [
                    Stroke(
                        points=tuple((float(x), float(y)) for x, y in stroke.tolist()),
                        width=width,
                        color=config.color,
                    )
                    for stroke in image_points
                ],
                config,
            )
            levels.append(LevelResult(level, self.seeds[pick], level_losses[pick], paths))
            seed_losses[str(level)] = level_losses
        return SketchResult(
            image_width=self.placement.image_width,
            image_height=self.placement.image_height,
            levels=tuple(levels),
            settings=config.settings_json(),
            models=self.models,
            version=clipasso_server.__version__,
            device=self.device,
            steps_run=steps_run,
            extra={
                "engine": config.engine_json(),
                "seed_losses": seed_losses,
                "elapsed_s": elapsed_s,
            },
            stop_reason=stop_reason,
            partial=partial,
            step=steps_run if partial else None,
            schedule_notes=tuple(schedule_notes),
        )

    def from_outcome(
        self, outcome: Outcome, elapsed_s: float, partial: bool, budget_cut: bool = False
    ) -> SketchResult:
        """The result of ``outcome``; ``budget_cut``: a time-budget plan lowered the iteration
        count, so a loop that ran all the planned steps ended early because of the budget."""
        reason = outcome.stop_reason
        if budget_cut and reason == "iterations" and outcome.steps_run < self.config.iterations:
            reason = "budget"
        return self.result(
            outcome.points,
            outcome.loss.tolist(),
            steps_run=outcome.steps_run,
            stop_reason=reason,
            partial=partial,
            elapsed_s=elapsed_s,
            schedule_notes=outcome.notes,
        )


class ProgressReporter:
    """Turns the loop's step reports into :class:`Progress` for the caller.

    A snapshot of the best strokes is attached on evaluation steps when ``every_s`` seconds
    have passed since the last one (the first evaluation always gets one), so a caller always
    has recent best strokes without paying for them every step.
    """

    def __init__(
        self,
        job: Job,
        progress: ProgressCallback,
        clock: Clock,
        started: float,
        every_s: float = SNAPSHOT_EVERY_S,
    ) -> None:
        self.job, self.progress, self.clock = job, progress, clock
        self.started, self.every_s = started, every_s
        self._last_snapshot: float | None = None

    def __call__(self, report: StepReport) -> None:
        now = self.clock()
        snapshot = None
        notes = report.notes
        due = self._last_snapshot is None or now - self._last_snapshot >= self.every_s
        if report.evaluated and due:
            snapshot = self.job.result(
                report.best.points.cpu(),
                report.best.loss,
                steps_run=report.step,
                stop_reason=None,
                partial=True,
                elapsed_s=now - self.started,
                schedule_notes=notes,
            )
            self._last_snapshot = now
        self.progress(
            Progress(
                step=report.step,
                total=self.job.config.iterations,
                best_loss=self.job.best_loss(report.best.loss),
                elapsed_s=now - self.started,
                step_time_s=report.step_time_s,
                planned_steps=report.planned_steps,
                snapshot=snapshot,
                schedule_notes=notes,
            )
        )


def sketch(
    image: Image.Image,
    config: SketchConfig,
    models,
    *,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    clock: Clock = time.perf_counter,
    snapshot_every_s: float = SNAPSHOT_EVERY_S,
    plan_budget: bool = True,
) -> SketchResult:
    """Sketch ``image`` at every level of ``config``; the best seed of each level is returned.

    ``models`` is a ModelStore. Points come back in the original image's pixels, widths in
    image pixels. Same image, settings and device give the same result (with a time budget,
    the number of steps depends on the machine's speed). ``config.time_budget_s`` counts the
    whole call from its start, model loading included. A cancel raises Cancelled whose
    ``snapshot`` is the best result so far (partial, stop reason "cancel"), or None before
    the first step. ``clock`` (seconds) is what the budget and the progress read.
    With a time budget that cannot hold the work, fewer seeds and then fewer iterations are
    planned from the measured step cost (``planning``), and the result says so in its
    ``schedule_notes``; ``plan_budget=False`` only stops when the next step would not fit
    (the pre-#22 budget, for paired benches).
    """
    _check(config)
    started = clock()
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled before starting")
    # every weight file first, so a missing one is named with all the others, before any load
    models.require(weight_check.job_models(config))
    loss_model = models.loss_model(config.loss_model, config.precision)
    saliency_model = models.saliency_model(config.saliency_model)
    from clipasso_server.engine.render import get_renderer

    renderer = get_renderer(config.renderer)
    photo, placement = prepare_photo(image, config, models)
    seeds = tuple(config.seed + i for i in range(config.seeds))
    points, stroke_mask = start_points(
        photo_saliency(photo, saliency_model),
        config.levels,
        seeds,
        config.canvas,
        given=on_canvas(config.start_strokes, placement),
    )
    job = Job(
        config=config,
        # the photo's own size, also when ``image`` is a reduced working copy of it
        placement=placement,
        seeds=seeds,
        models={
            "loss": models.describe(config.loss_model),
            "saliency": models.describe(config.saliency_model),
            "loss_arithmetic": loss_model.arithmetic,
        },
        device=str(models.device),
    )
    drawing = Drawing(
        renderer,
        config.width,
        parse_color(config.color).to(models.device),
        stroke_mask.to(models.device),
        config.canvas,
    )
    settings = LoopSettings(
        iterations=config.iterations,
        eval_every=config.eval_every,
        augmentations=config.augmentations,
        learning_rate=config.learning_rate,
        plateau_patience=config.plateau_patience,
    )
    planner = None
    if deadline is not None and plan_budget:
        planner = BudgetPlanner(
            levels=len(config.levels),
            seeds=config.seeds,
            iterations=config.iterations,
            augmentations=config.augmentations,
            budget_s=config.time_budget_s,
            deadline=deadline,
            clock=clock,
        )
    # schedule policies (seed pruning, time-budget planning), each from its own module
    policies = []
    if (pruning := seed_pruning(config, seeds)) is not None:
        policies.append(pruning)
    if planner is not None:
        policies.append(planner)
    reporter = (
        ProgressReporter(job, progress, clock, started, snapshot_every_s) if progress else None
    )
    try:
        outcome = optimise(
            Target(photo, loss_model),
            points,
            drawing,
            settings,
            generator=torch.Generator().manual_seed(config.seed),
            budget=StepBudget(deadline, clock),
            on_step=reporter,
            should_stop=should_stop,
            policy=combine_policies(*policies),
            kept=kept_strokes(config, int(points.shape[0]), int(points.shape[1])),
        )
    except Cancelled as exc:
        reached = exc.snapshot
        snapshot = (
            job.from_outcome(reached, clock() - started, partial=True)
            if isinstance(reached, Outcome)
            else None
        )
        raise Cancelled(exc.message, snapshot) from None
    budget_cut = planner is not None and planner.cut_iterations
    return job.from_outcome(outcome, clock() - started, partial=False, budget_cut=budget_cut)
