"""Every weight file a job needs, resolved before any is loaded or downloaded; no torch.

A job needs the loss model's, the saliency model's and, with background removal, the
segmentation model's weights. Asking for them one at a time meant one failure per run (fix
RN101, then learn about ViT-B-32) and, offline, a download library's minute of retries before
each. Here they are looked up together: local files first, then, for what is left, one quick
probe of the download servers, and a single message listing everything missing with the
accepted names, the folders searched and the address to fetch each file from.

Torch-free so the daemon's HTTP process can call :func:`find_missing` at start-up and at
submission::

    missing = find_missing(job_models(settings), weights_dir, allow_download)
    if missing:
        raise ProtocolError("missing_weights", missing_message(missing))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipasso_server.engine import model_specs, weights
from clipasso_server.engine.errors import MissingWeightsError, UnreadableWeightsError

#: the optional background-removal model: torchvision's DeepLabV3-MobileNetV3 checkpoint
BACKGROUND_MODEL = "deeplabv3_mobilenet_v3_large"
BACKGROUND_URL = "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth"
BACKGROUND_FILE = BACKGROUND_URL.rsplit("/", 1)[-1]
#: OpenAI's models are fetched from the Hugging Face hub first, then from OpenAI's URL
HF_HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class MissingWeight:
    """One model whose weights are neither on disk nor downloadable now, and how to fix it."""

    model: str
    file_names: tuple[str, ...]  # accepted inside a weights folder
    folders: tuple[Path, ...]  # the weights folders searched (--clip-weights, $CLIPASSO_WEIGHTS)
    cache_files: tuple[Path, ...]  # the standard cache files looked at
    url: str  # where to download it by hand ("" when it is never downloaded)
    reason: str  # why it was not downloaded, or why the file found cannot be used
    hint: str = ""
    damaged: bool = False  # a file was found but cannot be used (wrong published hash)


def torch_hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint cache as ``torch.hub.get_dir()`` computes it, read now:
    ``$TORCH_HOME/hub/checkpoints``, else ``$XDG_CACHE_HOME/torch/...``, else ``~/.cache``."""
    torch_home = os.environ.get("TORCH_HOME") or str(weights.home_cache_dir() / "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def _download_background() -> Path:
    import torch  # only when a download really happens

    torch.hub.load_state_dict_from_url(BACKGROUND_URL, progress=False, check_hash=True)
    return torch_hub_checkpoint_dir() / BACKGROUND_FILE


def background_request() -> weights.WeightRequest:
    """Where the segmentation weights may be: the weights folder, then torch hub's cache."""
    return weights.WeightRequest(
        model=BACKGROUND_MODEL,
        file_names=(BACKGROUND_FILE,),
        cache_paths=(torch_hub_checkpoint_dir() / BACKGROUND_FILE,),
        download=_download_background,
        hint=f"It is torchvision's published checkpoint: {BACKGROUND_URL}",
    )


def weight_request(name: str) -> weights.WeightRequest:
    """The request for model ``name`` (a CLIP model or :data:`BACKGROUND_MODEL`)."""
    if name == BACKGROUND_MODEL:
        return background_request()
    return model_specs.weight_request(model_specs.model_spec(name))


def download_urls(name: str) -> tuple[str, ...]:
    """The servers a download of ``name`` would ask, the published file's own URL last."""
    if name == BACKGROUND_MODEL:
        return (BACKGROUND_URL,)
    spec = model_specs.model_spec(name)
    return (f"{HF_HUB_URL}/{spec.hf_hub}", spec.url) if spec.url else ()


def job_models(settings: object) -> list[str]:
    """The models a job with these settings loads: its ``loss_model`` and ``saliency_model``,
    and the background model when ``remove_background`` is set (a SketchSettings, a
    SketchConfig or anything with those attributes)."""
    names = [settings.loss_model, settings.saliency_model]  # type: ignore[attr-defined]
    if getattr(settings, "remove_background", False):
        names.append(BACKGROUND_MODEL)
    return list(dict.fromkeys(names))


def _no_download_reason(names: Sequence[str], allow_download: bool) -> dict[str, str]:
    """Why each of ``names`` (not on disk) will not be downloaded; absent = it will be."""
    reasons: dict[str, str] = {}
    wanted = []
    for name in names:
        if not download_urls(name):
            reasons[name] = "This model is never downloaded."
        elif not allow_download:
            reasons[name] = "Downloads are switched off."
        elif weights.downloads_disabled():
            reasons[name] = "Downloads are switched off (HF_HUB_OFFLINE is set)."
        else:
            wanted.append(name)
    if wanted:
        offline = weights.unreachable([url for name in wanted for url in download_urls(name)])
        if offline is not None:
            reasons.update({name: f"Offline: {offline}." for name in wanted})
    return reasons


def _entry(
    name: str, weights_dir: str | Path | None, reason: str, damaged: bool = False
) -> MissingWeight:
    request = weight_request(name)
    urls = download_urls(name)
    return MissingWeight(
        model=name,
        file_names=request.file_names,
        folders=tuple(path for path, _ in weights.weights_dirs(weights_dir)),
        cache_files=request.cache_paths,
        url=urls[-1] if urls else "",
        reason=reason,
        hint=request.hint,
        damaged=damaged,
    )


def _local_or_missing(
    names: Sequence[str], weights_dir: str | Path | None
) -> tuple[dict[str, weights.WeightFile], list[MissingWeight], list[str]]:
    """(files found, unusable files as entries, names with nothing on disk)."""
    found: dict[str, weights.WeightFile] = {}
    damaged: list[MissingWeight] = []
    absent: list[str] = []
    for name in dict.fromkeys(names):
        try:
            local = weights.find_local(weight_request(name), weights_dir)
        except UnreadableWeightsError as exc:
            damaged.append(_entry(name, weights_dir, exc.message, damaged=True))
            continue
        if local is None:
            absent.append(name)
        else:
            found[name] = local
    return found, damaged, absent


def _survey(
    names: Sequence[str], weights_dir: str | Path | None, allow_download: bool
) -> tuple[dict[str, weights.WeightFile], list[MissingWeight], list[str]]:
    """(files found on disk, what cannot be had now, names to download)."""
    found, damaged, absent = _local_or_missing(names, weights_dir)
    reasons = _no_download_reason(absent, allow_download)
    missing = [*damaged, *(_entry(name, weights_dir, reasons[name]) for name in reasons)]
    return found, missing, [name for name in absent if name not in reasons]


def find_missing(
    model_names: Sequence[str],
    weights_dir: str | Path | None = None,
    allow_download: bool = True,
) -> list[MissingWeight]:
    """The models among ``model_names`` that a job could not get now: not on disk (or damaged)
    and not downloadable (downloads off, HF_HUB_OFFLINE, or the servers unreachable).

    Loads and downloads nothing; takes a few seconds at most when the network must be probed.
    SettingsError for an unknown model name, MissingWeightsError for a weights folder that
    does not exist.
    """
    return _survey(model_names, weights_dir, allow_download)[1]


def _describe(entry: MissingWeight, say_reason: bool) -> str:
    where = ", ".join(str(folder) for folder in entry.folders) or "none given"
    reason = f"{entry.reason} " if say_reason else ""
    text = (
        f"- {entry.model}: {reason}Put one of {', '.join(entry.file_names)} into a "
        f"folder given with --clip-weights DIR or named by ${weights.WEIGHTS_ENV} "
        f"(searched: {where})"
    )
    caches = list(dict.fromkeys(entry.cache_files))
    if caches:
        text += ", or " + ", ".join(f"{path.name} into {path.parent}" for path in caches)
    if entry.url:
        text += f". Download: {entry.url}"
    elif entry.hint:
        text += f". {entry.hint}"
    return text


def missing_message(missing: Sequence[MissingWeight]) -> str:
    """The user-facing text for :func:`find_missing`'s answer: one line per model."""
    names = ", ".join(entry.model for entry in missing)
    plural = "s" if len(missing) != 1 else ""
    reasons = {entry.reason for entry in missing}
    shared = reasons.pop() if len(reasons) == 1 else ""
    head = f"no usable weights for {len(missing)} model{plural} ({names})"
    lines = [f"{head}. {shared}" if shared else f"{head}:"]
    lines += [_describe(entry, say_reason=not shared) for entry in missing]
    return "\n".join(lines)


def resolve_all(
    model_names: Sequence[str],
    weights_dir: str | Path | None = None,
    allow_download: bool = True,
) -> dict[str, weights.WeightFile]:
    """Every weight file of ``model_names``, downloading only once all the rest is known to be
    obtainable; one MissingWeightsError listing everything missing otherwise."""
    found, missing, absent = _survey(model_names, weights_dir, allow_download)
    if missing:
        damaged = all(entry.damaged for entry in missing)
        error = UnreadableWeightsError if damaged else MissingWeightsError
        raise error(missing_message(missing))
    for name in absent:
        try:
            found[name] = weights.download(weight_request(name))
        except UnreadableWeightsError:
            raise
        except Exception as exc:  # any network or server failure: say so, with the way out
            reason = f"The download failed ({type(exc).__name__}: {exc})."
            raise MissingWeightsError(
                missing_message([_entry(name, weights_dir, reason)])
            ) from None
    return {name: found[name] for name in dict.fromkeys(model_names)}
