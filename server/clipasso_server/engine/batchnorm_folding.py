"""Fold frozen batch norms into the convolutions before them.

The loss model is frozen and in eval mode, so each of its batch norms is a fixed per-channel
affine map, and ``bn(conv(x))`` is one convolution with rescaled weights and a bias. Folding
gives the same features (up to float rounding) and gradients, without the batch-norm kernels:
on the CPU their backward alone was a quarter of the tiny loss model's forward/backward time,
and on a GPU every removed layer is one kernel launch and one pass over the activations less.
The folding itself is torch's ``fuse_conv_bn_eval``; this module only finds the pairs.
"""

from __future__ import annotations

import itertools
import re

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_NUMBERED = re.compile(r"conv(\d+)")


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``convN``/``bnN`` attribute pair (open_clip's ModifiedResNet and its
    Bottlenecks apply ``bnN`` right after ``convN``) and every Conv2d directly followed by a
    BatchNorm2d in an ``nn.Sequential`` (the downsample branches), in place. The batch norms
    become ``nn.Identity``. Returns how many were folded. The model must be in eval mode.
    """
    if model.training:
        raise ValueError("batch norms can only be folded in eval mode")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
                if _foldable(conv, bn):
                    _fold_into(module, conv_name, bn_name)
                    folded += 1
            continue
        for name, conv in list(module.named_children()):
            match = _NUMBERED.fullmatch(name)
            bn = getattr(module, f"bn{match.group(1)}", None) if match else None
            if _foldable(conv, bn):
                _fold_into(module, name, f"bn{match.group(1)}")
                folded += 1
    return folded


def _foldable(conv: nn.Module, bn: nn.Module | None) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.num_features == conv.out_channels
    )


def _fold_into(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    fused = fuse_conv_bn_eval(getattr(parent, conv_name), getattr(parent, bn_name)).eval()
    fused.requires_grad_(False)
    setattr(parent, conv_name, fused)
    setattr(parent, bn_name, nn.Identity().eval())
