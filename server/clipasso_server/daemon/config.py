"""The daemon's settings and the start-up checks that must pass before anything is bound.

Standard library only, so ``clipasso serve`` can refuse a bad command line (an exposed port
without a token, say) at once, before torch is imported.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from inkscape_clipasso import protocol

DEFAULT_MAX_QUEUE = 16
DEFAULT_ABANDON_AFTER_S = 60.0
DEFAULT_MAX_BODY_MB = 50
#: finished jobs (records and results) are deleted this many days after they ended
DEFAULT_KEEP_DAYS = 30.0
#: the engine's decompression-bomb cap (``engine.image_input.DEFAULT_MAX_PIXELS``)
DEFAULT_MAX_PIXELS = 50_000_000
#: a client must finish sending its request line and headers this soon after connecting (or
#: after its previous request): slow clients must not hold sockets for ever
DEFAULT_HEADER_TIMEOUT_S = 15.0
#: and its body this soon after the headers
DEFAULT_BODY_TIMEOUT_S = 120.0
#: concurrent connections; the daemon also stays below its open-file limit (RLIMIT_NOFILE)
DEFAULT_MAX_CONNECTIONS = 256
#: a worker that has not stopped this long after a cancel is terminated and started again
DEFAULT_CANCEL_GRACE_S = 5.0
#: a running job's best strokes so far are written to disk this often, so a daemon that is
#: killed (the out-of-memory killer, a power cut) loses at most this much of a long job
DEFAULT_SAVE_EVERY_S = 60.0
BACKENDS = ("process", "ray", "thread")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ConfigError(ValueError):
    """A daemon setting that cannot work; the message is one line for the user."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``clipasso serve`` can be told; the defaults are the documented ones."""

    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_PORT
    device: str = "auto"
    state_dir: Path | None = None  # None: $XDG_STATE_HOME/clipasso
    token: str | None = None
    clip_weights: Path | None = None
    allow_download: bool = True
    max_queue: int = DEFAULT_MAX_QUEUE
    abandon_after_s: float = DEFAULT_ABANDON_AFTER_S
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: 0 keeps finished jobs forever
    keep_days: float = DEFAULT_KEEP_DAYS
    #: extra Host names to answer to (``--allow-host``; the bound address always counts)
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: how long shutdown waits for the running job to stop before giving up on it
    shutdown_grace_s: float = 30.0
    #: where jobs run: "process" (one spawned process per device), "ray" (Ray actors) or
    #: "thread" (the engine in the daemon's own process)
    backend: str = "process"
    #: one worker per device (``--devices cuda:0,cuda:1``); empty: ``workers`` x ``device``
    devices: tuple[str, ...] = ()
    workers: int = 1
    #: the Ray cluster to join (``--ray-address``); None starts a local one
    ray_address: str | None = None
    #: a worker that has not stopped this long after a cancel is terminated and restarted
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    #: how often a running job's best strokes so far go to disk (0: at every snapshot)
    save_every_s: float = DEFAULT_SAVE_EVERY_S


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1 or localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_config(config: DaemonConfig) -> None:
    """Raise ConfigError for settings the daemon must not start with."""
    if not is_loopback(config.host) and not config.token:
        raise ConfigError(
            f"refusing to listen on {config.host!r} without a token: anyone who can reach it "
            "could use this machine's GPU; pass --token TOKEN (clients send "
            "'Authorization: Bearer TOKEN') or listen on 127.0.0.1"
        )
    if config.token is not None and (not config.token or config.token != config.token.strip()):
        raise ConfigError("the token must not be empty or start or end with spaces")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {config.port}")
    if config.max_queue < 1:
        raise ConfigError(f"--max-queue must be at least 1, got {config.max_queue}")
    if config.abandon_after_s <= 0:
        raise ConfigError(f"--abandon-after must be positive, got {config.abandon_after_s}")
    if config.max_body_bytes < 1024:
        raise ConfigError("--max-body-mb is too small to carry an image")
    if not config.keep_days >= 0:  # also refuses NaN
        raise ConfigError(f"--keep-days must be 0 (forever) or more, got {config.keep_days}")
    for name in config.allowed_hosts:
        if not name or (any(c in name for c in "/@?#\\ :") and not name.startswith("[")):
            raise ConfigError(f"--allow-host takes a host name (no port or path), got {name!r}")
    if not (config.header_timeout_s > 0 and config.body_timeout_s > 0):
        raise ConfigError("request timeouts must be positive")
    if config.max_connections < 4:
        raise ConfigError(f"--max-connections must be at least 4, got {config.max_connections}")
    if config.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, got {config.max_pixels}")
    if config.backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
    if config.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {config.workers}")
    if config.devices and config.workers != 1 and config.workers != len(config.devices):
        raise ConfigError("give either --devices (one worker each) or --workers, not both")
    if any(not device.strip() for device in config.devices):
        raise ConfigError("--devices takes a comma-separated list such as cuda:0,cuda:1")
    if not config.save_every_s >= 0:  # also refuses NaN
        raise ConfigError(f"--save-every must be 0 or more seconds, got {config.save_every_s}")
    if not config.cancel_grace_s > 0:
        raise ConfigError("the cancel grace time must be positive")
