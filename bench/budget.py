"""A job with a time budget, and how good the daemon's first estimate of a job's duration is.

Starts a real ``clipasso serve`` process and runs two jobs on its worker:

* a budgeted job (``--budget`` seconds, many more iterations than fit): the budget, the wall
  time from submission to the end, the steps run and the stop reason of the result;
* a job of ``--iterations`` steps without a budget, polled 5 times a second: the ``eta_s`` the
  status gave first, and the one it gave once ``--after`` steps had run, each against the real
  time that was then left. The target: within 15 % after the first 20 steps on a quiet machine.

    python bench/budget.py [--budget 60] [--iterations 200] [--after 20] [--device cpu]
                           [--levels 4,8,16,32 --seeds 3]
                           [--clip-weights DIR --loss-model RN101 --saliency-model ViT-B-32]
                           [--out bench/results/budget.json]

Without --clip-weights it uses the tiny test models (their weights are written first).
"""

from __future__ import annotations

import argparse
import base64
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import (  # bench/daemon.py
    _call,
    _png,
    add_daemon_options,
    job_settings,
    start_daemon,
    wait_workers_ready,
    weights_dir,
)
from report import write_report

TARGET_ETA_ERROR_PCT = 15.0
POLL_EVERY_S = 0.2


def submit(base: str, settings: dict[str, Any], tag: str) -> str:
    body = {"image": base64.b64encode(_png(tag)).decode(), "settings": settings, "name": tag}
    status, answer = _call(f"{base}/v1/jobs", "POST", body)
    if status != 202:
        raise RuntimeError(f"submission answered {status}: {answer}")
    return answer["id"]


def follow(base: str, job_id: str) -> tuple[list[tuple[float, dict[str, Any]]], float]:
    """Poll the job until it ends: (seconds since submission, status) pairs and the end time."""
    started = time.monotonic()
    seen: list[tuple[float, dict[str, Any]]] = []
    while True:
        _, status = _call(f"{base}/v1/jobs/{job_id}")
        now = time.monotonic() - started
        seen.append((now, status))
        if status["state"] not in ("queued", "running"):
            return seen, now
        time.sleep(POLL_EVERY_S)


def budget_run(base: str, settings: dict[str, Any], budget: float) -> dict[str, Any]:
    job_id = submit(base, {**settings, "iterations": 20000, "time_budget_s": budget}, "budget")
    seen, wall = follow(base, job_id)
    _, result = _call(f"{base}/v1/jobs/{job_id}/result")
    started = next((t for t, s in seen if s["state"] == "running"), 0.0)
    return {
        "budget_s": budget,
        "wall_s": round(wall, 2),
        "running_s": round(wall - started, 2),
        "steps_run": result.get("steps_run"),
        "stop_reason": result.get("stop_reason"),
        "state": seen[-1][1]["state"],
    }


def eta_error(seen: list[tuple[float, dict[str, Any]]], end: float, after: int) -> dict[str, Any]:
    """The first ETA and the one at step ``after``, each against the time really left then."""

    def judged(at: float, status: dict[str, Any]) -> dict[str, Any]:
        left = end - at
        eta = float(status["eta_s"])
        return {
            "at_s": round(at, 2),
            "step": status["step"],
            "state": status["state"],
            "eta_s": round(eta, 2),
            "real_left_s": round(left, 2),
            "error_pct": round(100.0 * (eta - left) / left, 1) if left > 0 else None,
        }

    known = [(t, s) for t, s in seen if s.get("eta_s") is not None and s["state"] != "done"]
    first = judged(*known[0]) if known else None
    later = next(((t, s) for t, s in known if s["step"] >= after), None)
    return {"first": first, "after_steps": after, "at_step": judged(*later) if later else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--after", type=int, default=20)
    add_daemon_options(parser, device="cpu", levels="4,8,16,32", seeds=3)
    parser.add_argument("--out", default="bench/results/budget.json")
    args = parser.parse_args(argv)
    settings = job_settings(args)
    with tempfile.TemporaryDirectory(prefix="clipasso-bench-") as temp:
        weights = weights_dir(args, temp)
        process, base = start_daemon(args, weights, Path(temp) / "state")
        try:
            wait_workers_ready(base)
            budgeted = budget_run(base, settings, args.budget)
            job_id = submit(base, {**settings, "iterations": args.iterations}, "eta")
            seen, end = follow(base, job_id)
            estimate = eta_error(seen, end, args.after)
        finally:
            process.terminate()
            process.wait(60)
    report = {
        "machine": platform.machine(),
        "device": args.device,
        "settings": settings,
        "iterations": args.iterations,
        "budget": budgeted,
        "eta": estimate,
        "target_eta_error_pct": TARGET_ETA_ERROR_PCT,
    }
    print(f"budget {budgeted['budget_s']:g} s: submission to end {budgeted['wall_s']} s "
          f"(running {budgeted['running_s']} s), {budgeted['steps_run']} steps, "
          f"stopped by {budgeted['stop_reason']}")  # fmt: skip
    for label in ("first", "at_step"):
        row = estimate[label]
        if row:
            print(f"ETA {label:8s} at {row['at_s']:7.2f} s (step {row['step']:4d}): "
                  f"{row['eta_s']:8.2f} s, really {row['real_left_s']:8.2f} s, "
                  f"error {row['error_pct']} %")  # fmt: skip
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
