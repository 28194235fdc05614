"""Sketch an image into a layered SVG: one Inkscape layer per abstraction level.

Runs the CLIPasso optimisation for every level at once and writes the best seed of each level.
The same image, settings and seed on the same device give the same SVG. IMAGE may be the word
"sample" for the image that ships with clipasso.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from inkscape_clipasso import protocol

if TYPE_CHECKING:
    from PIL import Image

    from clipasso_server.engine.types import Progress

SAMPLE_NAME = "sample"
STDOUT_NAME = "-"
#: What Inkscape shows of a linked or embedded bitmap as it is; it honours EXIF orientation in
#: JPEGs only, so other files that need turning are embedded as a turned PNG copy instead.
INKSCAPE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
_EXIF_ORIENTATION = 0x0112


def _int_or_text(text: str) -> int | str:
    """A whole number, or the text itself for protocol.parse_settings to refuse in one line
    (argparse's own refusal is a usage block)."""
    try:
        return int(text)
    except ValueError:
        return text


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``clipasso sketch`` options; defaults are the reference's."""
    defaults = protocol.SketchSettings()
    parser.add_argument(
        "image", metavar="IMAGE", help='image file, or "sample" for the bundled sample image'
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.svg", help='SVG to write ("-": stdout)'
    )
    parser.add_argument(
        "--levels",
        default=",".join(map(str, defaults.levels)),
        help="stroke counts, one layer each (default %(default)s)",
    )
    parser.add_argument(
        "--iterations", type=_int_or_text, default=defaults.iterations, help="steps (2000)"
    )
    parser.add_argument(
        "--seeds", type=_int_or_text, default=defaults.seeds, help="tries per level (3)"
    )
    parser.add_argument(
        "--width",
        type=_number_or_text,
        default=defaults.width,
        metavar="PX",
        help="full stroke width in pixels of the 224 px canvas (reference: 3)",
    )
    parser.add_argument("--color", default=defaults.color, help="stroke colour, #rrggbb[aa]")
    parser.add_argument(
        "--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--clip-weights",
        metavar="DIR",
        help="folder holding the CLIP weight files (default: $CLIPASSO_WEIGHTS, then the caches)",
    )
    parser.add_argument("--loss-model", default=defaults.loss_model, help="CLIP model for losses")
    parser.add_argument(
        "--saliency-model", default=defaults.saliency_model, help="CLIP ViT for the start"
    )
    parser.add_argument("--seed", type=_int_or_text, default=defaults.seed, help="random seed (0)")
    parser.add_argument("--renderer", default=defaults.renderer, choices=protocol.RENDERERS)
    parser.add_argument(
        "--remove-background", action="store_true", help="whiten the background first"
    )
    parser.add_argument(
        "--plateau",
        type=_int_or_text,
        metavar="N",
        help="stop a level early after N evaluations (every 10 steps) without improvement",
    )
    photo = parser.add_mutually_exclusive_group()
    photo.add_argument(
        "--embed-image",
        action="store_true",
        help="embed the photo in the locked bottom layer (default: link to the file)",
    )
    photo.add_argument("--no-image", action="store_true", help="leave the photo out of the SVG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def sample_image_path() -> Path:
    """The bundled sample image."""
    return Path(str(resources.files("clipasso_server") / "data" / "sample.png"))


class ProgressLine:
    """A one-line progress display on stderr: step, rate, time left, best loss per level."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr is not None
        self.last = 0.0
        self.tty = self.enabled and sys.stderr.isatty()
        self.line_open = False
        self.width = 0  # the longest line so far: shorter ones are padded to cover it

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.step >= progress.total
        if not self.enabled or (now - self.last < (0.2 if self.tty else 10.0) and not final):
            return
        self.last = now
        rate = progress.step / max(progress.elapsed_s, 1e-9)
        left = (progress.total - progress.step) / rate if rate > 0 else float("nan")
        losses = " ".join(f"{k}:{v:.3f}" for k, v in sorted(progress.best_loss.items()))
        text = (
            f"step {progress.step}/{progress.total} {rate:.2f} steps/s, "
            f"{left:.0f}s left  best loss {losses}"
        )
        self.width = max(self.width, len(text))
        if self.tty:
            text = text.ljust(self.width)
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=sys.stderr, flush=True)
        self.line_open = not end

    def finish(self) -> None:
        """End the line a run left open (one stopped early by --plateau never reaches total)."""
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False


def _check_output(path: Path) -> None:
    """Fail before the long run, not after it, when the SVG could not be written."""
    from clipasso_server.cli import CommandError

    if path.is_dir():
        raise CommandError(f"{path} is a folder; give a file name such as {path}/sketch.svg")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # folders still to be made: the first existing one must take them
    if not folder.is_dir():
        raise CommandError(f"cannot write {path}: {folder} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_atomically(path: Path, text: str) -> None:
    """Temp file + rename: the SVG is either all there or not there at all."""
    from clipasso_server.cli import CommandError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def photo_href(source: Path, image: Image.Image, output: Path | None, embed: bool) -> str:
    """The photo layer's href: a path relative to the SVG, or with ``embed`` a ``data:`` URI.

    Files Inkscape cannot show as they are (other formats, or an EXIF turn outside a JPEG)
    are embedded as a PNG of ``image``, the decoded and turned picture, even without ``embed``.
    """
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(source) as original:
            kind = INKSCAPE_FORMATS.get(original.format or "")
            turned = original.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
    except (OSError, ValueError, SyntaxError):  # changed since it was read: use what was read
        kind, turned = None, True
    if kind is None or (turned and kind != "image/jpeg"):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    if embed:
        return f"data:{kind};base64," + base64.b64encode(source.read_bytes()).decode("ascii")
    base = Path.cwd() if output is None else output.resolve().parent
    try:
        return Path(os.path.relpath(source.resolve(), base)).as_posix()
    except ValueError:  # Windows: another drive
        return source.resolve().as_uri()


def _settings(args: argparse.Namespace) -> protocol.SketchSettings:
    from clipasso_server.cli import CommandError

    try:
        return protocol.parse_settings(
            {
                "levels": args.levels,
                "iterations": args.iterations,
                "seeds": args.seeds,
                "width": args.width,
                "color": args.color,
                "loss_model": args.loss_model,
                "saliency_model": args.saliency_model,
                "renderer": args.renderer,
                "remove_background": args.remove_background,
                "seed": args.seed,
            }
        )
    except protocol.ProtocolError as exc:
        raise CommandError(exc.message) from None


def run(args: argparse.Namespace) -> int:
    """Validate, load the image and the models, sketch, write the SVG."""
    from clipasso_server.cli import CommandError

    settings = _settings(args)
    plateau = args.plateau
    if plateau is not None and (not isinstance(plateau, int) or plateau < 1):
        raise CommandError(f"--plateau must be a whole number of at least 1, got {plateau!r}")
    output = None if args.output == STDOUT_NAME else Path(args.output)
    if output is not None:
        _check_output(output)

    # torch and the engine load only now, so that --help and argument errors answer at once.
    from clipasso_server.engine.clip_models import ModelStore
    from clipasso_server.engine.device import pick_device
    from clipasso_server.engine.image_input import load_image_file
    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.svg_output import result_to_svg
    from clipasso_server.engine.types import SketchConfig

    source = sample_image_path() if args.image == SAMPLE_NAME else Path(args.image)
    image = load_image_file(source)
    config = SketchConfig(**settings.to_json(), plateau_patience=plateau)
    store = ModelStore(pick_device(args.device), weights_dir=args.clip_weights)
    progress = ProgressLine(not args.quiet)
    try:
        result = sketch(image, config, store, progress=progress)
    finally:
        progress.finish()

    href = None if args.no_image else photo_href(source, image, output, args.embed_image)
    svg = result_to_svg(result, href)
    if output is None:
        sys.stdout.write(svg)
        sys.stdout.flush()
        where = "stdout"
    else:
        _write_atomically(output, svg)
        where = str(output)
    if not args.quiet:
        print(
            f"clipasso sketch: wrote {where} ({len(result.levels)} layer"
            f"{'' if len(result.levels) == 1 else 's'}, "
            f"{result.steps_run} steps on {result.device})",
            file=sys.stderr,
        )
    return 0
