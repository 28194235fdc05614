"""Where one CPU optimisation step goes: torch.profiler's self time by operator, grouped.

One step of the batched loop (``optimise``) on full-size RN101 with random weights, loaded
through the real ``ModelStore`` from a safetensors file (written once under --weights-dir, as
bench/memory.py does; no download). The step is the loop's own pieces (``Drawing``,
``Target.view_grid``, ``step_loss``, Adam), with the backward split at the rendered images so
that the renderer's backward is measured apart from the model's:
``loss.backward()`` into a detached copy of the sketches, then ``sketches.backward(grad)``;
by the chain rule this is the same gradient as one backward.

Each operator's *self* CPU time (no double counting of nested calls) is put in one group:
convolutions (forward and backward), matmuls (the attention pool's linear layers and its
attention products), grid_sample (views, forward and backward), the renderer (everything inside
its forward and its backward), Adam, copies and layout changes, allocation, and the remaining
element-wise work. The table is printed and written to --out as JSON.

    python bench/profile_step.py [--levels 4] [--seeds 3] [--steps 2] [--threads 2]
                                 [--path both|legacy|new] [--out bench/results/profile_step.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from report import add_precision_option, write_report
from step import ellipse_photo
from torch.profiler import ProfilerActivity, profile, record_function

from clipasso_server.engine import optimise as loop
from clipasso_server.engine.clip_models import ModelStore
from clipasso_server.engine.render import render_strokes
from clipasso_server.engine.sketcher import parse_color
from clipasso_server.engine.start import start_points

LADDER = (4, 8, 16, 32)
CANVAS = 224

#: (group, substrings of aten operator names), first match wins; phases decide the renderer
#: and Adam groups before these are looked at
GROUPS = (
    ("convolution", ("conv", "mkldnn_convolution", "max_pool", "avg_pool", "adaptive_avg")),
    ("matmul (attention pool)", ("addmm", "::mm", "bmm", "matmul", "linear", "baddbmm", "dot")),
    ("grid_sample", ("grid_sampler",)),
    ("copy / layout", ("copy_", "contiguous", "::to", "_to_copy", "clone", "cat", "stack")),
    ("allocation", ("empty", "zeros", "ones", "full", "resize_", "new_")),
)


def load_rn101(
    weights_dir: Path, device: torch.device | str = "cpu", precision: str = "fp32"
) -> loop.FeatureModel:
    """Full-size RN101 with random weights, through the real loading path (ModelStore from a
    safetensors file; the step uses no other model, the ViT only makes the saliency map)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from memory import write_random_weights

    write_random_weights(weights_dir, ("RN101",))
    store = ModelStore(device, weights_dir, allow_download=False, precision=precision)
    return store.loss_model("RN101")


def _group(name: str) -> str:
    for group, keys in GROUPS:
        if any(key in name for key in keys):
            return group
    return "other element-wise"


def one_step(
    target: loop.Target,
    drawing: loop.Drawing,
    points: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    chunk: int,
) -> None:
    """One step of the loop, phase by phase (each phase a record_function scope); ``chunk``
    0 is the pre-#22 step (one batch through ``step_loss``), else ``step_backward``'s."""
    with record_function("phase:views"):
        grid = target.view_grid(4, generator)
    with record_function("phase:render"):
        sketches = drawing(points)
    leaf = sketches.detach().requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    if chunk != 0:
        with record_function("phase:model forward + backward"):
            loop.step_backward(leaf, target, grid, chunk)
    else:
        with record_function("phase:model forward"):
            loss, _plain = loop.step_loss(leaf, target, grid)
        with record_function("phase:model backward"):
            loss.sum().backward()
    with record_function("phase:render backward"):
        sketches.backward(leaf.grad)
    with record_function("phase:adam"):
        optimizer.step()


def _phase_of(event) -> str | None:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("phase:"):
            return parent.name[6:]
        parent = parent.cpu_parent
    return None


