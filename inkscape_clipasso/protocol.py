"""The request/response schema shared by the Inkscape extension and the sketch daemon.

Both sides import this one module so that they cannot drift: the daemon validates every
request with it, the extension validates every response with it. It must stay importable in
Inkscape's own Python, so it uses the standard library only (no torch, no Pillow, no inkex).

Every validation failure raises :class:`ProtocolError`, which carries a stable error code and
the HTTP status the daemon answers with, so a client can react to the code and show the message.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
API_PREFIX = "/v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"

#: The square canvas the optimisation runs on (the reference's 224 x 224).
CANVAS_SIZE = 224

MIN_STROKES, MAX_STROKES = 1, 256
MAX_LEVELS = 8
MIN_ITERATIONS, MAX_ITERATIONS = 1, 20000
MIN_SEEDS, MAX_SEEDS = 1, 16
MIN_WIDTH, MAX_WIDTH = 0.1, 50.0
MAX_SEED_VALUE = 2**31 - 1
#: a time budget of at least a second and at most a week (None: no budget)
MIN_TIME_BUDGET_S, MAX_TIME_BUDGET_S = 1.0, 7 * 86400.0
#: why an optimisation stopped, as results and SVG metadata say it
STOP_REASONS = ("iterations", "plateau", "budget", "cancel")
RENDERERS = ("auto", "torch", "diffvg")
#: how the seeds of a level share the iterations: "full" runs every seed to the end (the
#: reference); "fast" ranks them after a warm-up and runs only the best on (seed pruning)
SCHEDULES = ("full", "fast")
#: the loss model's arithmetic: "fp32" as the reference; "bf16" autocast (about half the CPU
#: time where the CPU computes bf16 natively, bench/precision.py); "auto": bf16 on a CUDA GPU
#: or such a CPU, float32 elsewhere
PRECISIONS = ("auto", "fp32", "bf16")
#: start strokes may lie this many photo widths/heights outside the photo (hand-drawn strokes
#: overshoot its edges; anything further is a coordinate mix-up, not a drawing)
START_STROKE_MARGIN = 1.0
DEFAULT_LOSS_MODEL = "RN101"
DEFAULT_SALIENCY_MODEL = "ViT-B-32"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./@+-]{0,127}$")
_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")

# Job states.
QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
    "interrupted",
)
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})

# Error codes and the HTTP status each is answered with.
ERROR_STATUS: dict[str, int] = {
    "bad_json": 400,
    "bad_request": 400,
    "unknown_field": 400,
    "out_of_range": 400,
    "bad_image": 400,
    "image_too_large": 413,
    "too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "request_timeout": 408,
    "not_ready": 409,
    "method_not_allowed": 405,
    "unsupported_media_type": 415,
    "misdirected_request": 421,
    "insufficient_memory": 422,
    "queue_full": 429,
    "shutting_down": 503,
    "missing_weights": 503,
    "bad_weights": 503,
    "insufficient_storage": 507,
    "internal": 500,
}


class ProtocolError(ValueError):
    """A request or response that does not follow the schema.

    ``code`` is one of :data:`ERROR_STATUS`'s keys, ``status`` the HTTP status that goes with it.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERROR_STATUS[code]

    def to_json(self) -> dict[str, str]:
        """The error body the daemon sends: ``{"error": code, "message": text}``."""
        return {"error": self.code, "message": self.message}


