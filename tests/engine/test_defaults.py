"""The reference's defaults, pinned in one place: a changed constant must be a decision."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from clipasso_server.engine import augment, losses
from clipasso_server.engine.optimise import LoopSettings
from clipasso_server.engine.start import START_TEMPERATURE
from clipasso_server.engine.types import SketchConfig
from inkscape_clipasso import protocol


def test_reference_defaults_and_protocol_bounds():
    config = SketchConfig()
    # the method (method.md, "Reference defaults")
    assert START_TEMPERATURE == 0.3
    assert (augment.DISTORTION, augment.CROP_AREA) == (0.5, 0.8)
    assert (config.augmentations, config.learning_rate, config.eval_every) == (4, 1.0, 10)
    assert (config.iterations, config.seeds, config.width, config.canvas) == (2000, 3, 3.0, 224)
    assert config.levels == (4, 8, 16, 32)
    assert (config.loss_model, config.saliency_model) == ("RN101", "ViT-B-32")
    assert config.plateau_patience is None and config.time_budget_s is None
    assert (losses.GEOMETRIC_WEIGHTS, losses.SEMANTIC_WEIGHT) == ((1.0, 1.0), 0.1)
    loop = LoopSettings(iterations=config.iterations)
    assert (loop.eval_every, loop.augmentations, loop.learning_rate) == (10, 4, 1.0)
    assert loop.plateau_patience is None
    # the protocol's defaults are the engine's, field for field
    assert config.settings_json() == protocol.SketchSettings().to_json()
    # every protocol bound, lower and upper (tests/test_protocol.py checks they are enforced)
    assert (protocol.MIN_STROKES, protocol.MAX_STROKES, protocol.MAX_LEVELS) == (1, 256, 8)
    assert (protocol.MIN_ITERATIONS, protocol.MAX_ITERATIONS) == (1, 20000)
    assert (protocol.MIN_SEEDS, protocol.MAX_SEEDS) == (1, 16)
    assert (protocol.MIN_WIDTH, protocol.MAX_WIDTH) == (0.1, 50.0)
    assert protocol.MAX_SEED_VALUE == 2**31 - 1
    assert (protocol.MIN_TIME_BUDGET_S, protocol.MAX_TIME_BUDGET_S) == (1.0, 7 * 86400.0)
    assert protocol.STOP_REASONS == ("iterations", "plateau", "budget", "cancel")
    assert set(dataclasses.asdict(protocol.SketchSettings())) <= {
        f.name for f in dataclasses.fields(SketchConfig)
    }


# --- the same defaults, pinned through what they do (issue 21) -------------------------------
# A constant can stay 0.3 while the code beside it stops using it; these tests watch the
# behaviour each default decides, through the functions the engine itself calls.


def _tiny_config(**overrides) -> SketchConfig:
    return SketchConfig(
        levels=(2, 3),
        seeds=1,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        renderer="torch",
        **overrides,
    )


def _photo():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).ellipse((20, 24, 76, 80), fill=(30, 30, 30))
    return image


@pytest.fixture
def adam_steps(monkeypatch):
    """Every Adam step the engine takes: (the gradient, the change it made to the points)."""
    import torch

    steps: list = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            before = [p.detach().clone() for p in params]
            grads = [p.grad.detach().clone().flatten() for p in params]
            out = super().step(closure)
            moved = [(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)]
            steps.append((torch.cat(grads), torch.cat(moved)))
            return out

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    return steps


@pytest.mark.parametrize("learning_rate", [None, 0.25])
def test_the_learning_rate_is_the_size_of_the_first_adam_step(
    model_store, adam_steps, learning_rate
):
    """Adam's first step moves each coordinate by lr x g / (|g| + 1e-8): the learning rate
    itself wherever the gradient is not tiny, so the step the engine takes measures it."""
    from clipasso_server.engine.sketcher import sketch

    config = _tiny_config(iterations=1)
    if learning_rate is not None:
        config = dataclasses.replace(config, learning_rate=learning_rate)
    sketch(_photo(), config, model_store)
    ((grad, moved),) = adam_steps
    grad, moved = grad.double(), moved.double()
    used = grad.abs() > 1e-9  # a step of lr / 11 or more: readable in float32 points
    assert int(used.sum()) > 10
    rate = -moved[used] * (grad[used].abs() + 1e-8) / grad[used]
    expected = 1.0 if learning_rate is None else learning_rate  # the reference's default: 1
    assert float(rate.median()) == pytest.approx(expected, rel=1e-3)
    assert float((rate - expected).abs().max()) < 0.01 * expected


def test_the_loop_stops_at_the_iterations_asked_for(model_store, adam_steps):
    from clipasso_server.engine.sketcher import sketch

    reports = []
    result = sketch(_photo(), _tiny_config(iterations=3), model_store, progress=reports.append)
    assert len(adam_steps) == 3 and result.steps_run == 3
    assert result.stop_reason == "iterations" and not result.partial
    assert [r.step for r in reports] == [1, 2, 3] and {r.total for r in reports} == {3}


def test_the_start_temperature_weighs_the_saliency_as_exp_a_over_0_3():
    """Two salient pixels whose saliency differs by 0.3 ln 3: at temperature 0.3 the first is
    drawn three times as often (0.75 of the starts), at 0.6 only 0.63, at 0.15 0.9."""
    import math

    import torch

    from clipasso_server.engine.start import start_points

    saliency = torch.zeros(8, 8)
    saliency[2, 5] = 1.0
    saliency[6, 1] = 1.0 - 0.3 * math.log(3)
    points, _ = start_points(saliency, [1], list(range(4000)), canvas=8)
    first = points[:, 0, 0]  # each sketch's one stroke starts at its first control point
    share = float(
        ((first - torch.tensor([5.5, 2.5])).abs().max(dim=-1).values < 1e-6).float().mean()
    )
    assert share == pytest.approx(0.75, abs=0.03)


def test_the_distortion_moves_the_image_corners_by_up_to_half_of_half_the_side():
    """Each corner moves inwards by U x 0.5 x half the side (U uniform), then 80 % of the area
    is cropped and scaled to the model's input: the image's top edge, seen in a view, is on
    average (1 - 0.5 / 2) / sqrt(0.8) of the view's width. The engine's Target draws exactly
    these views."""
    import torch

    canvas, size, count = 224, 224, 4000
    views = augment.random_views(count, canvas, size, torch.Generator().manual_seed(0))
    to_view = torch.linalg.inv(views.homographies)  # input px -> view px
    corners = torch.tensor([[0.0, 0.0, 1.0], [canvas, 0.0, 1.0]], dtype=torch.float64)
    seen = corners @ to_view.transpose(1, 2)
    x = seen[..., 0] / seen[..., 2]
    top = (x[:, 1] - x[:, 0]) / size
    assert float(top.mean()) == pytest.approx((1 - 0.5 / 2) / 0.8**0.5, rel=0.01)
    # a view never shows less than half the top edge's length, nor all of it... in the crop
    assert float(top.min()) >= (1 - 0.5) / 0.8**0.5 - 1e-9

    # the loss's views are these: same generator, same sampling grid
    from clipasso_server.engine.optimise import Target

    class Model:
        input_size = size

        def features(self, images):
            return [images.mean(dim=(2, 3))]

    target = Target(torch.ones(3, canvas, canvas), Model(), loss_fn=lambda s, p: s[0].sum())
    grid = target.view_grid(3, torch.Generator().manual_seed(0))
    again = augment.GridMaker(canvas, size)(
        augment.random_views(3, canvas, size, torch.Generator().manual_seed(0))
    )
    assert torch.equal(grid, again)
