"""The optimisation loop: Adam on the control points of B sketches, each keeping its best iterate.

Four parts with one job each: :func:`step_loss` (what one step minimises), :class:`BestIterate`
(each sketch's best evaluated iterate and whether it stopped improving), :class:`StepBudget`
(how many steps fit in the time left) and :func:`optimise`, the loop tying them together.

Randomness is arranged so that a sketch's trajectory does not depend on the other sketches in
the batch: the views come from one job generator, and each sketch's loss is its own (the batch
objective is their sum, so each gradient is that sketch's alone).

Evaluation reuses the step's forward pass: the loss of the plain (unaugmented) view at step
``k`` is the evaluation loss of the points before that step's update, so evaluating every
``eval_every`` steps costs no extra forward; only the final iterate needs one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from clipasso_server.engine import augment
from clipasso_server.engine.errors import Cancelled
from clipasso_server.engine.losses import clip_loss
from clipasso_server.engine.types import StopCheck

Features = tuple[Sequence[Tensor], Tensor]
LossFunction = Callable[[Features, Features], Tensor]
Renderer = Callable[..., Tensor]
Clock = Callable[[], float]

#: the budget keeps this share of one step free after the last step, for the final
#: evaluation (one forward of the plain sketches) and the result's assembly
FINAL_RESERVE = 0.25


class FeatureModel(Protocol):
    """What the loop needs of a loss model: ``LossModel`` is one."""

    input_size: int

    def features(self, images: Tensor) -> Features: ...


def resize(images: Tensor, size: int) -> Tensor:
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


@dataclass(frozen=True)
class Drawing:
    """How control points become pixels: the renderer and what it draws with."""

    renderer: Renderer
    width: float
    color: Tensor  # RGBA [4] on the device
    stroke_mask: Tensor  # [B,S] bool on the device
    canvas: int

    def select(self, index: Tensor) -> Drawing:
        """The same drawing for the sketches ``index`` [K] (long, on the device) only."""
        return replace(self, stroke_mask=self.stroke_mask.index_select(0, index))

    def __call__(self, points: Tensor) -> Tensor:
        """[B,S,4,2] canvas px -> [B,3,C,C] in [0,1]."""
        return self.renderer(
            points, self.width, self.color, self.canvas, self.canvas, self.stroke_mask
        )


class Target:
    """The photo as the loss sees it: its plain features, computed once per job.

    ``loss_fn(sketch_features, photo_features) -> per-image loss`` defaults to CLIPasso's
    loss; with ``loss_model`` it is the hook that lets other objectives drive the same loop
    (any object with ``input_size`` and ``features(images)`` works).
    """

    def __init__(
        self, photo: Tensor, loss_model: FeatureModel, loss_fn: LossFunction = clip_loss
    ) -> None:
        self.photo = photo[None].to(torch.float32)  # [1,3,C,C]
        self.canvas = int(photo.shape[-1])
        self.size = int(loss_model.input_size)
        self.loss_model = loss_model
        self.loss_fn = loss_fn
        with torch.no_grad():
            self.plain = loss_model.features(resize(self.photo, self.size))
        self._grids: augment.GridMaker | None = None

    def view_grid(self, count: int, generator: torch.Generator | None) -> Tensor | None:
        """``count`` random views as a sampling grid [count,size,size,2]; None for none."""
        if count == 0:
            return None
        if self._grids is None:
            self._grids = augment.GridMaker(self.canvas, self.size, self.photo.device)
        return self._grids(augment.random_views(count, self.canvas, self.size, generator))

    @torch.no_grad()
    def evaluate(self, sketches: Tensor) -> Tensor:
        """Rendered sketches [B,3,C,C] -> evaluation loss [B] (plain view, no augmentation)."""
        features = self.loss_model.features(resize(sketches, self.size))
        return self.loss_fn(features, self.plain)


def step_loss(sketches: Tensor, target: Target, grid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Rendered sketches [B,3,C,C] -> (training loss [B], plain loss [B]).

    The training loss averages the plain pair and one pair per view of ``grid``; the same grid
    warps the sketches and the photo, so each pair is compared under the same view. The plain
    loss is the evaluation loss of this iterate. One forward pass carries every sketch image;
    the photo's views need no gradient and go through a separate no-grad pass.
    """
    count = int(sketches.shape[0])
    batch = resize(sketches, target.size)
    if grid is not None:
        batch = torch.cat([batch, augment.apply_views(sketches, grid).flatten(0, 1)])
    plain, views = _split(target.loss_model.features(batch), count)
    plain_loss = target.loss_fn(plain, target.plain)
    if grid is None:
        return plain_loss, plain_loss
    augmentations = int(grid.shape[0])
    with torch.no_grad():
        photo_views = target.loss_model.features(
            augment.apply_views(target.photo, grid).flatten(0, 1)
        )
    view_loss = target.loss_fn(_group(views, augmentations), _group(photo_views, augmentations))
    return (plain_loss + view_loss.sum(dim=0)) / (1 + augmentations), plain_loss


