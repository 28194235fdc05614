"""Workers as Ray actors, for several hosts: ``clipasso serve --backend ray``.

The daemon stays the single front end (the same API, queue, store and cache); each worker is
a Ray actor holding one GPU (``num_gpus=1``; CPUs on a CPU cluster) that runs the same
:class:`~clipasso_server.daemon.worker_process.SketchRunner` as a worker process. The engine
runs in a thread inside the actor; the daemon polls the actor for progress and snapshots every
tenth of a second and sends cancel as an actor call, so no Ray feature beyond plain actor
calls is needed. A dead actor (a lost node, ``ray.kill``, the OOM killer) fails its job with a
message, and a new actor is created for the next one. Ray is optional: without it
``--backend ray`` says how to install it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import ipaddress
import logging
import os
import queue
import sys
import threading
import time
from typing import Any

from clipasso_server.daemon.worker_base import (
    BUSY,
    IDLE,
    START_TIMEOUT_S,
    STARTING,
    STOPPED,
    RestartingWorker,
    WorkerError,
    cancelled_with,
    settle,
)
from clipasso_server.daemon.worker_process import (
    ProgressSink,
    SketchRunner,
    StepClock,
    WorkerOptions,
)
from clipasso_server.engine.errors import EngineError

log = logging.getLogger("clipasso.daemon")

INSTALL_HINT = "pip install 'clipasso-inkscape[ray]' (or pip install ray)"
LOOPBACK = "127.0.0.1"
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_POLL_S = 0.1
_init_lock = threading.Lock()


def ray_missing() -> str | None:
    """Why ``--backend ray`` cannot work here (Ray not installed), or None."""
    if importlib.util.find_spec("ray") is None:
        return f"--backend ray needs Ray, which is not installed; install it with {INSTALL_HINT}"
    return None


def ensure_ray(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address``, else to the Ray already initialised in
    this process (the tests start one), else to a new local head on loopback only."""
    missing = ray_missing()
    if missing:
        raise WorkerError(missing)
    if address is None:
        _loopback_only_ray()
    import ray

    with _init_lock:
        if not ray.is_initialized():
            if address is not None:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                _start_local_head(ray)
    return ray


def _loopback_only_ray() -> None:
    """Make a local Ray head keep to 127.0.0.1.

    Ray's services take no authentication and run code they are sent, by design. Asked for
    node address 127.0.0.1, Ray replaces it with the machine's outward address, and its gRPC
    servers then listen on every interface; only where Ray thinks clusters unsupported (its
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch) does it keep the loopback address, and then
    every service binds to it. Set for this process (Ray's constants may be imported already)
    and for the services it starts (they inherit the environment).
    """
    os.environ[_CLUSTER_SWITCH] = "0"
    if "ray" in sys.modules:
        constants = importlib.import_module("ray._private.ray_constants")
        constants.ENABLE_RAY_CLUSTER = False


def _start_local_head(ray: Any) -> None:
    """``ray.init`` of a head on 127.0.0.1, then a check that none of its processes listens
    anywhere else (a Ray version that binds the wildcard anyway is refused, not exposed)."""
    ray.init(
        _node_ip_address=LOOPBACK,
        include_dashboard=False,
        dashboard_host=LOOPBACK,
        log_to_driver=False,
    )
    exposed = [
        f"{address}:{port}"
        for address, port in listening_addresses(os.getpid())
        if not ipaddress.ip_address(address).is_loopback
    ]
    if exposed:
        ray.shutdown()
        raise WorkerError(
            "the local Ray head listened outside loopback "
            f"({', '.join(sorted(set(exposed))[:4])}): refusing to run it open to the "
            "network; start a cluster yourself behind a firewall and pass --ray-address"
        )


