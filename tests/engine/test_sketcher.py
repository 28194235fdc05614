"""The optimisation loop and ``sketch()``, run for real with the tiny CLIP models on the CPU.

The tiny models have random weights, so they cannot be expected to draw a recognisable
sketch; the end-to-end tests check structure, mapping, reproducibility, batching, progress,
cancellation and early stopping, and that the full loss goes down. Convergence towards a shape
is tested through the loop's documented objective hook (``Target``) (see that test's docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from clipasso_server import __version__  # noqa: E402
from clipasso_server.engine.errors import Cancelled, SettingsError  # noqa: E402
from clipasso_server.engine.losses import clip_loss  # noqa: E402
from clipasso_server.engine.optimise import Drawing, LoopSettings, Target, optimise  # noqa: E402
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.saliency import initial_strokes, xdog_edges  # noqa: E402
from clipasso_server.engine.sketcher import parse_color, prepare_photo, sketch  # noqa: E402
from clipasso_server.engine.start import photo_saliency, start_points  # noqa: E402
from clipasso_server.engine.types import SketchConfig  # noqa: E402
from inkscape_clipasso import protocol  # noqa: E402

IMAGE_SIZE = (180, 120)  # wide, so the canvas has white padding above and below
STEPS = 10


def _config(**overrides) -> SketchConfig:
    base = dict(
        levels=(2, 4),
        seeds=2,
        iterations=STEPS,
        eval_every=3,
        augmentations=2,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        renderer="auto",
        seed=7,
    )
    base.update(overrides)
    return SketchConfig(**base)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    picture = Image.new("RGB", IMAGE_SIZE, "white")
    draw = ImageDraw.Draw(picture)
    draw.ellipse((40, 20, 140, 100), fill=(30, 30, 30))
    draw.rectangle((70, 45, 110, 75), fill=(220, 220, 220))
    return picture


@pytest.fixture(scope="module")
def batched(image, model_store):
    """One batched run (2 levels x 2 seeds) with its progress reports."""
    reports = []
    result = sketch(image, _config(), model_store, progress=reports.append)
    return result, reports


def _points(level) -> torch.Tensor:
    return torch.tensor([path.points for path in level.paths], dtype=torch.float64)


def test_sketch_returns_every_level_in_image_pixels(batched, model_store, precision):
    result, _ = batched
    assert [level.strokes for level in result.levels] == [2, 4]
    assert [len(level.paths) for level in result.levels] == [2, 4]
    assert (result.image_width, result.image_height) == IMAGE_SIZE
    scale = 224 / max(IMAGE_SIZE)
    for level in result.levels:
        assert level.seed in (7, 8)
        assert math.isfinite(level.loss)
        points = _points(level)
        assert points.shape == (level.strokes, 4, 2)
        assert bool(torch.isfinite(points).all())
        # near the image: at most a quarter of its size outside it
        assert float(points[..., 0].min()) > -0.25 * IMAGE_SIZE[0]
        assert float(points[..., 0].max()) < 1.25 * IMAGE_SIZE[0]
        assert float(points[..., 1].min()) > -0.25 * IMAGE_SIZE[1]
        assert float(points[..., 1].max()) < 1.25 * IMAGE_SIZE[1]
        for path in level.paths:
            assert path.width == pytest.approx(3.0 / scale)
            assert path.color == "#000000"
    assert result.settings == _config().settings_json()
    assert result.models == {
        "loss": model_store.describe("test-tiny-rn"),
        "saliency": model_store.describe("test-tiny-vit"),
        "loss_arithmetic": "bfloat16 autocast" if precision == "bf16" else "float32",
    }
    assert result.version == __version__
    assert result.device == "cpu"
    assert result.steps_run == STEPS
    assert (result.stop_reason, result.partial, result.step) == ("iterations", False, None)
    assert result.to_json()["stop_reason"] == "iterations"


def test_best_seed_is_the_one_with_the_lowest_loss(batched):
    result, _ = batched
    for level in result.levels:
        losses = result.extra["seed_losses"][str(level.strokes)]
        assert len(losses) == 2
        assert level.loss == min(losses)
        assert level.seed == 7 + losses.index(min(losses))


def test_progress_reports_every_step_and_the_loss_goes_down(batched):
    result, reports = batched
    assert [r.step for r in reports] == list(range(1, STEPS + 1))
    assert all(r.total == STEPS for r in reports)
    assert all(set(r.best_loss) == {2, 4} for r in reports)
    assert all(b.elapsed_s >= a.elapsed_s for a, b in itertools.pairwise(reports))
    initial = reports[0].best_loss  # the evaluation at step 1 is of the starting strokes
    for level in result.levels:
        assert level.loss < initial[level.strokes]


def test_same_inputs_give_the_same_result(batched, image, model_store):
    again = sketch(image, _config(), model_store)
    assert again.to_json() == batched[0].to_json()


def test_batched_levels_equal_separate_runs(image, model_store, dtype, loss_rtol):
    # Over three steps: the convolutions' rounding depends on the batch size, and Adam at lr 1
    # (sign-like steps) grows such 1e-7 differences into visible ones within about ten steps
    # (measured: 2e-5 px after 1 step, 7e-5 after 3, 0.1 px after 8). Any real coupling
    # between the sketches of a batch shows at once.
    short = {"iterations": 3, "eval_every": 1}
    result = sketch(image, _config(**short), model_store)
    for level in result.levels:
        alone = sketch(image, _config(levels=(level.strokes,), **short), model_store).levels[0]
        assert alone.seed == level.seed
        assert alone.loss == pytest.approx(level.loss, rel=loss_rtol)
        # under bf16 the rounding differences are large enough for Adam's sign-like steps
        # to go their own way: only the losses are compared then
        if dtype == torch.float32:
            assert torch.allclose(_points(alone), _points(level), atol=1e-3)


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_a_job_computes_in_the_precision_it_asks_for(image, model_store, test_weights_dir, asked):
    """A job's ``precision`` overrides the store's: one loaded model serves both, and the
    result equals a run on a store made in that precision, and says which arithmetic ran."""
    from clipasso_server.engine.clip_models import ModelStore

    config = _config(iterations=3, precision=asked)
    result = sketch(image, config, model_store)
    own = ModelStore("cpu", test_weights_dir, allow_download=False, precision=asked)
    expected = sketch(image, dataclasses.replace(config, precision="auto"), own)
    assert [lv.paths for lv in result.levels] == [lv.paths for lv in expected.levels]
    arithmetic = {"fp32": "float32", "bf16": "bfloat16 autocast"}[asked]
    assert result.models["loss_arithmetic"] == expected.models["loss_arithmetic"] == arithmetic
    other = "bf16" if asked == "fp32" else "fp32"
    differs = sketch(image, dataclasses.replace(config, precision=other), model_store)
    assert [lv.paths for lv in differs.levels] != [lv.paths for lv in result.levels]


def test_cancellation_stops_within_one_step(image, model_store):
    reports, checks = [], []

    def should_stop() -> bool:
        checks.append(len(reports))
        return len(reports) >= 3

    with pytest.raises(Cancelled):
        sketch(
            image,
            _config(iterations=50),
            model_store,
            progress=reports.append,
            should_stop=should_stop,
        )
    assert [r.step for r in reports] == [1, 2, 3]


def test_plateau_stop_ends_the_loop_early(image, model_store):
    # with a zero learning rate nothing can improve after the first evaluation
    config = _config(iterations=40, eval_every=1, plateau_patience=2, learning_rate=0.0)
    result = sketch(image, config, model_store)
    assert (result.steps_run, result.stop_reason) == (3, "plateau")


def test_every_seed_starts_apart_and_follows_its_own_trajectory(image, model_store):
    saliency = torch.rand(224, 224, generator=torch.Generator().manual_seed(0))
    points, mask = start_points(saliency, (3, 5), (7, 8, 9), 224)
    assert points.shape == (6, 5, 4, 2) and mask.sum(dim=1).tolist() == [3, 3, 3, 5, 5, 5]
    for level in (points[:3, :3], points[3:]):
        starts = [frozenset(map(tuple, sketch_points[:, 0].tolist())) for sketch_points in level]
        assert len(set(starts)) == 3
        assert all(not (a & b) for a, b in itertools.combinations(starts, 2))
    result = sketch(image, _config(levels=(3,), seeds=3, iterations=4, eval_every=2), model_store)
    assert len(set(result.extra["seed_losses"]["3"])) == 3


def test_photo_saliency_keeps_the_attention_on_the_reference_edges(image, model_store):
    config = _config()
    photo, _ = prepare_photo(image, config, model_store)
    saliency = photo_saliency(photo, model_store.saliency_model(config.saliency_model))
    edges = xdog_edges(photo)
    assert saliency.shape == (224, 224) and float(saliency.max()) == pytest.approx(1.0)
    assert bool((saliency[~edges] == 0).all())
    assert float((saliency > 0).float().mean()) > 0.5 * float(edges.float().mean())


class FakeClock:
    """Seconds that pass only when ``tick`` is called: one per optimisation step."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> bool:  # used as should_stop, which runs before every step
        self.now += 1.0
        return False


