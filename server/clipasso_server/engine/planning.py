"""A time budget that plans: fewer seeds, then fewer iterations, decided from measured steps.

Without a plan, a job whose time budget cannot hold its work simply stops when the next step
would not fit (``StepBudget``, still the safety net): on a CPU the default job's ten minutes
buy a few steps of all twelve sketches, barely moved from their start. :class:`BudgetPlanner`
is a schedule policy (see ``optimise.Policy``) that decides early instead, from the step cost
it has measured, what fits:

1. **Seeds first.** Each level keeps its best-evaluated seeds (the first evaluation comes with
   the first step), down to one a level, until the requested iterations fit.
2. **Then iterations.** When one seed a level still does not fit, the iteration count is cut
   to what fits before the deadline, the final evaluation included.

**When it plans.** The first step carries one-time costs (allocator and kernel warm-up; on a
GPU it can be many steps long), so the plan waits for the second step, the first clean
measurement. Waiting costs one more step of the whole batch: when the first step alone took
more than :data:`WAIT_SHARE` of the time left (a CPU, where a step is long and its warm-up a
small part of it), the plan is made from the first step instead. The question is asked
again after every step, from the mean step time of the batch as it is (the first step at a
new batch size left out: it builds kernels for the new shapes): while the work fits, nothing
changes, so a machine that gets busier is planned for when it happens; once reduced, the
iteration count follows the measured step time up or down (a further seed goes only if even
that cannot fit), said again when it moves by more than :data:`SAY_CHANGE`, and the note
says "about" that many iterations.

**The step-cost model.** A step sends each of the batch's ``n`` sketches through the loss
model forward and backward, plain and under each of ``V`` views (``n (1+V)`` images), and the
photo's ``V`` views forward only. A forward and backward costs about two forwards (the
profile of a full-size RN101 step: 36 GFLOP per sketch image, 18 per photo view), and the
renderer and Adam scale with ``n`` too, so one step costs about ``2 n (1+V) + V`` forward
units, and a batch of ``n'`` sketches takes ``t(n') = t(n) (2 n' (1+V) + V) / (2 n (1+V) + V)``
of the measured ``t(n)``. The model leaves out fixed per-step overhead, so it is a little
optimistic for small batches; the steps that follow are measured instead. Seeds that a
pruning policy would drop later are not foreseen (the plan errs on the side of fewer steps).

With no time budget, or when the requested work fits, the planner changes nothing and says
nothing. When it does change something, its note says what and why in the user's words:
"1 seed instead of 3 and about 120 iterations instead of 2000 to fit 10 min (...)".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clipasso_server.engine.optimise import FINAL_RESERVE, Clock, Decision, StepReport

#: plan from the first step (warm-up and all) when it took more than this share of the time
#: left, rather than spend another step of the whole batch waiting for a clean measurement
WAIT_SHARE = 0.1
#: once reduced, the iteration count follows the measured step time; a change of more than
#: this share of the count last said is said again
SAY_CHANGE = 0.2


def step_units(sketches: int, augmentations: int) -> float:
    """A step's cost in photo-view forwards: ``2 n (1+V) + V`` (see the module's model)."""
    return 2.0 * sketches * (1 + augmentations) + augmentations


def scaled_step_time(measured_s: float, measured_n: int, sketches: int, views: int) -> float:
    """The step time of a batch of ``sketches``, from ``measured_s`` for ``measured_n``."""
    return measured_s * step_units(sketches, views) / step_units(measured_n, views)


def format_duration(seconds: float) -> str:
    """How the dialog says a time limit: "45 s", "10 min", "2.5 min", "1 h", "3.1 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.2g} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


