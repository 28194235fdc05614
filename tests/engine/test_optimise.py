"""The loop's parts, each on its own: the step's loss, the best-iterate bookkeeping, the time
budget, and the loop returning each sketch's best iterate. Real tiny CLIP (open_clip's
ModifiedResNet from the test config) and the real renderer, on the ``--device`` and in the
``--dtype`` the session was started with (tests/conftest.py)."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

from clipasso_server.engine.errors import Cancelled  # noqa: E402
from clipasso_server.engine.optimise import (  # noqa: E402
    FINAL_RESERVE,
    BestIterate,
    Drawing,
    LoopSettings,
    StepBudget,
    Target,
    optimise,
    step_loss,
)
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.saliency import initial_strokes  # noqa: E402
from clipasso_server.engine.sketcher import parse_color  # noqa: E402

CANVAS = 224


@pytest.fixture(scope="module")
def loss_model(model_store):
    return model_store.loss_model("test-tiny-rn")


@pytest.fixture(scope="module")
def photo(device):
    return _photo().to(device)


def _photo() -> torch.Tensor:
    """A dark disc with a light bar on white."""
    yy, xx = torch.meshgrid(torch.arange(CANVAS) + 0.5, torch.arange(CANVAS) + 0.5, indexing="ij")
    photo = torch.ones(3, CANVAS, CANVAS)
    photo[:, (xx - 100) ** 2 + (yy - 120) ** 2 < 60**2] = 0.2
    photo[:, (yy - 110).abs() < 8] = 0.8
    return photo


def _strokes(count: int, sketches: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(sketches * count, 2, generator=generator) * 160 + 32
    return initial_strokes(starts, CANVAS, generator).view(sketches, count, 4, 2)


def _drawing(sketches: int, count: int, device: torch.device) -> Drawing:
    mask = torch.ones(sketches, count, dtype=torch.bool, device=device)
    return Drawing(get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask, CANVAS)


def _grid(target: Target, views: int = 3, seed: int = 1) -> torch.Tensor:
    return target.view_grid(views, torch.Generator().manual_seed(seed))


def test_sketch_and_photo_are_compared_under_the_same_view(loss_model, photo):
    # a "sketch" identical to the photo matches it in every view only if both get that view
    target = Target(photo, loss_model)
    same = photo[None].expand(2, -1, -1, -1)
    loss, plain = step_loss(same, target, _grid(target))
    # the views are not trivial: another image does not match under them
    other = float(step_loss(torch.flip(same, dims=[-1]), target, _grid(target))[0].min())
    assert float(plain.abs().max()) < 1e-3 * other
    assert float(loss.abs().max()) < 1e-3 * other


def test_views_reach_the_training_loss_and_its_gradient(loss_model, photo, loss_rtol):
    target = Target(photo, loss_model)
    drawing = _drawing(2, 4, photo.device)
    points = _strokes(4, 2).to(photo.device).requires_grad_(True)

    def loss_and_grad(grid):
        points.grad = None
        loss, plain = step_loss(drawing(points), target, grid)
        loss.sum().backward()
        return loss.detach(), plain.detach(), points.grad.clone()

    with_views, plain_a, grad_views = loss_and_grad(_grid(target))
    without, plain_b, grad_plain = loss_and_grad(None)
    assert torch.allclose(plain_a, plain_b, rtol=loss_rtol)  # the plain view is the evaluation
    assert torch.equal(without, plain_b)
    assert not torch.allclose(with_views, without, rtol=1e-3)
    cosine = torch.nn.functional.cosine_similarity(grad_views.flatten(), grad_plain.flatten(), 0)
    assert float(cosine) < 0.99


def test_best_iterate_keeps_each_sketchs_best_and_notices_a_plateau():
    start = torch.zeros(2, 1, 4, 2)
    best = BestIterate(start, patience=2)
    best.update([3.0, 5.0], torch.full((2, 1, 4, 2), 1.0))
    best.update([2.0, 6.0], torch.full((2, 1, 4, 2), 2.0))
    assert best.loss == [2.0, 5.0]
    assert best.points[0].unique().tolist() == [2.0] and best.points[1].unique().tolist() == [1.0]
    assert best.frozen == [False, False]
    best.update([2.5, 7.0], torch.full((2, 1, 4, 2), 3.0))
    assert best.frozen == [False, True]  # sketch 1: two evaluations without improvement
    best.update([2.0, 4.0], torch.full((2, 1, 4, 2), 4.0))  # equal is no improvement
    assert best.loss == [2.0, 4.0] and best.frozen == [True, False]
    assert BestIterate(start).frozen == [False, False]  # no patience: never frozen


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_measures_the_step_time_and_allows_what_fits():
    clock = FakeClock()
    budget = StepBudget(deadline=10.0, clock=clock)
    budget.begin()
    assert budget.step_time_s is None and budget.allows_another()
    clock.now = 3.0  # the first step carries the warm-up
    budget.step_done()
    assert budget.step_time_s == 3.0
    for _ in range(2):
        clock.now += 1.0
        budget.step_done()
    assert budget.step_time_s == pytest.approx(1.0)  # the steps after the first
    # at t=5 with 1 s steps, 4 more fit and leave the final evaluation's reserve
    assert budget.planned(100) == 3 + math.floor(5 - FINAL_RESERVE)
    assert budget.planned(4) == 4
    assert budget.allows_another()
    clock.now = 10.0 - (1 + FINAL_RESERVE) + 0.01
    assert not budget.allows_another()
    assert StepBudget(None, clock).allows_another()


def test_budget_times_a_smaller_batch_afresh():
    """Sketches retired mid-run: the steps that follow are timed on their own, so the budget
    neither stops early on the old batch's cost nor plans more steps than the new cost allows."""
    clock = FakeClock()
    budget = StepBudget(deadline=100.0, clock=clock)
    budget.begin()
    for _ in range(3):  # a first step, then two of 10 s with the whole batch
        clock.now += 10.0
        budget.step_done()
    budget.rebase()
    assert budget.step_time_s == pytest.approx(10.0)  # held until a step of the new batch ended
    for _ in range(2):
        clock.now += 2.0
        budget.step_done()
    assert budget.step_time_s == pytest.approx(2.0)
    room = 100.0 - clock.now - FINAL_RESERVE * 2.0
    assert budget.planned(1000) == 5 + math.floor(room / 2.0)


