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

It does so for each of ``--backends`` (default: the in-process ``thread`` and a worker
``process``), so the two slowdowns compare, and then, both daemons up at once, runs quiet jobs
alternating between them (the worker process's own cost against the thread). With
``--workers-bench`` (default) it also measures the process workers: the HTTP process's memory
(no torch in it) against a worker's, the time from a worker's SIGKILL to the next job's first
step, and two jobs on two CPU workers at once against one worker running them in turn.

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

from report import write_report

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


def weights_dir(args: argparse.Namespace, temp: str) -> Path:
    """``--clip-weights``, else the tiny test models' weights, written under ``temp``."""
    if args.clip_weights is not None:
        return args.clip_weights
    from clipasso_server.engine.clip_models import write_test_weights

    weights = Path(temp) / "weights"
    write_test_weights(weights)
    return weights


def add_daemon_options(
    parser: argparse.ArgumentParser, *, device: str, levels: str, seeds: int
) -> None:
    """The options of every bench that runs a daemon: what :func:`weights_dir`,
    :func:`start_daemon` and :func:`job_settings` read."""
    parser.add_argument("--device", default=device)
    parser.add_argument("--levels", default=levels)
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--clip-weights", type=Path, default=None)
    parser.add_argument("--loss-model", default="test-tiny-rn")
    parser.add_argument("--saliency-model", default="test-tiny-vit")


def job_settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """A job's settings from :func:`add_daemon_options`' options, plus ``extra``."""
    return {
        "levels": [int(v) for v in args.levels.split(",")],
        "seeds": args.seeds,
        **extra,
        "loss_model": args.loss_model,
        "saliency_model": args.saliency_model,
    }


def start_daemon(
    args: argparse.Namespace,
    weights: Path,
    state: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[Any, str]:
    command = [
        sys.executable, "-m", "clipasso_server.cli", "serve", "--port", "0",
        "--device", args.device, "--state-dir", str(state), "--clip-weights", str(weights),
        *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the daemon did not start: {line!r}")
    return process, match.group(1)


def wait_workers_ready(base: str, timeout: float = 300.0) -> dict[str, Any]:
    """Poll the health until no worker is starting; the health body."""
    deadline = time.monotonic() + timeout
    while True:
        _, health = _call(f"{base}/v1/health")
        if all(w["state"] != "starting" for w in health.get("workers", [])):
            return health
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start: {health}")
        time.sleep(0.1)


def polling(
    args: argparse.Namespace, weights: Path, temp: str, settings: dict, backend: str
) -> dict[str, Any]:
    """The paired quiet/polled runs on one backend; the report (and prints the table)."""
    state = Path(temp) / f"state-{backend}"
    process, base = start_daemon(args, weights, state, "--backend", backend)
    try:
        health = wait_workers_ready(base)
        # warm-up: loads the models; not measured
        run_job(base, _png(), {**settings, "iterations": 3, "seed": 999}, None)
        rows: list[dict[str, Any]] = []
        job = 0
        for repeat in range(args.repeats):
            # alternate the order so that drift (heat, other load) does not favour one side
            order = (None, args.poll_rate) if repeat % 2 == 0 else (args.poll_rate, None)
            for rate in order:
                job += 1
                row = run_job(base, _png(f"{backend}-{job}"), settings, rate)
                rows.append({"repeat": repeat, "poll_rate_asked": rate or 1.0, **row})
        # the last job has finished: what a poll costs with the engine idle
        cost = poll_cost(f"{base}/v1/jobs/{row['id']}", process.pid)
    finally:
        process.terminate()
        process.wait(60)
    return summarise_polling(args, settings, health, rows, cost, backend)


def _rss(pid: int) -> int | None:
    from clipasso_server.daemon.worker_process import rss_bytes

    return rss_bytes(pid)


def _has_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text(errors="replace")


def workers_bench(
    args: argparse.Namespace, weights: Path, temp: str, settings: dict
) -> dict[str, Any]:
    """Process workers: the HTTP process's memory without torch, the time from a worker's
    death to the next job's first step, and two CPU workers running two jobs at once against
    one worker running them one after the other."""
    report: dict[str, Any] = {}
    process, base = start_daemon(args, weights, Path(temp) / "state-one", "--workers", "1")
    try:
        wait_workers_ready(base)
        run_job(base, _png("warm"), {**settings, "iterations": 3, "seed": 998}, None)
        _, health = _call(f"{base}/v1/health")
        worker = health["workers"][0]
        report["memory"] = {
            "http_process_rss_bytes": _rss(process.pid),
            "http_process_has_torch": _has_torch(process.pid),
            "worker_rss_bytes": _rss(worker["pid"]),
            "worker_has_torch": _has_torch(worker["pid"]),
        }
        # two jobs, one worker: one after the other
        started = time.perf_counter()
        pair = _run_together(base, settings, "one")
        report["one_worker_two_jobs_wall_s"] = time.perf_counter() - started
        report["one_worker_step_ms"] = [r["step_ms"] for r in pair]
        # a worker's death: SIGKILL during a job, then the next job's first step
        _status, doomed = _call(
            f"{base}/v1/jobs", "POST", _request(_png("doomed"), {**settings, "iterations": 5000})
        )
        _wait_status(base, doomed["id"], lambda s: s["step"] >= 1)
        killed_at = time.perf_counter()
        os.kill(worker["pid"], 9)
        _, after = _call(f"{base}/v1/jobs", "POST", _request(_png("after"), settings))
        ready_s = None
        while True:
            _, health = _call(f"{base}/v1/health")
            if (
                ready_s is None
                and health["workers"][0]["restarts"] == 1
                and (health["workers"][0]["state"] != "starting")
            ):
                ready_s = time.perf_counter() - killed_at
            _, state = _call(f"{base}/v1/jobs/{after['id']}")
            if state["step"] >= 1:
                break
            time.sleep(0.02)
        report["death"] = {
            "to_worker_ready_s": ready_s,
            "to_next_job_first_step_s": time.perf_counter() - killed_at,
            "failed_job_message": _call(f"{base}/v1/jobs/{doomed['id']}")[1]["error"],
        }
        _wait_status(base, after["id"], lambda s: s["state"] not in ("queued", "running"))
    finally:
        process.terminate()
        process.wait(60)
    process, base = start_daemon(args, weights, Path(temp) / "state-two", "--workers", "2")
    try:
        wait_workers_ready(base)
        _run_together(base, {**settings, "iterations": 3}, "warm2")  # both load their models
        started = time.perf_counter()
        pair = _run_together(base, settings, "two")
        report["two_workers_two_jobs_wall_s"] = time.perf_counter() - started
        report["two_workers_step_ms"] = [r["step_ms"] for r in pair]
    finally:
        process.terminate()
        process.wait(60)
    report["two_workers_speedup"] = (
        report["one_worker_two_jobs_wall_s"] / report["two_workers_two_jobs_wall_s"]
    )
    return report


def cross_backend(
    args: argparse.Namespace, weights: Path, temp: str, settings: dict
) -> dict[str, Any]:
    """A quiet job's step time in a worker process against the in-process thread, both
    daemons up at once and their jobs alternating back to back (a shared machine's load
    drifts as much as the effect), each polled once a second; the median paired ratio."""
    daemons = {}
    try:
        for backend in ("thread", "process"):
            process, base = start_daemon(
                args, weights, Path(temp) / f"cross-{backend}", "--backend", backend
            )
            daemons[backend] = (process, base)
            wait_workers_ready(base)
            run_job(base, _png("warm"), {**settings, "iterations": 3, "seed": 997}, None)
        pairs = []
        for repeat in range(args.repeats):
            order = ("thread", "process") if repeat % 2 == 0 else ("process", "thread")
            steps = {}
            for backend in order:
                row = run_job(daemons[backend][1], _png(f"x{backend}{repeat}"), settings, None)
                steps[backend] = row["step_ms"]
            pairs.append(steps)
    finally:
        for process, _ in daemons.values():
            process.terminate()
            process.wait(60)
    ratios = [(p["process"] / p["thread"] - 1.0) * 100.0 for p in pairs]
    return {"pairs": pairs, "process_vs_thread_pcts": ratios,
            "median_process_vs_thread_pct": statistics.median(ratios)}  # fmt: skip


def _request(image: bytes, settings: dict) -> dict[str, Any]:
    return {"image": base64.b64encode(image).decode(), "settings": settings}


def _wait_status(base: str, job_id: str, until) -> dict[str, Any]:
    while True:
        _, state = _call(f"{base}/v1/jobs/{job_id}")
        if until(state):
            return state
        time.sleep(0.05)


def _run_together(base: str, settings: dict, tag: str) -> list[dict[str, Any]]:
    """Submit two identical jobs at once and wait for both; their final status bodies."""
    ids = []
    for index in range(2):
        _status, body = _call(
            f"{base}/v1/jobs", "POST", _request(_png(f"{tag}-{index}"), {**settings, "seed": 5})
        )
        ids.append(body["id"])
    finals = [_wait_status(base, i, lambda s: s["state"] not in ("queued", "running")) for i in ids]
    for final in finals:
        if final["state"] != "done":
            raise RuntimeError(f"job ended {final['state']}: {final.get('error')}")
    return [{**f, "step_ms": f["step_time_s"] * 1000} for f in finals]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_daemon_options(parser, device="auto", levels="4,8,16,32", seeds=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--poll-rate", type=float, default=50.0)
    parser.add_argument("--out", default="bench/results/daemon.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument(
        "--backends",
        default="thread,process",
        help="where jobs run, compared under polling: thread (in the HTTP process) and/or "
        "process (a worker process) (default: %(default)s)",
    )
    parser.add_argument(
        "--workers-bench",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the HTTP process's memory, a worker's death to the next job's "
        "first step, and two CPU workers running two jobs at once (default: yes)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.seeds, args.iterations, args.repeats = "2,4", 1, 20, 1

    settings = job_settings(args, iterations=args.iterations)
    report: dict[str, Any] = {
        "benchmark": "daemon",
        "python": platform.python_version(),
        "settings": settings,
        "quick": args.quick,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="clipasso-bench-") as temp:
        weights = weights_dir(args, temp)
        for backend in args.backends.split(","):
            report["backends"][backend] = polling(args, weights, temp, settings, backend)
        if {"thread", "process"} <= set(args.backends.split(",")):
            report["cross"] = cross_backend(args, weights, temp, settings)
        if args.workers_bench:
            report["workers"] = workers_bench(args, weights, temp, settings)
    _print_comparison(report)
    write_report(args.out, report)
    return 0


def _print_comparison(report: dict[str, Any]) -> None:
    backends = report["backends"]
    if {"thread", "process"} <= set(backends):
        thread, process = backends["thread"], backends["process"]
        print(
            f"under polling: thread {thread['slowdown_pct']:+.1f} %, process workers "
            f"{process['slowdown_pct']:+.1f} % (median paired slowdowns); quiet step "
            f"thread {thread['quiet_step_ms']:.1f} ms, process {process['quiet_step_ms']:.1f} ms"
        )
    cross = report.get("cross")
    if cross:
        print(
            "quiet step, process worker against thread (alternating pairs): "
            + ", ".join(f"{v:+.1f} %" for v in cross["process_vs_thread_pcts"])
            + f"; median {cross['median_process_vs_thread_pct']:+.1f} %"
        )
    workers = report.get("workers")
    if workers:
        memory = workers["memory"]
        print(
            f"HTTP process {memory['http_process_rss_bytes'] / 2**20:.0f} MiB RSS "
            f"(torch loaded: {memory['http_process_has_torch']}), worker "
            f"{memory['worker_rss_bytes'] / 2**20:.0f} MiB (torch: {memory['worker_has_torch']})"
        )
        death = workers["death"]
        print(
            f"worker killed -> ready again {death['to_worker_ready_s']:.1f} s, next job's "
            f"first step {death['to_next_job_first_step_s']:.1f} s"
        )
        print(
            f"two jobs: one worker {workers['one_worker_two_jobs_wall_s']:.1f} s, two workers "
            f"{workers['two_workers_two_jobs_wall_s']:.1f} s "
            f"(speedup x{workers['two_workers_speedup']:.2f})"
        )


def summarise_polling(
    args: argparse.Namespace,
    settings: dict,
    health: dict,
    rows: list[dict[str, Any]],
    cost: dict[str, Any],
    backend: str,
) -> dict[str, Any]:
    """Print one backend's table and verdict; its report."""
    quiet = [r["step_ms"] for r in rows if r["poll_rate_asked"] == 1.0]
    polled = [r["step_ms"] for r in rows if r["poll_rate_asked"] != 1.0]
    quiet_ms, polled_ms = statistics.median(quiet), statistics.median(polled)
    # Each repeat is a back-to-back (quiet, polled) pair: its ratio cancels the slow drift of a
    # shared machine, which is as large as the effect measured. The verdict uses their median.
    pair_pcts = [(p / q - 1.0) * 100.0 for q, p in zip(quiet, polled, strict=True)]
    slowdown = statistics.median(pair_pcts)
    polled_rows = [r for r in rows if r["polls"]]

    print(f"== backend {backend}: device {health['device']}, models {args.loss_model} + "
          f"{args.saliency_model}, "
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

    return {
        "backend": backend,
        "device": health["device"],
        "poll_rate": args.poll_rate,
        "repeats": args.repeats,
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


if __name__ == "__main__":
    sys.exit(main())
