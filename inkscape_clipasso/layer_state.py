"""What a sketch layer remembers about its job, and whether the user has edited a level since.

A sketch inserted before its job ended (the user chose not to wait, or the wait ran out) has to
be found again by Extensions > CLIPasso > Update sketches, in a document Inkscape has saved and
reopened. So the parent layer "CLIPasso: <photo>" carries, in the CLIPasso namespace, the job's
id, the daemon's URL, the settings, where the job stood (``state``: running, done or stopped)
and how the strokes were drawn; each level layer carries a digest of the paths it was given.
When a level's digest no longer matches its content, the user has changed it (moved, restyled,
added or deleted a stroke), and an update must not overwrite it.

Names say the same to the user: "16 strokes, running: step 40 of 2000" while the job goes on,
"16 strokes, unfinished: step 300 of 2000 (time limit)" for a job that ended early.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import inkex

from inkscape_clipasso import protocol

#: Namespace of the attributes that record how a sketch was made.
CLIPASSO_NS = "https://clipasso-inkscape.invalid/ns/1"
#: A layer's job is still going in the daemon: Update sketches looks for these.
RUNNING = "running"
#: The job ran all its steps (or stopped improving): nothing more will come.
DONE = "done"
#: The job ended before all its steps (time limit, cancelled): nothing more will come.
STOPPED = "stopped"
STATES = (RUNNING, DONE, STOPPED)
#: Why a job that ended early did, as the layer names say it.
_WHY = {"budget": "time limit", "cancel": "cancelled"}
#: The progress part of a label this module wrote (also the old "unfinished (step k of N)").
_PROGRESS_SUFFIX = re.compile(r", (?:running|unfinished)\b[^,]*$")
_SVG_G = "{http://www.w3.org/2000/svg}g"
#: What a level holds besides its strokes: kept on update, left out of the digest.
NOT_CONTENT = ("{http://www.w3.org/2000/svg}desc", "{http://www.w3.org/2000/svg}title")


def ns(name: str) -> str:
    """An attribute name in the CLIPasso namespace."""
    return f"{{{CLIPASSO_NS}}}{name}"


@dataclass(frozen=True)
class Progress:
    """Where a job stood when its strokes were taken: ``state`` (one of :data:`STATES`),
    ``step`` of ``total`` (step None: no strokes yet), ``stop_reason`` as the daemon says it."""

    state: str
    step: int | None
    total: int
    stop_reason: str | None = None

    def note(self) -> str | None:
        """The label's suffix: None for a finished sketch."""
        if self.state == RUNNING:
            if self.step is None:
                return "running: no strokes yet"
            return f"running: step {self.step} of {self.total}"
        if self.state == STOPPED:
            why = _WHY.get(self.stop_reason or "", "stopped early")
            return f"unfinished: step {self.step or 0} of {self.total} ({why})"
        return None


def progress_of(result: dict[str, Any], total: int) -> Progress:
    """The progress a daemon result shows: a ``partial`` one (best so far of a job still
    going; without a ``step``, no strokes yet) is running; a final one that ran fewer steps
    than asked because of its time budget or a cancel is stopped; else done."""
    reason = result.get("stop_reason")
    if result.get("partial"):
        step = result.get("step")  # none: inserted before the daemon had any strokes
        return Progress(RUNNING, None if step is None else int(step), total, reason)
    ran = result.get("steps_run", result.get("step"))
    ran = total if ran is None else int(ran)
    if reason in _WHY and ran < total:
        return Progress(STOPPED, ran, total, reason)
    return Progress(DONE, ran, total, reason)


def with_progress(label: str, progress: Progress | None) -> str:
    """``label`` with its progress suffix replaced by ``progress``'s (removed when finished);
    a name the user gave the layer is kept."""
    stem = _PROGRESS_SUFFIX.sub("", label or "")
    note = progress.note() if progress is not None else None
    return stem if note is None else f"{stem}, {note}"


@dataclass(frozen=True)
class SketchRecord:
    """What a parent sketch layer records about its job (the attributes' round trip).

    ``url``: the daemon's; empty for a layer made before it was recorded.
    ``stroke_width``: the chosen width in root user units, None for "as the daemon's";
    ``image_sha256``: of the bitmap sent, so a later run can tell the very same photo."""

    job: str
    url: str
    settings: dict[str, Any]
    source: str
    progress: Progress
    image_sha256: str | None = None
    stroke_width: float | None = None


