"""Sketch an image into a layered SVG: one Inkscape layer per abstraction level.

Runs the CLIPasso optimisation for every level at once and writes the best seed of each level.
The same image, settings and seed on the same device give the same SVG. IMAGE may be the word
"sample" for the image that ships with clipasso.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import signal
import stat
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from inkscape_clipasso import protocol
from inkscape_clipasso.protocol import format_duration

if TYPE_CHECKING:
    from PIL import Image

    from clipasso_server.engine.types import Progress, SketchResult

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


#: ``--fast``: what the fast schedule does and what it was measured to cost and save
#: (bench/pruning.py; README, "The fast schedule")
FAST_HELP = (
    "the fast schedule (seed pruning): each level's seeds are ranked by their best loss after "
    "25%% of the iterations and the worse ones stop; from half-way only the best runs on. "
    "Measured (bench/pruning.py: 1 level x 3 seeds, 40 iterations, random weights): 1.38x "
    "less CPU time; the sketch kept was as good on 2 of 3 photos and 2.1%% worse on one "
    "(default: every seed runs every iteration, as the reference)"
)


#: ``--precision``: what each choice computes in, and what bf16 was measured to save and cost
#: (bench/precision.py; README, "Arithmetic: float32 or bf16")
PRECISION_HELP = (
    "the loss model's arithmetic: fp32 (float32, the reference's), bf16 (bf16 autocast: "
    "measured on a CPU with AVX512-BF16, bench/precision.py with random weights on 3 photos, "
    "120 iterations: 1.95-2.05x less CPU time, the sketch's float32 loss from 1.2%% better to "
    "0.5%% worse; a default step 2.7x faster; on a CPU without native bf16 it is slower, not "
    "faster) or auto (default: bf16 where the device computes it natively, a CUDA GPU with "
    "bf16 or a CPU with AVX512-BF16 or AMX; float32 elsewhere)"
)


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
    """The ``clipasso sketch`` options; defaults are the reference's (``--help`` shows them)."""
    defaults = protocol.SketchSettings()
    parser.add_argument(
        "image", metavar="IMAGE", help='image file, or "sample" for the bundled sample image'
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.svg",
        help='SVG to write ("-": stdout); its folder must exist',
    )
    parser.add_argument(
        "--levels",
        default=",".join(map(str, defaults.levels)),
        help="stroke counts, one layer each",
    )
    parser.add_argument(
        "--iterations",
        type=_int_or_text,
        default=defaults.iterations,
        help="optimisation steps (quality is usually reasonable after ~500)",
    )
    parser.add_argument(
        "--seeds", type=_int_or_text, default=defaults.seeds, help="tries per level, best kept"
    )
    parser.add_argument(
        "--time-budget",
        type=_number_or_text,
        default=defaults.time_budget_s,
        metavar="SECONDS",
        help="finish within this many seconds (model loading included): when the work cannot "
        "fit, each level keeps its best seed, then fewer iterations run, and it says so; "
        "the best strokes are written, marked unfinished when iterations were cut "
        "(default: no limit)",
    )
    parser.add_argument(
        "--width",
        type=_number_or_text,
        default=defaults.width,
        metavar="PX",
        help="full stroke width in pixels of the 224 px canvas, as in the reference",
    )
    parser.add_argument("--color", default=defaults.color, help="stroke colour, #rrggbb[aa]")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N, mps"
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
    parser.add_argument("--seed", type=_int_or_text, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--renderer", default=defaults.renderer, choices=protocol.RENDERERS, help="rasteriser"
    )
    parser.add_argument(
        "--remove-background", action="store_true", help="whiten the background first"
    )
    parser.add_argument(
        "--plateau",
        type=_int_or_text,
        metavar="N",
        help="stop a level early after N evaluations (every 10 steps) without improvement "
        "(default: run every iteration)",
    )
    parser.add_argument("--fast", action="store_true", help=FAST_HELP)
    parser.add_argument(
        "--precision",
        default=defaults.precision,
        metavar="{" + ",".join(protocol.PRECISIONS) + "}",
        help=PRECISION_HELP,
    )
    photo = parser.add_mutually_exclusive_group()
    photo.add_argument(
        "--embed-image",
        action="store_true",
        help="embed the photo in the locked bottom layer (default: link to the file)",
    )
    photo.add_argument("--no-image", action="store_true", help="leave the photo out of the SVG")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress line and no time estimate"
    )
    parser.add_argument(
        "--start-svg",
        metavar="FILE",
        help="start every level from the paths of this SVG, drawn over the photo (in its "
        "<image>'s pixels; without one its viewBox is the photo), one stroke per cubic "
        "segment; the rest of each level starts as usual (default: none, every stroke "
        "starts from the photo's saliency)",
    )
    parser.add_argument(
        "--keep-start-strokes",
        action="store_true",
        help="keep the --start-svg strokes exactly as they are and add the rest "
        "(default: refine them all)",
    )


