"""Web pages must not reach the daemon: DNS rebinding (Host) and cross-site requests (Origin).

Requests go over real HTTP to an in-process daemon, with headers set by hand as a browser on
a hostile page would send them.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
from daemon_helpers import assert_error, job_body

from clipasso_server.daemon.guards import cross_site_reason, host_policy


def raw_request(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict, http.client.HTTPMessage]:
    """One request with exactly these headers (Host too, when given); (status, JSON, headers)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data), response.headers
    finally:
        connection.close()


def _host(url: str) -> str:
    return urlsplit(url).netloc


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}",
     "127.0.0.1:{port}@evil.example", "", "[::1]:1", "0.0.0.0:{port}", "127.0.0.2:{port}"],
)  # fmt: skip
def test_a_foreign_host_name_is_misdirected(shared_daemon, host):
    client, daemon = shared_daemon
    headers = {"Host": host.format(port=daemon.port)}
    for method, path in (("GET", "/v1/health"), ("GET", "/v1/jobs/" + "0" * 32), ("GET", "/")):
        status, body, _ = raw_request(client.url, method, path, headers)
        assert_error(status, body, "misdirected_request")
    body = json.dumps(job_body()).encode()
    status, answer, _ = raw_request(
        client.url, "POST", "/v1/jobs", {**headers, "Content-Type": "application/json"}, body
    )
    assert_error(status, answer, "misdirected_request")


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_the_loopback_names_with_the_bound_port_are_answered(shared_daemon, name):
    client, daemon = shared_daemon
    status, body, _ = raw_request(
        client.url, "GET", "/v1/health", {"Host": f"{name}:{daemon.port}"}
    )
    assert status == 200 and body["protocol"], body


def test_allow_host_adds_names(start_daemon):
    client, daemon = start_daemon(allowed_hosts=("sketch.lan",))
    for host in ("sketch.lan", "sketch.lan:8443", f"127.0.0.1:{daemon.port}"):
        status, _, _ = raw_request(client.url, "GET", "/v1/health", {"Host": host})
        assert status == 200, host
    status, body, _ = raw_request(client.url, "GET", "/v1/health", {"Host": "other.lan"})
    assert_error(status, body, "misdirected_request")


def test_host_policy_off_loopback():
    policy = host_policy("192.168.1.5", 8765, ["box.lan"])
    assert policy.allows("192.168.1.5:8765") and policy.allows("box.lan:1234")
    assert policy.allows("127.0.0.1:8765") and policy.allows("10.0.0.7:8765")  # IP literals
    assert not policy.allows("evil.example:8765") and not policy.allows("192.168.1.5:80")
    loopback = host_policy("127.0.0.1", 8765)
    assert not loopback.allows("10.0.0.7:8765") and not loopback.allows("localhost")
    assert host_policy("127.0.0.1", 80).allows("localhost")  # port 80 may be left out


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port of the same machine: another origin
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
        # a list (what one header sent twice becomes): every value counts
        {"Sec-Fetch-Site": "same-origin, cross-site"},
        {"Sec-Fetch-Site": "cross-site,same-origin", "Sec-Fetch-Mode": "navigate, cors"},
        {"Sec-Fetch-Site": "none, same-site", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "same-origin, something-new"},
        {"Origin": "http://{own}, http://evil.example"},
    ],
)
def test_cross_site_submissions_are_forbidden(shared_daemon, headers):
    client, _ = shared_daemon
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n--"
        + f"{boundary}--\r\n".encode()
    )
    all_headers = {
        "Host": _host(client.url),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        **{name: value.replace("{own}", _host(client.url)) for name, value in headers.items()},
    }
    status, answer, _ = raw_request(client.url, "POST", "/v1/jobs", all_headers, body)
    assert_error(status, answer, "forbidden")
    status, answer, _ = raw_request(client.url, "GET", "/v1/health", all_headers)
    assert_error(status, answer, "forbidden")


def test_the_daemons_own_pages_and_plain_clients_keep_working(shared_daemon):
    client, _ = shared_daemon
    own = f"http://{_host(client.url)}"
    for headers in (
        {},  # the extension, curl: no Origin at all
        {"Origin": own, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},  # typed into the address bar
    ):
        status, body, _ = raw_request(
            client.url, "GET", "/v1/health", {"Host": _host(client.url), **headers}
        )
        assert status == 200, (headers, body)
    submitted = client.request(
        "POST",
        "/v1/jobs",
        json.dumps(job_body(iterations=1, levels=[2], seed=901)).encode(),
        "application/json",
        headers={"Origin": own, "Sec-Fetch-Site": "same-origin"},
    )
    assert submitted[0] == 202, submitted


def test_a_link_from_another_site_may_open_a_page_but_not_post():
    assert cross_site_reason("GET", "127.0.0.1:8765", None, "cross-site", "navigate") is None
    assert cross_site_reason("POST", "127.0.0.1:8765", None, "cross-site", "navigate")
    assert cross_site_reason("GET", "127.0.0.1:8765", "http://127.0.0.1:8765", "same-origin", "cors") is None  # fmt: skip  # noqa: E501


def test_a_fetch_header_sent_twice_counts_every_time(shared_daemon):
    client, _ = shared_daemon
    host = _host(client.url)
    for repeated in (
        b"Sec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\n",
        f"Origin: http://{host}\r\nOrigin: http://evil.example\r\n".encode(),
    ):
        parts = urlsplit(client.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(
                f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
                + repeated
                + b"\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert_error(int(head.split()[1]), json.loads(body), "forbidden")
