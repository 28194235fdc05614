"""Renderer speed and memory: forward and forward+backward time per stroke count, size and batch.

Prints a table and writes JSON ``{"device", "threads", "results": [{"strokes", "size", "batch",
"fwd_ms", "fwd_bwd_ms", "peak_mb"}]}``. Strokes are random CLIPasso-like cubics (each within a
box of about a quarter of the canvas, as the saliency start and the optimisation produce).
peak_mb is torch.cuda.max_memory_allocated on CUDA; on CPU it is the growth of the process's
peak resident memory during that row (0 when an earlier row already reached a higher peak).

Targets (issue 3): 2 CPU threads, 32 strokes at 224 px, batch 1: fwd+bwd <= 20 ms;
H100: batch 12 x 32 strokes at 224 px fwd+bwd <= 2 ms.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from clipasso_server.engine.render import render_strokes


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(strokes: int, size: int, batch: int, device: torch.device, repeats: int) -> dict:
    """Median times of ``repeats`` runs after two warm-up runs."""
    generator = torch.Generator().manual_seed(strokes * 1000 + size + batch)
    centres = torch.rand(batch, strokes, 1, 2, generator=generator) * size * 0.8 + size * 0.1
    spread = (torch.rand(batch, strokes, 4, 2, generator=generator) - 0.5) * size * 0.25
    points = (centres + spread).to(device).requires_grad_(True)
    colour = torch.tensor([0.0, 0.0, 0.0, 1.0], device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mb()
    forward, both = [], []
    for index in range(repeats + 2):
        points.grad = None
        _sync(device)
        start = time.perf_counter()
        image = render_strokes(points, 3.0, colour, size, size)
        _sync(device)
        middle = time.perf_counter()
        image.mean().backward()
        _sync(device)
        end = time.perf_counter()
        if index >= 2:
            forward.append((middle - start) * 1000)
            both.append((end - start) * 1000)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = max(0.0, _peak_rss_mb() - rss_before)
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
    print(f"renderer benchmark on {device} with {args.threads} CPU threads")
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"device": str(device), "threads": args.threads, "results": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
