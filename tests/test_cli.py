"""The `clipasso` console script answers --help and --version without loading torch."""

from __future__ import annotations

import subprocess
import sys

from clipasso_server import __version__
from clipasso_server.cli import SUBCOMMANDS


def _clipasso(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipasso_server.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version():
    done = _clipasso("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"clipasso {__version__}"


def test_help_lists_every_subcommand():
    done = _clipasso("--help")
    assert done.returncode == 0
    for name in SUBCOMMANDS:
        assert name in done.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys; from clipasso_server.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_no_subcommand_prints_help_and_fails():
    done = _clipasso()
    assert done.returncode == 2
    assert "usage: clipasso" in done.stdout
