"""Running the real Inkscape headless, for end-to-end tests: Debian 12's 1.2.2 on the host,
Debian 13's 1.4 in the root of tests/inkscape14/run.sh.

Extension actions exist only with a GUI (1.2 and 1.4 alike: without ``--with-gui`` the action
is "not found" and Inkscape still exits 0), so Inkscape runs under xvfb-run with
``--with-gui --batch-process``. Parameters cannot be given on the command line: they go in a
``preferences.xml`` in a throwaway ``INKSCAPE_PROFILE_DIR`` and the action's ``.noprefs``
variant runs with them. Anything the extension writes to stderr opens a modal dialog that
never closes in batch mode (1.4 too), so every run is under ``timeout``. Also a tiny PNG
reader, since Inkscape's Python has no Pillow.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

EXTENSION_ID = "org.clipasso.clipasso_sketch"
#: Inkscape turns the id's underscores into hyphens in action names.
ACTION = EXTENSION_ID.replace("_", "-") + ".noprefs"


def version() -> str:
    """``inkscape --version``'s line ("Inkscape 1.4 (e7c3feb100, 2024-10-09)"), or why none."""
    if shutil.which("inkscape") is None:
        return "not installed"
    try:
        done = subprocess.run(
            ["inkscape", "--version"], capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return "did not answer --version"
    return done.stdout.strip() or done.stderr.strip()


def missing_programs() -> str | None:
    """Why real-Inkscape tests cannot run here, or None when they can."""
    for program in ("inkscape", "xvfb-run", "timeout"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install inkscape xvfb xauth)"
    return None


def write_preferences(
    profile: Path, params: Mapping[str, str], python: str = "/usr/bin/python3"
) -> Path:
    """A preferences.xml giving the extension's parameters and the Python Inkscape uses."""
    attributes = [f"python-interpreter={quoteattr(python)}"]
    attributes += [f"{EXTENSION_ID}.{name}={quoteattr(value)}" for name, value in params.items()]
    text = (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        '<inkscape xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd" '
        'xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" version="1">\n'
        f'  <group id="extensions" {" ".join(attributes)} />\n'
        "</inkscape>\n"
    )
    profile.mkdir(parents=True, exist_ok=True)
    path = profile / "preferences.xml"
    path.write_text(text, encoding="utf-8")
    return path


def _env(profile: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["INKSCAPE_PROFILE_DIR"] = str(profile)
    # the extension must find nothing of the venv: it runs in Inkscape's own Python
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    return env


def run_extension(
    profile: Path,
    document: Path,
    output: Path,
    select: Sequence[str],
    timeout_s: float = 300,
) -> subprocess.CompletedProcess:
    """Open ``document``, select ``select``, apply the extension, save to ``output``."""
    actions = ";".join(
        [
            f"select-by-id:{','.join(select)}",
            ACTION,
            f"export-filename:{output}",
            "export-overwrite",
            "export-do",
        ]
    )
    command = [
        "timeout",
        "-k",
        "5",
        str(int(timeout_s)),
        "xvfb-run",
        "-a",
        "-s",
        "-screen 0 1280x1024x24",
        "inkscape",
        "--with-gui",
        "--batch-process",
        f"--actions={actions}",
        str(document),
    ]
    return subprocess.run(
        command,
        env=_env(profile),
        capture_output=True,
        text=True,
        timeout=timeout_s + 30,
        check=False,
    )


def apply_and_read(
    profile: Path, document: Path, output: Path, select: Sequence[str], timeout_s: float = 900
):
    """``run_extension``, checked (exit 0, a document written), then the document's root."""
    from lxml import etree

    done = run_extension(profile, document, output, select, timeout_s=timeout_s)
    assert done.returncode == 0, done.stderr[-2000:]
    assert output.is_file(), f"Inkscape wrote nothing; stderr: {done.stderr[-2000:]}"
    return etree.parse(str(output)).getroot()


def export_png(profile: Path, document: Path, png: Path, dpi: float) -> subprocess.CompletedProcess:
    """Render the whole page of ``document`` to ``png`` (no GUI needed for exports)."""
    command = [
        "timeout",
        "-k",
        "5",
        "600",  # hang-only limits, like run_extension's
        "inkscape",
        str(document),
        "--export-type=png",
        f"--export-filename={png}",
        f"--export-dpi={dpi}",
        "--export-area-page",
    ]
    return subprocess.run(
        command, env=_env(profile), capture_output=True, text=True, timeout=630, check=False
    )


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGBA bytes) of an 8-bit RGBA or RGB, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + best) & 0xFF
        previous = line
        if channels == 3:
            line = bytearray(
                b"".join(bytes(line[i : i + 3]) + b"\xff" for i in range(0, stride, 3))
            )
        rows.append(bytes(line))
    return width, height, rows
