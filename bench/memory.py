"""Peak memory of a sketch job for a grid of levels x seeds, and the linear fit the engine uses.

Each grid cell runs in a fresh process (peak RSS only ever grows): it loads the loss and
saliency models through the real ModelStore from weight files, records the RSS, resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``), then runs ``sketch()`` for two iterations
(saliency, start points, two optimisation steps with their augmented views) and records the
new peak. On CUDA the peak is ``torch.cuda.max_memory_allocated`` over the same run (the CUDA
context, a few hundred MB more, is not counted).

    python bench/memory.py [--models tiny|rn101] [--device cpu|cuda] [--threads 2]
                           [--grid 1x1,2x1,4x1,1x3,4x3] [--out bench/results/memory.json]

``--models tiny`` (default) uses the tiny test models; ``--models rn101`` full-size RN101 and
ViT-B-32 with random weights (written once as safetensors under --weights-dir, ~1.1 GB; a
4 x 3 step on a CPU takes ~6-7 GB and a minute). A grid cell ``LxS`` is the first L levels of
4,8,16,32 strokes with S seeds. The fit (peak = base + per_sketch * levels * seeds,
least squares) is printed and written with the rows; the
constants in ``clipasso_server/engine/memory_estimate.py`` come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from report import add_precision_option, write_report

LADDER = (4, 8, 16, 32)
MODELS = {
    "tiny": ("test-tiny-rn", "test-tiny-vit"),
    "rn101": ("RN101", "ViT-B-32"),
}


def _status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def write_random_weights(directory: Path, names: tuple[str, ...]) -> None:
    """Full-size models with random weights, saved where the resolver looks for them."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from clipasso_server.engine.clip_models import model_spec

    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / f"{name}.safetensors"
        if path.exists():
            continue
        torch.manual_seed(0)
        model = open_clip.create_model(model_spec(name).arch, pretrained=None, device="cpu")
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        partial = path.with_suffix(".partial")
        save_file(state, str(partial), metadata={"format": "pt"})
        partial.replace(path)


