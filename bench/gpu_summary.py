"""bench/gpu_check.sh's last step: OUTDIR/summary.json, each figure against its target.

Reads what the check's steps wrote to $OUT (gpu.json, engine_tests.xml, step.json,
step_graphs.json, step_compiled.json, render.json, job.json; any may be missing when its step
failed) and $TOTAL (seconds),
$STATUSES (``name=exit status`` lines) and $DEVICE_OPTS from the environment.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

TARGET_STEP_MS = 15.0
TARGET_JOB_S = 30.0


def load(out: Path, name: str) -> Any:
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def rn101_cuda_step_ms(step: dict[str, Any] | None) -> float | None:
    """bench/step.py's full-size RN101 step time on CUDA (it times the tiny model too, first:
    that row must not stand for the default job's step)."""
    for row in (step or {}).get("rows", []):
        if row.get("model") == "RN101-random" and str(row.get("device", "")).startswith("cuda"):
            return row.get("step_ms")
    return None


def engine_tests(out: Path) -> dict[str, int] | None:
    try:
        root = ET.parse(out / "engine_tests.xml").getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    except (OSError, ET.ParseError, AttributeError):
        return None


def summarise(out: Path, total_s: int, statuses: str, device_opts: str) -> dict[str, Any]:
    job = load(out, "job.json") or {}
    step = load(out, "step.json")
    summary = {
        "cuda": True,
        "gpu": load(out, "gpu.json"),
        "total_s": total_s,
        "exit_status": dict(line.split("=") for line in statuses.split()),
        "engine_tests": engine_tests(out),
        "engine_tests_device_option": device_opts or None,
        "step": step,
        "render": load(out, "render.json"),
        "job": job,
        "default_step_ms": job.get("step_ms") or rn101_cuda_step_ms(step),
        # the RN101 step per option (issue 22 part 4): eager, CUDA graphs, inductor
        "step_ms_by_option": {
            "eager": rn101_cuda_step_ms(step),
            "compile_reduce_overhead": rn101_cuda_step_ms(load(out, "step_graphs.json")),
            "compile_inductor": rn101_cuda_step_ms(load(out, "step_compiled.json")),
        },
        "target_step_ms": TARGET_STEP_MS,
        "whole_job_s": job.get("whole_job_s"),
        "target_job_s": TARGET_JOB_S,
        "peak_gpu_bytes": job.get("peak_gpu_bytes"),
    }
    ms, whole = summary["default_step_ms"], summary["whole_job_s"]
    summary["step_ok"] = ms is not None and ms <= TARGET_STEP_MS
    summary["job_ok"] = whole is not None and whole <= TARGET_JOB_S
    summary["step_ok_by_option"] = {
        option: value is not None and value <= TARGET_STEP_MS
        for option, value in summary["step_ms_by_option"].items()
    }
    return summary


def main() -> int:
    out = Path(os.environ["OUT"])
    summary = summarise(
        out, int(os.environ["TOTAL"]), os.environ["STATUSES"], os.environ["DEVICE_OPTS"]
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ms, whole = summary["default_step_ms"], summary["whole_job_s"]
    print(
        f"gpu_check: {summary['total_s']} s in all; default step {ms} ms (target <= 15), whole "
        f"job {whole} s (target <= 30), peak GPU memory {summary['peak_gpu_bytes']} bytes; "
        f"tests {summary['engine_tests']}; exit statuses {summary['exit_status']}"
    )
    options = ", ".join(f"{k} {v} ms" for k, v in summary["step_ms_by_option"].items())
    print(f"gpu_check: RN101 step by option: {options} (target <= 15)")
    print(f"gpu_check: wrote {out}/summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
