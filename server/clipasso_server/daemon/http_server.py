"""The listening socket: limits on slow and numerous clients, and aiohttp's own errors as JSON.

aiohttp answers requests it cannot parse (bad HTTP, a header line too long) itself, as plain
text, and logs each with a traceback; a flood of them once grew the log by 29 MB in 20 s. It
has no cap on connections either: 2,000 slow clients once used up the file limit, and the
running job then could not save its result. Here:

* :class:`JsonErrorHandler` answers those errors in the protocol's JSON error schema and logs
  them through :class:`FloodLog` (one line per kind per interval, with a count);
* a connection must send its headers within ``header_timeout_s`` of connecting or of its
  previous answer (aiohttp's keep-alive timer, which also runs before the first request);
* :class:`LimitedSite` accepts connections itself and keeps them under a cap that stays
  below the open-file limit, keeping files for the store, the workers and the decoders: at
  the cap it closes the oldest idle connection for a new one, and refuses (429) only when
  every connection has a request under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

#: open files kept free for everything that is not a client connection
RESERVED_FILES = 48
#: how often a flood of one kind of trouble is logged
FLOOD_INTERVAL_S = 10.0
#: the kernel's queue of connections not accepted yet (they hold no file of this process)
LISTEN_BACKLOG = 128
#: connections accepted in one go before the loop serves other work
ACCEPT_BATCH = 16
#: how long accepting pauses after running out of files
ACCEPT_RETRY_S = 1.0


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
    """aiohttp's connection handler, answering its own parse errors as protocol JSON (and
    logging them to ``flood``, the daemon's one :class:`FloodLog`, set by its site)."""

    flood: FloodLog

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
            reason = parse_error_summary(str(getattr(exc, "message", None) or message or exc or ""))
            text = f"malformed HTTP request: {reason}"
            self.flood.note("bad-http", f"refused a malformed HTTP request: {reason}")
        error = protocol.ProtocolError(code, text)
        response = web.json_response(error.to_json(), status=error.status)
        response.force_close()
        return response


def parse_error_summary(reason: str) -> str:
    """What a parse error says, without the request bytes it quotes: aiohttp's parser quotes
    the offending header line (``Invalid header value char: b'Authorization: Bearer ...'``),
    and that line may hold a credential, which must reach neither the log nor the reply."""
    first = reason.strip().split("\n", 1)[0]
    quoted = [i for i in (first.find(q) for q in ("b'", 'b"', "'", '"')) if i >= 0]
    if quoted:
        first = first[: min(quoted)]
    summary = " ".join(first.split()).rstrip(" :")[:120]
    return summary or "unreadable"


