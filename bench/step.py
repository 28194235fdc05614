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
                         [--compile MODE] [--out bench/results/step.json]
    python bench/step.py --paired PAIRS [--levels 4] [--seeds 3] [--precision fp32|bf16]
                         [--out FILE]

--quick is a smoke run (2 timed steps, RN101 with one level and one seed). --compile runs the
loss model through torch.compile (e.g. reduce-overhead: CUDA graphs). --paired times the
pre-#22 step ("legacy": one batch through the loss model, open_clip's attention pool) and
today's ("new") alternately on one full-size random RN101 loaded through ModelStore, and
reports each pair's legacy/new ratio and their median (issue 22's target: >= 1.5 on the CPU).
--precision is the new path's arithmetic (default fp32; the legacy path is always float32):
``--precision bf16`` times the pre-#22 float32 step against today's step under bf16 autocast.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from report import add_precision_option, write_report

from clipasso_server.engine.clip_models import (
    COMPILE_MODES,
    LossModel,
    ModelStore,
    write_test_weights,
)
from clipasso_server.engine.optimise import (
    Drawing,
    LoopSettings,
    StepReport,
    Target,
    optimise,
    step_backward,
    step_loss,
)
from clipasso_server.engine.render import get_renderer
from clipasso_server.engine.sketcher import parse_color
from clipasso_server.engine.start import start_points

LEVELS = (4, 8, 16, 32)
SEEDS = 3
CANVAS = 224


def ellipse_photo(device: torch.device) -> torch.Tensor:
    """A dark ellipse with a light hole on white: some structure for the loss to see."""
    yy, xx = torch.meshgrid(torch.arange(CANVAS) + 0.5, torch.arange(CANVAS) + 0.5, indexing="ij")
    photo = torch.ones(3, CANVAS, CANVAS)
    photo[:, ((xx - 112) / 70) ** 2 + ((yy - 112) / 50) ** 2 < 1] = 0.15
    photo[:, ((xx - 112) / 25) ** 2 + ((yy - 112) / 15) ** 2 < 1] = 0.85
    return photo.to(device)


def _tiny_model(
    device: torch.device, weights_dir: Path, compile_mode: str | None, precision: str
) -> LossModel:
    if not (weights_dir / "test-tiny-rn.safetensors").exists():
        write_test_weights(weights_dir)
    store = ModelStore(
        device, weights_dir, allow_download=False, compile_mode=compile_mode, precision=precision
    )
    return store.loss_model("test-tiny-rn")


def _rn101_random(device: torch.device, compile_mode: str | None, precision: str) -> LossModel:
    import open_clip

    model = open_clip.create_model("RN101-quickgelu", pretrained=None, device="cpu")
    visual = model.visual
    visual.eval()
    visual.requires_grad_(False)
    return LossModel(
        "RN101-random", "random", visual, device, precision=precision, compile_mode=compile_mode
    )


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
    photo = ellipse_photo(device)
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


def _set_path(loss_model: LossModel, path: str) -> LoopSettings:
    """Switch the loss model to ``path`` ("legacy": the pre-#22 step; "new": today's default)
    and return the loop settings of that path."""
    legacy = path == "legacy"
    loss_model.legacy_pool = legacy
    return LoopSettings(iterations=1, augmentations=4, chunk_images=0 if legacy else None)


