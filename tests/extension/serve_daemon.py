"""A real `clipasso serve` child process with the tiny test models, for the extension's tests.

It runs in the project's venv (CLIPASSO_PYTHON, default .venv/bin/python): the extension's
tests also run under Inkscape's Python, which has no torch.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("CLIPASSO_PYTHON") or str(REPO / ".venv" / "bin" / "python")
CLI = [PYTHON, "-m", "clipasso_server.cli"]
#: only catches a hang: every wait of the end-to-end runs is on an event
HANG_S = 900.0


def missing_python() -> str | None:
    """Why no daemon can be started here, or None."""
    if not Path(PYTHON).is_file():
        return f"no project Python at {PYTHON} for the daemon (set CLIPASSO_PYTHON)"
    return None


def get_json(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


VIEWER = {"X-Clipasso-Viewer": "1"}  # read as the web page does: without keeping jobs alive


def jobs(url: str) -> list[dict]:
    """The daemon's jobs (without keeping them alive)."""
    return get_json(f"{url}/v1/jobs", headers=VIEWER)["jobs"]


def worker_pid(url: str) -> int:
    """The pid of the daemon's one process worker (tests pause it with SIGSTOP)."""
    (worker,) = get_json(f"{url}/v1/health")["workers"]
    assert worker["backend"] == "process", worker
    return int(worker["pid"])


def has_strokes(url: str, job_id: str) -> bool:
    """Whether the daemon has best-so-far strokes of the job (without keeping it alive)."""
    try:
        get_json(f"{url}/v1/jobs/{job_id}/result?partial=1", headers=VIEWER)
    except urllib.error.HTTPError as exc:
        if exc.code == 409:  # not_ready
            return False
        raise
    return True


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = HANG_S) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"hung waiting for {what}")
        time.sleep(0.05)


def pause_when(pid: int, ready: Callable[[], bool]) -> threading.Event:
    """Resume the paused worker ``pid`` and pause it again (SIGSTOP) as soon as ``ready()``;
    the event is set once it is paused, so a test can catch a job mid-run on any machine."""
    paused = threading.Event()

    def watch() -> None:
        try:
            while not ready():
                time.sleep(0.02)
        finally:
            os.kill(pid, signal.SIGSTOP)
            paused.set()

    threading.Thread(target=watch, daemon=True).start()
    os.kill(pid, signal.SIGCONT)
    return paused


def install_extension(profile: Path) -> None:
    """``clipasso install-extension`` into the Inkscape profile folder ``profile``."""
    subprocess.run(
        [*CLI, "install-extension", f"--profile-dir={profile}"],
        check=True,
        capture_output=True,
        timeout=600,
    )


@contextmanager
def serve(root: Path, *extra: str, startup_s: float = 600.0) -> Iterator[str]:
    """Start `clipasso serve` on a free loopback port; yield its URL once its worker is ready
    (so a test's timings do not include the models loading); stop it afterwards. The limits
    only catch a hang: a loaded 2-core machine took 107 s to get here."""
    weights = root / "weights"
    subprocess.run(
        [*CLI, "make-test-weights", str(weights)], check=True, capture_output=True, timeout=600
    )
    command = [
        *CLI, "serve", "--port=0", "--device=cpu", f"--state-dir={root / 'state'}",
        f"--clip-weights={weights}", "--no-download", *extra,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # the daemon exited

    threading.Thread(target=drain, daemon=True).start()
    try:
        url, said = None, []
        while url is None:
            line = lines.get(timeout=startup_s)
            if line is None:
                raise RuntimeError("`clipasso serve` exited before listening:\n" + "".join(said))
            said.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            url = match.group(1) if match else None
        deadline = time.monotonic() + startup_s
        while any(w["state"] == "starting" for w in get_json(f"{url}/v1/health")["workers"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon's worker did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
