"""Does polling slow the daemon down? A running job's step time with and without status polls.

Starts a real ``clipasso serve`` process and runs identical jobs (same pixels and seed; the
PNG bytes differ so that the cache does not answer) in back-to-back pairs, one quiet (one
status poll per second, what any client does) and one under a poller hitting
``GET /v1/jobs/{id}`` ``--poll-rate`` times per second (default 50), alternating which goes
first. It compares the daemon's own measured mean step time (``step_time_s`` in the job
status) within each pair. Issue target: polling slows the job by less than 5 % (the median
over the pairs). Also reports the latency of the polls and, with no job running, what one
poll costs in CPU time: the daemon's (read from /proc, Linux only) and the polling client's.

The poller keeps its connection alive, as most HTTP clients do. On a machine with no spare
core the client's own CPU time is charged to the job too: the job's two threads meet at a
barrier in every parallel operation, so other work preempting one of them stalls both, and a
poll costs the job about twice the CPU time it takes (measured on 2 cores with a synthetic
load). A new connection per poll doubles the CPU cost on both sides (see the per-poll costs
printed), which on 2 cores took the slowdown to ~10-20 %.

    python bench/daemon.py [--device auto|cpu|cuda] [--iterations 100] [--repeats 4]
                           [--levels 4,8,16,32] [--seeds 3] [--poll-rate 50]
                           [--clip-weights DIR --loss-model RN101 --saliency-model ViT-B-32]
                           [--out bench/results/daemon.json] [--quick]

Without --clip-weights it uses the tiny test models (their weights are written first).
--quick is a smoke run (2 levels, 1 seed, 20 iterations, 1 repeat).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TARGET_SLOWDOWN_PCT = 5.0


def _png(tag: str = "") -> bytes:
    """The test picture; ``tag`` goes in a PNG text chunk, so that jobs doing exactly the same
    work (same pixels, same seed) still differ in bytes and are not answered by the cache."""
    from PIL import Image, ImageDraw, PngImagePlugin

    image = Image.new("RGB", (256, 192), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 30, 216, 162), fill=(40, 40, 40))
    draw.rectangle((100, 70, 156, 120), fill=(220, 220, 220))
    info = PngImagePlugin.PngInfo()
    info.add_text("bench-job", tag)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


class KeepAlive:
    """GETs over one persistent HTTP/1.1 connection, as most HTTP clients do."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def get(self) -> Any:
        self.connection.request("GET", self.path)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {self.path} answered {response.status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.connection.close()


class Poller(threading.Thread):
    """GETs one job's status ``rate`` times per second over a kept-alive connection; records
    each request's latency."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, 1.0 / rate
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = KeepAlive(self.url)
        next_at = time.perf_counter()
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                client.get()
                self.latencies.append(time.perf_counter() - started)
                next_at += self.interval
                self.stop.wait(max(0.0, next_at - time.perf_counter()))
        finally:
            client.close()


def run_job(base: str, image: bytes, settings: dict, poll_rate: float | None) -> dict[str, Any]:
    """Submit, wait for the end (polling as asked), return the final status and poll stats."""
    status, submitted = _call(
        f"{base}/v1/jobs",
        "POST",
        {"image": base64.b64encode(image).decode(), "settings": settings},
    )
    if status != 202:
        raise RuntimeError(f"submission answered {status}: {submitted}")
    job_url = f"{base}/v1/jobs/{submitted['id']}"
    poller = Poller(job_url, poll_rate) if poll_rate else None
    if poller:
        poller.start()
    started = time.perf_counter()
    while True:
        _, state = _call(job_url)
        if state["state"] not in ("queued", "running"):
            break
        time.sleep(1.0)
    wall = time.perf_counter() - started
    if poller:
        poller.stop.set()
        poller.join()
    if state["state"] != "done":
        raise RuntimeError(f"job ended {state['state']}: {state.get('error')}")
    latencies = sorted(poller.latencies) if poller else []
    return {
        "id": state["id"],
        "step_ms": state["step_time_s"] * 1000,
        "steps": state["step"],
        "wall_s": wall,
        "polls": len(latencies),
        "poll_rate": len(latencies) / wall if latencies else 0.0,
        "poll_p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "poll_p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else None,
    }


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads); None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll_cost(job_url: str, pid: int, polls: int = 2000) -> dict[str, Any]:
    """CPU milliseconds per status poll, in the daemon and in this client, with no job running:
    over one kept-alive connection (the poller's way) and with a new connection per poll
    (urllib's, which the extension uses at one poll per second)."""
    keep_alive = KeepAlive(job_url)
    ways = {"keep_alive": keep_alive.get, "new_connection": lambda: _call(job_url)}
    cost: dict[str, Any] = {"polls": polls}
    for name, poll in ways.items():
        daemon_before, client_before = _process_cpu_s(pid), time.thread_time()
        for _ in range(polls):
            poll()
        daemon_after, client_after = _process_cpu_s(pid), time.thread_time()
        cost[name] = {
            "daemon_cpu_ms_per_poll": (daemon_after - daemon_before) * 1000 / polls
            if daemon_before is not None
            else None,
            "client_cpu_ms_per_poll": (client_after - client_before) * 1000 / polls,
        }
    keep_alive.close()
    return cost


def start_daemon(args: argparse.Namespace, weights: Path, state: Path) -> tuple[Any, str]:
    command = [
        sys.executable, "-m", "clipasso_server.cli", "serve", "--port", "0",
        "--device", args.device, "--state-dir", str(state), "--clip-weights", str(weights),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the daemon did not start: {line!r}")
    return process, match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--levels", default="4,8,16,32")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--poll-rate", type=float, default=50.0)
    parser.add_argument("--clip-weights", type=Path, default=None)
    parser.add_argument("--loss-model", default="test-tiny-rn")
    parser.add_argument("--saliency-model", default="test-tiny-vit")
    parser.add_argument("--out", default="bench/results/daemon.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.seeds, args.iterations, args.repeats = "2,4", 1, 20, 1

    with tempfile.TemporaryDirectory(prefix="clipasso-bench-") as temp:
        weights = args.clip_weights
        if weights is None:
            from clipasso_server.engine.clip_models import write_test_weights

            weights = Path(temp) / "weights"
            write_test_weights(weights)
        process, base = start_daemon(args, weights, Path(temp) / "state")
        try:
            _, health = _call(f"{base}/v1/health")
            image = _png()
            settings = {
                "levels": [int(v) for v in args.levels.split(",")],
                "seeds": args.seeds,
                "iterations": args.iterations,
                "loss_model": args.loss_model,
                "saliency_model": args.saliency_model,
            }
            # warm-up: loads the models; not measured
            run_job(base, image, {**settings, "iterations": 3, "seed": 999}, None)
            rows: list[dict[str, Any]] = []
            job = 0
            for repeat in range(args.repeats):
                # alternate the order so that drift (heat, other load) does not favour one side
                order = (None, args.poll_rate) if repeat % 2 == 0 else (args.poll_rate, None)
                for rate in order:
                    job += 1
                    row = run_job(base, _png(str(job)), settings, rate)
                    rows.append({"repeat": repeat, "poll_rate_asked": rate or 1.0, **row})
            # the last job has finished: what a poll costs with the engine idle
            cost = poll_cost(f"{base}/v1/jobs/{row['id']}", process.pid)
        finally:
            process.terminate()
            process.wait(60)

    quiet = [r["step_ms"] for r in rows if r["poll_rate_asked"] == 1.0]
    polled = [r["step_ms"] for r in rows if r["poll_rate_asked"] != 1.0]
    quiet_ms, polled_ms = statistics.median(quiet), statistics.median(polled)
    # Each repeat is a back-to-back (quiet, polled) pair: its ratio cancels the slow drift of a
    # shared machine, which is as large as the effect measured. The verdict uses their median.
    pair_pcts = [(p / q - 1.0) * 100.0 for q, p in zip(quiet, polled, strict=True)]
    slowdown = statistics.median(pair_pcts)
    polled_rows = [r for r in rows if r["polls"]]

    print(f"device {health['device']}, models {args.loss_model} + {args.saliency_model}, "
          f"levels {args.levels} x {args.seeds} seeds, {args.iterations} iterations")  # fmt: skip
    print(f"{'repeat':>6} {'polls/s':>8} {'step ms':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        p50 = f"{r['poll_p50_ms']:.2f}" if r["poll_p50_ms"] is not None else "-"
        p99 = f"{r['poll_p99_ms']:.2f}" if r["poll_p99_ms"] is not None else "-"
        rate = r["poll_rate"] if r["polls"] else 1.0
        print(f"{r['repeat']:>6} {rate:>8.1f} {r['step_ms']:>9.2f} {p50:>8} {p99:>8}")
    spread = (
        f"quiet {min(quiet):.0f}-{max(quiet):.0f} ms, polled {min(polled):.0f}-{max(polled):.0f} ms"
    )
    print(f"spread over {args.repeats} repeats: {spread}")
    for way in ("keep_alive", "new_connection"):
        daemon_ms = cost[way]["daemon_cpu_ms_per_poll"]
        shown = "n/a" if daemon_ms is None else f"{daemon_ms:.3f} ms"
        print(
            f"one poll ({way.replace('_', ' ')}), engine idle: daemon {shown} CPU, client "
            f"{cost[way]['client_cpu_ms_per_poll']:.3f} ms CPU"
        )
    verdict = "ok" if slowdown < TARGET_SLOWDOWN_PCT else "OVER TARGET"
    print("paired slowdowns: " + ", ".join(f"{v:+.1f} %" for v in pair_pcts))
    print(
        f"median step: quiet {quiet_ms:.2f} ms, polled {polled_ms:.2f} ms; median paired "
        f"slowdown {slowdown:+.1f} % (target < {TARGET_SLOWDOWN_PCT:.0f} %: {verdict})"
    )

    report = {
        "benchmark": "daemon",
        "python": platform.python_version(),
        "device": health["device"],
        "settings": settings,
        "poll_rate": args.poll_rate,
        "repeats": args.repeats,
        "quick": args.quick,
        "target_slowdown_pct": TARGET_SLOWDOWN_PCT,
        "quiet_step_ms": quiet_ms,
        "polled_step_ms": polled_ms,
        "slowdown_pct": slowdown,
        "paired_slowdown_pcts": pair_pcts,
        "poll_p50_ms": statistics.median(r["poll_p50_ms"] for r in polled_rows),
        "poll_p99_ms": max(r["poll_p99_ms"] for r in polled_rows),
        "poll_cost": cost,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
