"""`clipasso sketch`: a real run with the tiny models, reproducibility, and clear failures."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from clipasso_server.cli import main
from clipasso_server.engine.svg_output import INKSCAPE_NS, SVG_NS

TINY = ["--loss-model", "test-tiny-rn", "--saliency-model", "test-tiny-vit", "--device", "cpu"]


def _args(weights, out, *extra):
    return [
        "sketch",
        "sample",
        "-o",
        str(out),
        "--clip-weights",
        str(weights),
        "--quiet",
        *TINY,
        "--iterations",
        "3",
        "--seeds",
        "1",
        "--levels",
        "2,3",
        *extra,
    ]


def test_sketch_writes_a_layered_svg_reproducibly(test_weights_dir, tmp_path):
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    assert main(_args(test_weights_dir, first)) == 0
    assert main(_args(test_weights_dir, second)) == 0
    root = ET.fromstring(first.read_text())
    labels = [g.get(f"{{{INKSCAPE_NS}}}label") for g in root.findall(f"{{{SVG_NS}}}g")]
    assert labels == ["Photo", "2 strokes", "3 strokes"]
    assert len(root.findall(f".//{{{SVG_NS}}}g[@id='clipasso-level-3']/{{{SVG_NS}}}path")) == 3
    assert first.read_bytes() == second.read_bytes().replace(b"b.svg", b"a.svg")


def test_console_script_runs(test_weights_dir, tmp_path):
    out = tmp_path / "c.svg"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipasso_server.cli",
            *_args(test_weights_dir, out)[:-6],
            "--iterations",
            "1",
            "--seeds",
            "1",
            "--levels",
            "1",
            "--no-image",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().count("<path") == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--levels", "0,4"], "between 1 and 256"),
        (["--levels", "4,x"], "whole numbers"),
        (["--iterations", "0"], "iterations must be between"),
        (["--loss-model", "RN9000"], "RN9000"),
        (["--color", "blue"], "color"),
    ],
)
def test_bad_settings_fail_in_one_line(test_weights_dir, tmp_path, capsys, change, message):
    out = tmp_path / "x.svg"
    assert main(_args(test_weights_dir, out, *change)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_bad_images_fail_in_one_line(test_weights_dir, tmp_path, capsys, content):
    image = tmp_path / "bad.png"
    image.write_bytes(content)
    args = _args(test_weights_dir, tmp_path / "x.svg")
    args[1] = str(image)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "Traceback" not in err
    assert not (tmp_path / "x.svg").exists()


def test_missing_weights_offline_names_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("CLIPASSO_WEIGHTS", raising=False)
    empty = tmp_path / "weights"
    empty.mkdir()
    code = main(
        [
            "sketch",
            "sample",
            "-o",
            str(tmp_path / "x.svg"),
            "--clip-weights",
            str(empty),
            "--iterations",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "RN101" in err and "RN101.pt" in err and ".cache/clip" in err and str(empty) in err
