"""Refine from the user's strokes (issue 18, part 3): start strokes in the engine.

Real tiny CLIP models through the real ModelStore, the real renderer and the real loop. The
start strokes are in the photo's pixels; kept ones must come back as the very same numbers and
never move during the loop; refined ones start exactly where given and then move.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from PIL import Image, ImageDraw  # noqa: E402

from clipasso_server.engine.errors import SettingsError  # noqa: E402
from clipasso_server.engine.image_input import image_to_canvas  # noqa: E402
from clipasso_server.engine.optimise import Drawing, LoopSettings, Target, optimise  # noqa: E402
from clipasso_server.engine.render import get_renderer  # noqa: E402
from clipasso_server.engine.sketcher import parse_color, sketch  # noqa: E402
from clipasso_server.engine.start import start_points  # noqa: E402
from clipasso_server.engine.start_strokes import kept_strokes, on_canvas  # noqa: E402
from clipasso_server.engine.types import SketchConfig  # noqa: E402

IMAGE_SIZE = (180, 120)
#: awkward numbers on purpose: a float32 round trip through the canvas would change them
GIVEN = (
    ((20.123456789012345, 30.987654321), (40.1, 35.2), (60.333333333333336, 50.0), (80.5, 90.25)),
    ((100.0, 10.0), (120.71428571428571, 20.0), (130.0, 60.1), (170.9, 110.3)),
)


def _config(**overrides) -> SketchConfig:
    base = dict(
        levels=(3, 5),
        seeds=2,
        iterations=6,
        eval_every=2,
        augmentations=1,
        loss_model="test-tiny-rn",
        saliency_model="test-tiny-vit",
        renderer="torch",
        seed=4,
        start_strokes=GIVEN,
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


def _largest_move(a, b) -> float:
    return max(
        abs(p - q)
        for sa, sb in zip(a, b, strict=True)
        for pa, pb in zip(sa, sb, strict=True)
        for p, q in zip(pa, pb, strict=True)
    )


def _points(level) -> list:
    return [path.points for path in level.paths]


def test_kept_strokes_come_back_byte_identical_and_the_others_move(image, model_store):
    config = _config(keep_start_strokes=True)
    start = sketch(image, _config(keep_start_strokes=True, iterations=0), model_store)
    reports = []
    result = sketch(image, config, model_store, progress=reports.append, snapshot_every_s=0.0)
    snapshots = [r.snapshot for r in reports if r.snapshot is not None]
    assert snapshots
    for level in (lv for snapshot in snapshots for lv in snapshot.levels):
        assert _points(level)[: len(GIVEN)] == [tuple(stroke) for stroke in GIVEN]
    for level, level_start in zip(result.levels, start.levels, strict=True):
        kept = _points(level)[: len(GIVEN)]
        assert kept == [tuple(stroke) for stroke in GIVEN]
        # byte-identical in the JSON a client receives
        sent = json.dumps([[list(p) for p in s] for s in GIVEN])
        assert json.dumps([path.to_json()["points"] for path in level.paths[: len(GIVEN)]]) == sent
        # the strokes added from the saliency map were optimised
        added, added_start = _points(level)[len(GIVEN) :], _points(level_start)[len(GIVEN) :]
        assert len(added) == level.strokes - len(GIVEN)
        assert _largest_move(added, added_start) > 1e-3
    assert result.settings["start_strokes"] == [[list(p) for p in s] for s in GIVEN]
    assert result.settings["keep_start_strokes"] is True


def test_refine_all_starts_exactly_at_the_given_strokes_and_moves_them(image, model_store):
    start = sketch(image, _config(iterations=0), model_store)
    result = sketch(image, _config(), model_store)
    for level, level_start in zip(result.levels, start.levels, strict=True):
        given = [tuple(stroke) for stroke in GIVEN]
        # float32 canvas coordinates: a ten-thousandth of a pixel
        assert _largest_move(_points(level_start)[: len(GIVEN)], given) < 1e-3
        assert _largest_move(_points(level)[: len(GIVEN)], given) > 1e-2
        assert len(level.paths) == level.strokes


def test_the_loop_never_moves_kept_strokes(image, model_store):
    """The mask itself, in the loop's own points (the result hands back the given numbers
    whatever the loop did, so only the loop's outcome shows a leak)."""
    photo, placement = image_to_canvas(image)
    photo = photo.to(model_store.device)
    given = on_canvas(GIVEN, placement)
    saliency = torch.rand(224, 224, generator=torch.Generator().manual_seed(1))
    points, mask = start_points(saliency, (3, 5), (0, 1), 224, given=given)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(photo.device), mask, 224
    )
    config = _config(keep_start_strokes=True)
    kept = kept_strokes(config, int(points.shape[0]), int(points.shape[1]))
    outcome = optimise(
        Target(photo, model_store.loss_model("test-tiny-rn")),
        points,
        drawing,
        LoopSettings(iterations=5, eval_every=1, augmentations=1),
        generator=torch.Generator().manual_seed(2),
        kept=kept,
    )
    assert torch.equal(outcome.points[:, : len(GIVEN)], points[:, : len(GIVEN)])
    assert float((outcome.points[:, len(GIVEN) :] - points[:, len(GIVEN) :]).abs().max()) > 1e-3


def test_every_sketch_starts_with_the_given_strokes_then_its_own_saliency_strokes():
    saliency = torch.rand(224, 224, generator=torch.Generator().manual_seed(3))
    given = torch.tensor([[[10.0, 10.0], [20.0, 20.0], [30.0, 10.0], [40.0, 20.0]]])
    points, mask = start_points(saliency, (2, 4), (5, 6), 224, given=given)
    assert points.shape == (4, 4, 4, 2)
    assert mask.tolist() == [[True, True, False, False]] * 2 + [[True] * 4] * 2
    for b, (level, seed) in enumerate([(2, 5), (2, 6), (4, 5), (4, 6)]):
        assert torch.equal(points[b, :1], given)
        # the rest: exactly what the sketch alone draws for level - 1 strokes (seed-independent)
        alone, _ = start_points(saliency, (level - 1,), (seed,), 224)
        assert torch.equal(points[b, 1:level], alone[0])


def test_the_given_strokes_land_on_the_photo_where_they_were_drawn():
    _, placement = image_to_canvas(Image.new("RGB", IMAGE_SIZE))
    canvas = on_canvas(GIVEN, placement)
    back = placement.to_image(canvas.double())
    assert float((back - torch.tensor(GIVEN, dtype=torch.float64)).abs().max()) < 1e-4
    # the photo's corners are the canvas's photo area
    corners = on_canvas((((0, 0), (180, 0), (0, 120), (180, 120)),), placement)[0]
    bottom = 37 + 120 * 224 / 180
    expected = [[0.0, 37.0], [224.0, 37.0], [0.0, bottom], [224.0, bottom]]
    torch.testing.assert_close(corners, torch.tensor(expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(levels=(1, 5)), "2 start strokes do not fit in the level of 1 strokes"),
        (dict(levels=(2, 5), keep_start_strokes=True), "leave nothing to add"),
        (dict(start_strokes=(), keep_start_strokes=True), "keep_start_strokes needs"),
        (dict(start_strokes=(((0, 0), (1, 1), (2, 2)),)), "has 3 control points"),
    ],
)
def test_counts_that_do_not_fit_are_a_clear_settings_error(image, model_store, overrides, message):
    with pytest.raises(SettingsError, match=message):
        sketch(image, _config(**overrides), model_store)