def refusal(cap: int) -> bytes:
    """The whole answer to a connection over the cap: come back later."""
    body = json.dumps(
        protocol.ProtocolError(
            "queue_full", f"the daemon has {cap} connections open; try again shortly"
        ).to_json()
    ).encode()
    head = (
        f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 2\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking sockets bound and listening on every address of ``host`` (as
    ``loop.create_server`` binds them), for :class:`LimitedSite` to accept on itself."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Listener:
    """What aiohttp's runner needs of a site's server (``sockets``, ``close``)."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.remove_reader(sock)
            sock.close()
        self.sockets = []


class CountedHandler(JsonErrorHandler):
    """A connection that tells its site once when it is gone, so the site's count of open
    sockets is exact."""

    released = False

    @property
    def idle(self) -> bool:
        """No request of this connection is being answered or waits to be: it is a keep-alive
        connection between requests, or has not sent a complete request line and headers."""
        # aiohttp's own idle test (its keep-alive timer) reads the same two fields
        return not getattr(self, "_request_in_progress", True) and not getattr(
            self, "_messages", True
        )

    def __init__(self, *args: Any, on_gone: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_gone = on_gone

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._on_gone()

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.release()


class LimitedSite(web.BaseSite):
    """A TCP site with at most ``cap`` connections, each a :class:`JsonErrorHandler`.

    It accepts connections itself rather than through ``loop.create_server``: asyncio accepts
    a whole batch before the protocol factory sees any of them, and closes a refused one only
    some loop turns later, so batches of refused sockets piled up past the reserve (a flood
    under a file limit of 128 once ran out of files). Here a socket is counted the moment it
    is accepted, and one over the cap is answered 429 and closed before the next accept.
    """

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
        #: accepted sockets not closed yet: serving, or being handed to aiohttp
        self.open_connections = 0
        #: the connections being served, oldest first (dicts keep their insertion order)
        self._serving: dict[CountedHandler, None] = {}
        self._handing_over: set[asyncio.Future[None]] = set()
        self._refusal = refusal(self.cap)

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.requested_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        sockets = listening_sockets(self.host, self.requested_port, LISTEN_BACKLOG)
        self._server = _Listener(sockets)  # type: ignore[assignment]
        for sock in sockets:
            loop.add_reader(sock, self._accept, sock)

    def _accept(self, listener: socket.socket) -> None:
        """Accept what is waiting (a few at a time, so requests get their turn)."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._pause(listener, exc)
                return
            at_cap = self.open_connections >= self.cap
            if at_cap and not self._make_room():
                self._refuse(conn)
                continue
            self.open_connections += 1
            conn.setblocking(False)
            task = asyncio.ensure_future(self._serve(conn))
            self._handing_over.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._handing_over.discard)
            if at_cap:  # the socket closed for this one goes on the loop's next turn: no
                return  # more accepts before that, or the sockets would pile up past the cap

    def _pause(self, listener: socket.socket, exc: OSError) -> None:
        """Out of files (or another accept error): stop accepting for a second."""
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            self.flood.note("files", f"out of open files while accepting connections ({exc})")
        else:
            self.flood.note("accept", f"accepting a connection failed ({exc})")
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener)

        def resume() -> None:
            if listener.fileno() >= 0:  # not closed by stop() meanwhile
                loop.add_reader(listener, self._accept, listener)

        loop.call_later(ACCEPT_RETRY_S, resume)

    def busy_connections(self) -> int:
        """How many connections have a request under way (not idle)."""
        return sum(not handler.idle for handler in self._serving)

    def _make_room(self) -> bool:
        """Close the oldest idle connection (between keep-alive requests, or not done sending
        its headers) so that a new client gets in; whether there was one. One local process
        holding hundreds of idle sockets once locked every other client out with 429s."""
        victim = next((handler for handler in self._serving if handler.idle), None)
        if victim is None:
            return False
        self.flood.note(
            "evicted",
            f"{self.cap} connections are open: closing the oldest idle ones to let new clients in",
        )
        victim.force_close()
        victim.release()  # counted out now: its socket closes on the loop's next turn
        return True

    def _refuse(self, conn: socket.socket) -> None:
        self.flood.note(
            "connections",
            f"refusing new connections: {self.cap} are open (the most this daemon keeps "
            "below its open-file limit)",
        )
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(self._refusal)  # a fresh socket's buffer takes it whole
        conn.close()

    async def _serve(self, conn: socket.socket) -> None:
        handler = self._handler()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: handler, conn)
        except (Exception, asyncio.CancelledError) as exc:  # the peer left, or shutting down
            log.debug("dropped an accepted connection: %r", exc)
            conn.close()
            handler.release()
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _handler(self) -> CountedHandler:
        server = self._runner.server
        assert server is not None
        handler = CountedHandler(
            server,
            loop=asyncio.get_running_loop(),
            access_log=None,
            keepalive_timeout=self.header_timeout_s,
            on_gone=lambda: self._gone(handler),
        )
        handler.flood = self.flood  # one log per daemon, not per connection
        self._serving[handler] = None
        return handler

    def _gone(self, handler: CountedHandler) -> None:
        self.open_connections -= 1
        self._serving.pop(handler, None)
