"""Paired augmentations: one homography per view, the same for sketch and photo."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from clipasso_server.engine.augment import GridMaker, apply_views, random_views  # noqa: E402


def _pattern(n: int = 2, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=generator)


def test_without_distortion_and_full_crop_a_view_is_the_identity():
    images = _pattern()
    views = random_views(3, 64, 64, torch.Generator().manual_seed(1), distortion=0, crop_area=1)
    out = apply_views(images, GridMaker(64, 64)(views))
    assert out.shape == (3, 2, 3, 64, 64)
    assert torch.allclose(out, images.expand(3, *images.shape), atol=1e-5)


def test_a_crop_only_view_is_a_zoom_on_80_percent_of_the_area():
    views = random_views(4, 64, 64, torch.Generator().manual_seed(2), distortion=0)
    h = views.homographies
    side = math.sqrt(0.8) * 64
    assert torch.allclose(h[:, 0, 0], torch.full((4,), side / 64, dtype=torch.float64))
    assert torch.allclose(h[:, 1, 1], torch.full((4,), side / 64, dtype=torch.float64))
    assert bool(((h[:, :2, 2] >= 0) & (h[:, :2, 2] <= 64 - side)).all())


def test_views_are_seeded_and_differ_between_views():
    a = random_views(4, 224, 224, torch.Generator().manual_seed(5)).homographies
    b = random_views(4, 224, 224, torch.Generator().manual_seed(5)).homographies
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_sketch_and_photo_get_the_same_transform():
    images = _pattern(3)
    grid = GridMaker(64, 32)(random_views(2, 64, 32, torch.Generator().manual_seed(3)))
    together = apply_views(images, grid)
    alone = apply_views(images[1:2], grid)
    assert together.shape == (2, 3, 3, 32, 32)
    assert torch.allclose(together[:, 1], alone[:, 0], atol=1e-6)


def test_perspective_leaves_black_corners_on_a_white_image():
    white = torch.ones(1, 3, 64, 64)
    views = random_views(8, 64, 64, torch.Generator().manual_seed(4), crop_area=1)
    out = apply_views(white, GridMaker(64, 64)(views))
    assert float(out.min()) == 0.0  # empty area is black
    assert float(out[..., 24:40, 24:40].min()) > 0.99  # the middle is still image


def test_gradients_flow_to_the_sketch():
    images = _pattern(1).requires_grad_(True)
    grid = GridMaker(64, 48)(random_views(2, 64, 48, torch.Generator().manual_seed(6)))
    apply_views(images, grid).square().sum().backward()
    assert images.grad is not None
    assert float(images.grad.abs().sum()) > 0


def test_views_equal_one_grid_sample_per_view_and_image():
    # the reference: each (view, image) pair resampled on its own, gradients included
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    grid = GridMaker(40, 32)(random_views(2, 40, 32, torch.Generator().manual_seed(6)))
    fast_in = images.clone().requires_grad_(True)
    fast = apply_views(fast_in, grid)
    slow_in = images.clone().requires_grad_(True)
    slow = torch.stack(
        [
            torch.cat(
                [
                    torch.nn.functional.grid_sample(
                        slow_in[i : i + 1], grid[v : v + 1], align_corners=False
                    )
                    for i in range(3)
                ]
            )
            for v in range(2)
        ]
    )
    assert fast.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(fast, slow)
    weights = torch.rand(fast.shape, generator=torch.Generator().manual_seed(7))
    (fast * weights).sum().backward()
    (slow * weights).sum().backward()
    torch.testing.assert_close(fast_in.grad, slow_in.grad)
