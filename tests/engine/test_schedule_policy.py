"""The loop's schedule hook (issue 22): a policy may retire sketches and change the iteration
count after any step; retired sketches leave the batch and keep their best iterate.

Real tiny CLIP ResNet through the real ModelStore, the real renderer and the real loop.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from engine_helpers import CountingModel  # noqa: E402

from clipasso_server.engine.optimise import (  # noqa: E402
    Decision,
    Drawing,
    LoopSettings,
    Target,
    optimise,
)
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.sketcher import parse_color  # noqa: E402
from clipasso_server.engine.start import start_points  # noqa: E402

CANVAS = 224


def _job(model_store, device):
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    points, mask = start_points(saliency, (4,), (0, 1, 2), CANVAS)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
    )
    photo = torch.ones(3, CANVAS, CANVAS, device=device)
    photo[:, 80:140, 60:160] = 0.2
    model = CountingModel(model_store.loss_model("test-tiny-rn"))
    return Target(photo, model), points.to(device), drawing, model


def test_a_retired_sketch_leaves_the_batch_and_keeps_its_best(model_store, device):
    target, points, drawing, model = _job(model_store, device)
    seen = []

    def policy(report):
        seen.append(report.step)
        if report.step == 2:
            return Decision(retire=(1,), iterations=5, note="sketch 1 retired")
        return None

    settings = LoopSettings(iterations=20, eval_every=1, augmentations=0)
    outcome = optimise(target, points, drawing, settings, policy=policy)
    assert outcome.steps_run == 5
    assert seen == [1, 2, 3, 4, 5]
    assert outcome.notes == ("sketch 1 retired",)
    # steps 1-2 carry all three sketches, steps 3-5 the two left, then the final evaluation
    assert model.calls[1:] == [3, 3, 2, 2, 2, 3]


def test_a_retired_sketch_stops_where_it_was(model_store, device):
    """Retired after step 2, sketch 1 does not drift on Adam's momentum: the final evaluation
    draws it where a run of just those 2 steps leaves it."""
    target, points, drawing, _ = _job(model_store, device)
    settings = LoopSettings(iterations=6, eval_every=1, augmentations=0)

    def last_drawn(**changes):
        drawn = []

        def renderer(strokes, *args):
            drawn.append(strokes.detach().clone())
            return drawing.renderer(strokes, *args)

        optimise(target, points, replace(drawing, renderer=renderer), settings, **changes)
        return drawn[-1]  # the final evaluation draws every sketch

    def policy(report):
        return Decision(retire=(1,)) if report.step == 2 else None

    retired = last_drawn(policy=policy)
    settings = replace(settings, iterations=2)
    two_steps = last_drawn()
    torch.testing.assert_close(retired[1], two_steps[1], rtol=0, atol=0)
    assert not torch.equal(retired[0], two_steps[0])  # the others moved on


def test_a_policy_never_cuts_below_the_steps_already_run(model_store, device):
    target, points, drawing, _ = _job(model_store, device)

    def policy(report):
        return Decision(iterations=1) if report.step == 3 else None

    settings = LoopSettings(iterations=10, eval_every=1, augmentations=0)
    outcome = optimise(target, points, drawing, settings, policy=policy)
    assert outcome.steps_run == 3
    assert outcome.stop_reason == "iterations"


def test_combined_policies_retire_the_union_and_keep_the_smallest_count():
    from clipasso_server.engine.optimise import combine_policies

    combined = combine_policies(
        lambda report: Decision(retire=(2,), iterations=50, note="pruned"),
        lambda report: None,
        lambda report: Decision(retire=(0, 2), iterations=30, note="planned"),
    )
    decision = combined(None)
    assert decision == Decision(retire=(0, 2), iterations=30, note="pruned; planned")
    assert combine_policies() is None
    assert combine_policies(lambda report: None)(None) is None
