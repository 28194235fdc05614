"""The optional background removal: a segmentation model's foreground mask whitens the rest.

The paper uses a salient-object model (U2-Net); here torchvision's DeepLabV3 with a
MobileNetV3-Large backbone stands in, a well-kept library model whose weights torchvision
publishes. It knows the 20 PASCAL VOC object classes; every pixel not classified as background
counts as foreground. Its weights are found like the CLIP weights: the weights directory, then
torch hub's checkpoint cache, then torchvision's download (hash-checked).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipasso_server.engine import weights
from clipasso_server.engine.errors import load_failure

# torchvision's published checkpoint (COCO images, VOC labels); the name carries its hash.
# Defined where the torch-free weight check can read it.
from clipasso_server.engine.weight_check import (  # noqa: F401 (re-exported)
    BACKGROUND_FILE,
    BACKGROUND_MODEL,
    BACKGROUND_URL,
)

NUM_CLASSES = 21

#: the weights' evaluation preset: shorter side resized to 520, ImageNet statistics
_RESIZE = 520
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
#: below this foreground share the model found no known object; masking would blank the
#: whole picture, so the image is kept as it is
MIN_FOREGROUND_FRACTION = 0.01


def build_segmentation_model() -> nn.Module:
    """The segmentation network with random weights and no pretrained backbone download."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True
    )


class BackgroundModel:
    """A frozen segmentation network turning an image into a soft foreground mask."""

    name = BACKGROUND_MODEL

    def __init__(self, network: nn.Module, device: torch.device, version: str) -> None:
        self.network = network.to(device).eval().requires_grad_(False)
        self.device = device
        self.version = version
        self._mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def mask(self, image: Tensor) -> Tensor:
        """image [3,H,W] in [0,1] -> mask [1,H,W] in [0,1]: 1 - P(background) per pixel.

        When almost nothing is foreground (no VOC object found) the mask is all ones, so the
        caller keeps the picture instead of sketching a blank page.
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"background mask expects an image [3,H,W], got {list(image.shape)}")
        height, width = image.shape[-2:]
        scale = _RESIZE / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = image.to(self.device, torch.float32).unsqueeze(0)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        logits = self.network((x - self._mean) / self._std)["out"]
        foreground = 1.0 - logits.softmax(dim=1)[:, :1]
        foreground = F.interpolate(foreground, size=(height, width), mode="bilinear")
        foreground = foreground[0].clamp(0.0, 1.0)
        if (foreground > 0.5).float().mean().item() < MIN_FOREGROUND_FRACTION:
            return torch.ones_like(foreground)
        return foreground


def load_background_file(path: str | Path, device: torch.device | str = "cpu") -> BackgroundModel:
    """The background model from a state-dict file (torchvision's checkpoint format)."""
    path = Path(path)
    network = build_segmentation_model()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise load_failure(exc, path, BACKGROUND_MODEL) from exc
    return BackgroundModel(network, torch.device(device), weights.file_version(path))


def whiten_background(image: Tensor, mask: Tensor) -> Tensor:
    """Blend the image towards white where the mask says background."""
    return image * mask + (1.0 - mask)
