"""``clipasso serve --backend ray`` without ``--ray-address`` starts a local Ray head whose
services (no authentication, remote code execution by design) listen on loopback only.

A real ``clipasso serve`` child process; its listening sockets and those of every process it
started (Ray's GCS, raylet, agents, workers) are read from /proc.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time

import pytest
from daemon_helpers import HANG_S, Client

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _listening_inodes() -> dict[str, str]:
    """inode -> listening address, over /proc/net/tcp and tcp6."""
    found = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/net/{table}", encoding="ascii") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] != "0A":
                    continue
                raw = bytes.fromhex(fields[1].split(":")[0])
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                address = ipaddress.ip_address(words)
                found[fields[9]] = str(getattr(address, "ipv4_mapped", None) or address)
    return found


def _family(pid: int) -> list[int]:
    parents = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                parents[int(name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return sorted(family)


def _listening_of(pid: int) -> list[tuple[int, str]]:
    inodes = _listening_inodes()
    found = []
    for member in _family(pid):
        try:
            fds = os.listdir(f"/proc/{member}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{member}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.append((member, inodes[link[8:-1]]))
    return found


def test_the_local_ray_head_listens_on_loopback_only(serve_process, tmp_path, test_weights_dir):
    process = serve_process(
        [
            "--backend", "ray", "--port", "0", "--device", "cpu", "--no-download",
            "--state-dir", str(tmp_path / "state"), "--clip-weights", str(test_weights_dir),
        ]
    )  # fmt: skip
    client = Client(process.wait_ready(timeout=HANG_S))
    deadline = time.monotonic() + HANG_S
    while True:  # the actor is up: Ray's head, its raylet and a worker process all run
        workers = client.get("/v1/health")[1]["workers"]
        if workers[0]["state"] == "idle":
            break
        assert workers[0]["state"] == "starting", workers
        assert time.monotonic() < deadline, workers
        time.sleep(0.5)
    listening = _listening_of(process.process.pid)
    assert len({pid for pid, _ in listening}) >= 3, listening  # Ray's services are counted
    exposed = [(pid, address) for pid, address in listening
               if not ipaddress.ip_address(address).is_loopback]  # fmt: skip
    assert not exposed, exposed
    assert process.terminate() == 0
