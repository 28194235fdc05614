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


def test_precision_is_recorded_with_the_arithmetic_that_ran(test_weights_dir, tmp_path):
    records = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.svg"
        assert main(_args(test_weights_dir, out, "--precision", precision, "--no-image")) == 0
        records[precision] = read_metadata(out.read_text())
    assert records["fp32"]["settings"]["precision"] == "fp32"
    assert records["fp32"]["models"]["loss_arithmetic"] == "float32"
    assert records["bf16"]["settings"]["precision"] == "bf16"
    assert records["bf16"]["models"]["loss_arithmetic"] == "bfloat16 autocast"


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
        timeout=600,  # only catches a hang
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().count("<path") == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--levels", "0,4"], "between 1 and 256"),
        (["--levels", "4,x"], "whole numbers"),
        (["--levels", "4,,8"], "--levels has an empty stroke count in '4,,8'"),
        (["--levels", "4,8,"], "--levels has an empty stroke count"),
        (["--iterations", "0"], "iterations must be between"),
        (["--iterations", "1.5"], "iterations must be an integer"),
        (["--width", "wide"], "width must be a number"),
        (["--loss-model", "RN9000"], "RN9000"),
        (["--color", "blue"], "color"),
        (["--precision", "fp16"], "precision must be one of auto, fp32, bf16, got 'fp16'"),
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
    # and how to see it work offline meanwhile (the README's tiny-model demo)
    assert "clipasso make-test-weights DIR" in err and "--loss-model test-tiny-rn" in err


# --- the first hour (issue 15) and the time spent (issue 11) -----------------------------------


