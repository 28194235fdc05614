"""A time budget that plans (issue 22): fewer seeds first, then fewer iterations, decided from
the measured step cost, and said in words.

Real tiny CLIP models through the real ModelStore, the real renderer, loop and ``sketch()``;
only time is fake: a clock that the loss model advances by the images it is given, two units
for an image that needs a backward (a step's sketches) and one for a forward only (the
photo's views, the final evaluation), as a real step's cost grows with its batch.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from PIL import Image, ImageDraw  # noqa: E402

from clipasso_server.engine.optimise import Decision  # noqa: E402
from clipasso_server.engine.planning import BudgetPlanner, format_duration  # noqa: E402
from clipasso_server.engine.sketcher import sketch  # noqa: E402
from clipasso_server.engine.types import SketchConfig  # noqa: E402

#: 2 levels x 3 seeds, 1 view: a full step is 2*6*2 + 1 = 25 s on the fake clock, a step of
#: one seed a level 2*2*2 + 1 = 9 s; the whole requested work 60 x 25 s = 25 min
LEVELS, SEEDS, ITERATIONS, VIEWS = (2, 3), 3, 60, 1


class FakeClock:
    """Seconds that pass only when the timed model says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedModel:
    """The real loss model; each image it is given costs one second, two with a gradient."""

    def __init__(self, model, clock: FakeClock) -> None:
        self.model, self.clock = model, clock
        self.input_size, self.arithmetic = model.input_size, model.arithmetic
        self.batches: list[int] = []

    def features(self, images):
        count = int(images.shape[0])
        self.clock.now += count * (2.0 if torch.is_grad_enabled() else 1.0)
        if torch.is_grad_enabled():
            self.batches.append(count)
        return self.model.features(images)


class TimedStore:
    """The session's real ModelStore whose loss model runs on the fake clock."""

    def __init__(self, store, clock: FakeClock) -> None:
        self.store, self.clock = store, clock
        self.timed: TimedModel | None = None

    def loss_model(self, name: str, precision: str = "auto"):
        self.timed = TimedModel(self.store.loss_model(name, precision), self.clock)
        return self.timed

    def __getattr__(self, name: str):
        return getattr(self.store, name)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 76, 76), fill=(30, 30, 30))
    return image


