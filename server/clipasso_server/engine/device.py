"""Choosing the torch device a job runs on; a clear message when the one asked for is absent."""

from __future__ import annotations

import re

import torch

from clipasso_server.engine.errors import SettingsError

_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The device called ``name``: "auto", "cpu", "cuda", "cuda:N" or "mps".

    "auto" prefers CUDA, then Apple's MPS, then the CPU. Asking for a device that this machine
    does not have raises SettingsError rather than failing later inside a model.
    """
    wanted = (name or "auto").strip().lower()
    if wanted == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "mps":
        if not _mps_available():
            raise SettingsError("device 'mps' was asked for, but Apple's MPS is not available here")
        return torch.device("mps")
    match = _CUDA_INDEX.match(wanted)
    if wanted == "cuda" or match:
        if not torch.cuda.is_available():
            raise SettingsError(
                f"device {name!r} was asked for, but CUDA is not available here "
                "(no NVIDIA GPU, no driver, or a CPU-only torch build); use 'cpu' or 'auto'"
            )
        if match:
            index, count = int(match.group(1)), torch.cuda.device_count()
            if index >= count:
                raise SettingsError(
                    f"device {name!r} was asked for, but this machine has {count} CUDA "
                    f"device(s): cuda:0 to cuda:{count - 1}"
                )
        return torch.device(wanted)
    raise SettingsError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
