"""Shared fixtures: the tiny test models' weights and a CPU model store that never downloads.

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


@pytest.fixture(scope="session")
def test_weights_dir(tmp_path_factory):
    """A directory holding the tiny models' weights, written once per session like
    `clipasso make-test-weights DIR` writes them."""
    from clipasso_server.engine.clip_models import write_test_weights

    directory = tmp_path_factory.mktemp("test-weights")
    write_test_weights(directory)
    return directory


@pytest.fixture(scope="session")
def model_store(test_weights_dir):
    """One CPU ModelStore for the session, resolving weights from ``test_weights_dir`` only."""
    from clipasso_server.engine.clip_models import ModelStore

    return ModelStore(device="cpu", weights_dir=test_weights_dir, allow_download=False)
