"""Run the local sketch daemon that the Inkscape extension talks to.

Its worker processes (one per device, see --devices and --workers) keep the CLIP models loaded
and run one job at a time each, on the GPU (or the CPU); its web page at its address shows the
jobs live. It listens on loopback by default; listening anywhere else needs --token, and every
request must then carry 'Authorization: Bearer TOKEN'. Jobs and results live under the state
dir and survive a restart. SIGINT or SIGTERM stops it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inkscape_clipasso import protocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's options; the defaults live in ``clipasso_server.daemon.config``."""
    from clipasso_server.daemon import config as cfg

    parser.add_argument(
        "--host",
        default=protocol.DEFAULT_HOST,
        help="address to listen on (default: %(default)s; anything but loopback needs --token)",
    )
    parser.add_argument(
        "--allow-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (a reverse proxy's, say); "
        "repeatable. Other names are refused, so web pages cannot reach the daemon through "
        "DNS rebinding",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=cfg.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="most client connections at once, kept below the open-file limit "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=cfg.DEFAULT_HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help="close a connection that has not sent a whole request line and headers this "
        "long after connecting or after its previous answer (default: %(default)g)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=protocol.DEFAULT_PORT,
        help="port (default: %(default)s; 0 picks a free one and prints it)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, cuda:N or mps (default: %(default)s: CUDA when present)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where jobs and results are kept (default: $XDG_STATE_HOME/clipasso, "
        "else ~/.local/state/clipasso)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CLIPASSO_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' on every request (default: "
        "$CLIPASSO_TOKEN, which, unlike the command line, other users cannot see in ps)",
    )
    parser.add_argument(
        "--clip-weights",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder holding CLIP weight files, searched before the standard caches "
        "(default: $CLIPASSO_WEIGHTS, then the caches)",
    )
    parser.add_argument(
        "--download",
        dest="allow_download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download missing CLIP weights on first use (default: yes)",
    )
    parser.add_argument(
        "--save-every",
        type=float,
        default=cfg.DEFAULT_SAVE_EVERY_S,
        metavar="SECONDS",
        help="write a running job's best strokes so far to disk this often, so that a daemon "
        "killed mid-job (out of memory, a power cut) keeps them; 0 writes every snapshot "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=cfg.DEFAULT_MAX_QUEUE,
        metavar="N",
        help="jobs that may wait behind the running one; more get 429 (default: %(default)s)",
    )
    parser.add_argument(
        "--abandon-after",
        type=float,
        default=cfg.DEFAULT_ABANDON_AFTER_S,
        metavar="SECONDS",
        help="cancel a queued or running job nobody has polled for this long "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--keep-days",
        type=float,
        default=cfg.DEFAULT_KEEP_DAYS,
        metavar="DAYS",
        help="delete finished jobs and their results this many days after they ended; "
        "0 keeps them forever (default: %(default)g)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=cfg.DEFAULT_MAX_BODY_MB,
        metavar="MB",
        help="largest request body accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=cfg.DEFAULT_MAX_PIXELS,
        metavar="N",
        help="largest image accepted, in pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--devices",
        default="",
        metavar="LIST",
        help="one worker process per device, e.g. cuda:0,cuda:1 (default: one worker on --device)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes on --device (on the CPU they split the cores between them; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=cfg.BACKENDS,
        default="process",
        help="where jobs run: a spawned process per device (default), Ray actors on a Ray "
        "cluster (pip install 'clipasso-inkscape[ray]'), or a thread in the daemon itself",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster to join with --backend ray, e.g. 10.0.0.5:6379 "
        "(default: $RAY_ADDRESS, else a local Ray started by the daemon)",
    )
    from clipasso_server.engine.memory_estimate import memory_text

    default = protocol.SketchSettings()
    parser.epilog = memory_text(len(default.levels), default.seeds, default.loss_model)


def run(args: argparse.Namespace) -> int:
    """Check the options, start the daemon, print its URL, serve until a signal."""
    import asyncio

    from clipasso_server.daemon.config import ConfigError, DaemonConfig, check_config

    config = DaemonConfig(
        host=args.host,
        port=args.port,
        device=args.device,
        state_dir=args.state_dir,
        token=args.token,
        clip_weights=args.clip_weights,
        allow_download=args.allow_download,
        max_queue=args.max_queue,
        abandon_after_s=args.abandon_after,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        keep_days=args.keep_days,
        allowed_hosts=tuple(args.allowed_hosts),
        backend=args.backend,
        devices=tuple(d.strip() for d in args.devices.split(",") if d.strip()),
        workers=args.workers,
        ray_address=args.ray_address or os.environ.get("RAY_ADDRESS") or None,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        save_every_s=args.save_every,
    )
    try:
        check_config(config)  # before torch is imported: a refusal is instant
    except ConfigError as exc:
        # printed here rather than raised as CommandError, so that the one-line refusal and
        # exit status 2 hold however the command is started (`python -m clipasso_server.cli`
        # has its own copy of CommandError)
        print(f"clipasso serve: error: {exc}", file=sys.stderr)
        return 2
    if config.backend == "ray":
        from clipasso_server.daemon.ray_backend import ray_missing

        missing = ray_missing()
        if missing:
            print(f"clipasso serve: error: {missing}", file=sys.stderr)
            return 2

    from clipasso_server.daemon.service import serve, setup_logging

    setup_logging()

    def ready(daemon) -> None:
        print(
            f"clipasso serve: listening on {daemon.url} (device {daemon.engine.device}, "
            f"state {daemon.state_dir})",
            flush=True,
        )

    try:
        return asyncio.run(serve(config, ready))
    except OSError as exc:
        print(f"clipasso serve: error: {exc}", file=sys.stderr)
        return 2