def sample_image_path() -> Path:
    """The bundled sample image."""
    return Path(str(resources.files("clipasso_server") / "data" / "sample.png"))


def _left_s(progress: Progress) -> float | None:
    """Seconds left: the one figure the progress line and the estimate both say, from the
    engine's measured step time (else the mean so far). None until the first steps are timed
    (:data:`ESTIMATE_AFTER_STEPS`, or :data:`ESTIMATE_AFTER_S`): the first step alone carries
    one-time costs, and a figure from it ("3 min left") would be contradicted by the estimate
    a moment later ("about 46 s left")."""
    if progress.step <= 0:
        return None
    if progress.step < ESTIMATE_AFTER_STEPS and progress.elapsed_s < ESTIMATE_AFTER_S:
        return None
    step_s = progress.step_time_s or progress.elapsed_s / progress.step
    planned = progress.planned_steps or progress.total
    return max(0, planned - progress.step) * step_s


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
        left = _left_s(progress)
        losses = " ".join(f"{k}:{v:.3f}" for k, v in sorted(progress.best_loss.items()))
        text = (
            f"step {progress.step}/{progress.total} {rate:.2f} steps/s, "
            f"{format_duration(left) if left is not None else '?'} left  best loss {losses}"
        )
        self.width = max(self.width, len(text))
        if self.tty:
            text = text.ljust(self.width)
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=sys.stderr, flush=True)
        self.line_open = not end

    def finish(self) -> None:
        """End the line a run left open (one stopped early never reaches total)."""
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False

    def say(self, text: str) -> None:
        """A line of its own, even while the progress line is open."""
        self.finish()
        print(text, file=sys.stderr, flush=True)


#: what an offline newcomer can run instead (README, "Quick start")
TINY_MODELS_HINT = (
    "To see it work without them first: `clipasso make-test-weights DIR`, then add "
    "`--clip-weights DIR --loss-model test-tiny-rn --saliency-model test-tiny-vit "
    "--iterations 20 --seeds 1` (the tiny random test models: every part runs, the strokes "
    "mean nothing)."
)
#: the estimate is said once this many steps have been timed (the first steps warm up)
ESTIMATE_AFTER_STEPS = 3
#: ... or once this much time went by, whichever comes first
ESTIMATE_AFTER_S = 30.0
#: a run longer than this gets the advice on how to make it shorter
LONG_RUN_S = 15 * 60.0


