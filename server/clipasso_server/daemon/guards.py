"""Who may talk to the daemon: the Host and Origin checks that keep web pages out.

A daemon on 127.0.0.1 is reachable from every web page the user opens. Two attacks follow:

* DNS rebinding: a page on ``evil.example`` re-points its name at 127.0.0.1 and then reads
  the whole API as "same origin". The browser still sends ``Host: evil.example``, so only
  Host names this daemon is known by are accepted (421 ``misdirected_request`` otherwise).
* Cross-site requests: a multipart POST is a "simple" request any page may send without a
  preflight. Browsers mark such requests with ``Origin`` and ``Sec-Fetch-Site``; a request
  from any origin but the daemon's own is refused (403 ``forbidden``). Clients that are not
  browsers (the extension, curl) send neither header and are not affected.

Standard library only; the rules are plain functions so they can be read alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clipasso_server.daemon.config import is_loopback
from inkscape_clipasso import protocol

#: the names a loopback daemon is reached by (``[::1]`` is how an IPv6 literal appears in Host)
LOOPBACK_HOST_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class HostPolicy:
    """The Host header values a daemon answers to.

    ``names`` must come with the bound port; ``any_port_names`` (``--allow-host``, for a
    reverse proxy in front of the daemon) with any port. ``ip_literals``: off loopback, where a
    token is required anyway, any IP address is accepted as Host (rebinding needs a DNS name).
    """

    port: int
    names: frozenset[str]
    any_port_names: frozenset[str] = frozenset()
    ip_literals: bool = False

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this Host header is for this daemon."""
        if not host_header:
            return False
        name, port = split_host(host_header)
        if name is None:
            return False
        if name in self.any_port_names:
            return True
        if port is None:
            port = 80
        if port != self.port:
            return False
        if name in self.names:
            return True
        return self.ip_literals and _is_ip_literal(name)


def host_policy(bound_host: str, port: int, extra_names: Iterable[str] = ()) -> HostPolicy:
    """The policy for a daemon bound to ``bound_host:port`` with ``--allow-host`` names."""
    names = {_normalise(n) for n in LOOPBACK_HOST_NAMES}
    loopback = is_loopback(bound_host)
    if not loopback and bound_host not in ("0.0.0.0", "::", ""):
        host = bound_host.strip("[]")
        names.add(_normalise(f"[{host}]" if ":" in host else host))
    return HostPolicy(
        port=port,
        names=frozenset(names),
        any_port_names=frozenset(_normalise(n) for n in extra_names),
        ip_literals=not loopback,
    )


def split_host(value: str) -> tuple[str | None, int | None]:
    """``"name:port"`` -> (lower-case name, port); (None, None) when it is not a valid Host."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None, None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None, None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text = value.partition(":")
        port_text = port_text if sep else None
    if not name or any(c in name for c in "/@?#\\ "):
        return None, None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None, None
    return name, int(port_text)


def _normalise(name: str) -> str:
    parsed, _ = split_host(name)
    return parsed or name.strip().lower()


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def cross_site_reason(
    method: str, host: str, origin: str | None, fetch_site: str | None, fetch_mode: str | None
) -> str | None:
    """Why a request must be refused as cross-site, or None when it may go on.

    The daemon's own origin is ``http://`` plus the (already checked) Host header. A
    top-level GET navigation from another site (a link to the job page) is let through:
    it cannot read the answer and changes nothing, and browsers send no Origin with it.
    """
    own = f"http://{host.strip().lower()}"
    for value in _list(origin):
        if value != own:
            return f"requests from the web origin {value[:100]!r} are not accepted"
    # a header sent twice arrives joined by commas; any value but these is another site's
    sites = _list(fetch_site)
    strangers = [site for site in sites if site not in ("same-origin", "none")]
    if strangers:
        modes = _list(fetch_mode)
        navigation = method in ("GET", "HEAD") and modes == ["navigate"]
        if not navigation or any(site not in ("cross-site", "same-site") for site in strangers):
            return f"{strangers[0][:40]} requests from web pages are not accepted"
    return None


def _list(value: str | None) -> list[str]:
    """A header's comma-separated values (one header sent twice arrives joined), lower-case."""
    if value is None:
        return []
    return [part.strip().lower() for part in value.split(",")]


def _joined(headers: Mapping[str, str], name: str) -> str | None:
    """Every value of header ``name`` joined by commas, as if sent once; None if absent."""
    getall = getattr(headers, "getall", None)
    values = list(getall(name, ())) if getall is not None else []
    return ", ".join(values) if values else headers.get(name)


def check_request(policy: HostPolicy | None, method: str, headers: Mapping[str, str]) -> None:
    """Raise ProtocolError (421 or 403) for a request this daemon must not answer."""
    host = headers.get("Host", "")
    if policy is not None and not policy.allows(host):
        raise protocol.ProtocolError(
            "misdirected_request",
            f"this daemon does not answer to the host name {host[:100]!r}; use "
            f"http://127.0.0.1:{policy.port} (or start it with --allow-host NAME)",
        )
    reason = cross_site_reason(
        method,
        host,
        _joined(headers, "Origin"),
        _joined(headers, "Sec-Fetch-Site"),
        _joined(headers, "Sec-Fetch-Mode"),
    )
    if reason is not None:
        raise protocol.ProtocolError("forbidden", reason)
