"""Start-up and shutdown: wires the store, the queue, the workers and the HTTP app together.

:class:`Daemon` is used both by ``clipasso serve`` (through :func:`serve`, which adds the
signal handling) and in-process by the tests. Shutdown order matters: first refuse new jobs
(503), then interrupt the queued and running jobs and persist them, and only then close the
listening socket, so clients polling during the shutdown still see their job's final state;
the workers stop last. Nothing here imports torch: the workers do, in their own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from clipasso_server.daemon.config import DaemonConfig, check_config
from clipasso_server.daemon.engine_bridge import EngineBridge
from clipasso_server.daemon.guards import host_policy
from clipasso_server.daemon.http_routes import DaemonContext, make_app
from clipasso_server.daemon.http_server import LimitedSite
from clipasso_server.daemon.job_queue import JobQueue
from clipasso_server.daemon.job_store import JobStore, default_state_dir
from clipasso_server.daemon.workers import make_workers
from inkscape_clipasso import protocol

log = logging.getLogger("clipasso.daemon")

#: how often finished jobs past ``keep_days`` are looked for (also once at start-up)
PRUNE_EVERY_S = 3600.0
#: how often results and records a failed write kept in memory are written again
RETRY_SAVES_EVERY_S = 5.0


def prepare_imports() -> None:
    """Import what a submission needs (the decoder, Pillow's format plugins) once, in one
    thread, before the daemon reports itself ready: two requests right after start-up once
    deadlocked in importlib, each thread importing half of a module cycle."""
    from PIL import Image

    from clipasso_server.engine import image_decode  # noqa: F401 (imported for its side)

    Image.init()


class Daemon:
    """One running daemon: ``await start()`` binds and returns the URL, ``await stop()`` ends it.

    ``models`` lets a caller share an already built ModelStore (the tests do, so the tiny
    models load once per session): jobs then run on one in-process thread worker. Otherwise
    the config's backend gives the workers (a spawned process per device by default).
    """

    def __init__(self, config: DaemonConfig, models: Any = None) -> None:
        check_config(config)
        self.config = config
        self.state_dir = Path(config.state_dir or default_state_dir()).expanduser()
        self.store = JobStore(self.state_dir)
        self.workers = make_workers(config, models)
        # a shared store may have its own weights folder (the tests' tiny models)
        weights_dir = getattr(models, "weights_dir", None) or config.clip_weights
        self.engine = EngineBridge(
            weights_dir,
            config.max_pixels,
            self.workers_info,
            config.device,
            wait_ready=self.workers[0].wait_ready,
            allow_download=getattr(models, "allow_download", config.allow_download),
        )
        self.queue = JobQueue(
            self.store, [w.run for w in self.workers], config.max_queue, config.save_every_s
        )
        self.context = DaemonContext(
            queue=self.queue,
            store=self.store,
            engine=self.engine,
            token=config.token,
            max_body_bytes=config.max_body_bytes,
            body_timeout_s=config.body_timeout_s,
        )
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.site: LimitedSite | None = None
        self._watchdog: asyncio.Task | None = None
        self._pruner: asyncio.Task | None = None
        self._retrier: asyncio.Task | None = None

    async def start(self) -> str:
        """Restore the jobs on disk, drop those past keep_days, start the worker, bind; the URL."""
        loop = asyncio.get_running_loop()
        # before any request: lazy imports from several threads at once can deadlock
        await loop.run_in_executor(None, prepare_imports)
        await loop.run_in_executor(None, self._warn_missing_weights)
        await loop.run_in_executor(None, self.queue.restore)
        await loop.run_in_executor(None, self._prune_once)
        for worker in self.workers:
            await loop.run_in_executor(None, worker.start)
        self.queue.start()
        self._runner = web.AppRunner(
            make_app(self.context), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = LimitedSite(
            self._runner,
            self.config.host,
            self.config.port,
            max_connections=self.config.max_connections,
            header_timeout_s=self.config.header_timeout_s,
        )
        self.site = site
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self.queue.shutdown(0)
            for worker in self.workers:
                await loop.run_in_executor(None, worker.close)
            where = f"{self.config.host}:{self.config.port}"
            raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.port = int(self._runner.addresses[0][1])
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.context.host_policy = host_policy(host, self.port, self.config.allowed_hosts)
        # cancel jobs nobody polls any more (Inkscape kills the extension on Cancel)
        after = self.config.abandon_after_s
        self._watchdog = asyncio.create_task(
            _every(
                min(1.0, after / 4),
                functools.partial(self.queue.cancel_abandoned, after),
                "the abandoned-job watchdog failed",
            )
        )
        self._retrier = asyncio.create_task(
            _every(RETRY_SAVES_EVERY_S, self.queue.retry_unsaved, "retrying failed saves failed")
        )
        if self.config.keep_days > 0:  # start-up pruned once already
            self._pruner = asyncio.create_task(
                _every(PRUNE_EVERY_S, self._prune_once, "deleting old jobs failed")
            )
        return self.url

    async def stop(self) -> None:
        """Refuse new jobs, interrupt and persist the unfinished ones, close the socket."""
        self.context.closing = True
        for task in (self._watchdog, self._pruner, self._retrier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.queue.shutdown, self.config.shutdown_grace_s)
        unsaved = await loop.run_in_executor(None, self.queue.retry_unsaved)
        if unsaved:
            log.error("%d result(s) or record(s) could not be saved before stopping", unsaved)
        self.context.decode_pool.shutdown(wait=False, cancel_futures=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for worker in self.workers:
            await loop.run_in_executor(None, worker.close)

    def _warn_missing_weights(self) -> None:
        """One warning at start-up naming every default model the daemon cannot get, so the
        user learns it before the first job is refused."""
        message = self.engine.missing_weights(
            [protocol.DEFAULT_LOSS_MODEL, protocol.DEFAULT_SALIENCY_MODEL]
        )
        if message is not None:
            log.warning("warning: jobs with the default models will be refused: %s", message)

    def workers_info(self) -> list[dict[str, Any]]:
        """Each worker's health entry: name, device, state, pid, memory, job."""
        return [worker.info() for worker in self.workers]

    def _prune_once(self) -> None:
        """Delete finished jobs older than ``keep_days`` (0: keep everything)."""
        if self.config.keep_days <= 0:
            return
        removed = self.queue.prune_finished(self.config.keep_days * 86400.0)
        if removed:
            log.info(
                "deleted %d finished job(s) older than %g days (--keep-days)",
                len(removed),
                self.config.keep_days,
            )


async def _every(interval_s: float, work: Callable[[], object], failure: str) -> None:
    """Run ``work`` in the thread pool every ``interval_s`` (first after one interval) until
    cancelled; an exception is logged with ``failure`` and the loop goes on."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await loop.run_in_executor(None, work)
        except Exception:
            log.exception(failure)


def setup_logging() -> None:
    """One line per job event on stderr, prefixed so it reads well among other output."""
    logger = logging.getLogger("clipasso.daemon")
    if not any(getattr(h, "_clipasso", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("clipasso serve: %(message)s"))
        handler._clipasso = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def serve(config: DaemonConfig, ready: Callable[[Daemon], None] | None = None) -> int:
    """Run a daemon until SIGINT or SIGTERM, then shut it down gracefully; exit status 0."""
    daemon = Daemon(config)
    await daemon.start()
    if ready is not None:
        ready(daemon)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: no new jobs; interrupting unfinished ones")
        await daemon.stop()
        log.info("stopped")
    return 0