def estimate_text(progress: Progress, device_kind: str, budget_s: float | None) -> str:
    """The estimate said after the first steps, with what to change when it is long.

    ``device_kind`` is "cpu", "cuda" or "mps"; ``budget_s`` the time limit, if any.
    """
    left = _left_s(progress) or 0.0
    step_s = progress.step_time_s or progress.elapsed_s / max(progress.step, 1)
    where = "this CPU" if device_kind == "cpu" else "this GPU"
    planned = progress.planned_steps or progress.total
    text = (
        f"clipasso sketch: about {format_duration(left)} left on {where} "
        f"({step_s:.2f} s per step, {planned} steps)"
    )
    if budget_s is not None and planned < progress.total:
        return (
            f"{text}; the time limit of {format_duration(budget_s)} allows only about "
            f"{planned} of the {progress.total} iterations, so the sketch will be unfinished: "
            f"for a finished one use fewer --iterations, --levels or --seeds, a longer "
            f"--time-budget, or a GPU"
        )
    if left > LONG_RUN_S:
        gpu = " or a GPU (--device cuda)," if device_kind == "cpu" else ""
        return (
            f"{text}; to be done sooner use fewer --iterations (often fine after ~500), "
            f"fewer --levels or --seeds (a step costs about levels x seeds),{gpu} "
            f"or a --time-budget (Ctrl-C also writes the best strokes so far)"
        )
    return text


class Estimate:
    """Says the estimate once, after the first steps (see :func:`estimate_text`)."""

    def __init__(self, line: ProgressLine, device_kind: str, budget_s: float | None) -> None:
        self.line, self.device_kind, self.budget_s = line, device_kind, budget_s
        self.said = not line.enabled

    def __call__(self, progress: Progress) -> None:
        if self.said or progress.step >= (progress.planned_steps or progress.total):
            return
        if _left_s(progress) is None:  # not timed enough yet
            return
        self.said = True
        self.line.say(estimate_text(progress, self.device_kind, self.budget_s))


