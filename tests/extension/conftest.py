"""Fixtures for the extension's tests; they run under the venv (inkex 1.4) and under
Inkscape's own Python (inkex 1.2, no torch), so nothing here imports torch or the daemon."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Under Inkscape's Python the project is not installed: import it from the checkout.
for folder in (REPO, REPO / "server"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fake_daemon import FakeDaemon, FakeDaemonServer  # noqa: E402

# Whatever a test runs, Python's webbrowser must never open a real browser window.
os.environ["BROWSER"] = "true"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A real `clipasso serve` on a free loopback port with the tiny test models, for the runs
    in real Inkscape (skipped where Inkscape, xvfb-run or the project's Python is missing)."""
    from inkscape_runner import missing_programs
    from serve_daemon import missing_python, serve

    reason = missing_programs() or missing_python()
    if reason:
        pytest.skip(reason)
    with serve(tmp_path_factory.mktemp("daemon")) as url:
        yield url


@pytest.fixture
def single_photo_svg(tmp_path):
    """A document holding one 8x8 photo, ``img1``: what most dialog tests select."""
    from ext_helpers import data_uri, make_png, svg_doc

    path = tmp_path / "in.svg"
    path.write_text(
        svg_doc(f'<image id="img1" width="8" height="8" xlink:href="{data_uri(make_png(8, 8))}"/>')
    )
    return path


@pytest.fixture
def fake_daemon():
    """A protocol-speaking daemon on 127.0.0.1 whose answers the test controls."""
    with FakeDaemonServer(FakeDaemon()) as fake:
        yield fake


def pytest_report_header(config):
    """Which Inkscape the end-to-end tests run (1.2 on the host, 1.4 in tests/inkscape14)."""
    import inkex
    from inkscape_runner import version

    return (
        f"inkscape: {version()}; inkex {getattr(inkex, '__version__', '?')} from {inkex.__file__}"
    )


def pytest_configure(config):
    """Register the markers here too: Inkscape's Python runs this folder without pyproject."""
    config.addinivalue_line("markers", "inkscape: runs the real Inkscape under xvfb-run")
    config.addinivalue_line("markers", "slow: longer end-to-end runs")
