"""`clipasso sketch`: a real run with the tiny models, reproducibility, and clear failures."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipasso_server.cli import main
from clipasso_server.engine.svg_output import INKSCAPE_NS, SVG_NS, read_metadata

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"

TINY = ["--loss-model", "test-tiny-rn", "--saliency-model", "test-tiny-vit", "--device", "cpu"]


def _args(weights, out, *extra, iterations: str = "3", levels: str = "2,3"):
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
        iterations,
        "--seeds",
        "1",
        "--levels",
        levels,
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
    assert first.read_bytes() == second.read_bytes()
    record = read_metadata(first.read_text())
    assert record["settings"]["levels"] == [2, 3] and record["settings"]["iterations"] == 3
    assert record["engine"]["plateau_patience"] is None and record["engine"]["canvas"] == 224
    assert record["models"]["loss"].startswith("test-tiny-rn")
    photo = root.find(f".//{{{SVG_NS}}}image")
    assert (tmp_path / photo.get(XLINK_HREF)).resolve().name == "sample.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg", "b.svg"]  # no temp files


def test_plateau_is_recorded_so_the_run_can_be_reproduced(test_weights_dir, tmp_path):
    out = tmp_path / "p.svg"
    assert main(_args(test_weights_dir, out, "--plateau", "7", "--no-image", levels="2")) == 0
    record = read_metadata(out.read_text())
    assert record["engine"]["plateau_patience"] == 7
    assert record["engine"]["eval_every"] == 10 and record["engine"]["augmentations"] == 4


def test_console_script_runs(test_weights_dir, tmp_path):
    out = tmp_path / "c.svg"
    script = Path(sys.executable).with_name("clipasso")
    assert script.exists(), "the clipasso console script is not installed next to python"
    done = subprocess.run(
        [
            str(script),
            *_args(test_weights_dir, out, iterations="1", levels="1"),
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
        (["--iterations", "1.5"], "iterations must be an integer"),
        (["--width", "wide"], "width must be a number"),
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


def _png(width: int, height: int, pixels: bool = True) -> bytes:
    """A PNG; without ``pixels`` only its header, claiming width x height (a bomb's shape)."""
    if pixels:
        out = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
        Image.fromarray(noise).save(out, "PNG")
        return out.getvalue()
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"garbage", "not an image"),
        (_png(64, 64)[:400], "truncated"),
        (_png(0, 64, pixels=False), "not an image"),
        (_png(9000, 9000, pixels=False), "limit"),
    ],
    ids=["empty", "garbage", "truncated", "zero-size", "bomb"],
)
def test_bad_images_fail_in_one_line(test_weights_dir, tmp_path, capsys, content, message):
    image = tmp_path / "bad.png"
    image.write_bytes(content)
    args = _args(test_weights_dir, tmp_path / "x.svg")
    args[1] = str(image)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.svg").exists()


def test_unwritable_output_fails_before_the_run(test_weights_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(_args(test_weights_dir, tmp_path / "file" / "x.svg")) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "not a folder" in err and "Traceback" not in err


def test_embedded_photo_and_stdout(test_weights_dir, tmp_path, capsys):
    args = _args(test_weights_dir, "-", "--embed-image", iterations="1", levels="1")
    assert main(args) == 0
    root = ET.fromstring(capsys.readouterr().out)
    href = root.find(f".//{{{SVG_NS}}}image").get(XLINK_HREF)
    assert href.startswith("data:image/png;base64,")
    embedded = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    assert embedded.size == (
        int(root.get("viewBox").split()[2]),
        int(root.get("viewBox").split()[3]),
    )


def test_turned_png_is_embedded_turned(test_weights_dir, tmp_path):
    """Inkscape ignores EXIF orientation outside JPEGs: the photo layer gets a turned copy."""
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    out = tmp_path / "t.svg"
    args = _args(test_weights_dir, out, iterations="1", levels="1")
    args[1] = str(tmp_path / "turned.png")
    assert main(args) == 0
    root = ET.fromstring(out.read_text())
    assert root.get("viewBox") == "0 0 20 40"
    href = root.find(f".//{{{SVG_NS}}}image").get(XLINK_HREF)
    photo = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB")
    assert photo.size == (20, 40) and photo.getpixel((15, 5)) == (255, 0, 0)


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