class Interrupts:
    """Ctrl-C once steps have run: stop after the current step and write the best strokes so
    far. Before the first step (nothing to keep yet) or a second time: stop at once.

    Used as the engine's ``should_stop`` check, inside a ``with`` that installs the handler.
    """

    def __init__(self, line: ProgressLine) -> None:
        self.line = line
        self.requested = False
        self.stepping = False
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.requested or not self.stepping:
            raise KeyboardInterrupt
        self.requested = True
        self.line.say(
            "clipasso sketch: stopping after this step to write the best strokes so far "
            "(Ctrl-C again quits without writing)"
        )

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def check_input(text: str) -> Path:
    """The image's path, once it is known to be a readable file (before torch is imported,
    so that a typo is answered at once; the image itself is decoded later)."""
    from clipasso_server.cli import CommandError

    if text == SAMPLE_NAME:
        return sample_image_path()
    path = Path(text)
    if path.is_dir():
        raise CommandError(f"{path} is a folder, not an image file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file next to ``path``, created with mode 0666 less the umask (as any file a
    user's program writes; ``tempfile.mkstemp`` would make it 0600)."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in words."""
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def check_output(path: Path, source: Path | None = None) -> Path:
    """Fail before the long run, not after it, when the SVG could not or should not be
    written; the file to write (a symlink's target: it is written through, and said so).

    The name must be new or a regular file (the SVG replaces it by a rename, so a device such
    as /dev/null or a pipe would be replaced by a file), never ``source`` (the photo), and its
    folder must exist (it is never created, as with any other tool) and take a new file. A
    name not ending in .svg is written, with a warning."""
    from clipasso_server.cli import CommandError

    target = path
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        print(
            f"clipasso sketch: {path} is a symlink: writing the SVG to its target {target}",
            file=sys.stderr,
        )
    if target.is_dir():
        raise CommandError(f"{path} is a folder; give a file name such as {path}/sketch.svg")
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new name (its folder is checked below)
        mode = None
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise CommandError(
            f"will not write {path}: it is {_file_kind(mode)}, and the SVG would replace it; "
            "give the name of a new or existing .svg file"
        )
    if mode is not None and source is not None and os.path.samefile(source, target):
        raise CommandError(
            f"will not write {path}: it is the input photo itself; give another name, "
            "such as sketch.svg"
        )
    if path.suffix.lower() != ".svg":
        print(
            f"clipasso sketch: warning: {path} does not end in .svg; writing an SVG to it",
            file=sys.stderr,
        )
    folder = target.absolute().parent
    if not folder.exists():
        raise CommandError(f"cannot write {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise CommandError(f"cannot write {path}: {folder} is not a folder")
    try:
        handle, probe = _temporary_beside(target.absolute())
        os.close(handle)
        probe.unlink()
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    return target


def _write_atomically(path: Path, text: str) -> None:
    """Temp file + rename: the SVG is either all there or not there at all."""
    from clipasso_server.cli import CommandError

    try:
        handle, temporary = _temporary_beside(path)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
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

    from PIL import ExifTags, Image

    try:
        with Image.open(source) as original:
            kind = INKSCAPE_FORMATS.get(original.format or "")
            turned = original.getexif().get(ExifTags.Base.Orientation, 1) not in (1, None)
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


def _settings(
    args: argparse.Namespace, start_strokes: tuple[tuple[tuple[float, float], ...], ...] = ()
) -> protocol.SketchSettings:
    from clipasso_server.cli import CommandError

    levels = str(args.levels)
    if any(not part.strip() for part in levels.replace(";", ",").split(",")):
        raise CommandError(
            f"--levels has an empty stroke count in {levels!r}: give whole numbers separated "
            "by single commas, such as 4,8,16,32"
        )
    try:
        return protocol.parse_settings(
            {
                "levels": args.levels,
                "iterations": args.iterations,
                "seeds": args.seeds,
                "schedule": "fast" if args.fast else "full",
                "precision": args.precision,
                "width": args.width,
                "color": args.color,
                "loss_model": args.loss_model,
                "saliency_model": args.saliency_model,
                "renderer": args.renderer,
                "remove_background": args.remove_background,
                "seed": args.seed,
                "time_budget_s": args.time_budget,
                "start_strokes": start_strokes,
                "keep_start_strokes": bool(start_strokes) and args.keep_start_strokes,
            }
        )
    except protocol.ProtocolError as exc:
        message = exc.message.replace("time_budget_s", "--time-budget")
        if start_strokes:
            message = f"--start-svg {args.start_svg}: {message}"
        raise CommandError(message) from None


def read_start_svg(
    path: str, width: int, height: int
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """The start strokes of the SVG ``path`` in the pixels of the ``width`` x ``height``
    photo (the daemon's ``/v1/start-strokes`` converter), or one clear line."""
    from clipasso_server.cli import CommandError
    from clipasso_server.start_svg import StartSvgError, strokes_from_svg

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read --start-svg {path}: {exc.strerror or exc}") from None
    try:
        return strokes_from_svg(data, width, height, limit=protocol.MAX_STROKES)
    except StartSvgError as exc:
        raise CommandError(f"--start-svg {path}: {exc.message}") from None


def _check_weights(settings: protocol.SketchSettings, weights_dir: str | None) -> None:
    """Every weight file the job needs, all listed at once when missing, before torch loads."""
    from clipasso_server.cli import CommandError
    from clipasso_server.engine import weight_check

    missing = weight_check.find_missing(weight_check.job_models(settings), weights_dir)
    if missing:
        message = weight_check.missing_message(missing)
        if not any(entry.model.startswith("test-tiny") for entry in missing):
            message += "\n" + TINY_MODELS_HINT
        raise CommandError(message)


def run(args: argparse.Namespace) -> int:
    """Check everything that can be checked at once, then load the models, sketch, write.

    Ctrl-C during the run, or the time budget running out, still writes the SVG: the best
    strokes so far, marked unfinished (exit status 130 after Ctrl-C).
    """
    from clipasso_server.cli import CommandError

    settings = _settings(args)
    if args.keep_start_strokes and not args.start_svg:
        raise CommandError("--keep-start-strokes keeps the strokes of --start-svg FILE: give one")
    plateau = args.plateau
    if plateau is not None and (not isinstance(plateau, int) or plateau < 1):
        raise CommandError(f"--plateau must be a whole number of at least 1, got {plateau!r}")
    source = check_input(args.image)
    output = None if args.output == STDOUT_NAME else Path(args.output)
    target = None if output is None else check_output(output, source)
    # decoded in full without torch (Pillow only), so a damaged file is refused at once
    from clipasso_server.engine.image_decode import load_image_file

    image = load_image_file(source)
    if args.start_svg:
        from clipasso_server.engine.image_decode import original_size

        size = original_size(image)
        settings = _settings(args, read_start_svg(args.start_svg, *size))
        try:
            protocol.check_start_strokes_inside(settings, *size)
        except protocol.ProtocolError as exc:
            raise CommandError(f"--start-svg {args.start_svg}: {exc.message}") from None
    _check_weights(settings, args.clip_weights)

    # torch and the engine load only now, so that every error above answers at once.
    from clipasso_server.engine import weight_check
    from clipasso_server.engine.clip_models import ModelStore
    from clipasso_server.engine.device import pick_device
    from clipasso_server.engine.errors import Cancelled
    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.types import SketchConfig

    config = SketchConfig(**settings.to_json(), plateau_patience=plateau)
    device = pick_device(args.device)
    store = ModelStore(device, weights_dir=args.clip_weights)
    store.require(weight_check.job_models(config))
    line = ProgressLine(not args.quiet)
    estimate = Estimate(line, device.type, config.time_budget_s)
    interrupts = Interrupts(line)

    said_notes: list[str] = []

    def progress(report: Progress) -> None:
        interrupts.stepping = True
        # what a schedule reduced (a time limit's plan, seed pruning) is said as it happens,
        # --quiet or not: a reduced schedule is never silent
        for note in report.schedule_notes[len(said_notes) :]:
            said_notes.append(note)
            if line.enabled:
                line.say(f"clipasso sketch: {note}")
            else:
                print(f"clipasso sketch: {note}", file=sys.stderr, flush=True)
        line(report)
        estimate(report)

    try:
        with interrupts:
            result = sketch(image, config, store, progress=progress, should_stop=interrupts)
    except Cancelled as exc:
        line.finish()
        if exc.snapshot is None:
            raise KeyboardInterrupt from None
        _write(exc.snapshot, source, image, output, target, args)
        print(
            f"clipasso sketch: interrupted at step {exc.snapshot.steps_run} of "
            f"{config.iterations}: wrote the best strokes so far to "
            f"{output or 'stdout'}, marked unfinished",
            file=sys.stderr,
        )
        return 130
    finally:
        line.finish()
    if result.stop_reason == "budget":
        result = dataclasses.replace(result, partial=True, step=result.steps_run)
    _write(result, source, image, output, target, args)
    if not args.quiet:
        ending = (
            f", stopped by the time limit at step {result.steps_run} of {config.iterations}: "
            "marked unfinished"
            if result.partial
            else f", {result.steps_run} steps"
        )
        print(
            f"clipasso sketch: wrote {output or 'stdout'} ({len(result.levels)} layer"
            f"{'' if len(result.levels) == 1 else 's'} on {result.device}{ending})",
            file=sys.stderr,
        )
    return 0


def _write(
    result: SketchResult,
    source: Path,
    image: Image.Image,
    output: Path | None,
    target: Path | None,
    args: argparse.Namespace,
) -> None:
    """The SVG to stdout (``output`` None) or to ``target`` (``output``, or the file its
    symlink names); the photo's relative link is from ``output``, the name the user opens."""
    from clipasso_server.engine.svg_output import result_to_svg

    href = None if args.no_image else photo_href(source, image, output, args.embed_image)
    svg = result_to_svg(result, href)
    if output is None or target is None:
        sys.stdout.write(svg)
        sys.stdout.flush()
    else:
        _write_atomically(target, svg)
