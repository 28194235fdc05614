"""Folding the frozen batch norms changes nothing but speed: features and gradients match."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from clipasso_server.engine.batchnorm_folding import fold_batch_norms
from clipasso_server.engine.clip_models import _randomise_batch_norms, _register_test_configs


def _visual(arch: str) -> nn.Module:
    import open_clip

    _register_test_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, device="cpu")
    _randomise_batch_norms(model)  # open_clip's zero-initialised ones would hide mistakes
    visual = model.visual.eval()
    visual.requires_grad_(False)
    return visual


def _features(visual: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The loss model's path through the tower: layer2, layer3 and the pooled embedding."""
    x = visual.layer1(visual.stem(images))
    layer2 = visual.layer2(x)
    layer3 = visual.layer3(layer2)
    return [layer2, layer3, visual.attnpool(visual.layer4(layer3))]


def _batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("arch", ["test-tiny-rn", "RN101-quickgelu"])
def test_folded_tower_gives_the_same_features_and_gradients(arch):
    # In float64, so that the comparison checks the folding and not float32 rounding, which
    # flips a few ReLUs near zero in a deep random tower and moves some gradients by ~1 %.
    reference = _visual(arch).double()
    folded = copy.deepcopy(reference)
    count = _batch_norms(reference)
    assert count > 0
    assert fold_batch_norms(folded) == count
    assert _batch_norms(folded) == 0

    size = int(reference.image_size)
    images = torch.rand(
        2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    outputs, grads = [], []
    for visual in (reference, folded):
        x = images.clone().requires_grad_(True)
        features = _features(visual, x)
        # a loss that weighs every output element differently, so gradients see all of them
        weights = [
            torch.rand(f.shape, generator=torch.Generator().manual_seed(2), dtype=f.dtype)
            for f in features
        ]
        sum((f * w).sum() for f, w in zip(features, weights, strict=True)).backward()
        outputs.append([f.detach() for f in features])
        grads.append(x.grad)
    for want, got in zip(*outputs, strict=True):
        scale = want.abs().max()
        torch.testing.assert_close(got / scale, want / scale, atol=1e-10, rtol=0)
    scale = grads[0].abs().max()
    torch.testing.assert_close(grads[1] / scale, grads[0] / scale, atol=1e-10, rtol=0)


def test_the_loss_model_runs_folded(model_store):
    visual = model_store.loss_model("test-tiny-rn").visual
    assert _batch_norms(visual) == 0
    assert not any(p.requires_grad for p in visual.parameters())


def test_a_model_in_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model)
    assert fold_batch_norms(model.eval()) == 1
    assert isinstance(model[1], nn.Identity)