# at lr 4 the loss falls and the final iterate is best; at lr 300 the strokes leave the canvas
# after the first step, so the start stays best
@pytest.mark.parametrize("learning_rate", [4.0, 300.0])
def test_loop_returns_the_best_iterate_and_its_reevaluated_loss(
    loss_model, photo, loss_rtol, learning_rate
):
    target = Target(photo, loss_model)
    drawing = _drawing(3, 3, photo.device)
    running = []
    outcome = optimise(
        target,
        _strokes(3, 3, seed=4),
        drawing,
        LoopSettings(iterations=6, eval_every=2, augmentations=1, learning_rate=learning_rate),
        generator=torch.Generator().manual_seed(0),
        on_step=lambda report: running.append(list(report.best.loss)),
    )
    assert outcome.steps_run == 6 and outcome.stop_reason == "iterations"
    assert len(running) == 6
    for before, after in itertools.pairwise(running):
        assert all(b <= a for a, b in zip(before, after, strict=True))
    # the final iterate is evaluated too: the result is never worse than the running best
    assert all(o <= r for o, r in zip(outcome.loss.tolist(), running[-1], strict=True))
    again = target.evaluate(drawing(outcome.points.to(photo.device))).double().cpu()
    assert torch.allclose(again, outcome.loss, rtol=loss_rtol)
    if learning_rate > 100:
        assert outcome.loss.tolist() == running[0]


def test_loop_stops_on_a_plateau_and_says_so(loss_model, photo):
    outcome = optimise(
        Target(photo, loss_model),
        _strokes(2, 1),
        _drawing(1, 2, photo.device),
        LoopSettings(
            iterations=30, eval_every=1, augmentations=0, learning_rate=0.0, plateau_patience=2
        ),
    )
    assert (outcome.steps_run, outcome.stop_reason) == (3, "plateau")


