"""Seed pruning (the "fast" schedule): every seed of a level runs a warm-up, then only the
best-ranked seeds run on, halving until one is left.

Why: the reference runs every seed of every level to the end and keeps the best, so two thirds
of a default job's work (3 seeds) go into sketches that are thrown away. A seed that is behind
after a warm-up rarely catches up, and a sketch's trajectory does not depend on the others in
the batch (see ``optimise``), so the seed kept runs exactly as it would have in the full
schedule; only the seeds retired stop early, and they keep their best iterate.

Successive halving: round ``k`` of ``ceil(log2(seeds))`` keeps ``ceil(seeds / 2**k)`` seeds
per level, the last round one; the rounds lie evenly from ``warmup`` to ``last`` (shares of the
iterations), each on the first evaluation of an iterate at or after its share. A round ranks a
level's seeds still running by their best evaluation loss (the plain loss the loop already
computes every ``eval_every`` steps; ties: the lower seed index) and retires the worse ones. The
shares count the steps the loop plans to run (``StepReport.planned_steps``), so a time budget
that shortens the run brings the rounds forward with it.

:func:`rounds` and :func:`ranked` are the whole rule; the policy and ``bench/pruning.py`` (which
derives what the fast schedule picks from a full run's trajectories) both use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from clipasso_server.engine.errors import SettingsError
from clipasso_server.engine.optimise import Decision, Policy, StepReport
from clipasso_server.engine.types import SketchConfig

#: the schedules ``SketchConfig.schedule`` may name (the protocol's SCHEDULES)
SCHEDULES = ("full", "fast")
#: share of the iterations every seed runs before the first ranking
WARMUP_SHARE = 0.25
#: share of the iterations by which one seed per level is left
LAST_SHARE = 0.5


@dataclass(frozen=True)
class Round:
    """One ranking: at the evaluation of the iterate after ``step`` steps (a multiple of
    ``eval_every``; the loop reports it as step ``step + 1``), keep ``keep`` seeds per level."""

    step: int
    keep: int


def rounds(
    seeds: int,
    iterations: int,
    eval_every: int,
    warmup: float = WARMUP_SHARE,
    last: float = LAST_SHARE,
) -> tuple[Round, ...]:
    """The rankings of ``seeds`` seeds over ``iterations`` steps, first to last.

    Rounds whose evaluation would fall at or after the last step are left out (the loop
    evaluates iterates ``0, eval_every, ...`` below ``iterations`` only), so a short run may
    prune less or not at all.
    """
    if not 0 < warmup <= last <= 1:
        raise ValueError(f"need 0 < warmup <= last <= 1, got {warmup} and {last}")
    count = math.ceil(math.log2(seeds)) if seeds > 1 else 0
    out = []
    for k in range(1, count + 1):
        share = warmup if count == 1 else warmup + (last - warmup) * (k - 1) / (count - 1)
        step = math.ceil(share * iterations / eval_every) * eval_every
        if step < iterations:
            out.append(Round(step, 1 if k == count else math.ceil(seeds / 2**k)))
    return tuple(out)


def ranked(losses: Sequence[float], running: Sequence[int]) -> list[int]:
    """The seed indices ``running`` of one level, best first: by ``losses`` (best evaluation
    loss per seed index), ties by index."""
    return sorted(running, key=lambda i: (losses[i], i))


class SeedPruning:
    """The fast schedule's policy for a job of ``levels`` x ``seeds`` sketches
    (sketch ``b = level_index * len(seeds) + seed_index``)."""

    def __init__(
        self,
        levels: Sequence[int],
        seeds: Sequence[int],
        eval_every: int,
        warmup: float = WARMUP_SHARE,
        last: float = LAST_SHARE,
    ) -> None:
        self.levels, self.seeds = tuple(levels), tuple(seeds)
        self.eval_every, self.warmup, self.last = eval_every, warmup, last
        self.done = 0  # rounds already applied

    def __call__(self, report: StepReport) -> Decision | None:
        if not report.evaluated:
            return None
        evaluated = report.step - 1  # steps before the iterate just evaluated
        plan = rounds(
            len(self.seeds), report.planned_steps, self.eval_every, self.warmup, self.last
        )
        due = [r for r in plan[self.done :] if r.step <= evaluated]
        if not due:
            return None
        self.done += len(due)
        keep = due[-1].keep
        count = len(self.seeds)
        retired, losses = report.best.retired, report.best.loss
        pruned: list[int] = []
        said = []
        for li, level in enumerate(self.levels):
            first = li * count
            running = [i for i in range(count) if not retired[first + i]]
            order = ranked(losses[first : first + count], running)
            worse = sorted(order[max(1, keep) :])
            if worse:
                pruned += [first + i for i in worse]
                names = ", ".join(str(self.seeds[i]) for i in worse)
                said.append(
                    f"seed{'s' if len(worse) > 1 else ''} {names} of level {level} "
                    f"(seed {self.seeds[order[0]]} leads)"
                )
        if not pruned:
            return None
        return Decision(
            retire=tuple(pruned),
            note=f"fast schedule: {'; '.join(said)} pruned at step {report.step} "
            f"of {report.planned_steps}, ranked by best evaluation loss",
        )


def check_schedule(schedule: str) -> None:
    """A SettingsError in one line for a schedule that is not one of :data:`SCHEDULES`."""
    if schedule not in SCHEDULES:
        raise SettingsError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def seed_pruning(config: SketchConfig, seeds: Sequence[int]) -> Policy | None:
    """The policy of ``config.schedule`` (checked by ``sketch()`` before any model loads) for
    a job of ``config.levels`` x ``seeds``: None for "full" (every seed runs to the end) or a
    single seed; seed pruning for "fast"."""
    if config.schedule == "full" or len(seeds) < 2:
        return None
    return SeedPruning(config.levels, seeds, config.eval_every)
