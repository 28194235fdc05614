"""A sketch that has stopped improving (plateau) leaves the step's batch (issue 22, part 2b).

Real tiny CLIP ResNet through the real ModelStore, the real renderer and the real loop. The
loss model is wrapped only to count the images each forward receives; the wrapper hands every
call to the real model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engine_helpers import CountingModel  # noqa: E402

from clipasso_server.engine.optimise import (  # noqa: E402
    Drawing,
    LoopSettings,
    Target,
    optimise,
    step_backward,
)
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.sketcher import parse_color  # noqa: E402
from clipasso_server.engine.start import start_points  # noqa: E402

CANVAS = 224
VIEWS = 2


@pytest.fixture(scope="module")
def loss_model(model_store):
    return model_store.loss_model("test-tiny-rn")


@pytest.fixture(scope="module")
def photo(device):
    yy, xx = torch.meshgrid(torch.arange(CANVAS) + 0.5, torch.arange(CANVAS) + 0.5, indexing="ij")
    photo = torch.ones(3, CANVAS, CANVAS)
    photo[:, (xx - 100) ** 2 + (yy - 120) ** 2 < 60**2] = 0.2
    return photo.to(device)


def _start(device, levels=(4, 8), seeds=(0, 1, 2)):
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    points, mask = start_points(saliency, levels, seeds, CANVAS)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
    )
    return points.to(device), drawing


def test_a_subset_step_gives_those_sketches_their_full_batch_gradient(loss_model, photo, loss_rtol):
    target = Target(photo, loss_model)
    points, drawing = _start(photo.device)
    grid = target.view_grid(VIEWS, torch.Generator().manual_seed(5))
    full = points.clone().requires_grad_(True)
    loss, plain = step_backward(drawing(full), target, grid)
    keep = torch.tensor([1, 4, 5], device=photo.device)
    part = points.clone().requires_grad_(True)
    sub_loss, sub_plain = step_backward(
        drawing.select(keep)(part.index_select(0, keep)), target, grid
    )
    torch.testing.assert_close(sub_loss, loss[keep], rtol=loss_rtol, atol=0.0)
    torch.testing.assert_close(sub_plain, plain[keep], rtol=loss_rtol, atol=0.0)
    torch.testing.assert_close(part.grad[keep], full.grad[keep], rtol=loss_rtol, atol=1e-6)
    left_out = torch.tensor([0, 2, 3], device=photo.device)
    assert float(part.grad[left_out].abs().max()) == 0.0


def test_frozen_sketches_leave_the_batch_and_stay_where_they_froze(loss_model, photo):
    counting = CountingModel(loss_model)
    points, drawing = _start(photo.device)
    sketches = int(points.shape[0])
    seen: list[tuple[list[bool], torch.Tensor]] = []

    def on_step(report) -> None:
        seen.append((list(report.best.frozen), report.best.points.clone()))

    settings = LoopSettings(
        iterations=12, eval_every=1, augmentations=VIEWS, plateau_patience=1, chunk_images=3
    )
    outcome = optimise(
        Target(photo, counting),
        points,
        drawing,
        settings,
        generator=torch.Generator().manual_seed(0),
        on_step=on_step,
    )
    # calls: the photo's plain features (Target); per step one no-grad forward of the photo's
    # VIEWS views, then the sketch images in chunks of 3 (never VIEWS); the final evaluation
    # last
    per_step: list[int] = []
    for count in counting.calls[1:-1]:
        if count == VIEWS:
            per_step.append(0)
        else:
            per_step[-1] += count
    assert len(per_step) == outcome.steps_run
    frozen_before = [0] + [sum(frozen) for frozen, _ in seen[:-1]]
    assert any(0 < n < sketches for n in frozen_before), "no step ran with some sketches frozen"
    assert per_step == [(1 + VIEWS) * (sketches - n) for n in frozen_before]
    # once frozen, a sketch's best iterate does not change again during the loop
    for step, (frozen, best) in enumerate(seen):
        for later_frozen, later_best in seen[step + 1 :]:
            for i, is_frozen in enumerate(frozen):
                if is_frozen:
                    assert later_frozen[i]
                    assert torch.equal(later_best[i], best[i])
    assert counting.calls[-1] == sketches  # the final evaluation sees every sketch