def _in_subprocess(args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run ``main(args)`` in a fresh Python; (its stdout: "<exit status> <torch imported>",
    its stderr)."""
    code = (
        "import sys; from clipasso_server.cli import main; "
        f"status = main({args!r}); print(status, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,  # only catches a hang
        check=False,
        env=env,
    )
    return done.stdout.strip(), done.stderr


def test_errors_are_reported_before_torch_is_imported(tmp_path):
    out = str(tmp_path / "x.svg")
    status, err = _in_subprocess(["sketch", str(tmp_path / "no-such.png"), "-o", out])
    assert status == "2 False"
    assert "cannot read" in err and "no-such.png" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "photo.png").write_bytes(_png(8, 8))
    status, err = _in_subprocess(["sketch", str(tmp_path / "photo.png"), "-o", "/no/such/x.svg"])
    assert status == "2 False" and "/no/such does not exist" in err
    # a damaged photo is decoded in full, and refused, before torch loads
    (tmp_path / "cut.png").write_bytes(_png(64, 64)[:400])
    status, err = _in_subprocess(["sketch", str(tmp_path / "cut.png"), "-o", out])
    assert status == "2 False", err
    assert "cut.png" in err and "truncated" in err and len(err.strip().splitlines()) == 1


def test_missing_weights_are_all_listed_before_torch_is_imported(tmp_path):
    import os

    empty = tmp_path / "weights"
    empty.mkdir()
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    for var in ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "CLIPASSO_WEIGHTS"):
        env.pop(var, None)
    args = ["sketch", "sample", "-o", str(tmp_path / "x.svg"), "--clip-weights", str(empty)]
    status, err = _in_subprocess([*args, "--remove-background"], env)
    assert status == "2 False"
    for part in ("RN101.pt", "ViT-B-32.pt", "deeplabv3_mobilenet_v3_large", "https://", str(empty)):
        assert part in err, part
    assert not (tmp_path / "x.svg").exists()


def test_output_folder_is_never_created(test_weights_dir, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "x.svg"
    assert main(_args(test_weights_dir, out)) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


def test_the_svg_follows_the_umask(test_weights_dir, tmp_path):
    import os
    import stat

    out = tmp_path / "u.svg"
    previous = os.umask(0o027)
    try:
        assert main(_args(test_weights_dir, out, "--no-image", iterations="1", levels="1")) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_time_budget_writes_the_best_strokes_marked_unfinished(test_weights_dir, tmp_path):
    out = tmp_path / "b.svg"
    args = _args(test_weights_dir, out, "--no-image", "--time-budget", "4", iterations="20000")
    assert main(args) == 0
    record = read_metadata(out.read_text())
    assert record["settings"]["time_budget_s"] == 4.0 and record["stop_reason"] == "budget"
    assert record["partial"] is True and "unfinished" in record["note"]
    assert "unfinished" in out.read_text().split("<g", 2)[-1]  # the layers' names say it too


def test_bad_time_budget_names_the_option(test_weights_dir, tmp_path, capsys):
    assert main(_args(test_weights_dir, tmp_path / "x.svg", "--time-budget", "0.1")) == 2
    err = capsys.readouterr().err
    assert "--time-budget must be between" in err and len(err.strip().splitlines()) == 1


def _progress(step: int, total: int, step_s: float, planned: int | None = None):
    from clipasso_server.engine.types import Progress

    return Progress(
        step=step,
        total=total,
        best_loss={4: 1.0},
        elapsed_s=step * step_s,
        step_time_s=step_s,
        planned_steps=planned,
    )


def test_estimate_says_how_long_and_what_to_change():
    from clipasso_server.commands.sketch import estimate_text, format_duration

    assert format_duration(9600) == "2 h 40 min" and format_duration(30) == "30 s"
    long_cpu = estimate_text(_progress(20, 2000, 4.8), "cpu", None)
    assert "about 2 h 38 min left on this CPU" in long_cpu
    for advice in ("--iterations", "--levels", "--seeds", "GPU", "--time-budget"):
        assert advice in long_cpu
    short = estimate_text(_progress(20, 200, 0.5), "cuda", None)
    assert "on this GPU" in short and "--iterations" not in short
    over_budget = estimate_text(_progress(20, 2000, 4.8, planned=125), "cpu", 600.0)
    assert "10 min" in over_budget and "125 of the 2000" in over_budget
    assert "unfinished" in over_budget and "--iterations" in over_budget


def test_ctrl_c_writes_the_best_strokes_so_far(test_weights_dir, tmp_path):
    """A real process, SIGINT after its first progress line: the SVG is there, unfinished."""
    import queue
    import signal
    import threading

    out = tmp_path / "i.svg"
    args = _args(test_weights_dir, out, "--no-image", iterations="20000")
    args.remove("--quiet")
    process = subprocess.Popen(
        [sys.executable, "-m", "clipasso_server.cli", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stderr], daemon=True).start()
    try:
        seen = []
        while not seen or not seen[-1].startswith("step "):
            seen.append(lines.get(timeout=600))  # hang-only limits
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 130
    record = read_metadata(out.read_text())
    assert record["partial"] is True and record["stop_reason"] == "cancel"
    assert 1 <= record["steps_run"] < 20000
    assert out.read_text().count("<path") == 5  # levels 2 and 3: every stroke is there


# --- what -o may name (issue 21) -------------------------------------------------------------


def _one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("kind", ["character device", "fifo"])
def test_an_output_that_is_not_a_regular_file_is_refused(test_weights_dir, tmp_path, capsys, kind):
    import os
    import stat

    if kind == "fifo":
        target = tmp_path / "pipe.svg"
        os.mkfifo(target)
        said, check = "a named pipe (FIFO)", stat.S_ISFIFO
    else:
        target, said, check = Path("/dev/null"), "a character device", stat.S_ISCHR
    assert main(_args(test_weights_dir, target)) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"will not write {target}: it is {said}" in err
    assert check(target.stat().st_mode)  # still what it was, not replaced by a file


def test_the_input_photo_is_never_the_output(test_weights_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(32, 32))
    before = photo.read_bytes()
    link = tmp_path / "link.svg"
    link.symlink_to(photo)
    for out in (photo, link, tmp_path / "." / "photo.png"):
        args = _args(test_weights_dir, out)
        args[1] = str(photo)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "it is the input photo itself" in err.splitlines()[-1], err
        assert "Traceback" not in err
    assert photo.read_bytes() == before


def test_a_symlink_is_written_through_and_said(test_weights_dir, tmp_path, capsys):
    target = tmp_path / "real.svg"
    target.write_text("old")
    link = tmp_path / "link.svg"
    link.symlink_to(target)
    assert main(_args(test_weights_dir, link, "--no-image", iterations="1", levels="1")) == 0
    err = capsys.readouterr().err
    assert f"{link} is a symlink: writing the SVG to its target {target}" in err
    assert link.is_symlink() and link.resolve() == target  # the link stays a link
    assert read_metadata(target.read_text())["settings"]["levels"] == [1]


def test_a_name_without_svg_is_written_with_one_warning(test_weights_dir, tmp_path, capsys):
    out = tmp_path / "sketch.png"
    assert main(_args(test_weights_dir, out, "--no-image", iterations="1", levels="1")) == 0
    err = _one_line(capsys.readouterr().err)  # --quiet: the warning is all there is
    assert err == f"clipasso sketch: warning: {out} does not end in .svg; writing an SVG to it"
    assert out.read_text().startswith("<?xml")
    assert main(_args(test_weights_dir, tmp_path / "s.SVG", "--no-image", iterations="1")) == 0
    assert capsys.readouterr().err == ""


def test_the_progress_line_and_the_estimate_say_one_time_left(capsys):
    """The first step carries one-time costs: no time left is said from it alone, and the
    estimate then says what the progress line beside it says."""
    from clipasso_server.commands.sketch import Estimate, ProgressLine
    from clipasso_server.engine.types import Progress

    line = ProgressLine(True)
    estimate = Estimate(line, "cpu", None)
    # step 1 took 9 s (warm-up), the next ones 0.5 s each: the engine's step time follows
    for step, step_s, elapsed in ((1, 9.0, 9.0), (2, 0.5, 9.5), (3, 0.5, 10.0)):
        line.last = float("-inf")  # print every step
        report = Progress(step, 200, {2: 1.0}, elapsed, step_s)
        line(report)
        estimate(report)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("step 1/200") and "? left" in err[0]
    assert err[1].startswith("step 2/200") and "? left" in err[1]
    assert err[2].startswith("step 3/200") and ", 2 min left " in err[2]  # 197 x 0.5 s
    assert err[3].startswith("clipasso sketch: about 2 min left on this CPU"), err[3]


# --- --start-svg (issue 18, part 3) ---------------------------------------------------------


def _strokes_in(svg_path: Path, level: int) -> list[str]:
    """The ``d`` of each stroke of the level with ``level`` strokes."""
    root = ET.fromstring(svg_path.read_text())
    layer = root.find(f".//{{{SVG_NS}}}g[@id='clipasso-level-{level}']")
    return [path.get("d") for path in layer.findall(f"{{{SVG_NS}}}path")]


def _numbers(d: str) -> list[float]:
    import re

    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]


@pytest.mark.parametrize("photo", [[], ["--no-image"]], ids=["over-its-image", "viewbox"])
def test_start_svg_round_trips_the_strokes_clipasso_wrote(test_weights_dir, tmp_path, photo):
    """sketch -> its SVG -> --start-svg: the same strokes (within 1e-6 of the numbers written),
    and kept ones are written back character for character."""
    from PIL import Image

    from clipasso_server.commands.sketch import sample_image_path
    from clipasso_server.start_svg import strokes_from_svg

    first, second = tmp_path / "first.svg", tmp_path / "second.svg"
    assert main(_args(test_weights_dir, first, *photo, levels="2,3")) == 0
    written = _strokes_in(first, 3)  # the shown (most detailed) level; the others are hidden
    with Image.open(sample_image_path()) as sample:
        size = sample.size
    strokes = strokes_from_svg(first.read_bytes(), *size, limit=256)
    assert len(strokes) == 3
    for stroke, d in zip(strokes, written, strict=True):
        numbers = _numbers(d)
        read = [c for point in stroke for c in point]
        assert max(abs(a - b) for a, b in zip(read, numbers, strict=True)) < 1e-6

    keep = ["--start-svg", str(first), "--keep-start-strokes"]
    assert main(_args(test_weights_dir, second, *photo, *keep, levels="4,5")) == 0
    for level in (4, 5):
        again = _strokes_in(second, level)
        assert again[:3] == written
        assert len(again) == level
    record = read_metadata(second.read_text())
    assert record["settings"]["keep_start_strokes"] is True
    assert len(record["settings"]["start_strokes"]) == 3


def test_start_svg_without_keep_refines_every_stroke(test_weights_dir, tmp_path):
    drawing = tmp_path / "drawing.svg"
    drawing.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 384">'
        '<path d="M 100,100 C 150,80 200,120 250,100 L 300,200"/></svg>'
    )
    out = tmp_path / "refined.svg"
    assert main(_args(test_weights_dir, out, "--no-image", "--start-svg", str(drawing))) == 0
    record = read_metadata(out.read_text())
    # the curve as it is, the line as a cubic with its controls at a third and two thirds
    expected = [100, 100, 150, 80, 200, 120, 250, 100]
    expected += [250, 100, 250 + 50 / 3, 100 + 100 / 3, 250 + 100 / 3, 100 + 200 / 3, 300, 200]
    start = [c for stroke in record["settings"]["start_strokes"] for p in stroke for c in p]
    assert start == pytest.approx(expected, abs=1e-9)
    assert record["settings"]["keep_start_strokes"] is False
    first = _numbers(_strokes_in(out, 2)[0])
    given = [100, 100, 150, 80, 200, 120, 250, 100]
    assert max(abs(a - b) for a, b in zip(first, given, strict=True)) > 1e-2


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: str(d / "missing.svg"), [], "cannot read --start-svg"),
        (lambda d: str(d), [], "cannot read --start-svg"),
        (lambda d: _write(d, "bad.svg", "<svg"), [], "not a readable SVG"),
        (
            lambda d: _write(d, "empty.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>'),
            [],
            "no paths",
        ),
        (
            lambda d: _write(
                d,
                "three.svg",
                f'<svg xmlns="{SVG_NS}"><path d="M 0,0 L 9,9 L 20,0 L 30,9"/></svg>',
            ),
            [],
            "3 start strokes need levels of at least 3 strokes (the smallest level has 2)",
        ),
        (
            lambda d: _write(
                d,
                "two.svg",
                '<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0,0 L 9,9 L 20,0"/></svg>',
            ),
            ["--keep-start-strokes"],
            "need levels of more than 2 strokes",
        ),
        (
            lambda d: _write(
                d,
                "far.svg",
                f'<svg xmlns="{SVG_NS}" viewBox="0 0 10 10"><path d="M 0,0 L 90,0"/></svg>',
            ),
            [],
            "too far outside",
        ),
    ],
    ids=["missing", "folder", "not-svg", "no-paths", "too-many", "keep-too-many", "outside"],
)
def test_start_svg_errors_are_one_line(test_weights_dir, tmp_path, capsys, make, extra, message):
    out = tmp_path / "x.svg"
    args = _args(test_weights_dir, out, "--start-svg", make(tmp_path), *extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_keep_start_strokes_needs_a_start_svg(test_weights_dir, tmp_path, capsys):
    assert main(_args(test_weights_dir, tmp_path / "x.svg", "--keep-start-strokes")) == 2
    assert "--keep-start-strokes keeps the strokes of --start-svg FILE" in capsys.readouterr().err
