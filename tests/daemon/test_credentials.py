"""No log line and no reply ever holds a credential, however the ``Authorization`` header is
broken: raw requests over loopback to a real daemon started with ``--token``."""

from __future__ import annotations

import json
import logging
import socket
from urllib.parse import urlsplit

import pytest

TOKEN = "s3cretTOKEN42"


def _exchange(url: str, raw: bytes) -> tuple[int, bytes]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer s3cret\x01TOKEN42",  # a control byte: aiohttp's parser refuses the line
        b"Bearer s3cretTOKEN42\x7f",
        b"Bearer s3cretTOKEN42\xff",  # not UTF-8: once a UnicodeEncodeError and a 500
        b"Bearer s3cretTOKEN42\xc3\xa9",
        b"Bearer \xe2\x80\x8bs3cretTOKEN42",
        b"s3cretTOKEN42\x00",
    ],
    ids=["control", "del", "latin-1", "utf-8", "zero-width", "nul"],
)
def test_a_broken_authorization_header_is_refused_without_echoing_it(start_daemon, caplog, value):
    client, _ = start_daemon(token=TOKEN)
    host = urlsplit(client.url).netloc
    raw = (
        f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + value
        + b"\r\n\r\n"
    )
    with caplog.at_level(logging.DEBUG):
        status, body = _exchange(client.url, raw)
    assert 400 <= status < 500, (status, body)
    answer = json.loads(body)
    assert answer["error"] in ("bad_request", "unauthorized"), answer
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    for secret in (TOKEN, "s3cret", "TOKEN42"):
        assert secret not in body.decode("utf-8", "replace"), body
        assert secret not in logged, logged
    assert "internal error" not in logged and not any(r.exc_info for r in caplog.records)
    assert client.get("/v1/health")[0] == 200  # the right token still works