@dataclass(frozen=True)
class SketchSettings:
    """What a user can choose for one sketch job; defaults are the reference's.

    ``width`` is the full stroke width in pixels of the 224-pixel optimisation canvas (the
    reference draws 3 px); results report widths in the image's own pixels. ``time_budget_s``
    caps the optimisation's wall time: the engine runs min(iterations, what fits) steps and
    returns the best iterate so far (None: run every iteration).
    """

    levels: tuple[int, ...] = (4, 8, 16, 32)
    iterations: int = 2000
    seeds: int = 3
    width: float = 3.0
    color: str = "#000000"
    loss_model: str = DEFAULT_LOSS_MODEL
    saliency_model: str = DEFAULT_SALIENCY_MODEL
    renderer: str = "auto"
    remove_background: bool = False
    seed: int = 0
    time_budget_s: float | None = None
    schedule: str = "full"
    #: strokes the sketches start from, each 4 control points (x, y) in the photo's pixels;
    #: every level starts with them and places the rest from the saliency map
    start_strokes: tuple[tuple[tuple[float, float], ...], ...] = ()
    #: the start strokes stay where they are (the reference's ``--path_svg``); False: they
    #: are optimised like the others
    keep_start_strokes: bool = False
    #: the loss model's arithmetic, one of PRECISIONS
    precision: str = "auto"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, levels and strokes as lists."""
        data = asdict(self)
        data["levels"] = list(self.levels)
        data["start_strokes"] = [[list(p) for p in stroke] for stroke in self.start_strokes]
        return data


SETTINGS_FIELDS = tuple(SketchSettings.__dataclass_fields__)


def _require_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_request", f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ProtocolError("out_of_range", f"{name} must be between {low} and {high}, got {value}")
    return value


def _require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ProtocolError(
            "out_of_range", f"{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def parse_levels(value: Any) -> tuple[int, ...]:
    """Stroke counts as a sorted tuple without repeats, from a list or a text like "4,8,16"."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        if not parts:
            raise ProtocolError("bad_request", "levels must name at least one stroke count")
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ProtocolError(
                "bad_request", f"levels must be whole numbers separated by commas, got {value!r}"
            ) from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ProtocolError("bad_request", "levels must be a non-empty list of stroke counts")
    levels = sorted({_require_int("each level", v, MIN_STROKES, MAX_STROKES) for v in value})
    if len(levels) > MAX_LEVELS:
        raise ProtocolError("out_of_range", f"at most {MAX_LEVELS} levels, got {len(levels)}")
    return tuple(levels)


def parse_settings(data: Any) -> SketchSettings:
    """Validate a settings object (missing fields take the defaults; unknown fields are refused)."""
    if data is None:
        return SketchSettings()
    if not isinstance(data, Mapping):
        raise ProtocolError("bad_request", "settings must be a JSON object")
    unknown = sorted(set(data) - set(SETTINGS_FIELDS))
    if unknown:
        raise ProtocolError(
            "unknown_field",
            f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(SETTINGS_FIELDS)}",
        )
    defaults = SketchSettings()
    out: dict[str, Any] = {}
    out["levels"] = parse_levels(data.get("levels", list(defaults.levels)))
    out["iterations"] = _require_int(
        "iterations", data.get("iterations", defaults.iterations), MIN_ITERATIONS, MAX_ITERATIONS
    )
    out["seeds"] = _require_int("seeds", data.get("seeds", defaults.seeds), MIN_SEEDS, MAX_SEEDS)
    width = data.get("width", defaults.width)
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise ProtocolError("bad_request", f"width must be a number, got {width!r}")
    if not MIN_WIDTH <= float(width) <= MAX_WIDTH:
        raise ProtocolError(
            "out_of_range", f"width must be between {MIN_WIDTH} and {MAX_WIDTH} px, got {width}"
        )
    out["width"] = float(width)
    color = data.get("color", defaults.color)
    if not isinstance(color, str) or not _HEX_COLOUR.match(color):
        raise ProtocolError(
            "bad_request", f"color must look like #rrggbb or #rrggbbaa, got {color!r}"
        )
    out["color"] = color.lower()
    for name in ("loss_model", "saliency_model"):
        model = data.get(name, getattr(defaults, name))
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            raise ProtocolError("bad_request", f"{name} must be a model name, got {model!r}")
        out[name] = model
    out["renderer"] = _require_choice(
        "renderer", data.get("renderer", defaults.renderer), RENDERERS
    )
    remove_background = data.get("remove_background", defaults.remove_background)
    if not isinstance(remove_background, bool):
        raise ProtocolError("bad_request", "remove_background must be true or false")
    out["remove_background"] = remove_background
    out["seed"] = _require_int("seed", data.get("seed", defaults.seed), 0, MAX_SEED_VALUE)
    out["time_budget_s"] = parse_time_budget(data.get("time_budget_s", defaults.time_budget_s))
    out["schedule"] = _require_choice(
        "schedule", data.get("schedule", defaults.schedule), SCHEDULES
    )
    out["precision"] = _require_choice(
        "precision", data.get("precision", defaults.precision), PRECISIONS
    )
    out["start_strokes"] = parse_start_strokes(data.get("start_strokes", []))
    keep = data.get("keep_start_strokes", defaults.keep_start_strokes)
    if not isinstance(keep, bool):
        raise ProtocolError("bad_request", "keep_start_strokes must be true or false")
    out["keep_start_strokes"] = keep
    _check_start_count(out["start_strokes"], out["levels"], keep)
    return SketchSettings(**out)


