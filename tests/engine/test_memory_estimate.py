"""The torch-free peak-memory estimate a daemon uses to refuse a job that cannot fit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipasso_server.engine.memory_estimate import (
    MARGIN,
    MIB,
    PEAK_FIT,
    estimate_peak_bytes,
    format_bytes,
)


def test_estimate_is_linear_in_levels_times_seeds():
    base, per_sketch = PEAK_FIT[("cpu", "rn101")]
    one = estimate_peak_bytes(1, 1, "cpu", "RN101")
    default = estimate_peak_bytes((4, 8, 16, 32), 3, "cpu", "RN101")
    assert one == int((base + per_sketch) * MARGIN * MIB)
    assert default == int((base + 12 * per_sketch) * MARGIN * MIB)
    assert estimate_peak_bytes(4, 3, "cpu") == estimate_peak_bytes(2, 6, "cpu") == default
    assert estimate_peak_bytes(4, 1, "cpu") < estimate_peak_bytes(4, 2, "cpu") < default


def test_estimate_by_device_and_model():
    assert estimate_peak_bytes(4, 3, "cuda:1") == estimate_peak_bytes(4, 3, "cuda")
    assert estimate_peak_bytes(4, 3, "cuda") < estimate_peak_bytes(4, 3, "cpu")
    tiny = estimate_peak_bytes(4, 3, "cpu", "test-tiny-rn")
    assert tiny < estimate_peak_bytes(4, 3, "cpu", "RN101")
    assert estimate_peak_bytes(4, 3, "cpu", "RN50") == estimate_peak_bytes(4, 3, "cpu", "RN101")
    with pytest.raises(ValueError, match="at least 1"):
        estimate_peak_bytes(0, 3, "cpu")
    assert format_bytes(6.7e9) == "6.7 GB" and format_bytes(960e6) == "960 MB"


def test_memory_estimate_does_not_import_torch():
    code = (
        "import sys; from clipasso_server.engine.memory_estimate import estimate_peak_bytes; "
        "estimate_peak_bytes(4, 3, 'cpu'); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
