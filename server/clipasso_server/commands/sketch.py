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

from inkscape_clipasso import protocol

SAMPLE_NAME = "sample"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``clipasso sketch`` options; defaults are the reference's."""
    defaults = protocol.SketchSettings()
    parser.add_argument("image", metavar="IMAGE", help='image file, or "sample"')
    parser.add_argument("-o", "--output", required=True, metavar="OUT.svg", help="SVG to write")
    parser.add_argument(
        "--levels",
        default=",".join(map(str, defaults.levels)),
        help="stroke counts, one layer each (default %(default)s)",
    )
    parser.add_argument("--iterations", type=int, default=defaults.iterations, help="steps (2000)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help="tries per level (3)")
    parser.add_argument(
        "--width",
        type=float,
        default=defaults.width,
        metavar="PX",
        help="full stroke width in pixels of the 224 px canvas (reference: 3)",
    )
    parser.add_argument("--color", default=defaults.color, help="stroke colour, #rrggbb[aa]")
    parser.add_argument(
        "--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N"
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
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (0)")
    parser.add_argument("--renderer", default=defaults.renderer, choices=protocol.RENDERERS)
    parser.add_argument(
        "--remove-background", action="store_true", help="whiten the background first"
    )
    parser.add_argument(
        "--plateau",
        type=int,
        metavar="N",
        help="stop a level early after N evaluations (every 10 steps) without improvement",
    )
    parser.add_argument(
        "--embed-image",
        action="store_true",
        help="embed the photo in the SVG as a locked bottom layer (default: link to it)",
    )
    parser.add_argument("--no-image", action="store_true", help="leave the photo out of the SVG")
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

    def __call__(self, progress) -> None:
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
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=sys.stderr, flush=True)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Validate, load the image and the models, sketch, write the SVG."""
    from clipasso_server.cli import CommandError

    try:
        settings = protocol.parse_settings(
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
    if args.plateau is not None and args.plateau < 1:
        raise CommandError("--plateau must be at least 1")
    output = Path(args.output)
    if output.is_dir():
        raise CommandError(f"{output} is a folder; give a file name such as {output}/sketch.svg")

    # torch and the engine load only now, so that --help and argument errors answer at once.
    from clipasso_server.engine.clip_models import ModelStore
    from clipasso_server.engine.device import pick_device
    from clipasso_server.engine.image_input import load_image_file
    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.svg_output import result_to_svg
    from clipasso_server.engine.types import SketchConfig

    source = sample_image_path() if args.image == SAMPLE_NAME else Path(args.image)
    image = load_image_file(source)
    config = SketchConfig(**settings.to_json(), plateau_patience=args.plateau)
    store = ModelStore(pick_device(args.device), weights_dir=args.clip_weights)
    result = sketch(image, config, store, progress=ProgressLine(not args.quiet))

    href = None
    if args.embed_image:
        import base64
        import mimetypes

        kind = mimetypes.guess_type(source.name)[0] or "image/png"
        href = f"data:{kind};base64," + base64.b64encode(source.read_bytes()).decode("ascii")
    elif not args.no_image:
        href = os.path.relpath(source.resolve(), output.resolve().parent)
    _write_atomically(output, result_to_svg(result, href))
    if not args.quiet:
        print(
            f"clipasso sketch: wrote {output} ({len(result.levels)} layers, "
            f"{result.steps_run} steps on {result.device})",
            file=sys.stderr,
        )
    return 0