def parse_start_strokes(value: Any) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Start strokes as tuples: a list of strokes, each a list of 4 [x, y] finite numbers."""
    if not isinstance(value, (list, tuple)):
        raise ProtocolError("bad_request", "start_strokes must be a list of strokes")
    if len(value) > MAX_STROKES:
        raise ProtocolError(
            "out_of_range", f"at most {MAX_STROKES} start strokes, got {len(value)}"
        )
    strokes = []
    for number, stroke in enumerate(value, 1):
        if not isinstance(stroke, (list, tuple)) or len(stroke) != 4:
            raise ProtocolError(
                "bad_request", f"start stroke {number} must be 4 [x, y] control points"
            )
        points = []
        for point in stroke:
            if (
                not isinstance(point, (list, tuple))
                or len(point) != 2
                or not all(_is_finite_number(c) for c in point)
            ):
                raise ProtocolError(
                    "bad_request",
                    f"start stroke {number}: each control point must be [x, y] finite numbers, "
                    f"got {point!r}",
                )
            points.append((float(point[0]), float(point[1])))
        strokes.append(tuple(points))
    return tuple(strokes)


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_start_count(
    strokes: tuple[tuple[tuple[float, float], ...], ...], levels: tuple[int, ...], keep: bool
) -> None:
    """Every level holds the start strokes; kept ones leave at least one stroke to optimise."""
    if not strokes:
        if keep:
            raise ProtocolError("bad_request", "keep_start_strokes needs start_strokes")
        return
    smallest = min(levels)
    if len(strokes) > smallest or (keep and len(strokes) == smallest):
        need = f"more than {len(strokes)}" if keep else f"at least {len(strokes)}"
        raise ProtocolError(
            "out_of_range",
            f"{len(strokes)} start strokes need levels of {need} strokes "
            f"(the smallest level has {smallest})",
        )


def check_start_strokes_inside(settings: SketchSettings, width: int, height: int) -> None:
    """ProtocolError unless every start stroke lies on the ``width`` x ``height`` photo or within
    START_STROKE_MARGIN of its size around it (a stroke far off is a coordinate mix-up)."""
    margin_x, margin_y = START_STROKE_MARGIN * width, START_STROKE_MARGIN * height
    for number, stroke in enumerate(settings.start_strokes, 1):
        for x, y in stroke:
            if not (-margin_x <= x <= width + margin_x and -margin_y <= y <= height + margin_y):
                raise ProtocolError(
                    "out_of_range",
                    f"start stroke {number} has a point at ({x:g}, {y:g}), too far outside the "
                    f"{width} x {height} photo: start strokes are in the photo's pixels",
                )


def parse_time_budget(value: Any) -> float | None:
    """None (no budget) or seconds between MIN_TIME_BUDGET_S and MAX_TIME_BUDGET_S."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ProtocolError("bad_request", f"time_budget_s must be a number or null, got {value!r}")
    if not MIN_TIME_BUDGET_S <= float(value) <= MAX_TIME_BUDGET_S:
        raise ProtocolError(
            "out_of_range",
            f"time_budget_s must be between {MIN_TIME_BUDGET_S:g} and {MAX_TIME_BUDGET_S:g} s "
            f"(or null for no limit), got {value}",
        )
    return float(value)


def decode_image_field(value: Any) -> bytes:
    """The image bytes of a job request's base64 ``image`` field (a ``data:`` URI is accepted)."""
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_request", "image must be a non-empty base64 string")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise ProtocolError("bad_request", "an image data: URI must be base64-encoded")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_request", "image is not valid base64") from None
    if not data:
        raise ProtocolError("bad_image", "the image is empty")
    return data


@dataclass(frozen=True)
class JobRequest:
    """A validated ``POST /v1/jobs`` body.

    ``detached``: the client may go away before the job ends (the extension's time limit was
    reached and the user chose to let the job finish), so the abandonment watchdog leaves it
    running; its result is cached as usual. Not a setting: it does not change the result.
    """

    image: bytes
    settings: SketchSettings = field(default_factory=SketchSettings)
    name: str = ""
    detached: bool = False


JOB_REQUEST_FIELDS = ("image", "settings", "name", "detached")


def build_job_request(
    image: bytes, settings: SketchSettings, name: str = "", detached: bool = False
) -> dict[str, Any]:
    """The JSON body a client sends to submit a job."""
    return {
        "image": base64.b64encode(image).decode("ascii"),
        "settings": settings.to_json(),
        "name": name,
        "detached": detached,
    }


