"""Daemon fixtures: in-process daemons on loopback sockets and real `clipasso serve` processes."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("aiohttp")

from daemon_helpers import Client, DaemonThread, ServeProcess, daemon_factory


@pytest.fixture
def start_daemon(tmp_path, model_store):
    """Factory: ``start_daemon(**config) -> (Client, Daemon)``; stopped after the test."""
    yield from daemon_factory(tmp_path, model_store)


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory, model_store):
    """One daemon for the tests that do not need their own settings (2 MB body cap)."""
    from clipasso_server.daemon.config import DaemonConfig

    config = DaemonConfig(
        port=0,
        device="cpu",
        state_dir=tmp_path_factory.mktemp("shared-state"),
        max_body_bytes=2 * 1024 * 1024,
    )
    thread = DaemonThread(config, model_store)
    url = thread.start()
    yield Client(url), thread.daemon
    thread.stop()


@pytest.fixture
def serve_process():
    """Factory: ``serve_process(args) -> ServeProcess`` (not yet ready); killed if left."""
    started: list[ServeProcess] = []

    def start(args: list[str]) -> ServeProcess:
        process = ServeProcess(args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
