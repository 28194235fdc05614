"""Saliency initialisation: XDoG edges with Otsu, attention on edges, sampling, random walks."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from clipasso_server.engine.saliency import (  # noqa: E402
    initial_strokes,
    otsu_threshold,
    saliency_map,
    sample_start_points,
    to_gray,
    xdog_edges,
)


def _square_image(size: int = 64, lo: int = 20, hi: int = 44) -> torch.Tensor:
    image = torch.ones(3, size, size)
    image[:, lo:hi, lo:hi] = 0.1
    return image


def test_otsu_splits_two_clusters_between_them():
    values = torch.cat([torch.full((500,), 0.2), torch.full((300,), 0.9)])
    values = values + 0.01 * torch.randn(800, generator=torch.Generator().manual_seed(0))
    threshold = otsu_threshold(values)
    assert float(values[:500].max()) < threshold < float(values[500:].min())
    assert int((values > threshold).sum()) == 300


def test_otsu_of_a_constant_leaves_nothing_above():
    values = torch.full((10, 10), 0.5)
    assert not bool((values > otsu_threshold(values)).any())


def test_xdog_marks_the_outline_of_a_dark_square_and_nothing_far_from_it():
    # the square is much larger than the wide Gaussian (sigma 8), so its inside stays paper
    edges = xdog_edges(to_gray(_square_image(128, 24, 104)))
    assert edges.dtype == torch.bool and edges.shape == (128, 128)
    assert int(edges.sum()) > 4 * 60
    ys, xs = edges.nonzero(as_tuple=True)
    to_side_x = torch.minimum((xs - 24).abs(), (xs - 103).abs())
    to_side_y = torch.minimum((ys - 24).abs(), (ys - 103).abs())
    # XDoG lines lie on the dark side, about one wide sigma (8 px) thick
    assert int(torch.minimum(to_side_x, to_side_y).max()) <= 12
    assert not bool(edges[40:88, 40:88].any())
    assert not bool(edges[:12, :12].any())


def test_xdog_of_a_flat_image_has_no_edges():
    assert not bool(xdog_edges(torch.full((32, 32), 0.7)).any())


def test_saliency_keeps_attention_only_on_edges_and_normalises():
    attention = torch.zeros(4, 4)
    attention[0, 0] = 1.0
    edges = torch.zeros(32, 32, dtype=torch.bool)
    edges[2:6, 2:6] = True
    edges[28:30, 28:30] = True
    sal = saliency_map(attention, edges, 32)
    assert sal.shape == (32, 32)
    assert float(sal.max()) <= 1.0 and float(sal.min()) >= 0.0
    assert bool((sal[~edges] == 0).all())
    # the attended corner outweighs the unattended one
    assert float(sal[2:6, 2:6].mean()) > float(sal[28:30, 28:30].mean())


def test_saliency_without_edges_falls_back_to_attention():
    attention = torch.rand(7, 7, generator=torch.Generator().manual_seed(1))
    sal = saliency_map(attention, torch.zeros(28, 28, dtype=torch.bool), 28)
    assert float(sal.max()) == pytest.approx(1.0)
    assert int((sal > 0).sum()) > 28 * 28 - 2


def test_sampling_is_without_replacement_on_positive_pixels_and_seeded():
    sal = torch.zeros(16, 16)
    sal[4, 3:13] = torch.linspace(0.1, 1.0, 10)
    a = sample_start_points(sal, 6, generator=torch.Generator().manual_seed(3))
    b = sample_start_points(sal, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.shape == (6, 2)
    assert len({tuple(p) for p in a.tolist()}) == 6
    assert bool((a[:, 1] == 4.5).all())  # pixel centres of row 4
    assert bool(((a[:, 0] >= 3.5) & (a[:, 0] <= 12.5)).all())


def test_sampling_follows_the_temperature():
    sal = torch.zeros(1, 2)
    sal[0, 0], sal[0, 1] = 1.0, 0.5
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_start_points(sal, 1, 0.3, generator)[0, 0] for _ in range(2000)])
    share = float((draws == 0.5).float().mean())
    expected = math.exp(1 / 0.3) / (math.exp(1 / 0.3) + math.exp(0.5 / 0.3))
    assert share == pytest.approx(expected, abs=0.04)
    hot = torch.stack([sample_start_points(sal, 1, 5.0, generator)[0, 0] for _ in range(2000)])
    assert float((hot == 0.5).float().mean()) < share - 0.2


def test_sampling_with_too_few_positive_pixels_takes_them_all_then_others():
    sal = torch.zeros(8, 8)
    sal[1, 1] = sal[6, 6] = 1.0
    points = sample_start_points(sal, 5, generator=torch.Generator().manual_seed(0))
    as_set = {tuple(p) for p in points.tolist()}
    assert len(as_set) == 5
    assert {(1.5, 1.5), (6.5, 6.5)} <= as_set


def test_initial_strokes_are_small_random_walks_from_their_start():
    start = torch.tensor([[10.0, 20.0], [100.0, 50.0]])
    strokes = initial_strokes(start, 224, torch.Generator().manual_seed(0))
    assert strokes.shape == (2, 4, 2)
    assert torch.equal(strokes[:, 0], start)
    steps = strokes[:, 1:] - strokes[:, :-1]
    assert float(steps.abs().max()) <= 0.05 * 224 / 2
    assert float(steps.abs().max()) > 0
    again = initial_strokes(start, 224, torch.Generator().manual_seed(0))
    assert torch.equal(strokes, again)