def paired_steps(
    loss_model: LossModel,
    device: torch.device,
    levels: tuple[int, ...],
    seeds: int,
    pairs: int,
    chunk: int | None = None,
    precision: str = "fp32",
) -> dict:
    """Alternate one step of the legacy path and one of the new path, ``pairs`` times (after
    one warm-up step each), on the same weights, photo and start; the order within a pair
    alternates too. Each step is the loop's body (views, render, loss and backward, Adam).
    The legacy path computes in ``loss_model``'s float32; the new one in ``precision``."""
    photo = ellipse_photo(device)
    targets = {
        "legacy": Target(photo, loss_model),
        "new": Target(photo, loss_model.in_precision(precision)),
    }
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    points, mask = start_points(saliency, levels, tuple(range(seeds)), CANVAS)
    drawing = Drawing(
        get_renderer("torch"), 3.0, parse_color("#000000").to(device), mask.to(device), CANVAS
    )
    state = {}
    for path in ("legacy", "new"):
        p = points.to(device).clone().requires_grad_(True)
        state[path] = (p, torch.optim.Adam([p], lr=1.0), torch.Generator().manual_seed(0))

    def step(path: str) -> float:
        settings = _set_path(loss_model, path)
        if chunk is not None and path == "new":
            settings = LoopSettings(iterations=1, chunk_images=chunk)
        p, optimizer, generator = state[path]
        target = targets[path]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began, cpu_began = time.perf_counter(), time.process_time()
        grid = target.view_grid(settings.augmentations, generator)
        optimizer.zero_grad(set_to_none=True)
        if settings.chunk_images != 0:
            step_backward(drawing(p), target, grid, settings.chunk_images or None)
        else:
            loss, _ = step_loss(drawing(p), target, grid)
            loss.sum().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began, time.process_time() - cpu_began

    step("legacy"), step("new")
    ratios, cpu_ratios, legacy_s, new_s = [], [], [], []
    for i in range(pairs):
        order = ("legacy", "new") if i % 2 == 0 else ("new", "legacy")
        times = {path: step(path) for path in order}
        legacy_s.append(times["legacy"][0])
        new_s.append(times["new"][0])
        ratios.append(times["legacy"][0] / times["new"][0])
        cpu_ratios.append(times["legacy"][1] / times["new"][1])
        print(
            f"  pair {i + 1}: legacy {times['legacy'][0]:.2f} s, new {times['new'][0]:.2f} s, "
            f"ratio {ratios[-1]:.2f} (CPU time: legacy {times['legacy'][1]:.1f} s, "
            f"new {times['new'][1]:.1f} s, ratio {cpu_ratios[-1]:.2f})",
            flush=True,
        )
    _set_path(loss_model, "new")
    return {
        "model": loss_model.name,
        "device": str(device),
        "levels": list(levels),
        "seeds": seeds,
        "sketches": len(levels) * seeds,
        "pairs": pairs,
        "chunk_images": chunk or None,
        "new_precision": precision,
        "legacy_s": [round(t, 3) for t in legacy_s],
        "new_s": [round(t, 3) for t in new_s],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        # process CPU time (both threads): less disturbed by other processes on a shared machine
        "cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "median_cpu_ratio": round(statistics.median(cpu_ratios), 3),
    }


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
    parser.add_argument(
        "--compile",
        default=None,
        choices=COMPILE_MODES,
        help="torch.compile the loss model in this mode (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="PAIRS",
        help="instead: time the legacy (pre-#22) and the new step alternately, PAIRS pairs, "
        "full-size random RN101 loaded through ModelStore; reports the median ratio",
    )
    parser.add_argument("--levels", type=int, default=4, help="--paired: first N of 4,8,16,32")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="--paired: seeds per level")
    parser.add_argument("--chunk", type=int, default=None, help="--paired: images per chunk")
    add_precision_option(parser)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.paired:
        from profile_step import load_rn101

        device = torch.device("cpu" if args.device == "auto" else args.device)
        model = load_rn101(Path("bench/results/rn101-weights"), device, "fp32")
        levels = LEVELS[: args.levels]
        print(f"paired: {len(levels)} levels x {args.seeds} seeds, {args.threads} threads")
        row = paired_steps(
            model, device, levels, args.seeds, args.paired, args.chunk, args.precision
        )
        print(
            f"median legacy/new ratio {row['median_ratio']:.2f} (CPU time "
            f"{row['median_cpu_ratio']:.2f}) over {row['pairs']} pairs "
            f"(legacy median {statistics.median(row['legacy_s']):.2f} s, "
            f"new median {statistics.median(row['new_s']):.2f} s)"
        )
        write_report(
            args.out,
            {
                "benchmark": "step_paired",
                "threads": args.threads,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "target_median_ratio": 1.5,
                "rows": [row],
            },
        )
        return 0
    steps, warmup = (2, 1) if args.quick else (args.steps, 3)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    rows = []
    for device in devices:
        wanted = set(args.models.split(","))
        weights = Path(args.weights_dir)
        tiny = (
            _tiny_model(device, weights, args.compile, args.precision) if "tiny" in wanted else None
        )
        full = _rn101_random(device, args.compile, args.precision) if "rn101" in wanted else None
        for model in (m for m in (tiny, full) if m is not None):
            levels, seeds = ((4,), 1) if args.quick and model is full else (LEVELS, SEEDS)
            row = time_steps(model, device, levels, seeds, steps, warmup)
            row["quick"] = args.quick
            row["compile"] = args.compile
            row["precision"] = args.precision
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
