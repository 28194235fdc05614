"""What the live web page costs: its weight, the daemon's CPU for one viewer, the preview lag.

Starts a real ``clipasso serve`` process (jobs run in its worker process, so the daemon's own
CPU time, read from /proc, is the HTTP side only), queues a long job, and measures:

* the page's weight: the bytes of every file the page loads (HTML, script, style, icon), and
  the bytes of one poll's answers (job list, best-so-far result, thumbnail once per job);
* the daemon's CPU cost of one viewer: its CPU ms per second over ``--seconds`` with nothing
  watching, then with one headless Chromium showing ``/`` (Playwright, ``/usr/bin/chromium``),
  and the viewer's requests per second;
* how far a preview lags behind the engine: for every preview the page draws, the time since
  the engine reached the step its strokes are from (a 10 Hz status poller from this script
  records when each step was reached) and how many steps the engine was ahead when it was
  drawn.

    python bench/web_viewer.py [--seconds 30] [--device cpu] [--levels 4,8] [--seeds 1]
                               [--clip-weights DIR --loss-model RN101 --saliency-model ViT-B-32]
                               [--chromium /usr/bin/chromium] [--out bench/results/web_viewer.json]

Without --clip-weights it uses the tiny test models (their weights are written first).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import (  # bench/daemon.py
    _call,
    _png,
    _process_cpu_s,
    add_daemon_options,
    job_settings,
    start_daemon,
    weights_dir,
)
from report import write_report

PAGE_FILES = ("/", "/web/app.js", "/web/style.css", "/web/icon.svg")
VIEWER = {"X-Clipasso-Viewer": "1"}


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers=VIEWER)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def page_weight(base: str, job_id: str) -> dict[str, Any]:
    """Bytes of the page's files (as sent: the daemon does not compress) and of one poll."""
    files = {path: len(_get(base + path)) for path in PAGE_FILES}
    gzipped = sum(len(gzip.compress(_get(base + path), 9)) for path in PAGE_FILES)
    return {
        "files": files,
        "page_bytes": sum(files.values()),
        "page_bytes_gzip_if_compressed": gzipped,
        "poll_bytes": {
            "job_list": len(_get(f"{base}/v1/jobs")),
            "partial_result": len(_get(f"{base}/v1/jobs/{job_id}/result?partial=1")),
            "thumbnail_once": len(_get(f"{base}/v1/jobs/{job_id}/thumbnail")),
        },
    }


def daemon_cpu_ms_per_s(pid: int, seconds: float, wait=time.sleep) -> float:
    """The daemon process's CPU ms per wall second over ``wait(seconds)``."""
    before, start = _process_cpu_s(pid), time.monotonic()
    wait(seconds)
    after, elapsed = _process_cpu_s(pid), time.monotonic() - start
    return (after - before) * 1000.0 / elapsed


