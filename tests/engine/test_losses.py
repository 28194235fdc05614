"""CLIPasso's loss terms: per-image values, zero for identical inputs, broadcasting."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from clipasso_server.engine.losses import clip_loss, geometric_loss, semantic_loss  # noqa: E402


def _features(batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    maps = [
        torch.randn(batch, 4, 8, 8, generator=generator),
        torch.randn(batch, 6, 4, 4, generator=generator),
    ]
    return maps, torch.randn(batch, 5, generator=generator)


def test_identical_features_give_zero_loss():
    features = _features(3, 0)
    loss = clip_loss(features, features)
    assert loss.shape == (3,)
    assert torch.allclose(loss, torch.zeros(3), atol=1e-6)


def test_different_features_give_positive_per_image_loss():
    sketch, photo = _features(3, 0), _features(1, 1)
    loss = clip_loss(sketch, photo)
    assert loss.shape == (3,)
    assert bool((loss > 0).all())
    alone = clip_loss(([m[1:2] for m in sketch[0]], sketch[1][1:2]), photo)
    assert torch.allclose(loss[1:2], alone)


def test_terms_and_weights_match_their_definition():
    (s2, s3), se = _features(2, 2)
    (p2, p3), pe = _features(2, 3)
    expected_geo = ((s2 - p2) ** 2).mean(dim=(1, 2, 3)) + ((s3 - p3) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(geometric_loss([s2, s3], [p2, p3]), expected_geo)
    cos = (se * pe).sum(-1) / (se.norm(dim=-1) * pe.norm(dim=-1))
    assert torch.allclose(semantic_loss(se, pe), 1 - cos)
    total = clip_loss(([s2, s3], se), ([p2, p3], pe))
    assert torch.allclose(total, expected_geo + 0.1 * (1 - cos))
    only_geo = clip_loss(([s2, s3], se), ([p2, p3], pe), semantic_weight=0)
    assert torch.allclose(only_geo, expected_geo)


def test_semantic_loss_ignores_scale():
    embedding = torch.randn(2, 5, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(semantic_loss(3 * embedding, embedding), torch.zeros(2), atol=1e-6)


def test_gradient_reaches_the_sketch_features():
    sketch = _features(2, 5)
    sketch = ([m.requires_grad_(True) for m in sketch[0]], sketch[1].requires_grad_(True))
    clip_loss(sketch, _features(1, 6)).sum().backward()
    assert all(float(m.grad.abs().sum()) > 0 for m in sketch[0])
    assert float(sketch[1].grad.abs().sum()) > 0
