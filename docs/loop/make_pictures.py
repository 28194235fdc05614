"""Make the README's pictures of the Inkscape loop (docs/loop/*.png) from the real product.

Run by hand, not by the tests; it takes a few minutes:

    .venv/bin/python docs/loop/make_pictures.py [--out docs/loop] [--keep DIR]

It does what a designer does, with nothing stubbed: starts the real daemon with the tiny test
models (tests/extension/serve_daemon.py), installs the extension into a throwaway Inkscape
profile, and runs Sketch and Update sketches in the real Inkscape (headless, as the
end-to-end tests do) on skimage's photo of a cat. Each state of the document is then opened in
the real Inkscape window under a private Xvfb, with the Layers and Objects dialog docked and
widened, and the screen is taken with xwd:

1. before: the photo selected, nothing else;
2. running: Sketch with "When to insert: Now, update later" returned at once; a little later
   Update sketches brought in the strokes so far ("... running: step N of M");
3. updated: the job finished, Update sketches put the final strokes in place;
4. refined: three strokes of the 16-stroke level deleted and one moved (Inkscape's own delete
   and transform-translate actions), then Sketch with the photo and that level selected,
   "Start from: keep mine and add 8 strokes" and the stroke colour red (so the new strokes
   show); Sketch hides the edited level under the new one.

The worker is paused (SIGSTOP) while Sketch submits, and again once the job has passed a
chosen step, so the running state is caught whatever the machine's speed. The tiny models are
random networks: the strokes show the loop, not a real sketch.

Needs inkscape (1.2+), Xvfb, xdotool and xwd (apt-get install inkscape xvfb xauth xdotool
x11-apps) and the project's venv (Pillow, skimage). The window's layout (where the dock's
handle and the tree's expanders are) was measured on Inkscape 1.2.2 at 1400x900: look at
the pictures after a run on another version.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import skimage.data
from lxml import etree
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "extension"))

import inkscape_runner  # noqa: E402  (the tests' helpers: real Inkscape, real daemon)
from serve_daemon import (  # noqa: E402
    HANG_S,
    has_strokes,
    install_extension,
    jobs,
    pause_when,
    serve,
    wait_for,
    worker_pid,
)

INKSCAPE_NS = "http://www.inkscape.org/namespaces/inkscape"
SVG_NS = "http://www.w3.org/2000/svg"
SKETCH_ACTION = inkscape_runner.ACTION
UPDATE_ACTION = "org.clipasso.clipasso-update.noprefs"
PHOTO_ID = "chelsea"
LEVELS = (4, 8, 16)
ITERATIONS = 60  # short: the tiny models make no better sketch for more
PAUSE_AT_STEP = 20  # the running picture's step (the worker is paused past it)
REFINE_ITERATIONS = 30
ADD_STROKES = 8
NEW_STROKES_RGBA = 0xC83C28FF  # the refined sketch's new strokes in red, the user's stay black
SCREEN = (1400, 900)
#: Measured on Inkscape 1.2.2 at SCREEN: the height at which the dock's drag handle is found
#: (its dots are the first bright pixels left of the dark dock), where it is dropped, the
#: tree's first row and its height, and the top-level expanders' distance from the handle.
HANDLE_Y = 471
DOCK_DROP_X = 860
ROW_Y, ROW_H = 199, 24
EXPANDER_FROM_HANDLE = 17
EYE_FROM_RIGHT = 52  # a row's eye (shown on hover), from the window's right edge
COLOURS = 256  # quantised: a screen of UI and one photo stays well under 200 KB


def photo_png() -> bytes:
    """skimage's cat (451 x 300), as a PNG to embed."""
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def write_document(path: Path) -> None:
    """A page just larger than the photo, the photo in a layer of its own."""
    href = "data:image/png;base64," + base64.b64encode(photo_png()).decode("ascii")
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="{SVG_NS}" xmlns:xlink="http://www.w3.org/1999/xlink"
     xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"
     xmlns:inkscape="{INKSCAPE_NS}" width="160mm" height="110mm" viewBox="0 0 160 110" id="svg1">
  <sodipodi:namedview id="namedview1" inkscape:document-units="mm"/>
  <g id="layer1" inkscape:groupmode="layer" inkscape:label="Photo">
    <image id="{PHOTO_ID}" inkscape:label="{PHOTO_ID}" x="5" y="5" width="150" height="100"
           preserveAspectRatio="none" xlink:href="{href}"/>
  </g>
