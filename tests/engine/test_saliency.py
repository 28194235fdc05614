"""Saliency initialisation: XDoG edges with Otsu, attention on edges, sampling, random walks.

The edge mask is checked against an independent NumPy/SciPy/scikit-image implementation of
the reference's four steps (method.md, "Edge map") on real photos (the ones scikit-image ships
inside its wheel, and the bundled sample) and on synthetic images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.filters import threshold_otsu  # noqa: E402

import clipasso_server  # noqa: E402
from clipasso_server.engine.image_input import image_to_canvas, load_image_file  # noqa: E402
from clipasso_server.engine.saliency import (  # noqa: E402
    gaussian_blur,
    initial_strokes,
    otsu_threshold,
    saliency_map,
    sample_start_points,
    xdog_edges,
)

SAMPLE = Path(clipasso_server.__file__).parent / "data" / "sample.png"
_MEAN = np.array((0.48145466, 0.4578275, 0.40821073))
_STD = np.array((0.26862954, 0.26130258, 0.27577711))


def reference_edges(image: torch.Tensor) -> np.ndarray:
    """The reference's edge mask, step by step, in NumPy: True where attention is kept."""
    rgb = image.permute(1, 2, 0).to(torch.float64).numpy()
    gray = ((rgb - _MEAN) / _STD) @ np.array([0.2125, 0.7154, 0.0721])
    fine = gaussian_filter(gray, 0.8, truncate=4.0, mode="reflect")
    wide = gaussian_filter(gray, 8.0, truncate=4.0, mode="reflect")
    diff = fine - 0.98 * wide
    xdog = np.where(diff < -0.1, 1.0, 1.0 + np.tanh(200.0 * diff))
    xdog = (xdog - xdog.min()) / (xdog.max() - xdog.min())
    return ~(xdog >= threshold_otsu(xdog))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _photo(name: str) -> torch.Tensor:
    picture = (
        load_image_file(SAMPLE)
        if name == "sample"
        else Image.fromarray(getattr(skimage.data, name)())
    )
    return image_to_canvas(picture, 224)[0]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "sample"])
def test_xdog_matches_the_reference_rule_on_photos(name):
    photo = _photo(name)
    edges = xdog_edges(photo)
    assert edges.dtype == torch.bool and edges.shape == (224, 224)
    assert _iou(edges.numpy(), reference_edges(photo)) >= 0.97
    # the reference keeps roughly half of a photo's pixels
    assert 0.25 < float(edges.float().mean()) < 0.75


def _synthetic() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 160), indexing="ij")
    disc = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).to(torch.float32)
    return {
        "noise": torch.rand(3, 64, 64, generator=generator),
        # smaller than the wide blur's radius (32 px): the reflection wraps more than once
        "tiny-noise": torch.rand(3, 20, 37, generator=generator),
        "coloured-disc": torch.stack([disc, 1 - disc, 0.5 * disc]),
        "ramp": torch.stack([xx, yy, xx * yy]),
    }


@pytest.mark.parametrize("name", list(_synthetic()))
def test_xdog_matches_the_reference_rule_on_synthetic_images(name):
    image = _synthetic()[name]
    assert _iou(xdog_edges(image).numpy(), reference_edges(image)) >= 0.97


def test_blur_reflects_at_the_edges_like_scipy():
    values = torch.rand(9, 13, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for sigma in (0.8, 8.0):
        expected = gaussian_filter(values.numpy(), sigma, truncate=4.0, mode="reflect")
        assert np.allclose(gaussian_blur(values, sigma).numpy(), expected, atol=1e-12)


def test_xdog_keeps_dark_areas_and_drops_white_paper():
    # the reversed rule: a dark square's whole inside is kept, the white around it is not
    image = torch.ones(3, 128, 128)
    image[:, 24:104, 24:104] = 0.1
    edges = xdog_edges(image)
    assert bool(edges[32:96, 32:96].all())
    assert not bool(edges[:16].any()) and not bool(edges[:, 112:].any())


def test_otsu_splits_two_clusters_between_them():
    values = torch.cat([torch.full((500,), 0.2), torch.full((300,), 0.9)])
    values = values + 0.01 * torch.randn(800, generator=torch.Generator().manual_seed(0))
    threshold = otsu_threshold(values)
    assert float(values[:500].max()) < threshold < float(values[500:].min())
    assert int((values > threshold).sum()) == 300


def test_otsu_of_a_constant_leaves_nothing_above():
    values = torch.full((10, 10), 0.5)
    assert not bool((values > otsu_threshold(values)).any())


def test_xdog_of_a_flat_image_has_no_edges():
    assert not bool(xdog_edges(torch.full((3, 32, 32), 0.7)).any())


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
