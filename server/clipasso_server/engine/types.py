"""The engine's inputs and outputs: what to sketch, how far it got, and what came out.

These are plain dataclasses with no torch in them, so the daemon and the CLI can hold, store
and serialise them without touching the engine's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SketchConfig:
    """Everything one sketch job needs to know; the defaults are the reference's.

    The first fifteen fields mirror ``inkscape_clipasso.protocol.SketchSettings`` field for field,
    so ``SketchConfig(**settings.to_json())`` converts a validated request (levels may be a list
    or tuple). ``width`` is the full stroke width in pixels of the ``canvas``-sized square.
    """

    levels: tuple[int, ...] = (4, 8, 16, 32)
    iterations: int = 2000
    seeds: int = 3
    width: float = 3.0
    color: str = "#000000"
    loss_model: str = "RN101"
    saliency_model: str = "ViT-B-32"
    renderer: str = "auto"
    remove_background: bool = False
    seed: int = 0
    #: wall time of the whole ``sketch()`` call, model loading included (the user chose a
    #: total time): the engine runs as many steps as fit and returns the best iterate
    time_budget_s: float | None = None
    #: "full": every seed runs every iteration (the reference); "fast": seed pruning
    schedule: str = "full"
    #: strokes every level starts with, 4 control points each in the original image's pixels
    start_strokes: tuple[tuple[tuple[float, float], ...], ...] = ()
    #: the start strokes do not move (their gradients are masked)
    keep_start_strokes: bool = False
    #: the loss model's arithmetic: "auto" (bf16 autocast where the device computes bf16
    #: natively, float32 elsewhere), "fp32" (the reference's), "bf16"
    precision: str = "auto"
    # Engine-only knobs (not in the protocol):
    canvas: int = 224
    eval_every: int = 10
    augmentations: int = 4
    learning_rate: float = 1.0
    #: stop a (level, seed) early once this many evaluations in a row bring no improvement;
    #: None runs every iteration (the reference).
    plateau_patience: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        strokes = tuple(
            tuple((float(x), float(y)) for x, y in stroke) for stroke in self.start_strokes
        )
        object.__setattr__(self, "start_strokes", strokes)

    def settings_json(self) -> dict[str, Any]:
        """The user-facing settings (the protocol's fields), as plain JSON types."""
        return {
            "levels": list(self.levels),
            "iterations": self.iterations,
            "seeds": self.seeds,
            "width": self.width,
            "color": self.color,
            "loss_model": self.loss_model,
            "saliency_model": self.saliency_model,
            "renderer": self.renderer,
            "remove_background": self.remove_background,
            "seed": self.seed,
            "time_budget_s": self.time_budget_s,
            "schedule": self.schedule,
            "start_strokes": [[list(p) for p in stroke] for stroke in self.start_strokes],
            "keep_start_strokes": self.keep_start_strokes,
            "precision": self.precision,
        }

    def engine_json(self) -> dict[str, Any]:
        """The engine-only knobs: not settable over the protocol, but they change the result,
        so a sketch file records them next to the settings."""
        return {
            "canvas": self.canvas,
            "eval_every": self.eval_every,
            "augmentations": self.augmentations,
            "learning_rate": self.learning_rate,
            "plateau_patience": self.plateau_patience,
        }


@dataclass(frozen=True)
class Stroke:
    """One open cubic Bézier stroke in the original image's pixel coordinates."""

    points: tuple[tuple[float, float], ...]  # exactly 4 control points (x, y)
    width: float  # full width, image pixels
    color: str  # "#rrggbb" or "#rrggbbaa"

    def to_json(self) -> dict[str, Any]:
        return {
            "points": [[x, y] for x, y in self.points],
            "width": self.width,
            "color": self.color,
        }


@dataclass(frozen=True)
class LevelResult:
    """The best sketch found for one abstraction level (over all seeds)."""

    strokes: int
    seed: int
    loss: float
    paths: tuple[Stroke, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "strokes": self.strokes,
            "seed": self.seed,
            "loss": self.loss,
            "paths": [p.to_json() for p in self.paths],
        }


@dataclass(frozen=True)
class SketchResult:
    """All levels of one job, with what is needed to reproduce it.

    ``stop_reason`` says why the optimisation stopped (one of the protocol's STOP_REASONS:
    "iterations", "plateau", "budget", "cancel"); None while it is still running. A partial
    result (``partial=True``) holds the best strokes found by step ``step`` of a job that has
    not finished: a snapshot of a running job, or what a cancelled one had reached.
    """

    image_width: int
    image_height: int
    levels: tuple[LevelResult, ...]
    settings: dict[str, Any]
    models: dict[str, str]  # {"loss": "RN101 <version>", "saliency": "ViT-B-32 <version>"}
    version: str
    device: str
    steps_run: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    partial: bool = False
    step: int | None = None
    #: what a schedule (time-budget planning, seed pruning) reduced and why, in the user's
    #: words ("1 seed instead of 3 and 120 iterations instead of 2000 to fit 10 min (...)")
    schedule_notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The protocol's result fields except ``id`` and ``svg``."""
        data = {
            "image": {"width": self.image_width, "height": self.image_height},
            "levels": [level.to_json() for level in self.levels],
            "settings": self.settings,
            "models": self.models,
            "version": self.version,
            "device": self.device,
            "steps_run": self.steps_run,
        }
        if self.stop_reason is not None:
            data["stop_reason"] = self.stop_reason
        if self.partial:
            data["partial"] = True
            data["step"] = self.step
        if self.schedule_notes:
            data["schedule_notes"] = list(self.schedule_notes)
        return data


@dataclass(frozen=True)
class Progress:
    """Where a running job stands; given to the progress callback after each step.

    Plain data (no tensors), so it can cross a process pipe. ``step_time_s`` is the measured
    seconds per step (None before the first step ended); ``planned_steps`` how many steps the
    engine expects to run in all: ``total``, or fewer when a time budget allows fewer.
    ``snapshot`` is set on evaluation steps at most about once per second (see ``sketch()``):
    the best strokes of every level so far, a partial :class:`SketchResult`; None otherwise.
    ``schedule_notes``: what a schedule has reduced so far and why (see SketchResult).
    """

    step: int
    total: int
    best_loss: dict[int, float]  # level (stroke count) -> best evaluation loss so far
    elapsed_s: float
    step_time_s: float | None = None
    planned_steps: int | None = None
    snapshot: SketchResult | None = None
    schedule_notes: tuple[str, ...] = ()


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]
