"""The `clipasso` console script answers --help and --version without loading torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipasso_server import __version__
from clipasso_server.cli import SUBCOMMANDS


def _clipasso(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipasso_server.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,  # only catches a hang
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


def _subparser(name: str):
    from clipasso_server.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


def test_sketch_and_serve_help_show_every_default():
    import argparse

    for name in ("sketch", "serve"):
        parser = _subparser(name)
        for action in parser._actions:
            if action.required or not action.option_strings or action.default == argparse.SUPPRESS:
                continue
            text = parser.formatter_class("x")._expand_help(action)
            if action.default is False or action.default == []:
                continue  # an on/off flag or a list to repeat: it starts off or empty
            assert "default" in text, f"{name} {action.option_strings}: {text!r}"
            if action.default is not None and "default" not in (action.help or ""):
                assert f"(default: {action.default})" in text, text


def test_make_test_weights_prints_only_the_files(tmp_path):
    done = _clipasso("make-test-weights", str(tmp_path))
    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.split() == [
        str(tmp_path / "test-tiny-rn.safetensors"),
        str(tmp_path / "test-tiny-vit.safetensors"),
    ]


def test_make_install_puts_clipasso_on_path(tmp_path):
    """`make install` links the venv's command into BINDIR; `clipasso` then runs by name."""
    import os
    import shutil
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    venv = sys.prefix
    bindir = tmp_path / "bin"
    command = ["make", "-s", "-o", f"{venv}/.stamp-install", "install"]
    command += [f"VENV={venv}", f"BINDIR={bindir}"]
    for _ in range(2):  # a second run replaces its own link
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert "not on your PATH" in done.stdout
    assert (bindir / "clipasso").resolve() == (Path(venv) / "bin" / "clipasso").resolve()
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}/usr/bin:/bin"}
    version = subprocess.run(
        ["clipasso", "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"clipasso {__version__}"
    (bindir / "clipasso").unlink()
    (bindir / "clipasso").write_text("someone else's")
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "is not a link" in done.stderr


def test_one_memory_figure_for_the_default_job():
    """`serve --help` and the README give the default job's peak from the one source, the
    engine's fitted estimate (what bench/memory.py measured: 6.1-6.5 GB)."""
    import re
    from pathlib import Path

    from clipasso_server.engine.memory_estimate import format_bytes, memory_text, peak_bytes
    from inkscape_clipasso import protocol

    default = protocol.SketchSettings()
    levels, seeds, model = len(default.levels), default.seeds, default.loss_model
    figure = format_bytes(peak_bytes(levels, seeds, "cpu", model))
    assert figure == "6.5 GB"
    shown = " ".join(_clipasso("serve", "--help").stdout.split())
    assert memory_text(levels, seeds, model) in shown
    assert f"peaks at about {figure} on the CPU" in shown

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    said = re.findall(r"([\d.]+ GB)\** for the default (?:job|4 levels)", readme)
    said += re.findall(r"default job peaks at about ([\d.]+ GB)", readme)
    assert len(said) >= 3, said  # "What to expect" (twice) and the daemon's memory check
    assert set(said) == {figure}, said