class StepClock(threading.Thread):
    """Polls the job's status 10 times a second; when each step was first seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[float, int]] = []  # (wall time, step), steps increasing
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            step = json.loads(_get(self.url))["step"]
            if not self.seen or step > self.seen[-1][1]:
                self.seen.append((time.time(), step))
            self.stop.wait(0.1)

    def reached(self, step: int) -> float | None:
        """When the engine was first seen at ``step`` or beyond."""
        return next((t for t, s in self.seen if s >= step), None)

    def step_at(self, when: float) -> int:
        return max((s for t, s in self.seen if t <= when), default=0)


WATCH_PREVIEWS = """() => {
    window.drawn = [];
    const seen = new WeakSet();
    const observe = (el) => {
        if (seen.has(el)) return;
        seen.add(el);
        new MutationObserver(() => window.drawn.push([Date.now() / 1000, Number(el.dataset.step)]))
            .observe(el, { attributes: true, attributeFilter: ["data-step"] });
    };
    setInterval(() => document.querySelectorAll(".previews").forEach(observe), 50);
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    add_daemon_options(parser, device="cpu", levels="4,8", seeds=1)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", default="bench/results/web_viewer.json")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="clipasso-bench-") as temp:
        weights = weights_dir(args, temp)
        process, base = start_daemon(args, weights, Path(temp) / "state")
        try:
            _, health = _call(f"{base}/v1/health")
            settings = job_settings(args, iterations=20000)  # runs until the daemon stops
            body = {
                "image": base64.b64encode(_png("viewer")).decode(),
                "settings": settings,
                "name": "bench",
                "detached": True,  # nobody polls it in the quiet phase
            }
            _, job = _call(f"{base}/v1/jobs", "POST", body)
            status_url = f"{base}/v1/jobs/{job['id']}"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # until the first snapshot exists
                try:
                    _get(status_url + "/result?partial=1")
                    break
                except urllib.error.HTTPError:
                    time.sleep(0.2)
            weight = page_weight(base, job["id"])
            quiet = daemon_cpu_ms_per_s(process.pid, args.seconds)

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
                page = browser.new_page()
                requests: list[float] = []
                page.on("requestfinished", lambda r: requests.append(time.monotonic()))
                page.goto(base + "/")
                page.wait_for_selector(".preview path", timeout=120_000)
                page.evaluate(WATCH_PREVIEWS)

                # (the sync API delivers the page's events only while it is called)
                def wait(seconds: float) -> None:
                    page.wait_for_timeout(seconds * 1000)

                wait(2.0)  # page settled: thumbnail loaded, previews drawn
                count_from = len(requests)
                start = time.monotonic()
                watched = daemon_cpu_ms_per_s(process.pid, args.seconds, wait)
                viewer_requests = len(requests) - count_from
                rate = viewer_requests / (time.monotonic() - start)

                clock = StepClock(status_url)
                clock.start()
                page.evaluate("window.drawn = []")
                wait(args.seconds)
                clock.stop.set()
                clock.join()
                drawn = page.evaluate("window.drawn")
                browser.close()
            final = json.loads(_get(status_url))
        finally:
            process.terminate()
            process.wait(60)

    lags_s, behind = [], []
    for when, step in drawn:
        reached = clock.reached(step)
        if reached is not None:
            lags_s.append(max(0.0, when - reached))
            behind.append(max(0, clock.step_at(when) - step))
    step_s = final.get("step_time_s")
    viewer_cost = watched - quiet

    print(f"device {health['device']}, models {args.loss_model} + {args.saliency_model}, "
          f"levels {args.levels} x {args.seeds} seeds, step {step_s * 1000:.0f} ms")  # fmt: skip
    print("page weight (bytes as sent, uncompressed):")
    for path, size in weight["files"].items():
        print(f"  {path:<16} {size:>7}")
    print(f"  {'total':<16} {weight['page_bytes']:>7}  "
          f"({weight['page_bytes_gzip_if_compressed']} if gzipped)")  # fmt: skip
    for name, size in weight["poll_bytes"].items():
        print(f"  poll: {name:<18} {size:>7}")
    print(f"daemon CPU: {quiet:.2f} ms/s with no viewer, {watched:.2f} ms/s with one viewer "
          f"(+{viewer_cost:.2f} ms/s); viewer: {rate:.2f} requests/s")  # fmt: skip
    if lags_s:
        print(f"preview lag over {len(lags_s)} redraws: mean {statistics.mean(lags_s):.2f} s, "
              f"max {max(lags_s):.2f} s; engine ahead by mean {statistics.mean(behind):.1f} "
              f"steps, max {max(behind)}")  # fmt: skip
    else:
        print("preview lag: no redraws seen")

    report = {
        "benchmark": "web_viewer",
        "python": platform.python_version(),
        "device": health["device"],
        "settings": settings,
        "seconds": args.seconds,
        "step_time_s": step_s,
        "page_weight": weight,
        "daemon_cpu_ms_per_s_quiet": quiet,
        "daemon_cpu_ms_per_s_one_viewer": watched,
        "viewer_daemon_cpu_ms_per_s": viewer_cost,
        "viewer_requests_per_s": rate,
        "preview_redraws": len(lags_s),
        "preview_lag_s_mean": statistics.mean(lags_s) if lags_s else None,
        "preview_lag_s_max": max(lags_s) if lags_s else None,
        "preview_steps_behind_mean": statistics.mean(behind) if behind else None,
        "preview_steps_behind_max": max(behind) if behind else None,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
