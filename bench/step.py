"""Time per optimisation step and peak memory of the batched CLIPasso loop.

One step is what ``sketch()`` runs per iteration: one renderer call for every (level, seed)
sketch, one loss-model forward/backward over their plain and augmented views, one Adam update.
Measured for 4 levels (4/8/16/32 strokes) x 3 seeds with
  (a) the tiny test loss model on the CPU (issue target: <= 0.5 s per step on 2 threads), and
  (b) a full-size RN101 visual tower with random weights (``RN101-quickgelu`` built by open_clip
      without pretrained weights, wrapped in the same LossModel) on the CPU and on CUDA when
      available (issue target on one H100: <= 15 ms per step).
The photo's augmented views go through a separate no-grad forward, as in ``sketch()``.

    python bench/step.py [--threads 2] [--steps 20] [--device auto|cpu|cuda] [--quick]
                         [--out bench/results/step.json]

--quick is a smoke run (2 timed steps, RN101 with one level and one seed).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from report import write_report

from clipasso_server.engine.clip_models import LossModel, ModelStore, write_test_weights
from clipasso_server.engine.optimise import (
    Drawing,
    LoopSettings,
    StepReport,
    Target,
    optimise,
)
from clipasso_server.engine.render import get_renderer
from clipasso_server.engine.sketcher import parse_color
from clipasso_server.engine.start import start_points

LEVELS = (4, 8, 16, 32)
SEEDS = 3
CANVAS = 224


def _photo(device: torch.device) -> torch.Tensor:
    """A dark ellipse with a light hole on white: some structure for the loss to see."""
    yy, xx = torch.meshgrid(torch.arange(CANVAS) + 0.5, torch.arange(CANVAS) + 0.5, indexing="ij")
    photo = torch.ones(3, CANVAS, CANVAS)
    photo[:, ((xx - 112) / 70) ** 2 + ((yy - 112) / 50) ** 2 < 1] = 0.15
    photo[:, ((xx - 112) / 25) ** 2 + ((yy - 112) / 15) ** 2 < 1] = 0.85
    return photo.to(device)


def _tiny_model(device: torch.device, weights_dir: Path) -> LossModel:
    if not (weights_dir / "test-tiny-rn.safetensors").exists():
        write_test_weights(weights_dir)
    return ModelStore(device, weights_dir, allow_download=False).loss_model("test-tiny-rn")


def _rn101_random(device: torch.device) -> LossModel:
    import open_clip

    model = open_clip.create_model("RN101-quickgelu", pretrained=None, device="cpu")
    visual = model.visual
    visual.eval()
    visual.requires_grad_(False)
    return LossModel("RN101-random", "random", visual, device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(
    loss_model: LossModel,
    device: torch.device,
    levels: tuple[int, ...],
    seeds: int,
    steps: int,
    warmup: int,
) -> dict:
    """Run ``warmup + steps`` steps of the real loop; time the last ``steps``."""
    photo = _photo(device)
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    points, mask = start_points(saliency, levels, tuple(range(seeds)), CANVAS)
    marks: dict[int, float] = {}

    def on_step(report: StepReport) -> None:
        if report.step in (warmup, warmup + steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[report.step] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mib()
    optimise(
        Target(photo, loss_model),
        points,
        Drawing(
            get_renderer("auto"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
        ),
        LoopSettings(iterations=warmup + steps, eval_every=10, augmentations=4),
        generator=torch.Generator().manual_seed(0),
        on_step=on_step,
    )
    step_s = (marks[warmup + steps] - marks[warmup]) / steps
    row = {
        "model": loss_model.name,
        "device": str(device),
        "levels": list(levels),
        "seeds": seeds,
        "sketches": len(levels) * seeds,
        "steps": steps,
        "step_ms": round(step_s * 1000, 2),
    }
    if device.type == "cuda":
        row["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        row["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        row["peak_rss_growth_mib"] = round(_peak_rss_mib() - rss_before, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA if any), cpu, cuda")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument("--out", default="bench/results/step.json")
    parser.add_argument("--weights-dir", default="bench/results/test-weights")
    parser.add_argument(
        "--models", default="tiny,rn101", help="which rows: tiny, rn101 or both (default)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    steps, warmup = (2, 1) if args.quick else (args.steps, 3)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    rows = []
    for device in devices:
        wanted = set(args.models.split(","))
        tiny = _tiny_model(device, Path(args.weights_dir)) if "tiny" in wanted else None
        full = _rn101_random(device) if "rn101" in wanted else None
        for model in (m for m in (tiny, full) if m is not None):
            levels, seeds = ((4,), 1) if args.quick and model is full else (LEVELS, SEEDS)
            row = time_steps(model, device, levels, seeds, steps, warmup)
            row["quick"] = args.quick
            rows.append(row)
            print(_format(row), flush=True)

    report = {
        "benchmark": "step",
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "targets": {"tiny_cpu_2_threads_s": 0.5, "rn101_h100_ms": 15},
        "rows": rows,
    }
    write_report(args.out, report)
    return 0


def _format(row: dict) -> str:
    memory = (
        f"{row['peak_mem_mib']:>9.1f} MiB GPU"
        if "peak_mem_mib" in row
        else f"{row['peak_rss_mib']:>9.1f} MiB RSS"
    )
    return (
        f"{row['model']:<14} {row['device']:<6} B={row['sketches']:<3} "
        f"{row['step_ms']:>10.2f} ms/step {memory}"
    )


if __name__ == "__main__":
    sys.exit(main())
