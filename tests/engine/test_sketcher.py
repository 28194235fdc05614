"""The optimisation loop and ``sketch()``, run for real with the tiny CLIP models on the CPU.

The tiny models have random weights, so they cannot be expected to draw a recognisable
sketch; the end-to-end tests check structure, mapping, reproducibility, batching, progress,
cancellation and early stopping, and that the full loss goes down. Convergence towards a shape
is tested through ``optimise``'s documented objective hook (see that test's docstring).
"""

from __future__ import annotations

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
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.saliency import initial_strokes  # noqa: E402
from clipasso_server.engine.sketcher import optimise, parse_color, sketch  # noqa: E402
from clipasso_server.engine.types import SketchConfig  # noqa: E402

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


def test_sketch_returns_every_level_in_image_pixels(batched, model_store):
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
    }
    assert result.version == __version__
    assert result.device == "cpu"
    assert result.steps_run == STEPS


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


def test_batched_levels_equal_separate_runs(image, model_store):
    # Over three steps: the convolutions' rounding depends on the batch size, and Adam at lr 1
    # (sign-like steps) grows such 1e-7 differences into visible ones within about ten steps
    # (measured: 2e-5 px after 1 step, 7e-5 after 3, 0.1 px after 8). Any real coupling
    # between the sketches of a batch shows at once.
    short = {"iterations": 3, "eval_every": 1}
    result = sketch(image, _config(**short), model_store)
    for level in result.levels:
        alone = sketch(image, _config(levels=(level.strokes,), **short), model_store).levels[0]
        assert alone.seed == level.seed
        assert alone.loss == pytest.approx(level.loss, rel=1e-4)
        assert torch.allclose(_points(alone), _points(level), atol=1e-3)


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
    assert result.steps_run == 3


def test_bad_settings_are_refused(image, model_store):
    with pytest.raises(SettingsError):
        sketch(image, _config(levels=()), model_store)
    with pytest.raises(SettingsError):
        sketch(image, _config(color="black"), model_store)
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
    ``BlurPyramid`` features, passed through ``optimise``'s ``loss_model``/``loss_fn`` hook;
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
        photo,
        points,
        torch.ones(1, 8, dtype=torch.bool),
        renderer=get_renderer("auto"),
        loss_model=BlurPyramid(),
        loss_fn=functools.partial(clip_loss, semantic_weight=0.0),
        width=3.0,
        color=parse_color("#000000"),
        iterations=50,
        eval_every=5,
        augmentations=2,
        generator=torch.Generator().manual_seed(0),
    )
    before = _distance_to_circle(points[0], centre, radius)
    after = _distance_to_circle(outcome.points[0], centre, radius)
    assert before > 20
    assert after < 0.5 * before