def measure_one(args: argparse.Namespace) -> dict:
    """One grid cell, in this process: the numbers for one row."""
    import torch

    from clipasso_server.commands.sketch import sample_image_path
    from clipasso_server.engine.clip_models import ModelStore
    from clipasso_server.engine.image_input import load_image_file
    from clipasso_server.engine.sketcher import sketch
    from clipasso_server.engine.types import SketchConfig

    torch.set_num_threads(args.threads)
    levels, seeds = args.one
    loss_name, saliency_name = MODELS[args.models]
    device = torch.device(args.device)
    rss_import = _status_bytes("VmRSS")
    store = ModelStore(
        device, weights_dir=args.weights_dir, allow_download=False, precision=args.precision
    )
    store.loss_model(loss_name)
    store.saliency_model(saliency_name)
    rss_loaded = _status_bytes("VmRSS")
    load_peak = _status_bytes("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark starts again from now
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_loaded = torch.cuda.memory_allocated(device)
    config = SketchConfig(
        levels=LADDER[:levels],
        seeds=seeds,
        iterations=2,
        loss_model=loss_name,
        saliency_model=saliency_name,
    )
    sketch(load_image_file(sample_image_path()), config, store)
    row = {
        "model": args.models,
        "device": device.type,
        "levels": levels,
        "strokes": sum(LADDER[:levels]),
        "seeds": seeds,
        "sketches": levels * seeds,
        "rss_after_import_mib": round(rss_import / 2**20, 1),
        "rss_models_loaded_mib": round(rss_loaded / 2**20, 1),
        "peak_rss_loading_mib": round(load_peak / 2**20, 1),
        "peak_rss_job_mib": round(max(load_peak, _status_bytes("VmHWM")) / 2**20, 1),
    }
    if device.type == "cuda":
        row["cuda_models_mib"] = round(cuda_loaded / 2**20, 1)
        row["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def fit(rows: list[dict], key: str) -> dict:
    """Least squares: key = base + per_sketch * levels * seeds.

    The stroke count hardly matters (a stroke term fitted to the tiny grid came out at
    -0.2 MiB per stroke, noise): what grows is the loss model's activations per sketch.
    """
    import numpy as np

    a = np.array([[1.0, r["sketches"]] for r in rows])
    y = np.array([r[key] for r in rows])
    if len({r["sketches"] for r in rows}) < 2:
        return {"base_mib": float(y.max()), "per_sketch_mib": 0.0}
    (base, per_sketch), *_ = np.linalg.lstsq(a, y, rcond=None)
    worst = float(np.max(np.abs(a @ [base, per_sketch] - y) / y))
    return {
        "base_mib": round(float(base), 1),
        "per_sketch_mib": round(float(per_sketch), 2),
        "worst_relative_error": round(worst, 3),
    }


def _grid(text: str) -> list[tuple[int, int]]:
    cells = []
    for cell in text.split(","):
        levels, seeds = (int(v) for v in cell.lower().split("x"))
        if not 1 <= levels <= len(LADDER) or seeds < 1:
            raise argparse.ArgumentTypeError(f"bad grid cell {cell!r}")
        cells.append((levels, seeds))
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid", type=_grid, default=_grid("1x1,2x1,4x1,1x3,2x3,4x3"))
    parser.add_argument("--out", default="bench/results/memory.json")
    parser.add_argument("--weights-dir", default=None, help="default: bench/results/<models>-w")
    parser.add_argument("--one", type=_grid, help=argparse.SUPPRESS)
    add_precision_option(parser)
    args = parser.parse_args(argv)
    args.weights_dir = args.weights_dir or f"bench/results/{args.models}-weights"
    if args.one:
        args.one = args.one[0]
        print(json.dumps(measure_one(args)))
        return 0

    weights_dir = Path(args.weights_dir)
    if args.models == "tiny":
        from clipasso_server.engine.clip_models import write_test_weights

        if not (weights_dir / "test-tiny-rn.safetensors").exists():
            write_test_weights(weights_dir)
    else:
        write_random_weights(weights_dir, MODELS[args.models])

    rows = []
    for levels, seeds in args.grid:
        command = [sys.executable, __file__, "--one", f"{levels}x{seeds}"]
        command += ["--models", args.models, "--device", args.device]
        command += ["--threads", str(args.threads), "--weights-dir", str(weights_dir)]
        command += ["--precision", args.precision]
        with tempfile.TemporaryFile("w+") as errors:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=errors, text=True)
            if done.returncode != 0:
                errors.seek(0)
                print(errors.read(), file=sys.stderr)
                return done.returncode
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(_format(row), flush=True)

    key = "cuda_peak_mib" if args.device.startswith("cuda") else "peak_rss_job_mib"
    result = fit(rows, key)
    print(
        f"fit ({key}): {result['base_mib']} MiB + {result['per_sketch_mib']} MiB per sketch"
        + (
            f" (worst error {100 * result['worst_relative_error']:.1f} %)"
            if "worst_relative_error" in result
            else ""
        )
    )
    report = {
        "benchmark": "memory",
        "threads": args.threads,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "fit": {"key": key, **result},
    }
    write_report(args.out, report)
    return 0


def _format(row: dict) -> str:
    gpu = f" {row['cuda_peak_mib']:>9.1f} MiB CUDA peak" if "cuda_peak_mib" in row else ""
    return (
        f"{row['model']:<6} {row['device']:<5} {row['levels']} levels x {row['seeds']} seeds "
        f"({row['sketches']:>2} sketches): models loaded {row['rss_models_loaded_mib']:>8.1f} "
        f"MiB RSS, job peak {row['peak_rss_job_mib']:>8.1f} MiB RSS{gpu}"
    )


if __name__ == "__main__":
    sys.exit(main())