class BudgetPlanner:
    """The policy planning a job of ``levels`` x ``seeds`` sketches (sketch ``b = level_index
    * seeds + seed_index``) and ``iterations`` steps into ``budget_s`` seconds ending at
    ``deadline`` on ``clock`` (the loop's and the ``StepBudget``'s clock).

    ``notes`` holds what it said; ``cut_iterations`` whether it lowered the iteration count
    (then the job ends on the planned count, and the time budget is why it ended early).
    """

    def __init__(
        self,
        *,
        levels: int,
        seeds: int,
        iterations: int,
        augmentations: int,
        budget_s: float,
        deadline: float,
        clock: Clock,
    ) -> None:
        self.levels, self.seeds, self.iterations = levels, seeds, iterations
        self.views, self.budget_s = augmentations, budget_s
        self.deadline, self.clock = deadline, clock
        self.planned_iterations = iterations
        self.cut_iterations = False
        self.notes: list[str] = []
        self._last_call: float | None = None
        #: the step times since the batch last changed size, and that size
        self._segment: list[float] = []
        self._segment_batch = -1
        self._said: int | None = None  # the iteration count the last note said

    def _measure(self, report: StepReport, now: float, batch: int) -> tuple[float | None, bool]:
        """(the mean step time of the batch as it is now, whether that excludes a warm-up).

        The first step at a batch size carries one-time costs (the job's allocator and kernel
        warm-up, kernels for the new shapes once sketches left), so it is left out once a
        later step at that size is timed."""
        if report.step == 1 or self._last_call is None:
            interval = report.step_time_s
        else:
            interval = now - self._last_call
        self._last_call = now
        if interval is None:
            return None, False
        if batch != self._segment_batch:  # sketches left the batch before this step
            self._segment, self._segment_batch = [], batch
        self._segment.append(interval)
        timed = self._segment[1:] if len(self._segment) > 1 else self._segment
        return sum(timed) / len(timed), len(self._segment) > 1

    def __call__(self, report: StepReport) -> Decision | None:
        now = self.clock()
        active = [not f for f in report.best.frozen]
        batch = sum(active)
        measured, clean = self._measure(report, now, batch)
        if measured is None or measured <= 0 or batch == 0:
            return None
        left = self.deadline - now
        if not clean and measured <= WAIT_SHARE * left:
            return None  # one more step for a measurement without the warm-up costs little
        return self._plan(report, active, batch, measured, left)

    def _plan(
        self,
        report: StepReport,
        active: Sequence[bool],
        batch: int,
        measured: float,
        left: float,
    ) -> Decision | None:
        """Keep the most seeds a level with which every requested iteration fits; else one a
        level and the iterations that fit. Asked after every step: nothing changes while the
        work fits; once reduced, the iteration count follows the measured step time, said
        again only when a seed goes too or the count moves by more than :data:`SAY_CHANGE`."""
        remaining = self.iterations - report.step
        reserve = FINAL_RESERVE * scaled_step_time(
            measured, batch, self.levels * self.seeds, self.views
        )
        per_level = [
            [b for b in range(li * self.seeds, (li + 1) * self.seeds) if active[b]]
            for li in range(self.levels)
        ]
        widest = max(len(seeds) for seeds in per_level)
        keep = 1
        for k in range(widest, 0, -1):
            n = sum(min(len(seeds), k) for seeds in per_level)
            if remaining * scaled_step_time(measured, batch, n, self.views) + reserve <= left:
                keep = k
                break
        retire = tuple(
            sorted(
                b
                for seeds in per_level
                for b in sorted(seeds, key=lambda b: (report.best.loss[b], b))[keep:]
            )
        )
        n = batch - len(retire)
        step_s = scaled_step_time(measured, batch, n, self.views)
        fits = max(0, math.floor((left - reserve) / step_s)) if step_s > 0 else remaining
        iterations = report.step + min(remaining, fits)
        if not retire and iterations == self.planned_iterations:
            return None
        self.planned_iterations = iterations
        self.cut_iterations = iterations < self.iterations
        first = self._said is None
        said = self._said
        if not first and not retire and abs(iterations - said) <= SAY_CHANGE * said:
            return Decision(iterations=iterations)  # a small correction: the count follows
        self._said = iterations
        note = self._note(retire, keep, iterations, said, measured, batch, first)
        self.notes.append(note)
        return Decision(retire=retire, iterations=iterations, note=note)

    def _note(
        self,
        retire: Sequence[int],
        keep: int,
        iterations: int,
        before: int,
        measured: float,
        batch: int,
        first: bool,
    ) -> str:
        budget = format_duration(self.budget_s)
        measured_text = f"a step of {_count(batch, 'sketch', 'sketches')} took {measured:.3g} s"
        if not first:
            what = f"about {iterations} iterations instead of {before}"
            if retire:
                what = f"{_count(keep, 'seed')} a level and " + what
            return f"re-planned from the measured step ({measured_text}): {what} to fit {budget}"
        parts = []
        if retire:
            parts.append(f"{_count(keep, 'seed')} instead of {self.seeds}")
        if iterations < self.iterations:
            parts.append(f"about {iterations} iterations instead of {self.iterations}")
        whole = self.iterations * scaled_step_time(
            measured, batch, self.levels * self.seeds, self.views
        )
        why = f"{measured_text}; all the work would take {format_duration(whole)}"
        return f"{' and '.join(parts)} to fit {budget} ({why})"
