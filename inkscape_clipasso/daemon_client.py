"""Talking to the sketch daemon with the standard library: submit, poll, fetch, cancel.

Every request has its own timeout and the whole run has a deadline, so Inkscape never waits
forever. Every answer is checked with the shared protocol module. Failures become
:class:`DaemonError` with a message meant for the user: an unreachable daemon says how to start
one (with the command recorded at install time), a daemon error shows the daemon's own
message. Waiting for jobs is :mod:`inkscape_clipasso.job_runner`'s job.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from inkscape_clipasso import protocol
from inkscape_clipasso.daemon_command import serve_command


def start_hint() -> str:
    """How to start the daemon, with the command that works on this machine."""
    return (
        f"Start it in a terminal with:  {serve_command()}\n"
        "(or pick the daemon's address on the Daemon page of this extension's dialog)."
    )


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class DaemonError(Exception):
    """Anything that stops a sketch coming back from the daemon; the message is for the user."""


class DaemonUnreachableError(DaemonError):
    """No daemon answered at the address."""


class DaemonTimeoutError(DaemonError):
    """One request took longer than its time limit."""


class DaemonRefusedError(DaemonError):
    """The daemon answered with an error body; ``code`` is its error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


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
                f"Could not reach the CLIPasso daemon at {self.url} ({reason}).\n{start_hint()}"
            ) from None
        except TimeoutError:
            raise DaemonTimeoutError(_timeout_message(self.url, limit)) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise DaemonUnreachableError(
                f"The connection to the CLIPasso daemon at {self.url} failed ({exc}).\n"
                f"{start_hint()}"
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

    def result(
        self, job_id: str, timeout: float | None = None, partial: bool = False
    ) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/result``; with ``partial``, the best strokes so far of a job
        still running (``"partial": true, "step": k``; refused with ``not_ready`` before the
        first snapshot, the final result once done)."""
        path = f"/jobs/{job_id}/result" + ("?partial=1" if partial else "")
        return _checked(protocol.validate_result, self._request("GET", path, None, timeout))

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
        return DaemonRefusedError(
            f"The daemon refused the request: {error.message}\n"
            "Set the token on the Daemon page to the one the daemon was started with (--token).",
            error.code,
        )
    return DaemonRefusedError(
        f"The daemon refused the request: {error.message} ({error.code})", error.code
    )