def profile_steps(
    model, levels: tuple[int, ...], seeds: int, steps: int, path: str = "new"
) -> dict:
    photo = ellipse_photo(torch.device("cpu"))
    target = loop.Target(photo, model)
    saliency = torch.rand(CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    start, mask = start_points(saliency, levels, tuple(range(seeds)), CANVAS)
    drawing = loop.Drawing(render_strokes, 3.0, parse_color("#000000"), mask, CANVAS)
    points = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([points], lr=1.0)
    generator = torch.Generator().manual_seed(0)
    model.legacy_pool = path == "legacy"
    chunk = 0 if path == "legacy" else None
    one_step(target, drawing, points, optimizer, generator, chunk)  # warm-up
    began = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one_step(target, drawing, points, optimizer, generator, chunk)
    wall = (time.perf_counter() - began) / steps

    groups: dict[str, float] = defaultdict(float)
    phases: dict[str, float] = defaultdict(float)
    operators: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name.startswith("phase:"):
            phases[event.name[6:]] += event.cpu_time_total / 1e3 / steps
            continue
        self_ms = event.self_cpu_time_total / 1e3 / steps
        if self_ms <= 0:
            continue
        phase = _phase_of(event)
        if phase in ("render", "render backward"):
            group = "renderer (forward + backward)"
        elif phase == "adam":
            group = "Adam"
        else:
            group = _group(event.name)
        groups[group] += self_ms
        operators[event.name] += self_ms
    total = sum(groups.values())
    return {
        "path": path,
        "chunk_images": chunk,
        "levels": list(levels),
        "seeds": seeds,
        "sketches": len(levels) * seeds,
        "images_per_forward": len(levels) * seeds * 5,
        "steps_profiled": steps,
        "wall_ms_per_step_under_profiler": round(wall * 1e3, 1),
        "groups_ms": {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "groups_share": {k: round(v / total, 3) for k, v in groups.items()},
        "phases_ms": {k: round(v, 1) for k, v in phases.items()},
        "top_operators_ms": {
            k: round(v, 1) for k, v in sorted(operators.items(), key=lambda kv: -kv[1])[:25]
        },
    }


def format_table(row: dict) -> str:
    total = sum(row["groups_ms"].values())
    lines = [
        f"{row['sketches']} sketches ({row['levels']} x {row['seeds']} seeds), "
        f"{row['images_per_forward']} images per forward; "
        f"{row['wall_ms_per_step_under_profiler'] / 1e3:.2f} s/step under the profiler",
        f"{'group (self CPU time)':<32} {'ms/step':>10} {'share':>7}",
    ]
    for group, ms in row["groups_ms"].items():
        lines.append(f"{group:<32} {ms:>10.1f} {ms / total:>7.1%}")
    lines.append(
        "phases (inclusive): " + ", ".join(f"{k} {v:.0f} ms" for k, v in row["phases_ms"].items())
    )
    lines.append(
        "top operators (self): "
        + ", ".join(f"{k} {v:.0f}" for k, v in list(row["top_operators_ms"].items())[:12])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, default=4, help="the first N of 4,8,16,32 strokes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--path",
        default="both",
        choices=("both", "legacy", "new"),
        help="legacy: the pre-#22 step; new: today's; both (default): legacy, then new",
    )
    parser.add_argument("--weights-dir", default="bench/results/rn101-weights")
    parser.add_argument("--out", default="bench/results/profile_step.json")
    add_precision_option(parser)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = load_rn101(Path(args.weights_dir), precision=args.precision)
    rows = []
    for path in ("legacy", "new") if args.path == "both" else (args.path,):
        rows.append(profile_steps(model, LADDER[: args.levels], args.seeds, args.steps, path))
        print(f"{path} step:\n{format_table(rows[-1])}", flush=True)
    write_report(
        args.out,
        {
            "benchmark": "profile_step",
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