def write_record(layer: inkex.BaseElement, record: SketchRecord) -> None:
    """Record ``record`` on ``layer`` (settings as sorted JSON, so equal settings read equal)."""
    layer.set(ns("job"), record.job)
    layer.set(ns("url"), record.url)
    layer.set(ns("settings"), json.dumps(record.settings, sort_keys=True))
    layer.set(ns("source"), record.source)
    if record.image_sha256 is not None:
        layer.set(ns("image-sha256"), record.image_sha256)
    write_progress(layer, record.progress)
    if record.stroke_width is None:
        layer.attrib.pop(ns("stroke-width"), None)
    else:
        layer.set(ns("stroke-width"), repr(float(record.stroke_width)))


def write_progress(layer: inkex.BaseElement, progress: Progress) -> None:
    """The job's state and the step its strokes were taken at; ``partial`` marks strokes that
    are a best-so-far snapshot of a job still going."""
    layer.set(ns("state"), progress.state)
    layer.set(ns("total"), str(progress.total))
    if progress.step is None:
        layer.attrib.pop(ns("step"), None)
    else:
        layer.set(ns("step"), str(progress.step))
    if progress.state == RUNNING:
        layer.set(ns("partial"), "true")
    else:
        layer.attrib.pop(ns("partial"), None)


def read_record(layer: inkex.BaseElement) -> SketchRecord | None:
    """The record of a parent sketch layer, or None when ``layer`` is not one (or its record
    is damaged: a layer that cannot be read is left alone)."""
    job, url = layer.get(ns("job")), layer.get(ns("url")) or ""
    state = layer.get(ns("state"))
    if state is None and layer.get(ns("settings")):  # made before the state was recorded
        state = RUNNING if layer.get(ns("partial")) == "true" else DONE
    if not job or not protocol.is_job_id(job) or state not in STATES:
        return None
    try:
        settings = json.loads(layer.get(ns("settings")) or "null")
        protocol.parse_settings(settings)
        total = int(layer.get(ns("total")) or settings["iterations"])
        step_text = layer.get(ns("step"))
        step = None if step_text is None else int(step_text)
        width_text = layer.get(ns("stroke-width"))
        width = None if width_text is None else float(width_text)
    except (ValueError, TypeError, KeyError):  # ProtocolError is a ValueError
        return None
    progress = Progress(state, step, total, layer.get(ns("stop-reason")))
    return SketchRecord(
        job=job,
        url=url,
        settings=settings,
        source=layer.get(ns("source")) or "",
        progress=progress,
        image_sha256=layer.get(ns("image-sha256")),
        stroke_width=width,
    )


def sketch_layers(document: inkex.BaseElement) -> list[tuple[inkex.BaseElement, SketchRecord]]:
    """Every parent sketch layer of the document with its record, in document order."""
    found = []
    for group in document.iter(_SVG_G):
        record = read_record(group)
        if record is not None:
            found.append((group, record))
    return found


def _canonical(element: inkex.BaseElement) -> list[Any]:
    """What an edit changes about one element: its tag, geometry and look, whitespace-free
    (Inkscape keeps attributes it did not touch byte for byte; ids it may add do not count)."""
    attributes = {
        str(name): " ".join(str(value).split())
        for name, value in element.attrib.items()
        if name not in ("id",) and not str(name).startswith(f"{{{CLIPASSO_NS}}}")
    }
    return [
        str(element.tag),
        sorted(attributes.items()),
        [_canonical(child) for child in element if isinstance(child.tag, str)],
    ]


def level_digest(level: inkex.BaseElement) -> str:
    """A digest of a level layer's content (its strokes, their order, geometry and style;
    not its description or title, which say what happened to it)."""
    content = [
        _canonical(child)
        for child in level
        if isinstance(child.tag, str) and child.tag not in NOT_CONTENT
    ]
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_level(level: inkex.BaseElement) -> None:
    """Record the digest of what the level holds now (right after inserting its strokes)."""
    level.set(ns("digest"), level_digest(level))


def is_edited(level: inkex.BaseElement) -> bool:
    """Whether the level's content differs from what was inserted (no digest: unknown, so
    counted as edited: it is never overwritten)."""
    recorded = level.get(ns("digest"))
    return recorded is None or recorded != level_digest(level)


__all__ = [
    "CLIPASSO_NS",
    "DONE",
    "NOT_CONTENT",
    "RUNNING",
    "STOPPED",
    "Progress",
    "SketchRecord",
    "is_edited",
    "level_digest",
    "ns",
    "progress_of",
    "read_record",
    "seal_level",
    "sketch_layers",
    "with_progress",
    "write_progress",
    "write_record",
]