def listening_addresses(root_pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of process ``root_pid`` and its
    descendants, from /proc (Linux; elsewhere an empty list)."""
    sockets: dict[str, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A":  # LISTEN
                        hex_address, hex_port = fields[1].split(":")
                        sockets[fields[9]] = (_proc_address(hex_address), int(hex_port, 16))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    found = []
    for pid in _descendants(root_pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            inode = link[len("socket:[") : -1] if link.startswith("socket:[") else None
            if inode in sockets:
                found.append(sockets[inode])
    return found


def _proc_address(hex_address: str) -> str:
    """A /proc/net address (32-bit words in host byte order) as text; an IPv4-mapped IPv6
    address as its IPv4 form."""
    raw = b"".join(
        int(hex_address[i : i + 8], 16).to_bytes(4, sys.byteorder)
        for i in range(0, len(hex_address), 8)
    )
    address = ipaddress.ip_address(raw)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


class SketchActor:
    """The actor's body: one SketchRunner, one job at a time in a thread, events in a queue."""

    def __init__(self, options: WorkerOptions) -> None:
        self.runner = SketchRunner(options)
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def info(self) -> dict[str, Any]:
        import socket

        return {**self.runner.info(), "node": socket.gethostname()}

    def start_job(self, image: bytes, settings: dict[str, Any]) -> None:
        self._cancel.clear()
        self._events = events = queue.Queue()

        def work() -> None:
            outcome = self.runner.run(
                image,
                settings,
                lambda report, snapshot: events.put(("progress", report, snapshot)),
                self._cancel.is_set,
            )
            events.put((outcome[0], *outcome[1]))

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def poll(self) -> list[tuple[Any, ...]]:
        """Every event since the last poll (progress, then the final outcome)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def cancel(self) -> None:
        self._cancel.set()


class RayWorker(RestartingWorker):
    """One Ray actor on one device, created again whenever it dies."""

    def __init__(
        self,
        name: str,
        options: WorkerOptions,
        address: str | None,
        cancel_grace_s: float,
    ) -> None:
        # Ray hands each actor its own GPU (CUDA_VISIBLE_DEVICES): inside, it is "cuda"
        gpu = options.device.startswith("cuda")
        inside = dataclasses.replace(options, device="cuda" if gpu else "cpu")
        super().__init__(name, inside, cancel_grace_s)
        self.address = address
        self._gpu = gpu
        self._actor: Any = None
        self._ray: Any = None

    def start(self) -> None:
        """Create the actor; it is ready once its runner is built (torch imported)."""
        self._ready.clear()
        self._start_error = None
        self._state = STARTING
        try:
            ray = self._ray = ensure_ray(self.address)
            resources = {"num_gpus": 1} if self._gpu else {"num_cpus": self.options.threads or 1}
            actor_class = ray.remote(max_concurrency=4, max_restarts=0, **resources)(SketchActor)
            self._actor = actor_class.options(name=None).remote(self.options)
        except WorkerError as exc:
            self._start_error = exc
            self._state = STOPPED
            self._ready.set()
            return
        threading.Thread(target=self._await_ready, args=(self._actor,), daemon=True).start()
        log.info("%s: creating a Ray actor (%s)", self.name, "1 GPU" if self._gpu else "CPU")

    def _await_ready(self, actor: Any) -> None:
        try:
            info = self._ray.get(actor.info.remote(), timeout=START_TIMEOUT_S)
        except Exception as exc:
            self._start_error = WorkerError(f"{self.name}: the Ray actor did not start ({exc})")
            log.error("%s", self._start_error.message)
            with self._lock:
                self._state = STOPPED
        else:
            with self._lock:
                self.last_info = dict(info)
                self._state = IDLE
            log.info("%s ready on %s (%s)", self.name, info.get("device"), info.get("node"))
        self._ready.set()

    def close(self, grace_s: float = 5.0) -> None:
        with self._lock:
            self._state = STOPPED
            actor, self._actor = self._actor, None
        if actor is not None and self._ray is not None:
            try:
                self._ray.kill(actor)
            except Exception as exc:  # the cluster may be gone already
                log.warning("%s: cannot kill its Ray actor: %s", self.name, exc)

    def _recreate(self, why: str) -> None:
        with self._lock:
            if self._state == STOPPED and self._actor is None:
                return  # closing
        self.restarts += 1
        log.warning("%s: creating its Ray actor again (%s)", self.name, why)
        old = self._actor
        if old is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(old)
        self.start()

    def run(self, job: Any, progress: ProgressSink, should_stop: Any) -> dict[str, Any]:
        """Run ``job`` on the actor; the result body."""
        if job.image is None:
            raise EngineError("the job's image is gone")
        self._ready.wait()
        if self._start_error is not None:
            error = self._start_error
            self._recreate("it had failed to start")
            raise error
        with self._lock:
            self._state, self._job_id = BUSY, job.id
            actor = self._actor
        try:
            return self._exchange(actor, job, progress, should_stop)
        finally:
            self._job_ended()

    def _exchange(
        self, actor: Any, job: Any, progress: ProgressSink, should_stop: Any
    ) -> dict[str, Any]:
        ray = self._ray
        cancel_sent_at: float | None = None
        clock = StepClock(progress)
        try:
            ray.get(actor.start_job.remote(job.image, job.settings))
            while True:
                for event in ray.get(actor.poll.remote()):
                    final = settle(event, clock)
                    if final is not None:
                        self.last_info, body, error = final
                        if error is not None:
                            raise error
                        return body
                if should_stop():
                    now = time.monotonic()
                    if cancel_sent_at is None:
                        actor.cancel.remote()
                        cancel_sent_at = now
                    elif now - cancel_sent_at > clock.grace_s(self.cancel_grace_s):
                        grace = clock.grace_s(self.cancel_grace_s)
                        self._recreate(f"it did not stop within {grace:g} s of a cancel")
                        raise cancelled_with(None)
                time.sleep(_POLL_S)
        except ray.exceptions.RayActorError as exc:
            what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = (
                f"the Ray actor running this job died ({what[:300]}); a new one was created, "
                "so the job can be submitted again"
            )
            log.error("%s: job %s failed: %s", self.name, job.id, message)
            self._recreate("its actor died")
            raise WorkerError(message) from None

    def info(self) -> dict[str, Any]:
        with self._lock:
            state, job_id, last = self._state, self._job_id, dict(self.last_info)
        return {
            "name": self.name,
            "backend": "ray",
            "device": str(last.get("device") or self.options.device),
            "state": state,
            "pid": last.get("pid"),
            "node": last.get("node"),
            "rss_bytes": last.get("rss_bytes"),
            "job": job_id,
            "restarts": self.restarts,
            "free_bytes": last.get("free_bytes"),
            "total_bytes": last.get("total_bytes"),
            "models_loaded": list(last.get("models_loaded") or ()),
        }