def step_backward(
    sketches: Tensor, target: Target, grid: Tensor | None, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """The step's loss and its backward: the same numbers as ``step_loss`` then
    ``loss.sum().backward()``, with the loss model run ``chunk`` images at a time (None: all
    at once). No host synchronisation.

    Returns (training loss [B], plain loss [B]), both detached; the gradient reaches whatever
    ``sketches`` was rendered from. Each image's loss depends on that image alone (the batch
    norms are folded, nothing mixes images), so the sum over images can be differentiated a
    few images at a time: the activations, and the peak memory, shrink with the chunk. The
    images are made and the renderer is differentiated once, outside the chunks.
    """
    count = int(sketches.shape[0])
    images = resize(sketches, target.size)
    views = 0 if grid is None else int(grid.shape[0])
    if grid is not None:
        images = torch.cat([images, augment.apply_views(sketches, grid).flatten(0, 1)])
    reference = _references(target, grid)
    scale = 1.0 / (1 + views)
    if chunk is None:
        # the images are [plain B, view 1 B, ...]: grouping their features [1+V, B, ...]
        # against the photo's [1+V, 1, ...] needs no slices, whose backward would fill and
        # add zero gradients the size of every feature map
        maps, embedding = target.loss_model.features(images)
        grouped = (
            [m.view(1 + views, count, *m.shape[1:]) for m in maps],
            embedding.view(1 + views, count, -1),
        )
        photo = [m[:, None] for m in reference[0]], reference[1][:, None]
        per_image = target.loss_fn(grouped, photo)  # [1+V, B]
        (per_image.sum() * scale).backward()
        per_image = per_image.detach()
        return per_image.sum(dim=0) * scale, per_image[0]
    which = torch.arange(1 + views, device=images.device).repeat_interleave(count)
    # each chunk its own leaf: a slice of one leaf would make its backward fill and add a
    # gradient the size of all the images, once per chunk
    parts = [part.detach().requires_grad_(True) for part in images.detach().split(chunk)]
    per_image = []
    for part, index in zip(parts, which.split(chunk), strict=True):
        losses = target.loss_fn(target.loss_model.features(part), _pick(reference, index))
        (losses.sum() * scale).backward()
        per_image.append(losses.detach())
    images.backward(torch.cat([part.grad for part in parts]))
    per_image = torch.cat(per_image).view(1 + views, count)
    return per_image.sum(dim=0) * scale, per_image[0]


def _references(target: Target, grid: Tensor | None) -> Features:
    """The photo's features under no view, then under each view of ``grid``: [1+V, ...]."""
    if grid is None:
        return target.plain
    with torch.no_grad():
        views = target.loss_model.features(augment.apply_views(target.photo, grid).flatten(0, 1))
    maps = [torch.cat([p, v]) for p, v in zip(target.plain[0], views[0], strict=True)]
    return maps, torch.cat([target.plain[1], views[1]])


def _pick(features: Features, index: Tensor) -> Features:
    maps, embedding = features
    return [m[index] for m in maps], embedding[index]


class BestIterate:
    """Each sketch's best evaluated iterate so far, and whether it has stopped improving.

    A sketch whose last ``patience`` evaluations brought no improvement is *frozen*: the loop
    stops moving it (None: never) and, unless it runs the pre-#22 step, leaves it out of the
    step's batch, so it is not evaluated again until the final evaluation. ``points``
    [B,S,4,2] stays on the iterates' device.
    """

    def __init__(self, points: Tensor, patience: int | None = None) -> None:
        count = int(points.shape[0])
        self.points = points.detach().clone()
        self.loss = [math.inf] * count
        self.patience = patience
        self._stale = [0] * count
        self._retired = [False] * count

    def retire(self, sketches: Sequence[int]) -> None:
        """Stop moving ``sketches`` for good (a schedule dropped them: pruned or planned out);
        their best iterate so far stays theirs."""
        for i in sketches:
            self._retired[i] = True

    def update(self, losses: Sequence[float], iterate: Tensor) -> None:
        """Record the evaluation ``losses`` [B] of ``iterate`` [B,S,4,2]."""
        improved = [v < b for v, b in zip(losses, self.loss, strict=True)]
        for i, (better, value) in enumerate(zip(improved, losses, strict=True)):
            if better:
                self.loss[i], self._stale[i] = float(value), 0
            else:
                self._stale[i] += 1
        mask = torch.tensor(improved, device=self.points.device).view(-1, 1, 1, 1)
        self.points.copy_(torch.where(mask, iterate.detach(), self.points))

    @property
    def frozen(self) -> list[bool]:
        """Per sketch: has it stopped moving (plateau, or retired by a schedule)?"""
        if self.patience is None:
            return list(self._retired)
        return [r or s >= self.patience for r, s in zip(self._retired, self._stale, strict=True)]

    @property
    def retired(self) -> list[bool]:
        """Per sketch: did a schedule drop it?"""
        return list(self._retired)


class StepBudget:
    """How many more steps fit before ``deadline`` (a ``clock()`` value; None: no limit).

    The step time is measured, not guessed: the mean over the steps after the first (the first
    carries one-time costs such as allocator warm-up), or the first step's time until a second
    one ran. When the batch changes size (:meth:`rebase`: sketches were retired or froze), the
    mean starts again from the steps that follow, the last estimate holding until one ended.
    Another step is allowed when it and the final evaluation end before the deadline.
    """

    def __init__(self, deadline: float | None, clock: Clock = time.perf_counter) -> None:
        self.deadline = deadline
        self.clock = clock
        self._begun: float | None = None
        self._first_done: float | None = None
        self._last_done: float | None = None
        self._counted = 0  # steps ended since _first_done
        self._held: float | None = None  # the estimate before the last rebase
        self.steps = 0

    def begin(self) -> None:
        self._begun = self.clock()

    def step_done(self) -> None:
        now = self.clock()
        self.steps += 1
        if self.steps == 1:
            self._first_done = now
        else:
            self._counted += 1
        self._last_done = now

    def rebase(self) -> None:
        """The batch changed size: time the steps from now on."""
        if self.steps == 0:
            return
        self._held = self.step_time_s
        self._first_done, self._counted = self._last_done, 0

    @property
    def step_time_s(self) -> float | None:
        """Measured seconds per step; None before the first step ended."""
        if self.steps == 0 or self._begun is None:
            return None
        if self._counted == 0:
            if self._held is not None:
                return self._held
            return max(0.0, self._first_done - self._begun)
        return max(0.0, (self._last_done - self._first_done) / self._counted)

    def allows_another(self) -> bool:
        if self.deadline is None:
            return True
        step = self.step_time_s
        if step is None:
            return self.clock() < self.deadline
        return self.clock() + (1 + FINAL_RESERVE) * step <= self.deadline

    def planned(self, iterations: int) -> int:
        """min(iterations, the steps run plus those that still fit)."""
        step = self.step_time_s
        if self.deadline is None or step is None:
            return iterations
        room = self.deadline - self.clock() - FINAL_RESERVE * step
        fits = math.floor(room / step) if step > 0 else iterations
        return max(self.steps, min(iterations, self.steps + max(0, fits)))


@dataclass(frozen=True)
class LoopSettings:
    """The loop's knobs; the defaults are the reference's."""

    iterations: int
    eval_every: int = 10
    augmentations: int = 4
    learning_rate: float = 1.0
    #: freeze a sketch once this many evaluations in a row bring no improvement (None: never)
    plateau_patience: int | None = None
    #: images per loss-model chunk of a step (``step_backward``); None: every image at once
    #: (chunks save memory but cost time: on the 2-core AMD EPYC machine, 30 images in
    #: chunks of 6 took 12 % more CPU time than one batch); 0: the pre-#22 step, one batch
    #: through ``step_loss`` and frozen sketches kept in it (paired benches, equivalence tests)
    chunk_images: int | None = None


@dataclass(frozen=True)
class StepReport:
    """What the loop tells ``on_step`` after each step (``best`` is live, not a copy)."""

    step: int  # steps run so far
    best: BestIterate
    evaluated: bool  # this step evaluated an iterate
    step_time_s: float | None
    planned_steps: int
    #: what schedule policies changed so far, in the order they said it (``Outcome.notes``)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What a schedule policy changes after a step: sketches to retire, a new iteration
    count (None: unchanged; never below the steps already run) and why, in words."""

    retire: tuple[int, ...] = ()
    iterations: int | None = None
    note: str = ""


#: a schedule policy: looks at each step's report and may retire sketches or change the
#: iteration count (seed pruning, planning for a time budget)
Policy = Callable[[StepReport], Decision | None]


def combine_policies(*policies: Policy) -> Policy | None:
    """One policy asking each of ``policies`` in turn: the union of what they retire, the
    smallest iteration count any of them sets, and their notes joined; None for none."""
    if not policies:
        return None

    def combined(report: StepReport) -> Decision | None:
        decisions = [d for d in (p(report) for p in policies) if d is not None]
        if not decisions:
            return None
        counts = [d.iterations for d in decisions if d.iterations is not None]
        return Decision(
            retire=tuple(sorted({i for d in decisions for i in d.retire})),
            iterations=min(counts) if counts else None,
            note="; ".join(d.note for d in decisions if d.note),
        )

    return combined


@dataclass(frozen=True)
class Outcome:
    """What the loop found: the best iterate and its evaluation loss per sketch (on the CPU)."""

    points: Tensor  # [B,S,4,2] canvas px
    loss: Tensor  # [B] float64
    steps_run: int
    stop_reason: str  # one of protocol.STOP_REASONS
    #: what schedule policies changed, in the order they said it
    notes: tuple[str, ...] = ()


def _outcome(best: BestIterate, steps_run: int, reason: str, notes: Sequence[str] = ()) -> Outcome:
    return Outcome(
        best.points.cpu(),
        torch.tensor(best.loss, dtype=torch.float64),
        steps_run,
        reason,
        tuple(notes),
    )


def optimise(
    target: Target,
    points: Tensor,
    drawing: Drawing,
    settings: LoopSettings,
    *,
    generator: torch.Generator | None = None,
    budget: StepBudget | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: StopCheck | None = None,
    policy: Policy | None = None,
    kept: Tensor | None = None,
) -> Outcome:
    """Optimise the control points [B,S,4,2] (canvas px) of B sketches of ``target``'s photo.

    Returns each sketch's best iterate, how many steps ran and why the loop stopped:
    "iterations", "plateau" (every sketch frozen), or "budget" (``budget`` says the next step
    would not fit). ``should_stop`` is checked before every step; when it says so, Cancelled
    is raised carrying the best ``Outcome`` so far (stop reason "cancel") as its snapshot, or
    None when no step ran. ``policy`` runs after every step, before ``on_step``: the sketches
    it retires leave the batch like frozen ones, and it may lower or raise the iteration count.
    ``kept`` [B,S] bool marks strokes that never move (a user's kept start strokes): their
    gradients are zeroed and their points restored after every step.
    """
    device = target.photo.device
    points = points.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    kept = None if kept is None else kept.to(device).view(*kept.shape, 1, 1)
    #: [B,S,1,1] (or [B,1,1,1]) the strokes that do not move: the kept ones, and every stroke
    #: of a frozen sketch; their gradients are zeroed and their points restored after Adam
    still: Tensor | None = kept
    optimizer = torch.optim.Adam([points], lr=settings.learning_rate)
    best = BestIterate(points, settings.plateau_patience)
    budget = budget or StepBudget(None)
    budget.begin()
    if settings.chunk_images is not None and settings.chunk_images < 0:
        raise ValueError(f"chunk_images must be 0 or more, got {settings.chunk_images}")
    chunk = settings.chunk_images or None
    moving: Tensor | None = None  # the unfrozen sketches' indices once some froze
    steps_run, reason = 0, "iterations"
    iterations, notes = settings.iterations, []
    step = 0
    while step < iterations:
        if should_stop is not None and should_stop():
            snapshot = _outcome(best, steps_run, "cancel", notes) if steps_run else None
            raise Cancelled(f"cancelled before step {step + 1} of {iterations}", snapshot)
        if not budget.allows_another():
            reason = "budget"
            break
        grid = target.view_grid(settings.augmentations, generator)
        optimizer.zero_grad(set_to_none=True)
        if settings.chunk_images != 0 and moving is not None:
            # frozen sketches leave the batch: neither rendered nor sent through the model
            sketches = drawing.select(moving)(points.index_select(0, moving))
            loss, plain = step_backward(sketches, target, grid, chunk)
            # a frozen sketch stays frozen: it is not evaluated again (inf: no improvement)
            plain = plain.new_full((points.shape[0],), math.inf).index_copy(0, moving, plain)
        elif settings.chunk_images != 0:
            loss, plain = step_backward(drawing(points), target, grid, chunk)
        else:
            loss, plain = step_loss(drawing(points), target, grid)
            loss.sum().backward()
        evaluating = step % settings.eval_every == 0
        before = points.detach().clone() if evaluating or still is not None else None
        if still is not None:
            points.grad.masked_fill_(still, 0.0)
        optimizer.step()
        if still is not None:
            with torch.no_grad():
                points.copy_(torch.where(still, before, points))
        steps_run = step = step + 1
        if evaluating:
            best.update(plain.detach().to("cpu", torch.float64).tolist(), before)
        budget.step_done()
        report = StepReport(
            steps_run,
            best,
            evaluating,
            budget.step_time_s,
            budget.planned(iterations),
            tuple(notes),
        )
        decision = policy(report) if policy is not None else None
        if decision is not None:
            best.retire(decision.retire)
            if decision.iterations is not None:
                iterations = max(steps_run, decision.iterations)
            if decision.note:
                notes.append(decision.note)
            report = replace(report, planned_steps=budget.planned(iterations), notes=tuple(notes))
        if (evaluating or decision is not None) and any(best.frozen):
            was_moving = None if moving is None else int(moving.numel())
            frozen = torch.tensor(best.frozen, device=device).view(-1, 1, 1, 1)
            still = frozen if kept is None else kept | frozen
            moving = torch.tensor([i for i, f in enumerate(best.frozen) if not f], device=device)
            if was_moving != int(moving.numel()):
                budget.rebase()  # a smaller batch: its steps take less time
        if on_step is not None:
            on_step(report)
        if all(best.frozen):
            reason = "plateau"
            break

    with torch.no_grad():
        final = drawing(points)
        best.update(target.evaluate(final).to("cpu", torch.float64).tolist(), points.detach())
    return _outcome(best, steps_run, reason, notes)