def test_loop_stops_when_the_budget_is_spent(loss_model, photo):
    clock = FakeClock()

    def tick() -> bool:  # every step takes one second
        clock.now += 1.0
        return False

    outcome = optimise(
        Target(photo, loss_model),
        _strokes(2, 1),
        _drawing(1, 2, photo.device),
        LoopSettings(iterations=40, eval_every=3, augmentations=0),
        budget=StepBudget(deadline=8.0, clock=clock),
        should_stop=tick,
    )
    assert outcome.stop_reason == "budget"
    assert outcome.steps_run == 6  # step k ends at t=k; one more must end by 8 - reserve
    assert math.isfinite(float(outcome.loss[0]))


def test_cancel_carries_the_best_so_far(loss_model, photo):
    steps = []
    with pytest.raises(Cancelled) as info:
        optimise(
            Target(photo, loss_model),
            _strokes(2, 2),
            _drawing(2, 2, photo.device),
            LoopSettings(iterations=20, eval_every=1, augmentations=0),
            on_step=lambda report: steps.append(list(report.best.loss)),
            should_stop=lambda: len(steps) >= 2,
        )
    snapshot = info.value.snapshot
    assert (snapshot.steps_run, snapshot.stop_reason) == (2, "cancel")
    assert snapshot.loss.tolist() == steps[-1]
    with pytest.raises(Cancelled) as before_any:
        optimise(
            Target(photo, loss_model),
            _strokes(2, 1),
            _drawing(1, 2, photo.device),
            LoopSettings(iterations=5),
            should_stop=lambda: True,
        )
    assert before_any.value.snapshot is None


def _tiny(directory, device, precision):
    from clipasso_server.engine.clip_models import ModelStore

    store = ModelStore(device, directory, allow_download=False, precision=precision)
    return store.loss_model("test-tiny-rn")


def test_bf16_autocast_runs_the_loop_on_the_cpu(test_weights_dir):
    """The mixed-precision path CUDA takes (bf16 autocast in the loss model), run on the CPU
    whatever ``--dtype`` says, so every test run exercises it: float32 outputs, a loss and a
    gradient close to float32's."""
    results = []
    for precision in ("bf16", "fp32"):
        model = _tiny(test_weights_dir, "cpu", precision)
        target = Target(_photo(), model)
        points = _strokes(3, 2).requires_grad_(True)
        loss, _ = step_loss(_drawing(2, 3, torch.device("cpu"))(points), target, _grid(target))
        loss.sum().backward()
        results.append((loss.detach(), points.grad))
    (loss_bf16, grad_bf16), (loss_fp32, grad_fp32) = results
    assert loss_bf16.dtype == torch.float32 and bool(torch.isfinite(grad_bf16).all())
    assert not torch.equal(loss_bf16, loss_fp32)  # bf16 really ran
    assert torch.allclose(loss_bf16, loss_fp32, rtol=5e-2)
    cosine = torch.nn.functional.cosine_similarity(grad_bf16.flatten(), grad_fp32.flatten(), 0)
    assert float(cosine) > 0.9


@pytest.mark.cuda
def test_a_step_on_cuda_matches_the_cpu(test_weights_dir):
    losses = []
    for name in ("cpu", "cuda"):
        device = torch.device(name)
        model = _tiny(test_weights_dir, device, "fp32")
        target = Target(_photo().to(device), model)
        sketches = _drawing(2, 3, device)(_strokes(3, 2).to(device))
        losses.append(step_loss(sketches, target, _grid(target))[0].cpu())
    assert torch.allclose(losses[0], losses[1], rtol=1e-3)