</svg>
""",
        encoding="utf-8",
    )


def settings(url: str, **extra: str) -> dict[str, str]:
    """The Sketch dialog's values (Inkscape's preferences.xml carries them)."""
    return {
        "url": url,
        "levels": ",".join(map(str, LEVELS)),
        "iterations": str(ITERATIONS),
        "seeds": "1",
        "loss_model": "test-tiny-rn",
        "saliency_model": "test-tiny-vit",
        "time_limit": "0",
        "when": "now",
        "visible_level": "most",
        "width_mode": "document",
        "width": "0.8",
        "poll_interval": "0.2",
        "live_view": "false",
        **extra,
    }


def apply(profile: Path, action: str, document: Path, output: Path, select: Sequence[str]) -> None:
    """Run an effect (or Inkscape's own actions) in the real Inkscape, headless."""
    inkscape_runner.ACTION = action
    done = inkscape_runner.run_extension(profile, document, output, select, timeout_s=HANG_S)
    if done.returncode != 0 or not output.is_file():
        raise RuntimeError(f"{action} failed ({done.returncode}): {done.stderr[-2000:]}")


def layer_labels(document: Path) -> list[str]:
    """Every layer's name, in document order (printed, so a run says what it made)."""
    root = etree.parse(str(document)).getroot()
    return [
        str(layer.get(f"{{{INKSCAPE_NS}}}label"))
        for layer in root.iter(f"{{{SVG_NS}}}g")
        if layer.get(f"{{{INKSCAPE_NS}}}groupmode") == "layer"
    ]


def stroke_ids(document: Path, layer_id: str) -> list[str]:
    root = etree.parse(str(document)).getroot()
    (layer,) = root.xpath("//*[@id=$id]", id=layer_id)
    return [path.get("id") for path in layer.findall(f"{{{SVG_NS}}}path")]


def past(url: str, job_id: str, step: int) -> bool:
    """Whether the job is past ``step`` with strokes to show."""
    (job,) = [job for job in jobs(url) if job["id"] == job_id]
    return job["state"] != "queued" and job["step"] >= step and has_strokes(url, job_id)


def read_xwd(data: bytes) -> Image.Image:
    """An xwd dump of a 24-bit TrueColor screen (as Xvfb's) as an RGB image."""
    header = struct.unpack(">25I", data[:100])
    size, width, height, byte_order, bytes_per_line = (
        header[0], header[4], header[5], header[7], header[12]
    )  # fmt: skip
    colours = header[19]
    start = size + colours * 12
    pixels = np.frombuffer(data[start : start + bytes_per_line * height], dtype=np.uint8)
    pixels = pixels.reshape(height, bytes_per_line)[:, : width * 4].reshape(height, width, 4)
    rgb = pixels[:, :, [2, 1, 0]] if byte_order == 0 else pixels[:, :, [1, 2, 3]]
    return Image.fromarray(np.ascontiguousarray(rgb))


def find_handle(screen: Image.Image) -> int:
    """The x of the dock's drag handle: its dots are the first bright pixels met going left
    from the window's right edge over the dark dock, at the handle's height."""
    band = np.asarray(screen.convert("L"))[HANDLE_Y - 12 : HANDLE_Y + 12]
    for x in range(screen.width - 10, 0, -1):
        if band[:, x].max() > 200:
            return x
    raise RuntimeError("no dock handle on the screen")


def dock_open(screen: Image.Image) -> bool:
    """Whether the dock's dark grey fills the window's right side (else the light canvas
    does; black is the bare screen of a window not yet drawn at its new size)."""
    right = np.asarray(screen.convert("L"))[400:700, SCREEN[0] - 100 : SCREEN[0] - 10]
    return int(right.min()) > 20 and float(right.mean()) < 90


def window_drawn(screen: Image.Image) -> bool:
    """Whether the window covers the whole screen (no bare black corner)."""
    corner = np.asarray(screen.convert("L"))[-60:, -60:]
    return int(corner.max()) > 20


def tree_rows(document: Path, expand: int) -> list[str]:
    """Ids in the Layers and Objects dialog's rows, top first, with the top ``expand`` layers
    expanded (the dialog lists the topmost object first)."""
    skip = {f"{{{SVG_NS}}}{name}" for name in ("defs", "title", "desc", "metadata")}

    def shown(element) -> list:
        return [
            child
            for child in element
            if isinstance(child.tag, str)
            and child.tag.startswith(f"{{{SVG_NS}}}")
            and child.tag not in skip
        ][::-1]

    rows = []
    for index, child in enumerate(shown(etree.parse(str(document)).getroot())):
        rows.append(child.get("id"))
        if index < expand:
            rows += [grandchild.get("id") for grandchild in shown(child)]
    return rows


class Screen:
    """A private Xvfb on which the real Inkscape window is opened and its screen taken."""

    def __init__(self, work: Path) -> None:
        self.work = work
        read, write = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
             "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write)
        with os.fdopen(read) as pipe:
            self.display = ":" + pipe.readline().strip()

    def close(self) -> None:
        self.xvfb.terminate()
        self.xvfb.wait(timeout=30)

    def _env(self, profile: Path) -> dict[str, str]:
        env = dict(os.environ, DISPLAY=self.display, INKSCAPE_PROFILE_DIR=str(profile))
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(name, None)
        return env

    def _xdotool(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["xdotool", *args],
            env=dict(os.environ, DISPLAY=self.display),
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )
        return done.stdout

    def grab(self) -> Image.Image:
        dump = subprocess.run(
            ["xwd", "-root", "-silent"],
            env=dict(os.environ, DISPLAY=self.display),
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout
        return read_xwd(dump)

    def settle(self) -> Image.Image:
        """The screen once two grabs a second apart agree (Inkscape has drawn it)."""
        deadline = time.monotonic() + HANG_S
        previous = self.grab()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            current = self.grab()
            if current.tobytes() == previous.tobytes():
                return current
            previous = current
        raise RuntimeError("the screen never settled")

    def _open_dock(self, window: str) -> None:
        """Dock the Layers and Objects dialog (Shift+Ctrl+L), asking again while the window
        had no keyboard focus yet (without a window manager the first keys may get lost)."""
        for _ in range(10):
            # no window manager: X reports no focus, so xdotool cannot confirm it
            self._xdotool("windowfocus", window, check=False)
            self._xdotool("mousemove", "700", "400", "key", "ctrl+shift+l")
            if dock_open(self.settle()):
                return
        raise RuntimeError("the Layers and Objects dialog did not open")

    def _widen_dock(self) -> int:
        """Drag the dock's handle left to DOCK_DROP_X (in small moves, as a hand would: one
        jump may be lost); the handle's x once it is there."""
        for _ in range(5):
            x, y = find_handle(self.settle()), HANDLE_Y
            if abs(x - DOCK_DROP_X) < 40:
                return x
            drag = ["mousemove", str(x), str(y), "sleep", "0.3", "mousedown", "1"]
            for step in np.linspace(x, DOCK_DROP_X, 12)[1:]:
                drag += ["sleep", "0.1", "mousemove", str(round(step)), str(y)]
            self._xdotool(*drag, "sleep", "0.3", "mouseup", "1")
        raise RuntimeError("the dock would not widen")

    def shot(self, document: Path, png: Path, **options) -> None:
        """``_shot``, tried again when the window did not do as asked (the pictures are made
        by hand: three tries, each saying why it failed)."""
        for attempt in range(1, 4):
            try:
                return self._shot(document, png, **options)
            except RuntimeError as exc:
                print(f"{png.name}, try {attempt}: {exc}")
        raise RuntimeError(f"no picture {png.name}")

    def _shot(
        self,
        document: Path,
        png: Path,
        select: Sequence[str] = (),
        expand: int = 1,
        hide: Sequence[str] = (),
    ) -> None:
        """Open ``document`` in the Inkscape window with ``select`` selected, dock the Layers
        and Objects dialog, widen it, expand the top ``expand`` layers, hide the layers
        ``hide`` with their eyes, save the screen."""
        profile = Path(tempfile.mkdtemp(dir=self.work, prefix="gui-profile-"))
        command = ["inkscape", "--with-gui"]
        if select:
            command.append(f"--actions=select-by-id:{','.join(select)}")
        inkscape = subprocess.Popen(
            [*command, str(document)],
            env=self._env(profile),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            title = f"{document.name} - Inkscape"
            window = self._xdotool("search", "--sync", "--name", title).split()[0]
            self.settle()
            self._xdotool("windowsize", "--sync", window, *map(str, SCREEN))
            self._xdotool("windowmove", "--sync", window, "0", "0")
            deadline = time.monotonic() + HANG_S
            while not window_drawn(self.settle()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Inkscape window was never drawn at its size")
            self._open_dock(window)
            handle = self._widen_dock()
            expander = str(handle + EXPANDER_FROM_HANDLE)
            for row in reversed(range(expand)):  # bottom first: the rows above stay put
                self._xdotool("mousemove", expander, str(ROW_Y + row * ROW_H), "click", "1")
                self.settle()
            shown = tree_rows(document, expand)
            for layer_id in hide:  # the eye shows where the pointer is; a click hides
                y = str(ROW_Y + shown.index(layer_id) * ROW_H)
                self._xdotool("mousemove", str(SCREEN[0] - EYE_FROM_RIGHT), y, "click", "1")
                self.settle()
            if expand or hide:  # Escape takes the keys from the dialog back to the canvas
                self._xdotool("key", "Escape")  # (on the canvas it would deselect)
            # fit the page in the window, pointer out of the way
            self._xdotool("mousemove", "400", "450", "key", "5")
            self._xdotool("mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
            screen = self.settle()
            if not dock_open(screen):
                raise RuntimeError(f"the dialog closed again for {document.name}")
        finally:
            inkscape.terminate()
            try:
                inkscape.wait(timeout=30)
            except subprocess.TimeoutExpired:
                inkscape.kill()
                inkscape.wait()
        quantised = screen.quantize(colors=COLOURS, method=Image.Quantize.FASTOCTREE)
        quantised.save(png, optimize=True)
        print(f"{png}: {png.stat().st_size // 1024} KB")


@contextmanager
def paused_worker(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def make(out: Path, work: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    profile = work / "profile"
    install_extension(profile)
    before = work / "before.svg"
    write_document(before)
    screen = Screen(work)
    try:
        screen.shot(before, out / "1-before.png", select=[PHOTO_ID], expand=0)
        with serve(work / "daemon") as url:
            pid = worker_pid(url)
            inkscape_runner.write_preferences(profile, settings(url))

            # Sketch, Now, update later: returns at once, layers marked running
            inserted = work / "inserted.svg"
            with paused_worker(pid):
                apply(profile, SKETCH_ACTION, before, inserted, [PHOTO_ID])
            print("inserted:", layer_labels(inserted))
            (job,) = jobs(url)
            os.kill(pid, signal.SIGSTOP)

            # a little later: Update sketches, the strokes so far
            running = work / "running.svg"
            paused = pause_when(pid, lambda: past(url, job["id"], PAUSE_AT_STEP))
            if not paused.wait(HANG_S):
                raise RuntimeError("the job never got past its step")
            try:
                apply(profile, UPDATE_ACTION, inserted, running, [])
            finally:
                os.kill(pid, signal.SIGCONT)
            print("running:", layer_labels(running))
            screen.shot(running, out / "2-running.png")

            # the job is done: Update sketches again, strokes replaced in place
            wait_for(
                lambda: [j["state"] for j in jobs(url) if j["id"] == job["id"]] == ["done"],
                "the job to finish",
            )
            updated = work / "updated.svg"
            apply(profile, UPDATE_ACTION, running, updated, [])
            print("updated:", layer_labels(updated))
            screen.shot(updated, out / "3-updated.png")

            # the designer deletes three strokes of the 16-stroke level and moves one
            level = f"clipasso-{PHOTO_ID}-level-{max(LEVELS)}"
            strokes = stroke_ids(updated, level)
            edited = work / "edited.svg"
            actions = f"delete;select-by-id:{strokes[3]};transform-translate:12,-6"
            apply(profile, actions, updated, edited, strokes[:3])
            # ... and refines from it: the photo and the level selected, keep mine, add 8
            inkscape_runner.write_preferences(
                profile,
                settings(
                    url,
                    iterations=str(REFINE_ITERATIONS),
                    when="wait",
                    start="keep",
                    add_strokes=str(ADD_STROKES),
                    color=str(NEW_STROKES_RGBA),
                    timeout="600",
                ),
            )
            refined = work / "refined.svg"
            apply(profile, SKETCH_ACTION, edited, refined, [PHOTO_ID, level])
            print("refined:", layer_labels(refined))
            screen.shot(refined, out / "4-refined.png")
    finally:
        screen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "loop")
    parser.add_argument("--keep", type=Path, help="keep the documents in this folder")
    args = parser.parse_args()
    for program in ("inkscape", "Xvfb", "xvfb-run", "xdotool", "xwd", "timeout"):
        if shutil.which(program) is None:
            sys.exit(f"{program} is not installed")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        make(args.out, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory() as work:
            make(args.out, Path(work))


if __name__ == "__main__":
    main()
