"""Renderer speed and memory: forward and forward+backward time per stroke count, size and batch.

Prints a table and writes JSON ``{"device", "threads", "results": [{"strokes", "size", "batch",
"fwd_ms", "fwd_bwd_ms", "peak_mb"}]}``. Strokes are random CLIPasso-like cubics (each within a
box of about a quarter of the canvas, as the saliency start and the optimisation produce).
peak_mb is the renderer's working memory for one forward+backward, measured over the timed runs
after two warm-ups: on CUDA torch.cuda.max_memory_allocated minus what was allocated before;
on CPU (Linux) the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs)
minus its resident memory before, so memory the allocator kept from earlier rows and reuses is
not counted (small rows can read 0); elsewhere the growth of ru_maxrss (0 when an earlier row
already reached a higher peak).

Targets (issue 3): 2 CPU threads, 32 strokes at 224 px, batch 1: fwd+bwd <= 20 ms;
H100: batch 12 x 32 strokes at 224 px fwd+bwd <= 2 ms.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
from report import write_report

from clipasso_server.engine.render import render_strokes


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status ("VmRSS", "VmHWM") in MiB, None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _start_rss_peak() -> float:
    """Start measuring the peak resident memory; returns the baseline to subtract."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak := current resident size
        current = _status_mb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_peak() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(strokes: int, size: int, batch: int, device: torch.device, repeats: int) -> dict:
    """Median times of ``repeats`` runs after two warm-up runs, and their peak memory."""
    generator = torch.Generator().manual_seed(strokes * 1000 + size + batch)
    centres = torch.rand(batch, strokes, 1, 2, generator=generator) * size * 0.8 + size * 0.1
    spread = (torch.rand(batch, strokes, 4, 2, generator=generator) - 0.5) * size * 0.25
    points = (centres + spread).to(device).requires_grad_(True)
    colour = torch.tensor([0.0, 0.0, 0.0, 1.0], device=device)

    def once() -> tuple[float, float]:
        points.grad = None
        _sync(device)
        start = time.perf_counter()
        image = render_strokes(points, 3.0, colour, size, size)
        _sync(device)
        middle = time.perf_counter()
        image.mean().backward()
        _sync(device)
        end = time.perf_counter()
        return (middle - start) * 1000, (end - start) * 1000

    once(), once()  # warm-up: first-call allocations and caches are not the renderer's cost
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline = _start_rss_peak()
    forward, both = zip(*(once() for _ in range(repeats)), strict=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - baseline
    else:
        peak = max(0.0, _rss_peak() - baseline)
    return {
        "strokes": strokes,
        "size": size,
        "batch": batch,
        "fwd_ms": round(statistics.median(forward), 3),
        "fwd_bwd_ms": round(statistics.median(both), 3),
        "peak_mb": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="two small rows only (smoke test)")
    parser.add_argument("--out", default="bench/results/render.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        grid = [(4, 64, 1), (8, 64, 2)]
    else:
        grid = [(s, 224, b) for b in (1, 12) for s in (4, 8, 16, 32, 64)]
        grid += [(32, 512, 1), (32, 512, 12)]
    rows = []
    print(f"renderer benchmark on {device} with {args.threads} CPU threads (medians of runs)")
    print(
        f"{'strokes':>7} {'size':>5} {'batch':>5} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>8}"
    )
    for strokes, size, batch in grid:
        row = measure(strokes, size, batch, device, 2 if args.quick else args.repeats)
        rows.append(row)
        print(
            f"{row['strokes']:>7} {row['size']:>5} {row['batch']:>5} {row['fwd_ms']:>9.2f} "
            f"{row['fwd_bwd_ms']:>11.2f} {row['peak_mb']:>8.1f}"
        )
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    write_report(args.out, {"device": name, "threads": args.threads, "results": rows})


if __name__ == "__main__":
    main()
