"""Seed pruning, the "fast" schedule (issue 22, 2a): after a warm-up each level's worse-ranked
seeds are retired, halving until one is left; "full" never prunes.

Real tiny CLIP models through the real ModelStore, the real renderer, the real loop and the real
``sketch()``; the loss model is wrapped only to count the images each forward pass carries.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engine_helpers import CountingModel  # noqa: E402
from PIL import Image  # noqa: E402

from clipasso_server.engine.errors import SettingsError  # noqa: E402
from clipasso_server.engine.optimise import (  # noqa: E402
    Decision,
    Drawing,
    LoopSettings,
    Target,
    combine_policies,
    optimise,
)
from clipasso_server.engine.pruning import (  # noqa: E402
    Round,
    SeedPruning,
    check_schedule,
    rounds,
    seed_pruning,
)
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.sketcher import parse_color, sketch  # noqa: E402
from clipasso_server.engine.start import start_points  # noqa: E402
from clipasso_server.engine.types import SketchConfig  # noqa: E402

CANVAS = 224
LEVELS = (2, 4)
SEEDS = (5, 6, 7)  # seed values, not indices: the notes name the values


class CountingStore:
    """The real ModelStore, its loss models wrapped in :class:`CountingModel`."""

    def __init__(self, store) -> None:
        self.store = store
        self.counting: CountingModel | None = None

    def loss_model(self, name, precision="auto"):
        self.counting = CountingModel(self.store.loss_model(name, precision))
        return self.counting

    def __getattr__(self, name):
        return getattr(self.store, name)


def _job(model_store, device):
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    points, mask = start_points(saliency, LEVELS, SEEDS, CANVAS)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
    )
    photo = torch.ones(3, CANVAS, CANVAS, device=device)
    photo[:, 80:140, 60:160] = 0.2
    photo[:, 30:60, 120:200] = 0.6
    model = CountingModel(model_store.loss_model("test-tiny-rn"))
    return Target(photo, model), points.to(device), drawing, model


def _photo() -> Image.Image:
    picture = Image.new("RGB", (96, 80), "white")
    picture.paste((40, 40, 40), (20, 20, 70, 60))
    return picture


def test_the_rounds_halve_to_one_seed_between_the_warmup_and_the_last_share():
    assert rounds(3, 2000, 10) == (Round(500, 2), Round(1000, 1))
    assert rounds(4, 2000, 10) == (Round(500, 2), Round(1000, 1))
    assert rounds(8, 2000, 10) == (Round(500, 4), Round(750, 2), Round(1000, 1))
    assert rounds(2, 2000, 10) == (Round(500, 1),)
    # on the first evaluation at or after the share; none at or after the last step
    assert rounds(3, 12, 2) == (Round(4, 2), Round(6, 1))
    assert rounds(3, 10, 10) == ()
    assert rounds(1, 2000, 10) == ()
    assert rounds(3, 2000, 10, warmup=0.1, last=0.1) == (Round(200, 2), Round(200, 1))


def test_fast_retires_exactly_the_worse_ranked_seeds_and_the_batch_shrinks(model_store, device):
    target, points, drawing, model = _job(model_store, device)
    seen = {}

    def on_step(report):
        seen[report.step] = (list(report.best.loss), report.best.retired)

    policy = SeedPruning(LEVELS, SEEDS, eval_every=2)
    settings = LoopSettings(iterations=12, eval_every=2, augmentations=0)
    outcome = optimise(target, points, drawing, settings, policy=policy, on_step=on_step)
    assert outcome.steps_run == 12 and outcome.stop_reason == "iterations"

    # round 1 ranks the evaluation of the iterate after 4 steps (reported as step 5): the
    # worst of each level's three seeds goes; round 2 (step 7) the worse of the two left
    loss5, retired5 = seen[5]
    loss7, retired7 = seen[7]
    assert not any(seen[4][1])
    first_out, second_out, kept = [], [], []
    for li in range(len(LEVELS)):
        level = range(li * 3, li * 3 + 3)
        by_loss = sorted(level, key=lambda b: (loss5[b], b))
        assert [b for b in level if retired5[b]] == [by_loss[2]]
        first_out.append(by_loss[2])
        left = sorted(by_loss[:2], key=lambda b: (loss7[b], b))
        assert [b for b in level if retired7[b]] == sorted([by_loss[2], left[1]])
        second_out.append(left[1])
        kept.append(left[0])
    assert seen[12][1] == retired7  # never the last one of a level

    # steps 1-5 carry all six sketches, 6-7 four, 8-12 two; then the final evaluation of all
    assert model.calls[1:] == [6] * 5 + [4] * 2 + [2] * 5 + [6]

    # the sketch kept per level is the best-ranked, and has the level's best loss
    for li, b in enumerate(kept):
        level_losses = outcome.loss[li * 3 : li * 3 + 3].tolist()
        assert min(range(3), key=level_losses.__getitem__) == b - li * 3

    def names(out):
        return [(SEEDS[b % 3], LEVELS[b // 3]) for b in out]

    (s1, l1), (s2, l2) = names(first_out)
    (t1, m1), (t2, m2) = names(second_out)
    assert len(outcome.notes) == 2
    assert (
        outcome.notes[0].startswith(f"fast schedule: seed {s1} of level {l1} (seed ")
        and f"; seed {s2} of level {l2} (seed " in outcome.notes[0]
    )
    assert outcome.notes[0].endswith("pruned at step 5 of 12, ranked by best evaluation loss")
    assert f"seed {t1} of level {m1} (seed {SEEDS[kept[0] % 3]} leads)" in outcome.notes[1]
    assert f"seed {t2} of level {m2} (seed {SEEDS[kept[1] % 3]} leads)" in outcome.notes[1]
    assert "pruned at step 7 of 12" in outcome.notes[1]


def test_pruning_never_retires_the_last_seed_another_policy_left(model_store, device):
    """A planning policy that already dropped two seeds of level 2 (and cut the run to 8
    steps) leaves that level nothing to prune; the rounds follow the planned 8 steps."""
    target, points, drawing, model = _job(model_store, device)
    seen = {}

    def planning(report):
        if report.step == 1:
            return Decision(retire=(0, 1), iterations=8, note="planned")
        return None

    def on_step(report):
        seen[report.step] = report.best.retired

    policy = combine_policies(planning, SeedPruning(LEVELS, SEEDS, eval_every=2))
    settings = LoopSettings(iterations=12, eval_every=2, augmentations=0)
    outcome = optimise(target, points, drawing, settings, policy=policy, on_step=on_step)
    assert outcome.steps_run == 8
    # rounds of 8 steps: after 2 steps (reported as step 3) and after 4 (step 5)
    assert sum(seen[3][3:]) == 1 and sum(seen[5][3:]) == 2
    assert seen[8][:3] == [True, True, False]  # seed 2 of level 2 ran to the end
    assert model.calls[1:] == [6, 4, 4, 3, 3, 2, 2, 2, 6]
    assert outcome.notes[0] == "planned"
    assert "of level 4 (seed" in outcome.notes[1] and "pruned at step 3 of 8" in outcome.notes[1]
    assert "of level 2" not in " ".join(outcome.notes)


@pytest.mark.parametrize("schedule", ["full", "fast"])
def test_sketch_runs_the_schedule_it_is_given(model_store, schedule):
    store = CountingStore(model_store)
    config = SketchConfig(
        levels=(2, 3),
        iterations=8,
        seeds=3,
        eval_every=2,
        augmentations=1,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        schedule=schedule,
    )
    result = sketch(_photo(), config, store)
    calls = store.counting.calls[1:]  # after the photo's own features
    # each step: the photo's view, then the moving sketches' plain and augmented images;
    # then the final evaluation of all six
    assert calls[-1] == 6 and calls[:-1:2] == [1] * 8
    sketches = calls[1:-1:2]
    if schedule == "full":
        assert sketches == [6 * 2] * 8
        assert result.settings["schedule"] == "full"
    else:
        # rounds after 2 and 4 steps (reported as steps 3 and 5)
        assert sketches == [6 * 2] * 3 + [4 * 2] * 2 + [2 * 2] * 3
        assert result.settings["schedule"] == "fast"
    assert result.steps_run == 8
    for level in result.levels:
        losses = result.extra["seed_losses"][str(level.strokes)]
        assert level.loss == min(losses) and level.seed == losses.index(min(losses))


def test_full_has_no_policy_and_an_unknown_schedule_is_one_clear_line():
    full = SketchConfig(schedule="full")
    assert seed_pruning(full, SEEDS) is None
    assert seed_pruning(SketchConfig(schedule="fast"), (0,)) is None
    assert isinstance(seed_pruning(SketchConfig(schedule="fast"), SEEDS), SeedPruning)
    with pytest.raises(SettingsError, match=r"^schedule must be one of full, fast, got 'quick'$"):
        check_schedule("quick")


def test_an_unknown_schedule_is_refused_before_any_model_loads(model_store):
    store = CountingStore(model_store)
    with pytest.raises(SettingsError, match="schedule must be one of full, fast"):
        sketch(_photo(), SketchConfig(schedule="turbo"), store)
    assert store.counting is None


@pytest.mark.parametrize("fast", [False, True])
def test_the_cli_runs_fast_with_fast_and_the_svg_records_it(test_weights_dir, tmp_path, fast):
    from clipasso_server.cli import main
    from clipasso_server.engine.svg_output import read_metadata

    out = tmp_path / "s.svg"
    args = [
        "sketch",
        "sample",
        "-o",
        str(out),
        "--clip-weights",
        str(test_weights_dir),
        "--quiet",
        "--no-image",
        "--device",
        "cpu",
        "--loss-model",
        "test-tiny-rn",
        "--saliency-model",
        "test-tiny-vit",
        "--iterations",
        "20",
        "--seeds",
        "2",
        "--levels",
        "2",
    ]
    assert main(args + (["--fast"] if fast else [])) == 0
    record = read_metadata(out.read_text())
    assert record["settings"]["schedule"] == ("fast" if fast else "full")
    if fast:  # two seeds: one round, on the evaluation after 10 of the 20 steps
        (note,) = record["schedule_notes"]
        assert note.startswith("fast schedule: seed ") and " of level 2 (seed " in note
        assert note.endswith("pruned at step 11 of 20, ranked by best evaluation loss")
    else:
        assert record["schedule_notes"] == []
    assert record["steps_run"] == 20 and record["stop_reason"] == "iterations"
