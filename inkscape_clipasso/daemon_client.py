"""Talking to the sketch daemon with the standard library: submit, poll, fetch, cancel.

Every request has its own timeout and the whole run has a deadline, so Inkscape never waits
forever. Every answer is checked with the shared protocol module. Failures become
:class:`DaemonError` with a message meant for the user: an unreachable daemon says how to start
one, a daemon error shows the daemon's own message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from inkscape_clipasso import protocol

START_HINT = (
    "Start it in a terminal with:  clipasso serve\n"
    "(or pick the daemon's address on the Daemon page of this extension's dialog)."
)
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class DaemonError(Exception):
    """Anything that stops a sketch coming back from the daemon; the message is for the user."""


class DaemonUnreachableError(DaemonError):
    """No daemon answered at the address."""


class DaemonTimeoutError(DaemonError):
    """One request took longer than its time limit."""


class DaemonClient:
    """The daemon's HTTP API at ``url``; ``request_timeout`` bounds each single request."""

    def __init__(self, url: str, token: str = "", request_timeout: float = 30.0) -> None:
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DaemonError(f"The daemon URL must look like {protocol.DEFAULT_URL}, got {url!r}")
        self.url = url
        self.token = token.strip()
        self.request_timeout = request_timeout
        # The daemon is normally on loopback: never send that through an HTTP proxy.
        handlers = [urllib.request.ProxyHandler({})] if parts.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + protocol.API_PREFIX + path, data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        limit = self.request_timeout if timeout is None else max(0.1, timeout)
        try:
            with self._opener.open(request, timeout=limit) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise DaemonTimeoutError(_timeout_message(self.url, limit)) from None
            raise DaemonUnreachableError(
                f"Could not reach the CLIPasso daemon at {self.url} ({reason}).\n{START_HINT}"
            ) from None
        except TimeoutError:
            raise DaemonTimeoutError(_timeout_message(self.url, limit)) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise DaemonUnreachableError(
                f"The connection to the CLIPasso daemon at {self.url} failed ({exc}).\n{START_HINT}"
            ) from None

    def submit(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """``POST /v1/jobs``; the job's ``{id, state, queue_position}``."""
        return _checked(
            protocol.validate_submit_response, self._request("POST", "/jobs", body, timeout)
        )

    def status(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``."""
        return _checked(
            protocol.validate_status, self._request("GET", f"/jobs/{job_id}", None, timeout)
        )

    def result(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/result``."""
        answer = self._request("GET", f"/jobs/{job_id}/result", None, timeout)
        return _checked(protocol.validate_result, answer)

    def cancel(self, job_id: str) -> None:
        """``DELETE /v1/jobs/{id}``, best effort: errors are ignored (we are already failing)."""
        with contextlib.suppress(DaemonError):
            self._request("DELETE", f"/jobs/{job_id}", None, min(self.request_timeout, 5.0))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DaemonError(
            "The daemon's answer is not JSON: is that address really a CLIPasso daemon?"
        ) from None


def _checked(validate: Callable[[Any], dict[str, Any]], data: Any) -> dict[str, Any]:
    try:
        return validate(data)
    except protocol.ProtocolError as exc:
        raise DaemonError(
            f"The daemon sent an answer this extension does not understand: {exc}"
        ) from None


def _timeout_message(url: str, limit: float) -> str:
    return f"The CLIPasso daemon at {url} did not answer within {limit:.3g} s."


def _http_error(exc: urllib.error.HTTPError) -> DaemonError:
    try:
        body = json.loads(exc.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, OSError):
        body = None
    error = protocol.parse_error(body)
    if error is None:
        return DaemonError(f"The daemon answered HTTP {exc.code} {exc.reason}.")
    if error.code == "unauthorized":
        return DaemonError(
            f"The daemon refused the request: {error.message}\n"
            "Set the token on the Daemon page to the one the daemon was started with (--token)."
        )
    return DaemonError(f"The daemon refused the request: {error.message} ({error.code})")


def run_jobs(
    client: DaemonClient,
    bodies: Sequence[dict[str, Any]],
    deadline_s: float,
    poll_interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Submit every job, poll them all until done, fetch their results (in ``bodies``' order).

    All jobs are polled on every round, because the daemon cancels a job nobody asks about for
    a minute. On any failure the jobs still open are cancelled and DaemonError is raised.
    """
    end = clock() + deadline_s
    too_late = DaemonError(
        f"The sketch did not finish within the timeout ({deadline_s:.0f} s); raise the "
        "timeout on the Daemon page, or ask for fewer iterations or levels."
    )

    def remaining() -> float:
        left = end - clock()
        if left <= 0:
            raise too_late
        return min(client.request_timeout, left)

    job_ids: list[str] = []
    finished: set[str] = set()
    try:
        for body in bodies:
            job_ids.append(client.submit(body, remaining())["id"])
        delay = min(0.05, poll_interval)
        while len(finished) < len(job_ids):
            for job_id in job_ids:
                if job_id in finished:
                    continue
                status = client.status(job_id, remaining())
                if status["state"] == protocol.DONE:
                    finished.add(job_id)
                elif status["state"] in protocol.FINAL_STATES:
                    finished.add(job_id)
                    raise DaemonError(_failure_message(status))
            if len(finished) < len(job_ids):
                sleep(min(delay, max(0.0, end - clock())))
                delay = min(delay * 2, poll_interval)
        return [client.result(job_id, remaining()) for job_id in job_ids]
    except BaseException as exc:
        for job_id in job_ids:
            if job_id not in finished:
                client.cancel(job_id)
        # A request cut short by the overall deadline means the deadline passed.
        if isinstance(exc, DaemonTimeoutError) and clock() >= end:
            raise too_late from None
        raise


def _failure_message(status: dict[str, Any]) -> str:
    error = status.get("error") or {}
    message = error.get("message") or "no reason given"
    code = f" ({error['error']})" if error.get("error") else ""
    return f"The daemon's sketch job {status['state']}: {message}{code}"
