"""The supported CLIP models and where their weights may be found, without torch.

A table, not open_clip's registry: the daemon's HTTP process checks model names and computes
model versions for its cache key at submission, and importing open_clip would import torch
there. The OpenAI URLs and Hugging Face repositories are open_clip's own (``openai`` tags of
the QuickGELU configs); ``tests/daemon/test_workers.py`` checks that they still agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipasso_server.engine import weights
from clipasso_server.engine.errors import SettingsError

TEST_LOSS_MODEL = "test-tiny-rn"
TEST_SALIENCY_MODEL = "test-tiny-vit"
TEST_MODELS = (TEST_LOSS_MODEL, TEST_SALIENCY_MODEL)

RESNET = "resnet"
VIT = "vit"

HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_OPENAI = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class ModelSpec:
    """One supported model: its user-facing name, open_clip config and tower family, and
    (for OpenAI's models) the published weight file's URL and Hugging Face repository."""

    name: str
    arch: str
    kind: str
    pretrained_tag: str | None = "openai"
    url: str = ""
    hf_hub: str = ""


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "RN50",
            "RN50-quickgelu",
            RESNET,
            url=f"{_OPENAI}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
            hf_hub="timm/resnet50_clip.openai",
        ),
        ModelSpec(
            "RN101",
            "RN101-quickgelu",
            RESNET,
            url=f"{_OPENAI}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
            hf_hub="timm/resnet101_clip.openai",
        ),
        ModelSpec(
            "ViT-B-32",
            "ViT-B-32-quickgelu",
            VIT,
            url=f"{_OPENAI}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            hf_hub="timm/vit_base_patch32_clip_224.openai",
        ),
        ModelSpec(
            "ViT-B-16",
            "ViT-B-16-quickgelu",
            VIT,
            url=f"{_OPENAI}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
            hf_hub="timm/vit_base_patch16_clip_224.openai",
        ),
        ModelSpec(
            "ViT-L-14",
            "ViT-L-14-quickgelu",
            VIT,
            url=f"{_OPENAI}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            hf_hub="timm/vit_large_patch14_clip_224.openai",
        ),
        ModelSpec(TEST_LOSS_MODEL, TEST_LOSS_MODEL, RESNET, None),
        ModelSpec(TEST_SALIENCY_MODEL, TEST_SALIENCY_MODEL, VIT, None),
    )
}


def known_models() -> list[str]:
    """Every user-facing model name accepted, loss (ResNet) and saliency (ViT) alike."""
    return list(_SPECS)


def known_loss_models() -> list[str]:
    """The names accepted as ``loss_model`` (ResNet towers)."""
    return [name for name, spec in _SPECS.items() if spec.kind == RESNET]


def known_saliency_models() -> list[str]:
    """The names accepted as ``saliency_model`` (ViT towers)."""
    return [name for name, spec in _SPECS.items() if spec.kind == VIT]


def model_spec(name: str, kind: str | None = None) -> ModelSpec:
    """The spec of ``name``; SettingsError for unknown names or the wrong tower family."""
    spec = _SPECS.get(name)
    if spec is None:
        raise SettingsError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    if kind is not None and spec.kind != kind:
        role, names = (
            ("loss model", known_loss_models())
            if kind == RESNET
            else ("saliency model", known_saliency_models())
        )
        raise SettingsError(f"{name!r} cannot be the {role}: use one of {', '.join(names)}")
    return spec


def weight_request(spec: ModelSpec) -> weights.WeightRequest:
    """Where ``spec``'s weights may be: file names, cache files, published hash, download."""
    name = spec.name
    if spec.pretrained_tag is None:
        return weights.WeightRequest(
            model=name,
            file_names=(f"{name}.safetensors", f"{name}.bin"),
            hint="Write the test models' weights with `clipasso make-test-weights DIR`.",
        )
    openai_file = spec.url.rsplit("/", 1)[-1]
    published = spec.url.split("/")[-2]
    hf_paths = [weights.hf_cached_file(spec.hf_hub, filename) for filename in HF_FILES]
    clip_paths = [d / openai_file for d in weights.clip_cache_dirs()]
    return weights.WeightRequest(
        model=name,
        file_names=(
            openai_file,
            f"{name}.safetensors",
            f"{name}.bin",
            f"{name}.pth",
            *(f"{name}/{filename}" for filename in HF_FILES),
        ),
        cache_paths=(*(p for p in hf_paths if p is not None), *clip_paths),
        published_sha256={openai_file: published},
        download=lambda: _download_openai(spec.hf_hub, spec.url),
    )


def _download_openai(repo: str, url: str) -> Path:
    """Fetch OpenAI's weights: from the Hugging Face hub (safetensors), else OpenAI's URL.

    Both land in the standard caches (the HF cache, ``~/.cache/clip``), where the next
    resolution finds them without any network. open_clip (and so torch) is imported here only.
    """
    from open_clip.pretrained import download_pretrained_from_hf, download_pretrained_from_url

    try:
        return Path(download_pretrained_from_hf(repo))
    except Exception as hf_error:
        try:
            return Path(download_pretrained_from_url(url))
        except Exception as url_error:
            raise RuntimeError(f"{hf_error}; then {url}: {url_error}") from url_error


def describe_local(name: str, weights_dir: str | Path | None) -> str:
    """``"<name> sha256:<12 hex>"`` of a model whose weights are on disk (as
    ``ModelStore.describe`` gives it), never downloading; MissingWeightsError otherwise."""
    found = weights.resolve(weight_request(model_spec(name)), weights_dir, False)
    return f"{name} {weights.file_version(found.path)}"