class LoadingTakesTime:
    """The session's real ModelStore, whose model loads take ``load_s`` each on ``clock`` (the
    store has loaded them already; only the time a cold load costs is what is under test)."""

    def __init__(self, store, clock: FakeClock, load_s: float) -> None:
        self.store, self.clock, self.load_s = store, clock, load_s

    def loss_model(self, name: str, precision: str = "auto"):
        self.clock.now += self.load_s
        return self.store.loss_model(name, precision)

    def saliency_model(self, name: str):
        self.clock.now += self.load_s
        return self.store.saliency_model(name)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def _budgeted_sketch(model_store, load_s: float, budget_s: float):
    """A tiny sketch whose steps take 1 s each and whose two model loads ``load_s`` each,
    on a fake clock; (steps run, stop reason)."""
    from PIL import Image, ImageDraw

    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.types import SketchConfig

    picture = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(picture).ellipse((20, 20, 76, 76), fill=(30, 30, 30))
    config = SketchConfig(
        levels=(2,),
        seeds=1,
        iterations=100,
        eval_every=5,
        augmentations=0,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        time_budget_s=budget_s,
    )
    clock = FakeClock()

    def tick() -> bool:  # should_stop runs before every step: each step takes one second
        clock.now += 1.0
        return False

    models = LoadingTakesTime(model_store, clock, load_s)
    result = sketch(picture, config, models, should_stop=tick, clock=clock)
    return result.steps_run, result.stop_reason


def test_the_time_budget_counts_model_loading(model_store):
    """``time_budget_s`` is the user's wait for the whole job: a budget clock that started
    after the models loaded would run as many steps with a slow load as without one."""
    quick = _budgeted_sketch(model_store, load_s=0.0, budget_s=20.0)
    slow = _budgeted_sketch(model_store, load_s=3.0, budget_s=20.0)
    assert quick[1] == slow[1] == "budget"
    assert slow[0] == quick[0] - 6  # the 6 s of loading cost exactly 6 one-second steps
    assert _budgeted_sketch(model_store, load_s=15.0, budget_s=20.0) == (0, "budget")


def test_the_best_handed_on_holds_the_strokes_of_its_loss_not_the_latest(
    loss_model, photo, loss_rtol
):
    """What ``on_step`` gets (and snapshots are made of) while steps stop improving: at lr 300
    the strokes leave the canvas after the first step, so every later iterate is worse and the
    best stays the start, which re-evaluates to the loss reported with it."""
    target = Target(photo, loss_model)
    drawing = _drawing(3, 3, photo.device)
    start = _strokes(3, 3, seed=4)
    seen = []

    def record(report) -> None:
        if report.evaluated:
            seen.append((report.step, report.best.points.clone(), list(report.best.loss)))

    optimise(
        target,
        start,
        drawing,
        LoopSettings(iterations=7, eval_every=2, augmentations=1, learning_rate=300.0),
        generator=torch.Generator().manual_seed(0),
        on_step=record,
    )
    assert [step for step, _, _ in seen] == [1, 3, 5, 7]
    assert all(loss == seen[0][2] for _, _, loss in seen)  # no evaluation improved on the start
    for _, points, loss in seen:
        assert torch.equal(points.cpu(), start)
        again = target.evaluate(drawing(points)).double().cpu()
        assert torch.allclose(again, torch.tensor(loss, dtype=torch.float64), rtol=loss_rtol)


def _snapshots(model_store, learning_rate: float) -> list:
    from PIL import Image, ImageDraw

    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.types import SketchConfig

    picture = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(picture).ellipse((20, 20, 76, 76), fill=(30, 30, 30))
    config = SketchConfig(
        levels=(2, 3),
        seeds=1,
        iterations=7,
        eval_every=2,
        augmentations=1,
        learning_rate=learning_rate,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
    )
    clock = FakeClock()

    def tick() -> bool:
        clock.now += 1.0
        return False

    reports = []
    sketch(
        picture,
        config,
        model_store,
        progress=reports.append,
        should_stop=tick,
        clock=clock,
        snapshot_every_s=0.0,  # a snapshot at every evaluation
    )
    return [report.snapshot for report in reports if report.snapshot is not None]


def test_a_partial_snapshot_holds_the_best_strokes_when_the_latest_are_worse(model_store):
    """The partial result a client is shown mid-run: with steps that only make it worse (lr
    300), every snapshot holds the start strokes, the ones a run that never moves (lr 0) has."""
    still = _snapshots(model_store, 0.0)
    wild = _snapshots(model_store, 300.0)
    assert [s.step for s in wild] == [s.step for s in still] == [1, 3, 5, 7]
    for snapshot in wild:
        for level, start in zip(snapshot.levels, still[0].levels, strict=True):
            assert level.loss == start.loss
            assert level.paths == start.paths