def test_time_budget_runs_what_fits_and_says_it_stopped_for_the_budget(image, model_store):
    clock = FakeClock()
    reports = []
    config = _config(levels=(2,), seeds=1, iterations=40, augmentations=1, time_budget_s=9.0)
    result = sketch(
        image, config, model_store, progress=reports.append, should_stop=clock.tick, clock=clock
    )
    # the check before starting takes 1 s, then step k ends at t=k+1; the budget keeps a
    # quarter of a step for the final evaluation
    assert (result.steps_run, result.stop_reason) == (6, "budget")
    assert reports[-1].step == 6
    assert reports[-1].step_time_s == pytest.approx(1.0)
    # planned from the end of step 6 (t=7): one more would fit if it took no time before its
    # check, which this clock charges there
    assert reports[-1].planned_steps == 7 and reports[0].planned_steps <= 40
    assert result.to_json()["steps_run"] == 6 and "partial" not in result.to_json()
    assert math.isfinite(result.levels[0].loss)


def test_snapshots_hold_the_best_strokes_so_far_at_most_once_per_interval(image, model_store):
    clock = FakeClock()
    reports = []
    config = _config(iterations=9, eval_every=2, augmentations=1)
    result = sketch(
        image,
        config,
        model_store,
        progress=reports.append,
        should_stop=clock.tick,
        clock=clock,
        snapshot_every_s=2.5,
    )
    with_snapshot = [r for r in reports if r.snapshot is not None]
    assert [r.step for r in with_snapshot] == [1, 5, 9]  # evaluation steps, 2.5 s apart
    for report in with_snapshot:
        snap = report.snapshot
        assert (snap.partial, snap.step, snap.steps_run) == (True, report.step, report.step)
        assert snap.stop_reason is None
        assert {level.strokes: level.loss for level in snap.levels} == report.best_loss
        assert [len(level.paths) for level in snap.levels] == [2, 4]
        body = {**snap.to_json(), "id": "0" * 32, "svg": "<svg/>"}
        assert protocol.validate_result(body)["partial"] is True
    last = with_snapshot[-1].snapshot
    for mid, final in zip(last.levels, result.levels, strict=True):
        if mid.loss == final.loss:  # no better iterate after the snapshot: the same strokes
            assert mid.paths == final.paths
        assert final.loss <= mid.loss