def _run(model_store, picture, budget_s: float | None, **overrides):
    """(result, progress reports, sketches per step, seconds the job took on the fake clock)."""
    settings = dict(
        levels=LEVELS,
        seeds=SEEDS,
        iterations=ITERATIONS,
        eval_every=5,
        augmentations=VIEWS,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        time_budget_s=budget_s,
    )
    settings.update(overrides)
    clock = FakeClock()
    store = TimedStore(model_store, clock)
    reports = []
    result = sketch(picture, SketchConfig(**settings), store, progress=reports.append, clock=clock)
    per_step = [count // (1 + VIEWS) for count in store.timed.batches]
    return result, reports, per_step, clock.now


def test_a_budget_the_work_fits_changes_nothing_and_says_nothing(model_store, picture):
    result, reports, per_step, took = _run(model_store, picture, budget_s=1600.0)
    assert took <= 1600.0
    assert (result.steps_run, result.stop_reason) == (ITERATIONS, "iterations")
    assert per_step == [6] * ITERATIONS
    assert result.schedule_notes == () and "schedule_notes" not in result.to_json()
    assert all(report.schedule_notes == () for report in reports)


def test_a_third_of_the_work_keeps_one_seed_a_level_and_every_iteration(model_store, picture):
    """600 s hold 60 steps of one seed a level (9 s each) but not of two (17 s): after the
    second step (the first that carries no warm-up) each level keeps its best seed."""
    result, reports, per_step, took = _run(model_store, picture, budget_s=600.0)
    assert took <= 600.0
    assert (result.steps_run, result.stop_reason) == (ITERATIONS, "iterations")
    assert per_step == [6, 6] + [2] * (ITERATIONS - 2)
    note = (
        "1 seed instead of 3 to fit 10 min (a step of 6 sketches took 25 s; "
        "all the work would take 25 min)"
    )
    assert result.schedule_notes == (note,)
    assert result.to_json()["schedule_notes"] == [note]
    # the progress says it from the step it was decided at; the dropped seeds keep their loss
    assert reports[0].schedule_notes == () and reports[1].schedule_notes == (note,)
    assert all(len(losses) == SEEDS for losses in result.extra["seed_losses"].values())
    assert all(math.isfinite(v) for v in result.extra["seed_losses"]["3"])


def test_a_tiny_budget_plans_at_once_one_seed_and_few_iterations(model_store, picture):
    """200 s: the first step (25 s) is over a tenth of the 174 s left, so waiting for a second
    full step would cost too much; one seed a level and the 18 more steps of 9 s that fit
    with the final evaluation's reserve."""
    result, reports, per_step, took = _run(model_store, picture, budget_s=200.0)
    assert took <= 200.0
    assert (result.steps_run, result.stop_reason) == (19, "budget")
    assert per_step == [6] + [2] * 18
    assert result.schedule_notes == (
        "1 seed instead of 3 and about 19 iterations instead of 60 to fit 3.3 min (a step of 6 "
        "sketches took 25 s; all the work would take 25 min)",
    )
    assert reports[-1].planned_steps == 19 and reports[-1].total == ITERATIONS
    assert all(math.isfinite(level.loss) for level in result.levels)


def test_the_reduced_batch_is_measured_and_the_iterations_follow_it():
    """The model of the step cost is a guess: the reduced batch's steps are measured (its
    first left out: new shapes), the iteration count follows them, and a change of more than
    a fifth of the count last said is said again; a small one is not."""
    from clipasso_server.engine.optimise import BestIterate, StepReport

    clock = FakeClock()
    planner = BudgetPlanner(
        levels=2,
        seeds=3,
        iterations=100,
        augmentations=1,
        budget_s=300.0,
        deadline=300.0,
        clock=clock,
    )
    best = BestIterate(torch.zeros(6, 1, 4, 2))
    best.update([0.5, 0.2, 0.9, 0.3, 0.1, 0.4], torch.zeros(6, 1, 4, 2))

    def step(number: int, took: float):
        clock.now += took
        decision = planner(StepReport(number, best, True, 40.0, 100))
        if decision is not None:
            best.retire(decision.retire)
        return decision

    first = step(1, 40.0)  # 40 s > a tenth of the 260 s left: plan now
    assert first.retire == (0, 2, 3, 5)  # each level keeps its best-evaluated seed
    # one seed a level is predicted at 40 * 9/25 = 14.4 s: (260 - 10) / 14.4 -> 17 more steps
    assert first.iterations == 18
    assert first.note.startswith("1 seed instead of 3 and about 18 iterations instead of 100")
    # the reduced batch's first step may carry kernels for its new shapes: not counted
    assert step(2, 20.0) is None
    # it really takes 20 s (the reserve, a quarter of a full step, now 13.9 s): 10 more
    again = step(3, 20.0)
    assert again.retire == () and again.iterations == 13
    assert again.note == (
        "re-planned from the measured step (a step of 2 sketches took 20 s): "
        "about 13 iterations instead of 18 to fit 5 min"
    )
    follows = step(4, 24.0)  # mean 22 s: 8 more, 12 in all: within a fifth of 13, not said
    assert follows == Decision(iterations=12)
    assert planner.notes == [first.note, again.note]


def test_a_machine_that_gets_busier_is_planned_for_when_the_work_stops_fitting():
    """Work that fits is asked about again after every step, on the mean step time (the first
    step's warm-up left out): when steps slow down, the plan comes then, as a first plan."""
    from clipasso_server.engine.optimise import BestIterate, StepReport

    clock = FakeClock()
    planner = BudgetPlanner(
        levels=1,
        seeds=3,
        iterations=10,
        augmentations=1,
        budget_s=100.0,
        deadline=100.0,
        clock=clock,
    )
    best = BestIterate(torch.zeros(3, 1, 4, 2))
    best.update([0.3, 0.1, 0.2], torch.zeros(3, 1, 4, 2))
    decisions = []
    for step, took in enumerate([5.0, 5.0, 5.0, 30.0], start=1):
        clock.now += took
        decisions.append(planner(StepReport(step, best, True, 5.0, 10)))
    assert decisions[:3] == [None, None, None]  # 10 steps of 5 s fit in 100 s
    # mean of steps 2-4: 13.3 s; 6 more of all three seeds (80 s) do not fit in the 55 s
    # left, of one seed (5.1 s each) they do
    assert decisions[3].retire == (0, 2) and decisions[3].iterations == 10
    assert decisions[3].note == (
        "1 seed instead of 3 to fit 1.7 min (a step of 3 sketches took 13.3 s; "
        "all the work would take 2.2 min)"
    )


def test_durations_read_as_the_dialog_says_them():
    assert [format_duration(s) for s in (45, 120, 150, 600, 3600, 11000)] == [
        "45 s",
        "2 min",
        "2.5 min",
        "10 min",
        "1 h",
        "3.1 h",
    ]


def test_the_command_line_says_the_plan_even_when_quiet(test_weights_dir, tmp_path, capsys):
    """`clipasso sketch --time-budget` on real time: 20000 iterations of 3 seeds never fit in
    4 s whatever the machine, so the plan is said on stderr and kept in the SVG's metadata."""
    from clipasso_server.cli import main
    from clipasso_server.engine.svg_output import read_metadata

    out = tmp_path / "planned.svg"
    args = ["sketch", "sample", "-o", str(out), "--clip-weights", str(test_weights_dir)]
    args += ["--quiet", "--loss-model", "test-tiny-rn", "--saliency-model", "test-tiny-vit"]
    args += ["--device", "cpu", "--iterations", "20000", "--seeds", "3", "--levels", "2"]
    assert main([*args, "--no-image", "--time-budget", "4"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "instead of" in line]
    assert said and said[0].startswith("clipasso sketch: 1 seed instead of 3 and ")
    record = read_metadata(out.read_text())
    assert record["schedule_notes"] and said[0].endswith(record["schedule_notes"][0])
    assert record["stop_reason"] == "budget"
