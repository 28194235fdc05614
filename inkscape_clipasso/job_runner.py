"""Waiting for sketch jobs: submit, poll, estimate, fetch, and what to do when time runs out.

All jobs are polled on every round, because the daemon cancels a (non-detached) job nobody asks
about for a minute: that is also what makes Cancel in Inkscape free the daemon. The first time
the daemon knows how long the jobs will take, the estimate is kept for the layers and checked
against the time left. When the wait's deadline passes, the jobs are either cancelled (and the
run fails) or, when the user chose to keep the work, left running in the daemon (they were
submitted detached) while their best strokes so far are fetched and inserted.

The user may also choose not to wait at all ("insert now, update later"), or not to wait when
the daemon expects the jobs to take longer than about a minute: then the wait ends as soon as
the jobs are submitted (or the estimate is known), they are left running, and whatever strokes
the daemon has so far (possibly none) come back, for layers that Update sketches finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inkscape_clipasso import protocol
from inkscape_clipasso.daemon_client import (
    DaemonClient,
    DaemonError,
    DaemonRefusedError,
    DaemonTimeoutError,
)
from inkscape_clipasso.estimate import Estimate, is_far_beyond, too_long_message

#: Longest request for the best-so-far results once the deadline has passed.
LATE_REQUEST_S = 10.0


@dataclass(frozen=True)
class WaitOptions:
    """``deadline_s``: the whole wait; ``keep_running``: at the deadline, insert the best
    strokes so far and leave the (detached) jobs running instead of cancelling them;
    ``limit_text``: the user's time limit as the messages say it; ``on_submitted`` gets the
    job ids once all are submitted (to open the live view); ``abandoned`` says, between
    polls, whether the user gave up (Cancel in Inkscape): the jobs are then cancelled."""

    deadline_s: float
    keep_running: bool = False
    limit_text: str = ""
    poll_interval: float = 0.5
    on_submitted: Callable[[list[str]], None] | None = None
    abandoned: Callable[[], bool] | None = None
    #: end the wait and leave the jobs running once the daemon's estimate exceeds this many
    #: seconds (0: right after submitting; None: wait as above). The jobs must be detached.
    insert_now_beyond_s: float | None = None


@dataclass(frozen=True)
class JobOutcome:
    """One job's result (final, or best so far with ``"partial": true``; None: inserted
    before the daemon had any strokes), the daemon's first estimate for the run (None if it
    never gave one), how long the wait took, the job's id and whether the daemon answered
    from its cache."""

    result: dict[str, Any] | None
    estimate: Estimate | None
    waited_s: float
    job_id: str = ""
    cached: bool = False


def _eta(status: dict[str, Any]) -> float | None:
    if status["state"] == protocol.DONE:
        return 0.0
    eta = status.get("eta_s")
    return None if eta is None else float(eta)


def run_jobs(
    client: DaemonClient,
    bodies: Sequence[dict[str, Any]],
    options: WaitOptions,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    resume: Sequence[str | None] = (),
) -> list[JobOutcome]:
    """Submit every job, wait for them, and return their outcomes in ``bodies``' order.

    ``resume`` may give, per body, the id of a job an earlier run left running for the same
    photo and settings: while the daemon still has it (queued, running or done), it is waited
    for instead of submitting the same work again.

    Raises DaemonError with a message for the user; the jobs still open are cancelled first,
    except those left running on purpose (``keep_running`` at the deadline).
    """
    start = clock()
    end = start + options.deadline_s
    limit = options.limit_text or f"{options.deadline_s:.0f} s"
    too_late = DaemonError(
        f"The sketch did not finish within the time limit ({limit}) and was cancelled; "
        "choose a longer time limit, fewer iterations, levels or seeds, or "
        '"insert the best strokes so far" on the Output page.'
    )

    def remaining() -> float:
        left = end - clock()
        if left <= 0:
            raise _DeadlinePassedError
        return min(client.request_timeout, left)

    job_ids: list[str] = []
    finished: set[str] = set()
    statuses: dict[str, dict[str, Any]] = {}
    estimate: Estimate | None = None
    leave_running = False
    cached: set[str] = set()
    early = judged = False
    try:
        for index, body in enumerate(bodies):
            earlier = resume[index] if index < len(resume) else None
            job_id = _still_there(client, earlier, remaining()) if earlier else None
            if job_id is None:
                answer = client.submit(body, remaining())
                job_id = answer["id"]
                if answer.get("cached"):
                    cached.add(job_id)
            job_ids.append(job_id)
        if options.on_submitted is not None:
            options.on_submitted(list(job_ids))
        delay = min(0.05, options.poll_interval)
        while len(finished) < len(job_ids):
            try:
                _poll_round(client, job_ids, finished, statuses, remaining)
            except (_DeadlinePassedError, DaemonTimeoutError):
                if clock() < end:
                    raise  # one slow request, long before the deadline
                if not options.keep_running:
                    raise too_late from None
                leave_running = True
                break
            if options.abandoned is not None and options.abandoned():
                raise DaemonError("Cancelled in Inkscape; the daemon's jobs were cancelled.")
            if estimate is None:
                estimate = _estimate(statuses, job_ids)
            beyond = options.insert_now_beyond_s
            if (
                beyond is not None
                and len(finished) < len(job_ids)
                and (beyond <= 0 or (estimate is not None and estimate.seconds > beyond))
            ):
                # not waiting beats refusing a job too long for the limit: it goes on detached
                leave_running = early = True
                break
            if (
                estimate is not None
                and not judged
                and not options.keep_running
                and is_far_beyond(estimate, end - clock())
            ):
                raise DaemonError(too_long_message(estimate, limit))
            judged = estimate is not None  # once, on the first estimate
            if len(finished) < len(job_ids):
                sleep(min(delay, max(0.0, end - clock())))
                delay = min(delay * 2, options.poll_interval)
        results = [
            _fetch(client, job_id, job_id not in finished, remaining, leave_running, early)
            for job_id in job_ids
        ]
        waited = clock() - start
        return [
            JobOutcome(result, estimate, waited, job_id, job_id in cached)
            for result, job_id in zip(results, job_ids, strict=True)
        ]
    except BaseException as exc:
        if not leave_running:
            for job_id in job_ids:
                if job_id not in finished:
                    client.cancel(job_id)
        # A request cut short by the overall deadline means the deadline passed.
        if isinstance(exc, _DeadlinePassedError) or (
            isinstance(exc, DaemonTimeoutError) and clock() >= end and not leave_running
        ):
            raise too_late from None
        raise


def _still_there(client: DaemonClient, job_id: str, timeout: float) -> str | None:
    """``job_id`` when the daemon still has that job going or done, else None."""
    try:
        state = client.status(job_id, timeout)["state"]
    except DaemonRefusedError:  # not_found: pruned, or another daemon
        return None
    return job_id if state in (protocol.QUEUED, protocol.RUNNING, protocol.DONE) else None


class _DeadlinePassedError(Exception):
    """The wait's deadline passed before a request could be made."""


