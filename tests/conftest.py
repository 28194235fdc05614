"""Shared fixtures: the tiny test models' weights and a model store that never downloads.

The engine tests run on the device and in the precision given on the command line, as kornia's
tests do: ``pytest tests/engine --device cuda --dtype bfloat16`` (defaults: cpu, float32).
``bfloat16`` runs the loss model under bf16 autocast, the mixed-precision path CUDA takes.
Tests marked ``cuda`` need a CUDA device and are skipped cleanly without one.

No torch at module level: the extension's tests run under a Python without torch, so torch
and the engine are imported inside the fixtures only.
"""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: the Hugging Face tools stay offline, and the store below has
# downloads switched off as well.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


DTYPES = ("float32", "bfloat16")


def pytest_addoption(parser):
    group = parser.getgroup("clipasso engine")
    group.addoption(
        "--device", default="cpu", help="torch device for the engine tests: cpu, cuda, cuda:N"
    )
    group.addoption(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="precision of the loss model in the engine tests (bfloat16: bf16 autocast)",
    )


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("cuda" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (none here)")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request):
    """The torch device of ``--device``; the session is skipped when it is not available."""
    torch = pytest.importorskip("torch")
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available here")
    return torch.device(name)


@pytest.fixture(scope="session")
def dtype(request):
    """The torch dtype of ``--dtype``: the precision the loss model computes in."""
    torch = pytest.importorskip("torch")
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(scope="session")
def precision(dtype) -> str:
    """The ModelStore precision for ``dtype`` (bf16 autocast, or plain float32)."""
    import torch

    return "bf16" if dtype == torch.bfloat16 else "fp32"


@pytest.fixture(scope="session")
def loss_rtol(dtype) -> float:
    """Relative tolerance between two evaluations of one loss that ran in batches of other
    sizes: float32 rounding, or bf16's (about 3 significant digits)."""
    import torch

    return 1e-4 if dtype == torch.float32 else 2e-2


@pytest.fixture(scope="session")
def test_weights_dir(tmp_path_factory):
    """A directory holding the tiny models' weights, written once per session like
    `clipasso make-test-weights DIR` writes them."""
    from clipasso_server.engine.clip_models import write_test_weights

    directory = tmp_path_factory.mktemp("test-weights")
    write_test_weights(directory)
    return directory


@pytest.fixture(scope="session")
def model_store(test_weights_dir, device, precision):
    """One ModelStore for the session on ``device`` in ``precision``, resolving weights from
    ``test_weights_dir`` only."""
    from clipasso_server.engine.clip_models import ModelStore

    return ModelStore(
        device=device, weights_dir=test_weights_dir, allow_download=False, precision=precision
    )
