"""One job's state, as the queue keeps it in memory and the store keeps it on disk.

A job's fields change under the queue's lock only (:class:`~clipasso_server.daemon.job_table.
JobTable`). The errors here are what an unfinished job ends with when the daemon stops: a
shutdown's ``interrupted`` (the user did not ask for it to stop) or, found at start-up, a
crash's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from inkscape_clipasso import protocol

SHUTDOWN = "the daemon is shutting down"
INTERRUPTED_ERROR = {
    "error": "shutting_down",
    "message": "the daemon stopped before this job finished; submit it again",
}
#: a job found unfinished at start-up: the daemon was killed or crashed, it did not shut down
CRASHED_ERROR = {
    "error": "interrupted",
    "message": "the daemon was stopped abruptly (killed or crashed) before this job finished; "
    "submit it again",
}


def new_job_id() -> str:
    """32 lowercase hex digits (uuid4), the shape ``protocol.is_job_id`` accepts."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """One job's state; fields are changed under the queue's lock only."""

    id: str
    settings: dict[str, Any]
    name: str = ""
    image: bytes | None = None  # dropped once the job has run
    image_sha256: str = ""
    created_at: float = field(default_factory=time.time)
    state: str = protocol.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    total: int = 0
    best_loss: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    reason: str | None = None  # why it was cancelled or interrupted
    step_time_s: float | None = None  # mean seconds per optimisation step
    detached: bool = False  # never cancelled by the abandonment watchdog
    #: why a done job's optimisation stopped (one of protocol.STOP_REASONS): a job its time
    #: budget stopped at step 4 of 2000 must not look finished to the live page
    stop_reason: str | None = None
    #: what the engine's schedule reduced and why (time-budget planning, seed pruning)
    schedule_notes: tuple[str, ...] = ()
    # in memory only
    cache_key: str | None = None  # the result cache's key, computed at submission
    snapshot: dict[str, Any] | None = None  # the latest best-so-far result body
    snapshot_saved_at: float | None = None  # time.monotonic() of the latest save to disk
    last_seen: float = field(default_factory=time.monotonic)
    cancel_reason: str | None = None
    #: seconds per step the earlier jobs measured over their whole run, scaled to this job's
    #: levels x seeds when it started (None: nothing measured before)
    prior_step_s: float | None = None

    def record(self) -> dict[str, Any]:
        """What goes to disk: everything but the image and the in-memory bookkeeping."""
        return {
            "id": self.id,
            "name": self.name,
            "settings": self.settings,
            "image_sha256": self.image_sha256,
            "created_at": self.created_at,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "step": self.step,
            "total": self.total,
            "best_loss": self.best_loss,
            "error": self.error,
            "reason": self.reason,
            "step_time_s": self.step_time_s,
            "detached": self.detached,
            "stop_reason": self.stop_reason,
            "schedule_notes": list(self.schedule_notes),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """A job read back from disk (finished, or about to be marked interrupted)."""
        settings = record.get("settings")
        best = record.get("best_loss")
        return cls(
            id=record["id"],
            settings=settings if isinstance(settings, dict) else {},
            name=str(record.get("name") or ""),
            image_sha256=str(record.get("image_sha256") or ""),
            created_at=_number(record.get("created_at"), 0.0),
            state=record.get("state") if record.get("state") in protocol.JOB_STATES else "failed",
            started_at=_number(record.get("started_at"), None),
            finished_at=_number(record.get("finished_at"), None),
            step=int(_number(record.get("step"), 0)),
            total=int(_number(record.get("total"), 0)),
            best_loss={
                str(k): float(v)
                for k, v in (best.items() if isinstance(best, dict) else ())
                if str(k).isdigit() and isinstance(v, (int, float))
            },
            error=record.get("error") if isinstance(record.get("error"), dict) else None,
            reason=record.get("reason") if isinstance(record.get("reason"), str) else None,
            step_time_s=_number(record.get("step_time_s"), None),
            detached=record.get("detached") is True,
            stop_reason=(
                record.get("stop_reason")
                if record.get("stop_reason") in protocol.STOP_REASONS
                else None
            ),
            schedule_notes=schedule_notes(record.get("schedule_notes")),
        )

    def elapsed_s(self, now: float) -> float:
        """Seconds spent running (so far, or in all once finished); 0 while queued."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)

    def remaining_steps(self) -> int:
        return max(0, self.total - self.step)

    def sketches(self) -> int:
        """levels x seeds: what one optimisation step costs is proportional to it."""
        levels = self.settings.get("levels")
        seeds = self.settings.get("seeds")
        defaults = protocol.SketchSettings()
        n_levels = len(levels) if isinstance(levels, list) else len(defaults.levels)
        return n_levels * (seeds if isinstance(seeds, int) and seeds > 0 else defaults.seeds)


def _number(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


def finish(
    job: Job, state: str, now: float, reason: str | None, error: dict[str, str] | None
) -> None:
    """Put ``job`` in its final ``state`` (call with the queue's lock held); its image goes."""
    job.state = state
    job.finished_at = now
    job.reason = reason
    job.error = dict(error) if error else None
    job.image = None


def schedule_notes(value: Any) -> tuple[str, ...]:
    """The schedule notes of a record or result (anything else reads as none)."""
    if not isinstance(value, list):
        return ()
    return tuple(note for note in value if isinstance(note, str))
