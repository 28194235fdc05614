"""The faster step (issue 22) computes the same numbers as the pre-#22 step.

Two changes are pinned here, each against the code path it replaces, on the real tiny CLIP
ResNet loaded through the real ModelStore and the real renderer: the loss model run a few
images at a time (``step_backward``) against one batch (``step_loss`` then backward), and the
attention pool computed for its one output token (``ClassTokenPool``) against open_clip's own.
Loss, evaluation loss and the gradient reaching the control points must agree to 1e-5
relative with the loss model in float64 (the renderer stays float32; the pool alone to
1e-12), and the float32 model's whole new step to 1e-4 of the old one's.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from clipasso_server.engine.clip_models import ClassTokenPool, LossModel  # noqa: E402
from clipasso_server.engine.optimise import (  # noqa: E402
    Drawing,
    LoopSettings,
    Target,
    optimise,
    step_backward,
    step_loss,
)
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.sketcher import parse_color  # noqa: E402
from clipasso_server.engine.start import start_points  # noqa: E402

CANVAS = 224
LEVELS = (4, 8)
SEEDS = (0, 1)
RTOL = 1e-5


@pytest.fixture(scope="module")
def float32_model(model_store, dtype):
    if dtype != torch.float32:
        pytest.skip("compares float32 paths, not bf16 autocast")
    return model_store.loss_model("test-tiny-rn")


@pytest.fixture(scope="module")
def loss_model(float32_model):
    """The same tiny model in float64, so that float32 rounding (which differs between batch
    sizes in oneDNN) cannot hide a real difference behind a loose tolerance."""
    visual = copy.deepcopy(float32_model.visual).double()
    return LossModel("test-tiny-rn", "float64", visual, float32_model.device)


@pytest.fixture(scope="module")
def photo(device):
    yy, xx = torch.meshgrid(torch.arange(CANVAS) + 0.5, torch.arange(CANVAS) + 0.5, indexing="ij")
    photo = torch.ones(3, CANVAS, CANVAS)
    photo[:, (xx - 100) ** 2 + (yy - 120) ** 2 < 60**2] = 0.2
    photo[:, (yy - 110).abs() < 8] = 0.8
    return photo.to(device)


def _start(device):
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    points, mask = start_points(saliency, LEVELS, SEEDS, CANVAS)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
    )
    return points.to(device), drawing


def _relative(new, old) -> float:
    return float((new - old).norm() / old.norm())


def _legacy_step(target, drawing, points, grid):
    p = points.clone().requires_grad_(True)
    loss, plain = step_loss(drawing(p), target, grid)
    loss.sum().backward()
    return loss.detach(), plain.detach(), p.grad


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, None])
@pytest.mark.parametrize("views", [0, 3])
def test_chunked_step_gives_the_one_batch_loss_and_gradient(
    loss_model, photo, chunk, views, monkeypatch
):
    monkeypatch.setattr(loss_model, "legacy_pool", False)
    target = Target(photo, loss_model)
    points, drawing = _start(photo.device)
    grid = target.view_grid(views, torch.Generator().manual_seed(5))
    old_loss, old_plain, old_grad = _legacy_step(target, drawing, points, grid)

    p = points.clone().requires_grad_(True)
    loss, plain = step_backward(drawing(p), target, grid, chunk)
    assert not loss.requires_grad and not plain.requires_grad
    assert loss.shape == plain.shape == (len(LEVELS) * len(SEEDS),)
    torch.testing.assert_close(loss, old_loss, rtol=RTOL, atol=0.0)
    torch.testing.assert_close(plain, old_plain, rtol=RTOL, atol=0.0)
    assert float(old_grad.norm()) > 0
    assert _relative(p.grad, old_grad) < RTOL


def test_new_step_matches_the_pre_22_step_with_both_changes(loss_model, photo, monkeypatch):
    """Today's whole path (chunks and the pool) against the whole legacy path."""
    target = Target(photo, loss_model)
    points, drawing = _start(photo.device)
    grid = target.view_grid(4, torch.Generator().manual_seed(7))
    monkeypatch.setattr(loss_model, "legacy_pool", True)
    old_loss, old_plain, old_grad = _legacy_step(Target(photo, loss_model), drawing, points, grid)
    monkeypatch.setattr(loss_model, "legacy_pool", False)
    p = points.clone().requires_grad_(True)
    loss, plain = step_backward(drawing(p), target, grid)
    torch.testing.assert_close(loss, old_loss, rtol=RTOL, atol=0.0)
    torch.testing.assert_close(plain, old_plain, rtol=RTOL, atol=0.0)
    assert _relative(p.grad, old_grad) < RTOL


def test_float32_step_stays_close_to_the_pre_22_step(float32_model, photo, monkeypatch):
    target = Target(photo, float32_model)
    points, drawing = _start(photo.device)
    grid = target.view_grid(4, torch.Generator().manual_seed(7))
    monkeypatch.setattr(float32_model, "legacy_pool", True)
    old_loss, _, old_grad = _legacy_step(target, drawing, points, grid)
    monkeypatch.setattr(float32_model, "legacy_pool", False)
    p = points.clone().requires_grad_(True)
    loss, _ = step_backward(drawing(p), target, grid)
    torch.testing.assert_close(loss, old_loss, rtol=1e-4, atol=0.0)
    assert _relative(p.grad, old_grad) < 1e-4


def test_pool_gives_open_clips_embedding_and_gradient_in_float64(loss_model):
    pool = copy.deepcopy(loss_model.visual.attnpool).double().cpu()
    ours = ClassTokenPool(pool)
    generator = torch.Generator().manual_seed(11)
    channels = pool.k_proj.in_features
    side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)
    x = torch.randn(3, channels, side, side, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    weights = torch.randn(3, pool.c_proj.out_features, generator=generator, dtype=torch.float64)
    expected = pool(x)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
    got = ours(x)
    (got_grad,) = torch.autograd.grad((got * weights).sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_features_match_open_clips_pool_in_channels_last_float32(loss_model, photo, monkeypatch):
    images = torch.stack([photo, photo.flip(-1), 1 - photo])
    monkeypatch.setattr(loss_model, "legacy_pool", True)
    old_maps, old_embedding = loss_model.features(images)
    monkeypatch.setattr(loss_model, "legacy_pool", False)
    maps, embedding = loss_model.features(images)
    for new, old in zip(maps, old_maps, strict=True):
        torch.testing.assert_close(new, old, rtol=0.0, atol=0.0)
    assert _relative(embedding, old_embedding) < RTOL


def test_loop_on_either_path_finds_the_same_strokes(loss_model, photo, monkeypatch):
    points, drawing = _start(photo.device)
    outcomes = []
    for legacy in (True, False):
        monkeypatch.setattr(loss_model, "legacy_pool", legacy)
        settings = LoopSettings(
            iterations=3, eval_every=1, augmentations=2, chunk_images=0 if legacy else 5
        )
        outcomes.append(
            optimise(
                Target(photo, loss_model),
                points,
                drawing,
                settings,
                generator=torch.Generator().manual_seed(0),
            )
        )
    old, new = outcomes
    assert new.steps_run == old.steps_run == 3
    torch.testing.assert_close(new.loss, old.loss, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(new.points, old.points, rtol=0.0, atol=1e-3)