def _check_body(data: Any, fields: tuple[str, ...]) -> None:
    """A request body must be a JSON object of ``fields`` only."""
    if not isinstance(data, Mapping):
        raise ProtocolError("bad_request", "the request body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProtocolError("unknown_field", f"unknown field(s): {', '.join(unknown)}")


def parse_job_request(data: Any) -> JobRequest:
    """Validate a decoded ``POST /v1/jobs`` JSON body."""
    _check_body(data, JOB_REQUEST_FIELDS)
    if "image" not in data:
        raise ProtocolError("bad_request", "the request has no image")
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > 256:
        raise ProtocolError("bad_request", "name must be a string of at most 256 characters")
    detached = data.get("detached", False)
    if not isinstance(detached, bool):
        raise ProtocolError("bad_request", "detached must be true or false")
    return JobRequest(
        image=decode_image_field(data["image"]),
        settings=parse_settings(data.get("settings")),
        name=name,
        detached=detached,
    )


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a job id (32 lowercase hex digits)."""
    return bool(_JOB_ID.match(value))


# --- POST /v1/start-strokes: a drawing's paths as start strokes ---------------------------

#: the largest SVG text the daemon converts (a drawing's strokes, not a photo)
MAX_START_SVG_CHARS = 4_000_000
#: the largest photo side a request may name, in pixels
MAX_PHOTO_SIDE = 1_000_000
START_STROKES_REQUEST_FIELDS = ("svg", "width", "height")


@dataclass(frozen=True)
class StartStrokesRequest:
    """A validated ``POST /v1/start-strokes`` body: an SVG drawn over a ``width`` x ``height``
    photo, whose paths the daemon returns as start strokes in that photo's pixels (the web
    page's "Start strokes (SVG)"; the answer is :func:`start_strokes_response`)."""

    svg: str
    width: int
    height: int


def parse_start_strokes_request(data: Any) -> StartStrokesRequest:
    """Validate a decoded ``POST /v1/start-strokes`` JSON body."""
    _check_body(data, START_STROKES_REQUEST_FIELDS)
    svg = data.get("svg")
    if not isinstance(svg, str) or not svg.strip():
        raise ProtocolError("bad_request", "svg must be the SVG document's text")
    if len(svg) > MAX_START_SVG_CHARS:
        raise ProtocolError(
            "too_large", f"the SVG is longer than {MAX_START_SVG_CHARS:,} characters"
        )
    width = _require_int("width", data.get("width"), 1, MAX_PHOTO_SIDE)
    height = _require_int("height", data.get("height"), 1, MAX_PHOTO_SIDE)
    return StartStrokesRequest(svg=svg, width=width, height=height)


def start_strokes_response(strokes: Any) -> dict[str, Any]:
    """``{"strokes": [[[x, y] x 4], ...]}``: what ``settings.start_strokes`` takes as it is."""
    return {"strokes": [[list(point) for point in stroke] for stroke in strokes]}


def validate_start_strokes_response(data: Any) -> tuple[tuple[tuple[float, float], ...], ...]:
    """The strokes of a ``POST /v1/start-strokes`` answer, checked like a setting."""
    return parse_start_strokes(_expect(data, "strokes", list, "start-strokes response"))


# --- responses ----------------------------------------------------------------------------


def _expect(data: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, Mapping) or key not in data:
        raise ProtocolError("bad_request", f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise ProtocolError("bad_request", f"{where}: {key!r} has the wrong type")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def validate_submit_response(data: Any) -> dict[str, Any]:
    """Check a ``202`` answer to ``POST /v1/jobs``: ``{id, state, queue_position}``."""
    where = "submit response"
    job_id = _expect(data, "id", str, where)
    if not is_job_id(job_id):
        raise ProtocolError("bad_request", f"{where}: malformed job id {job_id!r}")
    if _expect(data, "state", str, where) not in JOB_STATES:
        raise ProtocolError("bad_request", f"{where}: unknown state {data['state']!r}")
    _expect(data, "queue_position", int, where)
    return dict(data)


def validate_status(data: Any) -> dict[str, Any]:
    """Check a ``GET /v1/jobs/{id}`` answer.

    Fields: id, state, queue_position, step, total, best_loss ({level: loss}), elapsed_s,
    eta_s (null when unknown), error (null or ``{"error", "message"}``). Optional:
    ``time_budget_s`` (null: none) and, for a done job, ``stop_reason`` (one of STOP_REASONS:
    a job its budget stopped has ``step`` below ``total``); ``schedule_notes``: what the
    engine's schedule reduced so far and why, one sentence each (see validate_result).
    """
    where = "job status"
    validate_submit_response(data)
    for key in ("step", "total"):
        _expect(data, key, int, where)
    best = _expect(data, "best_loss", dict, where)
    for level, loss in best.items():
        if not str(level).isdigit() or not isinstance(loss, (int, float)):
            raise ProtocolError("bad_request", f"{where}: bad best_loss entry {level!r}")
    _expect(data, "elapsed_s", (int, float), where)
    if data.get("eta_s") is not None:
        _expect(data, "eta_s", (int, float), where)
    if data.get("time_budget_s") is not None:
        _expect(data, "time_budget_s", (int, float), where)
    if data.get("stop_reason") is not None and data["stop_reason"] not in STOP_REASONS:
        raise ProtocolError("bad_request", f"{where}: unknown stop_reason {data['stop_reason']!r}")
    _check_schedule_notes(data, where)
    error = data.get("error")
    if error is not None:
        _expect(error, "error", str, where)
        _expect(error, "message", str, where)
    return dict(data)


def validate_result(data: Any) -> dict[str, Any]:
    """Check a ``GET /v1/jobs/{id}/result`` answer.

    ``{"id", "image": {"width", "height"}, "levels": [{"strokes", "seed", "loss",
    "paths": [{"points": [[x, y] x 4], "width", "color"}]}], "svg", "settings", "models",
    "version"}``; points and widths are in the image's own pixels. Optional: ``steps_run``,
    ``stop_reason`` (one of STOP_REASONS), and for ``?partial=1`` answers ``"partial": true``
    with ``step`` (the step the best strokes so far were taken at). ``schedule_notes``: a list
    of sentences saying what the engine's schedule reduced and why, present only when it
    reduced something (a time budget that could not hold the work: "1 seed instead of 3 and
    120 iterations instead of 2000 to fit 10 min (...)"; seed pruning), so a reduced
    schedule is never silent.
    """
    where = "job result"
    _expect(data, "id", str, where)
    image = _expect(data, "image", dict, where)
    for key in ("width", "height"):
        if _expect(image, key, int, where) <= 0:
            raise ProtocolError("bad_request", f"{where}: image {key} must be positive")
    levels = _expect(data, "levels", list, where)
    if not levels:
        raise ProtocolError("bad_request", f"{where}: no levels")
    for level in levels:
        strokes = _expect(level, "strokes", int, where)
        _expect(level, "seed", int, where)
        _expect(level, "loss", (int, float), where)
        paths = _expect(level, "paths", list, where)
        if len(paths) != strokes:
            raise ProtocolError(
                "bad_request", f"{where}: level {strokes} has {len(paths)} paths, not {strokes}"
            )
        for path in paths:
            points = _expect(path, "points", list, where)
            if len(points) != 4 or not all(
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
                for p in points
            ):
                raise ProtocolError("bad_request", f"{where}: a path needs 4 [x, y] points")
            _expect(path, "width", (int, float), where)
            color = _expect(path, "color", str, where)
            if not _HEX_COLOUR.match(color):
                raise ProtocolError("bad_request", f"{where}: bad colour {color!r}")
    _expect(data, "svg", str, where)
    parse_settings(_expect(data, "settings", dict, where))
    _expect(data, "models", dict, where)
    _expect(data, "version", str, where)
    _check_schedule_notes(data, where)
    return dict(data)


def _check_schedule_notes(data: Mapping[str, Any], where: str) -> None:
    notes = data.get("schedule_notes")
    if notes is not None and (
        not isinstance(notes, list) or not all(isinstance(note, str) for note in notes)
    ):
        raise ProtocolError("bad_request", f"{where}: schedule_notes must be a list of strings")


def validate_health(data: Any) -> dict[str, Any]:
    """Check a ``GET /v1/health`` answer: version, protocol, device, models_loaded, queue_length."""
    where = "health"
    _expect(data, "version", str, where)
    _expect(data, "protocol", int, where)
    _expect(data, "device", str, where)
    _expect(data, "models_loaded", list, where)
    _expect(data, "queue_length", int, where)
    # optional: one entry per worker {name, device, state, pid, rss_bytes, job, restarts...}
    workers = data.get("workers", [])
    if not isinstance(workers, list):
        raise ProtocolError("bad_request", f"{where}: 'workers' must be a list")
    for worker in workers:
        for key in ("name", "device", "state"):
            _expect(worker, key, str, where)
    return dict(data)


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 40 min``, ``3 days 4 h``: rounded as people say it (the
    daemon's clients, the extension and the CLI, word their time estimates alike)."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def parse_error(data: Any) -> ProtocolError | None:
    """The :class:`ProtocolError` an error body describes, or None if it is not one."""
    if not isinstance(data, Mapping):
        return None
    code, message = data.get("error"), data.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return ProtocolError(code if code in ERROR_STATUS else "internal", message)