def test_cancel_carries_the_best_strokes_so_far(image, model_store):
    reports = []
    with pytest.raises(Cancelled) as info:
        sketch(
            image,
            _config(iterations=30, eval_every=1, augmentations=1),
            model_store,
            progress=reports.append,
            should_stop=lambda: len(reports) >= 3,
        )
    snapshot = info.value.snapshot
    assert (snapshot.partial, snapshot.step, snapshot.stop_reason) == (True, 3, "cancel")
    assert {level.strokes: level.loss for level in snapshot.levels} == reports[-1].best_loss
    assert snapshot.to_json()["stop_reason"] == "cancel"
    with pytest.raises(Cancelled) as early:
        sketch(image, _config(), model_store, should_stop=lambda: True)
    assert early.value.snapshot is None


@pytest.fixture(scope="module")
def half_background_store(test_weights_dir, tmp_path_factory):
    """A store whose real segmentation network says P(background) = 0.4 everywhere."""
    from clipasso_server.engine import background
    from clipasso_server.engine.clip_models import ModelStore

    directory = tmp_path_factory.mktemp("weights-with-background")
    for path in test_weights_dir.iterdir():
        (directory / path.name).symlink_to(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = background.build_segmentation_model()
    head = network.classifier[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-30.0)
        head.bias[0] = math.log(0.4)  # background
        head.bias[15] = math.log(0.6)  # person
    torch.save(network.state_dict(), directory / background.BACKGROUND_FILE)
    return ModelStore(device="cpu", weights_dir=directory, allow_download=False)


def test_background_removal_whitens_the_photo_inside_sketch(image, half_background_store):
    config = _config(levels=(2,), seeds=1, iterations=1, augmentations=0)
    plain, _ = prepare_photo(image, config, half_background_store)
    whitened, _ = prepare_photo(
        image, dataclasses.replace(config, remove_background=True), half_background_store
    )
    assert torch.allclose(whitened, 0.6 * plain + 0.4, atol=1e-4)
    kept = sketch(image, config, half_background_store)
    removed = sketch(
        image, dataclasses.replace(config, remove_background=True), half_background_store
    )
    assert removed.settings["remove_background"] is True
    assert removed.levels[0].paths != kept.levels[0].paths


def test_bad_settings_are_refused(image, model_store):
    with pytest.raises(SettingsError):
        sketch(image, _config(levels=()), model_store)
    with pytest.raises(SettingsError):
        sketch(image, _config(color="black"), model_store)
    with pytest.raises(SettingsError):
        sketch(image, _config(time_budget_s=0.0), model_store)
    with pytest.raises(SettingsError, match="precision must be one of auto, fp32, bf16"):
        sketch(image, _config(precision="fp16"), model_store)
    assert parse_color("#ff000080").tolist() == pytest.approx([1.0, 0.0, 0.0, 128 / 255])


class BlurPyramid:
    """A deterministic differentiable feature extractor: darkness blurred at two scales.

    Stands in for a trained CLIP in the convergence test. Random tiny CLIP weights give no
    reliable pull towards a shape (checked: strokes wander), and real weights cannot be
    downloaded here; blurred darkness maps do have a wide basin around dark lines, so they
    show whether the loop (renderer, augmentations, geometric loss, Adam, best iterate)
    actually moves strokes onto what the photo shows.
    """

    input_size = 224

    def features(self, images: torch.Tensor):
        dark = 1 - images.mean(dim=1, keepdim=True)
        fine = TF.gaussian_blur(F.avg_pool2d(dark, 4), [13, 13], [3.0, 3.0])
        coarse = TF.gaussian_blur(F.avg_pool2d(dark, 8), [13, 13], [3.0, 3.0])
        return [10 * fine, 10 * coarse], coarse.flatten(1)


def _distance_to_circle(points: torch.Tensor, centre: float, radius: float) -> float:
    """Mean distance to the circle of points sampled along the cubic strokes [...,4,2]."""
    t = torch.linspace(0, 1, 20, dtype=points.dtype)
    basis = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=-1)
    curve = torch.einsum("kc,...cd->...kd", basis, points)
    return float(((curve - centre).norm(dim=-1) - radius).abs().mean())