def _poll_round(
    client: DaemonClient,
    job_ids: Sequence[str],
    finished: set[str],
    statuses: dict[str, dict[str, Any]],
    remaining: Callable[[], float],
) -> None:
    """One status request per unfinished job; a failed job ends the run with its reason."""
    for job_id in job_ids:
        if job_id in finished:
            continue
        status = client.status(job_id, remaining())
        statuses[job_id] = status
        if status["state"] == protocol.DONE:
            finished.add(job_id)
        elif status["state"] in protocol.FINAL_STATES:
            finished.add(job_id)
            raise DaemonError(_failure_message(status))


def _fetch(
    client: DaemonClient,
    job_id: str,
    partial: bool,
    remaining: Callable[[], float],
    late: bool,
    empty_ok: bool = False,
) -> dict[str, Any] | None:
    """The final result, or (``partial``) the best strokes so far of a job left running
    (None when it has none yet and ``empty_ok``: inserting before the strokes exist)."""
    timeout = min(client.request_timeout, LATE_REQUEST_S) if late else remaining()
    if not partial:
        return client.result(job_id, timeout)
    try:
        return client.result(job_id, timeout, partial=True)
    except DaemonRefusedError as exc:
        if exc.code != "not_ready":
            raise
        if empty_ok:
            return None
        raise DaemonError(
            "The time limit was reached before the daemon had any strokes to show, so nothing "
            "was inserted. The job keeps running in the daemon: run the extension again on the "
            "same photo with the same settings once it is done, and its sketch is inserted at "
            "once."
        ) from None


def _estimate(statuses: dict[str, dict[str, Any]], job_ids: Sequence[str]) -> Estimate | None:
    """When every job has an ETA: the longest (the daemon's queue makes the last job's ETA
    cover those before it) and the measured speed; None while any ETA is still unknown."""
    etas = [_eta(statuses[job_id]) if job_id in statuses else None for job_id in job_ids]
    if not etas or any(eta is None for eta in etas) or not any(etas):
        return None  # unknown yet, or nothing left to estimate (all done: cached)
    rates = [
        float(status["steps_per_s"])
        for status in statuses.values()
        if isinstance(status.get("steps_per_s"), (int, float)) and status["steps_per_s"] > 0
    ]
    return Estimate(max(etas), min(rates) if rates else None)


def _failure_message(status: dict[str, Any]) -> str:
    error = status.get("error") or {}
    message = error.get("message") or "no reason given"
    code = f" ({error['error']})" if error.get("error") else ""
    return f"The daemon's sketch job {status['state']}: {message}{code}"


__all__ = ["JobOutcome", "WaitOptions", "run_jobs"]
