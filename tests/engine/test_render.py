"""The stroke renderer against an independent reference, finite differences and ink budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipasso_server.engine.errors import RendererUnavailableError, SettingsError
from clipasso_server.engine.render import get_renderer, render_strokes

BLACK = torch.tensor([0.0, 0.0, 0.0, 1.0])


def reference_coverage(
    control: np.ndarray, width: float, size: int, samples: int = 16
) -> np.ndarray:
    """Exact coverage of a thick cubic by dense supersampling, written independently.

    The curve is sampled at 400 parameters; a sub-pixel sample is inside when its distance to
    the nearest curve segment is at most width / 2 (round caps included).
    """
    t = np.linspace(0.0, 1.0, 401)[:, None]
    curve = (
        (1 - t) ** 3 * control[0]
        + 3 * (1 - t) ** 2 * t * control[1]
        + 3 * (1 - t) * t**2 * control[2]
        + t**3 * control[3]
    )
    a = torch.from_numpy(curve[:-1])
    ab = torch.from_numpy(curve[1:]) - a
    length2 = (ab**2).sum(-1).clamp_min(1e-12)
    offsets = (np.arange(samples) + 0.5) / samples
    coords = (np.arange(size)[:, None] + offsets[None, :]).reshape(-1)
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    points = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=-1))
    best = torch.full((len(points),), float("inf"), dtype=torch.float64)
    for start in range(0, len(points), 8192):
        rel = points[start : start + 8192, None, :] - a[None]
        u = ((rel * ab[None]).sum(-1) / length2[None]).clamp(0.0, 1.0)
        best[start : start + 8192] = (rel - u[..., None] * ab[None]).norm(dim=-1).amin(dim=1)
    inside = (best <= width / 2).numpy()
    return inside.reshape(size, samples, size, samples).mean(axis=(1, 3))


CASES = {
    "straight": ([[8, 10], [16, 14], [24, 18], [32, 22]], 3.0),
    "curved": ([[6, 30], [10, 2], [30, 2], [34, 30]], 3.0),
    "crossing": ([[4, 4], [40, 30], [4, 30], [36, 4]], 2.5),
    "degenerate": ([[20, 20], [20, 20], [20, 20], [20, 20]], 4.0),
    "off_canvas": ([[-10, 5], [10, 20], [30, 50], [50, 30]], 3.0),
    "thin": ([[5, 35], [15, 5], [25, 35], [35, 5]], 1.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_supersampled_reference(name):
    control, width = CASES[name]
    size = 40
    image = render_strokes(torch.tensor([[control]], dtype=torch.float32), width, BLACK, size, size)
    ink = 1.0 - image[0, 0].numpy()
    expected = reference_coverage(np.array(control, dtype=np.float64), width, size)
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


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    points = torch.tensor(
        [[[[4.37, 5.23], [9.71, 14.29], [15.13, 3.41], [19.67, 12.83]]]], dtype=torch.float32
    )
    target = torch.rand(1, 3, 24, 24)

    def loss(p: torch.Tensor) -> torch.Tensor:
        return ((render_strokes(p, 3.0, BLACK, 24, 24) - target) ** 2).sum()

    variable = points.clone().requires_grad_(True)
    loss(variable).backward()
    analytic = variable.grad.flatten()
    eps = 1e-3  # coverage is piecewise linear: a larger step straddles its kinks
    numeric = []
    for i in range(points.numel()):
        step = torch.zeros(points.numel())
        step[i] = eps
        plus = loss(points + step.view_as(points)).item()
        minus = loss(points - step.view_as(points)).item()
        numeric.append((plus - minus) / (2 * eps))
    numeric = torch.tensor(numeric)
    assert analytic.abs().sum() > 0
    cosine = torch.nn.functional.cosine_similarity(analytic, numeric, dim=0)
    assert cosine > 0.98, (analytic, numeric)
    assert torch.allclose(analytic, numeric, rtol=0.15, atol=0.05 * numeric.abs().max().item())


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


def test_uniform_and_per_stroke_colours_agree():
    torch.manual_seed(1)
    points = torch.rand(2, 6, 4, 2) * 30 + 5
    colour = torch.tensor([0.1, 0.2, 0.3, 0.8])
    uniform = render_strokes(points, 2.5, colour, 40, 40)
    per_stroke = render_strokes(points, 2.5, colour.expand(2, 6, 4).clone(), 40, 40)
    assert torch.allclose(uniform, per_stroke, atol=1e-5)


def test_autocast_keeps_float32():
    points = torch.tensor([[[[5.0, 10.0], [10.0, 12.0], [15.0, 8.0], [20.0, 10.0]]]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = render_strokes(points, 3.0, BLACK, 24, 24)
    assert image.dtype == torch.float32
    assert torch.allclose(image, render_strokes(points, 3.0, BLACK, 24, 24))


def test_renderer_choice():
    assert get_renderer("torch") is render_strokes
    assert get_renderer("auto") is render_strokes  # pydiffvg is not installed here
    with pytest.raises(SettingsError):
        get_renderer("cairo")


def test_diffvg_missing_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import pydiffvg  # noqa: F401
    except ImportError:
        with pytest.raises(RendererUnavailableError, match=r"github\.com/BachiLi/diffvg"):
            get_renderer("diffvg")(torch.zeros(1, 1, 4, 2), 3.0, BLACK, 8, 8)
    else:
        pytest.skip("pydiffvg is installed")


def test_diffvg_draws_the_same_line():
    pytest.importorskip("pydiffvg", reason="pydiffvg (diffvg) is not installed")
    control, width = CASES["curved"]
    points = torch.tensor([[control]], dtype=torch.float32)
    ours = render_strokes(points, width, BLACK, 40, 40)
    theirs = get_renderer("diffvg")(points, width, BLACK, 40, 40)
    assert (ours - theirs).abs().mean() <= 4 / 255
