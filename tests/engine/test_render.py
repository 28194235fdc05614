"""The stroke renderer against an independent reference, finite differences and ink budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from clipasso_server.engine.errors import RendererUnavailableError, SettingsError
from clipasso_server.engine.render import get_renderer, render_strokes

BLACK = torch.tensor([0.0, 0.0, 0.0, 1.0])


def reference_coverage(
    control: np.ndarray, stroke_width: float, height: int, width: int, samples: int = 16
) -> np.ndarray:
    """Exact coverage of a thick cubic by dense supersampling, written independently.

    The curve is sampled at 4001 parameters (about a hundredth of a pixel apart); a sub-pixel
    sample is inside when its distance to the nearest curve sample is at most stroke_width / 2,
    which includes the round caps.
    """
    t = np.linspace(0.0, 1.0, 4001)[:, None]
    curve = (
        (1 - t) ** 3 * control[0]
        + 3 * (1 - t) ** 2 * t * control[1]
        + 3 * (1 - t) * t**2 * control[2]
        + t**3 * control[3]
    )
    offsets = (np.arange(samples) + 0.5) / samples
    ys, xs = np.meshgrid(
        (np.arange(height)[:, None] + offsets).ravel(),
        (np.arange(width)[:, None] + offsets).ravel(),
        indexing="ij",
    )
    distance, _ = cKDTree(curve).query(
        np.stack([xs.ravel(), ys.ravel()], axis=-1), distance_upper_bound=stroke_width
    )
    inside = distance <= stroke_width / 2
    return inside.reshape(height, samples, width, samples).mean(axis=(1, 3))


# name: (control points, stroke width, canvas height, canvas width)
CASES = {
    "straight": ([[8, 10], [16, 14], [24, 18], [32, 22]], 3.0, 40, 40),
    "curved": ([[6, 30], [10, 2], [30, 2], [34, 30]], 3.0, 40, 40),
    "crossing": ([[4, 4], [40, 30], [4, 30], [36, 4]], 2.5, 40, 40),
    "degenerate": ([[20, 20], [20, 20], [20, 20], [20, 20]], 4.0, 40, 40),
    "off_canvas": ([[-10, 5], [10, 20], [30, 50], [50, 30]], 3.0, 40, 40),
    "thin": ([[5, 35], [15, 5], [25, 35], [35, 5]], 1.0, 40, 40),
    # segments ~10 px long, most of the line far outside: patches clipped and shifted inside
    "long_line": ([[-100, -20], [0, 10], [60, 28], [140, 52]], 3.5, 40, 40),
    "wide_canvas": ([[4, -6], [20, 40], [40, -10], [52, 30]], 2.5, 24, 56),
    "corner_dot": ([[39.5, 0.2], [39.5, 0.2], [39.5, 0.2], [39.5, 0.2]], 5.0, 40, 40),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_supersampled_reference(name):
    control, stroke_width, height, width = CASES[name]
    points = torch.tensor([[control]], dtype=torch.float32)
    image = render_strokes(points, stroke_width, BLACK, height, width)
    assert image.shape == (1, 3, height, width)
    ink = 1.0 - image[0, 0].numpy()
    expected = reference_coverage(np.array(control, dtype=np.float64), stroke_width, height, width)
    assert expected.sum() > 5  # the case draws something
    difference = np.abs(ink - expected)
    assert difference.mean() <= 2 / 255, difference.mean()
    assert difference.max() <= 0.25, difference.max()
    assert torch.allclose(image[0, 0], image[0, 1]) and torch.allclose(image[0, 1], image[0, 2])


def test_horizontal_stroke_ink_budget():
    width, length = 4.0, 60.0
    points = torch.tensor([[[[20.0, 50.0], [40.0, 50.0], [60.0, 50.0], [80.0, 50.0]]]])
    ink = (1.0 - render_strokes(points, width, BLACK, 100, 100)[0, 0]).sum().item()
    expected = width * length + math.pi * width**2 / 4  # body plus two round half-caps
    assert ink == pytest.approx(expected, rel=0.01)


def finite_difference(loss, value: torch.Tensor, eps: float) -> torch.Tensor:
    numeric = torch.zeros(value.numel())
    for i in range(value.numel()):
        step = torch.zeros(value.numel())
        step[i] = eps
        step = step.view_as(value)
        numeric[i] = (loss(value + step).item() - loss(value - step).item()) / (2 * eps)
    return numeric


def assert_close_gradients(analytic: torch.Tensor, numeric: torch.Tensor) -> None:
    assert analytic.abs().sum() > 0
    cosine = torch.nn.functional.cosine_similarity(analytic, numeric, dim=0)
    assert cosine > 0.98, (analytic, numeric)
    assert torch.allclose(analytic, numeric, rtol=0.15, atol=0.05 * numeric.abs().max().item())


def test_gradients_match_finite_differences():
    """Two overlapping strokes of different widths: gradients to points and widths."""
    torch.manual_seed(0)
    points = torch.tensor(
        [
            [
                [[4.37, 5.23], [9.71, 14.29], [15.13, 3.41], [19.67, 12.83]],
                [[3.11, 18.62], [8.93, 2.17], [14.48, 20.36], [20.52, 6.74]],
            ]
        ]
    )
    widths = torch.tensor([[3.0, 1.7]])
    colour = torch.tensor([0.0, 0.0, 0.0, 0.8])
    target = torch.rand(1, 3, 24, 24)

    def loss(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ((render_strokes(p, w, colour, 24, 24) - target) ** 2).sum()

    p, w = points.clone().requires_grad_(True), widths.clone().requires_grad_(True)
    loss(p, w).backward()
    eps = 1e-3  # coverage is piecewise linear: a larger step straddles its kinks
    assert_close_gradients(
        p.grad.flatten(), finite_difference(lambda v: loss(v, widths), points, eps)
    )
    assert_close_gradients(
        w.grad.flatten(), finite_difference(lambda v: loss(points, v), widths, eps)
    )


def test_colour_gradients_match_finite_differences():
    """Per-stroke colours take the ordered compositing path; check its gradient too."""
    torch.manual_seed(2)
    points = torch.tensor(
        [
            [
                [[4.0, 6.0], [10.0, 16.0], [14.0, 2.0], [20.0, 12.0]],
                [[3.0, 12.0], [9.0, 3.0], [15.0, 21.0], [21.0, 8.0]],
            ]
        ]
    )
    colours = torch.tensor([[[0.8, 0.2, 0.1, 0.7], [0.1, 0.3, 0.9, 0.6]]])
    target = torch.rand(1, 3, 24, 24)

    def loss(c: torch.Tensor) -> torch.Tensor:
        return ((render_strokes(points, 2.5, c, 24, 24) - target) ** 2).sum()

    variable = colours.clone().requires_grad_(True)
    loss(variable).backward()
    assert_close_gradients(variable.grad.flatten(), finite_difference(loss, colours, 1e-3))


def test_width_and_colour_get_gradients():
    points = torch.tensor([[[[5.0, 10.0], [10.0, 12.0], [15.0, 8.0], [20.0, 10.0]]]])
    width = torch.tensor([[3.0]], requires_grad=True)
    colour = torch.tensor([[[0.2, 0.5, 0.7, 0.9]]], requires_grad=True)
    render_strokes(points, width, colour, 24, 24).mean().backward()
    assert width.grad.abs().item() > 0
    assert colour.grad.abs().sum().item() > 0


def test_mask_removes_strokes_and_batches_are_independent():
    a = [[5.0, 5.0], [10.0, 5.0], [15.0, 5.0], [20.0, 5.0]]
    b = [[5.0, 20.0], [10.0, 20.0], [15.0, 20.0], [20.0, 20.0]]
    points = torch.tensor([[a, b], [b, a]])
    mask = torch.tensor([[True, False], [True, True]])
    both = render_strokes(points, 2.0, BLACK, 28, 28, mask)
    only_a = render_strokes(torch.tensor([[a]]), 2.0, BLACK, 28, 28)
    assert torch.allclose(both[0], only_a[0], atol=1e-6)
    assert both[1, 0, 20, 12] < 0.1 and both[1, 0, 5, 12] < 0.1
    assert both[0, 0, 20, 12] == pytest.approx(1.0)


def test_over_compositing_of_colours():
    line = [[2.0, 8.0], [6.0, 8.0], [10.0, 8.0], [14.0, 8.0]]
    red_half = torch.tensor([1.0, 0.0, 0.0, 0.5])
    image = render_strokes(torch.tensor([[line]]), 4.0, red_half, 16, 16)
    assert image[0, :, 8, 8].tolist() == pytest.approx([1.0, 0.5, 0.5], abs=1e-5)
    # a blue opaque stroke drawn after a red one hides it; drawn before, it is hidden
    colours = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]]])
    two = torch.tensor([[line, line]])
    assert render_strokes(two, 4.0, colours, 16, 16)[0, :, 8, 8].tolist() == pytest.approx(
        [0.0, 0.0, 1.0], abs=1e-5
    )
    assert render_strokes(two, 4.0, colours.flip(1), 16, 16)[0, :, 8, 8].tolist() == pytest.approx(
        [1.0, 0.0, 0.0], abs=1e-5
    )
    # half-transparent blue over half-transparent red over white, where they cross
    cross = [[8.0, 2.0], [8.0, 6.0], [8.0, 10.0], [8.0, 14.0]]
    halves = torch.tensor([[[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]]])
    mixed = render_strokes(torch.tensor([[line, cross]]), 4.0, halves, 16, 16)
    assert mixed[0, :, 8, 8].tolist() == pytest.approx([0.5, 0.25, 0.75], abs=1e-5)


def test_uniform_and_per_stroke_colours_agree():
    torch.manual_seed(1)
    points = torch.rand(2, 6, 4, 2) * 30 + 5
    colour = torch.tensor([0.1, 0.2, 0.3, 0.8])
    uniform = render_strokes(points, 2.5, colour, 40, 40)
    per_stroke = render_strokes(points, 2.5, colour.expand(2, 6, 4).clone(), 40, 40)
    assert torch.allclose(uniform, per_stroke, atol=1e-5)
    # one colour per sketch ([B, 1, 4]) is still one colour for all of a sketch's strokes
    per_sketch = torch.tensor([[[0.9, 0.1, 0.1, 1.0]], [[0.1, 0.1, 0.9, 0.6]]])
    assert torch.allclose(
        render_strokes(points, 2.5, per_sketch, 40, 40),
        render_strokes(points, 2.5, per_sketch.expand(2, 6, 4).clone(), 40, 40),
        atol=1e-5,
    )


def test_masked_strokes_do_not_change_the_layout():
    """A masked stroke may hold anything (here a huge one): the others render as alone."""
    line = [[5.0, 5.0], [10.0, 8.0], [15.0, 5.0], [20.0, 8.0]]
    huge = [[-500.0, -500.0], [900.0, 40.0], [-300.0, 700.0], [800.0, -900.0]]
    points = torch.tensor([[line, huge]]).requires_grad_(True)
    image = render_strokes(
        points, torch.tensor([[2.0, 50.0]]), BLACK, 32, 32, torch.tensor([[True, False]])
    )
    alone = render_strokes(torch.tensor([[line]]), 2.0, BLACK, 32, 32)
    assert torch.allclose(image, alone, atol=1e-6)
    image.sum().backward()
    assert points.grad[0, 1].abs().sum() == 0 and points.grad[0, 0].abs().sum() > 0


def test_autocast_keeps_float32():
    points = torch.tensor([[[[5.0, 10.0], [10.0, 12.0], [15.0, 8.0], [20.0, 10.0]]]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = render_strokes(points, 3.0, BLACK, 24, 24)
    assert image.dtype == torch.float32
    assert torch.allclose(image, render_strokes(points, 3.0, BLACK, 24, 24))


def has_pydiffvg() -> bool:
    try:
        import pydiffvg  # noqa: F401
    except ImportError:
        return False
    return True


needs_diffvg = pytest.mark.skipif(not has_pydiffvg(), reason="pydiffvg (diffvg) is not installed")


def test_renderer_choice():
    assert get_renderer("torch") is render_strokes
    assert (get_renderer("auto") is render_strokes) is not has_pydiffvg()
    with pytest.raises(SettingsError, match="cairo"):
        get_renderer("cairo")


@pytest.mark.skipif(has_pydiffvg(), reason="pydiffvg is installed")
def test_diffvg_missing_is_a_clear_error():
    with pytest.raises(RendererUnavailableError, match=r"github\.com/BachiLi/diffvg"):
        get_renderer("diffvg")


@needs_diffvg
def test_diffvg_draws_the_same_lines():
    """Same widths (full vs diffvg's half), colours, compositing and masking as ours."""
    curved, thin = CASES["curved"][0], CASES["thin"][0]
    points = torch.tensor([[curved, thin], [thin, curved]], dtype=torch.float32)
    widths = torch.tensor([[3.0, 1.5], [2.0, 4.0]])
    colours = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    ours = render_strokes(points, widths, colours, 40, 40, mask)
    variable = points.clone().requires_grad_(True)
    theirs = get_renderer("diffvg")(variable, widths, colours, 40, 40, mask)
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().mean() <= 4 / 255
    theirs.sum().backward()
    assert variable.grad[0].abs().sum() > 0
