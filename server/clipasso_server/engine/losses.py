"""CLIPasso's loss: geometric (intermediate feature maps) plus semantic (embedding cosine).

All functions return one value per image rather than a batch mean, so every (level, seed)
sketch of a batched job gets its own loss, its own evaluation and its own gradient scale.
Leading dimensions broadcast, so one photo's features serve a whole batch of sketches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

#: the reference's weights: layer2 and layer3 of the ResNet, 1 each; semantic term 0.1
GEOMETRIC_WEIGHTS = (1.0, 1.0)
SEMANTIC_WEIGHT = 0.1


def geometric_loss(
    sketch_maps: Sequence[Tensor],
    photo_maps: Sequence[Tensor],
    weights: Sequence[float] = GEOMETRIC_WEIGHTS,
) -> Tensor:
    """Weighted sum over layers of the mean squared difference of feature maps [...,C,H,W].

    Returns the broadcast leading shape of the inputs (one value per image).
    """
    if not (len(sketch_maps) == len(photo_maps) == len(weights)):
        raise ValueError("need one photo map and one weight per sketch feature map")
    total = None
    for sketch, photo, weight in zip(sketch_maps, photo_maps, weights, strict=True):
        term = weight * (sketch - photo).square().mean(dim=(-3, -2, -1))
        total = term if total is None else total + term
    return total


def semantic_loss(sketch_embedding: Tensor, photo_embedding: Tensor) -> Tensor:
    """1 - cosine similarity of embeddings [...,D], per image."""
    return 1 - F.cosine_similarity(sketch_embedding, photo_embedding, dim=-1)


def clip_loss(
    sketch_features: tuple[Sequence[Tensor], Tensor],
    photo_features: tuple[Sequence[Tensor], Tensor],
    geometric_weights: Sequence[float] = GEOMETRIC_WEIGHTS,
    semantic_weight: float = SEMANTIC_WEIGHT,
) -> Tensor:
    """The full per-image loss from ``LossModel.features`` outputs of sketches and photo."""
    sketch_maps, sketch_embedding = sketch_features
    photo_maps, photo_embedding = photo_features
    loss = geometric_loss(sketch_maps, photo_maps, geometric_weights)
    if semantic_weight:
        loss = loss + semantic_weight * semantic_loss(sketch_embedding, photo_embedding)
    return loss
