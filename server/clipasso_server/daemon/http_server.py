"""The listening socket: limits on slow and numerous clients, and aiohttp's own errors as JSON.

aiohttp answers requests it cannot parse (bad HTTP, a header line too long) itself, as plain
text, and logs each with a traceback; a flood of them once grew the log by 29 MB in 20 s. It
has no cap on connections either: 2,000 slow clients once used up the file limit, and the
running job then could not save its result. Here:

* :class:`JsonErrorHandler` answers those errors in the protocol's JSON error schema and logs
  them through :class:`FloodLog` (one line per kind per interval, with a count);
* a connection must send its headers within ``header_timeout_s`` of connecting or of its
  previous answer (aiohttp's keep-alive timer, which also runs before the first request);
* :class:`LimitedSite` refuses connections beyond a cap that stays below the open-file limit,
  keeping files for the store, the workers and the decoders.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

#: open files kept free for everything that is not a client connection
RESERVED_FILES = 48
#: how often a flood of one kind of trouble is logged
FLOOD_INTERVAL_S = 10.0
#: the listen queue, which is also how many connections asyncio accepts in one go before any
#: refused one is closed again: it must fit in the reserve as well
ACCEPT_BACKLOG = 16


class FloodLog:
    """Logs the first event of a kind, then at most one line per interval with a count."""

    def __init__(self, interval_s: float = FLOOD_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        if more:
            message += f" (and {more} more like it in the last {self.interval_s:g} s)"
        log.warning("%s", message)


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered so that the connections plus the files already open plus
    :data:`RESERVED_FILES` stay under this process's soft RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 32
    return max(4, min(wanted, soft - open_now - RESERVED_FILES))


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering its own parse errors as protocol JSON."""

    flood: FloodLog = FloodLog()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is half sent: only closing is left
            raise ConnectionError("the answer was already started")
        if status >= 500:
            code, text = "internal", "internal error in the daemon (see its log)"
            log.error("internal error while answering a request", exc_info=exc)
        else:
            code = "too_large" if status == 413 else "bad_request"
            reason = str(getattr(exc, "message", None) or message or exc or "").strip()
            text = f"malformed HTTP request: {' '.join(reason.split())[:200] or 'unreadable'}"
            self.flood.note("bad-http", f"refused a malformed HTTP request: {text[24:][:120]}")
        error = protocol.ProtocolError(code, text)
        response = web.json_response(error.to_json(), status=error.status)
        response.force_close()
        return response


class _Refused(asyncio.Protocol):
    """A connection over the cap: told to come back later, then closed at once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps(
            protocol.ProtocolError(
                "queue_full", f"the daemon has {self.cap} connections open; try again shortly"
            ).to_json()
        ).encode()
        head = (
            f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 2\r\nConnection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)  # type: ignore[attr-defined]
        transport.close()


class LimitedSite(web.BaseSite):
    """A TCP site whose connections are :class:`JsonErrorHandler` and at most ``cap``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout_s: float,
    ) -> None:
        super().__init__(runner)
        self.host = host
        self.requested_port = port
        self.cap = connection_cap(max_connections)
        self.header_timeout_s = header_timeout_s
        self.flood = FloodLog()

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.requested_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self.host,
            self.requested_port,
            backlog=ACCEPT_BACKLOG,
            reuse_address=True,
        )
        loop.set_exception_handler(self._loop_error)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own complaints; running out of files while accepting is a flood, logged
        once per interval (asyncio retries the accept a second later by itself)."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            self.flood.note("files", f"out of open files while accepting connections ({exc})")
            return
        loop.default_exception_handler(context)

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self.cap:
            self.flood.note(
                "connections",
                f"refusing new connections: {self.cap} are open (the most this daemon keeps "
                "below its open-file limit)",
            )
            return _Refused(self.cap)
        handler = JsonErrorHandler(
            server,
            loop=asyncio.get_running_loop(),
            access_log=None,
            keepalive_timeout=self.header_timeout_s,
        )
        handler.flood = self.flood  # one log per daemon, not per connection
        return handler
