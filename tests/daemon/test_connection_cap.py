"""The connection cap: idle connections make room for new clients, and the cap is exact.

Raw sockets against a real daemon on loopback: idle ones that never send a byte, keep-alive
ones between requests, and busy ones whose request body is still arriving.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

from daemon_helpers import HANG_S, assert_error


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=HANG_S)


def _wait_for(condition, what: str, unanswered: list[socket.socket] | None = None) -> None:
    """Wait until ``condition()``; fail at once if one of ``unanswered`` got an answer or was
    closed (a 429, an eviction: the daemon turned away a connection it had room for)."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        for sock in unanswered or ():
            sock.settimeout(0)
            try:
                early = sock.recv(100, socket.MSG_PEEK)
            except BlockingIOError:
                early = None
            finally:
                sock.settimeout(HANG_S)
            assert early is None, f"{what}: answered {early!r}"
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _busy(url: str, port: int) -> socket.socket:
    """A connection whose request is under way: headers sent, the body still to come."""
    sock = _connect(url)
    sock.sendall(
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
    )
    return sock


def _health(sock: socket.socket, port: int, close: bool = True) -> int:
    """GET /v1/health on ``sock``; the status (the answer read whole)."""
    connection = "close" if close else "keep-alive"
    head = f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: {connection}"
    sock.sendall(f"{head}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed in the middle of the answer: {data!r}"
        body += chunk
    json.loads(body)
    return int(head.split()[1])


def test_idle_connections_make_room_for_a_new_client(start_daemon):
    client, daemon = start_daemon(max_connections=8)
    site = daemon.site
    keep_alive = _connect(client.url)
    assert _health(keep_alive, daemon.port, close=False) == 200  # then idle between requests
    idle = [_connect(client.url) for _ in range(site.cap - 1)]  # never send a byte
    _wait_for(
        lambda: site.open_connections == site.cap,
        "the idle connections were counted",
        [keep_alive, *idle],  # none closed while there was room
    )
    for _ in range(3):  # once 429 for as long as the idle ones were held
        newcomer = _connect(client.url)
        assert _health(newcomer, daemon.port) == 200
        newcomer.close()
    # the oldest idle ones were closed for them, the keep-alive one first
    keep_alive.settimeout(HANG_S)
    assert keep_alive.recv(100) == b""
    idle[0].settimeout(HANG_S)
    assert idle[0].recv(100) == b""
    for sock in [keep_alive, *idle]:
        sock.close()


def test_the_cap_is_exact_for_connections_with_requests_under_way(start_daemon):
    client, daemon = start_daemon(max_connections=8)
    site = daemon.site
    busy = [_busy(client.url, daemon.port) for _ in range(site.cap - 1)]
    _wait_for(lambda: site.busy_connections() == site.cap - 1, "the requests were under way", busy)
    # one place is left: a client gets it
    newcomer = _connect(client.url)
    assert _health(newcomer, daemon.port, close=False) == 200
    newcomer.close()
    _wait_for(lambda: site.open_connections == site.cap - 1, "the newcomer was counted out")
    busy.append(_busy(client.url, daemon.port))
    _wait_for(lambda: site.busy_connections() == site.cap, "the last request was under way", busy)
    # all taken by requests under way: the next one is told to come back later
    refused = _connect(client.url)
    data = b""
    while chunk := refused.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert_error(int(head.split()[1]), json.loads(body), "queue_full")
    refused.close()
    for sock in busy:
        sock.close()
    _wait_for(lambda: site.open_connections == 0, "the closed connections were counted out")
    assert client.get("/v1/health")[0] == 200