def test_loop_moves_strokes_onto_a_dark_outline():
    """Strokes started around a dark ring end much nearer to it.

    The objective is the real geometric loss (``clip_loss`` with semantic weight 0) on the
    ``BlurPyramid`` features, passed through ``Target``'s ``loss_model``/``loss_fn`` hook;
    everything else is the production loop with the real renderer and augmentations.
    """
    size, centre, radius = 224, 112.0, 60.0
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    ring = ((xx - centre) ** 2 + (yy - centre) ** 2).sqrt().sub(radius).abs() < 3
    photo = torch.ones(3, size, size)
    photo[:, ring] = 0.0
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(8, 2, generator=generator) * 140 + 42
    points = initial_strokes(start, size, generator)[None]
    outcome = optimise(
        Target(photo, BlurPyramid(), functools.partial(clip_loss, semantic_weight=0.0)),
        points,
        Drawing(get_renderer("auto"), 3.0, parse_color("#000000"), torch.ones(1, 8).bool(), size),
        LoopSettings(iterations=50, eval_every=5, augmentations=2),
        generator=torch.Generator().manual_seed(0),
    )
    before = _distance_to_circle(points[0], centre, radius)
    after = _distance_to_circle(outcome.points[0], centre, radius)
    assert before > 20
    assert after < 0.5 * before
