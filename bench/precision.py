"""float32 against bf16 autocast in the loss model on the CPU: CPU time, and the loss of the
sketch each keeps, evaluated by the same float32 model (issue 22: a default only where the
loss stays within 1 % on every photo).

Full-size RN101 (loss) and ViT-B/32 (saliency) with random weights, written once as safetensors
under --weights-dir and loaded through the real ModelStore (one store per precision, the same
file); skimage's bundled photos; the real ``sketch()`` at a stated reduced scale (default: 1
level of 16 strokes, 1 seed, 40 iterations). Each photo runs float32, then bf16, one after the
other (a paired run: the ratio is what counts on a shared machine). A bf16 run's own loss is
computed in bf16, so both sketches are re-evaluated by the float32 model: ``sketch()`` with
the kept strokes as start strokes evaluates them before its first step.

bf16 autocast is fast only where the CPU computes bf16 natively (AVX512-BF16 or AMX); the
report says whether this one does.

    nice python bench/precision.py [--photos astronaut,coffee,chelsea] [--levels 16]
        [--seeds 1] [--iterations 40] [--threads 2] [--out bench/results/precision.json]
        [--quick]

--quick is a smoke run with the tiny test models (5 iterations, one photo).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from pruning import _photo, bench_weights
from report import write_report

from clipasso_server.engine.clip_models import ModelStore, cpu_computes_bf16
from clipasso_server.engine.sketcher import sketch
from clipasso_server.engine.types import Progress, SketchConfig

PRECISIONS = ("fp32", "bf16")


def _stores(args: argparse.Namespace) -> tuple[dict[str, ModelStore], str, str]:
    weights, *names = bench_weights(args)
    stores = {p: ModelStore("cpu", weights, allow_download=False, precision=p) for p in PRECISIONS}
    for store in stores.values():  # loaded before any timing
        store.loss_model(names[0])
        store.saliency_model(names[1])
    return stores, *names


def fp32_loss(image, config: SketchConfig, strokes, store: ModelStore) -> float:
    """The float32 evaluation loss of ``strokes`` (one level's): ``sketch()`` evaluates its
    start strokes before the first step, and that evaluation is read from its snapshot."""
    first: list[float] = []

    def progress(report: Progress) -> None:
        if report.snapshot is not None and not first:
            first.append(report.snapshot.extra["seed_losses"][str(len(strokes))][0])

    check = SketchConfig(
        **{
            **config.settings_json(),
            "levels": (len(strokes),),
            "seeds": 1,
            "iterations": 1,
            "start_strokes": strokes,
        },
        eval_every=1,
    )
    sketch(image, check, store, progress=progress, snapshot_every_s=0)
    return first[0]


def run_photo(name: str, config: SketchConfig, stores: dict[str, ModelStore]) -> dict:
    """Both precisions on one photo: CPU time, each level's kept loss (own and in float32)."""
    image = _photo(name)
    row: dict = {"photo": name}
    for precision in PRECISIONS:
        cpu = time.process_time()
        result = sketch(image, config, stores[precision], snapshot_every_s=0)
        cpu = time.process_time() - cpu
        levels = {}
        for level in result.levels:
            strokes = tuple(stroke.points for stroke in level.paths)
            levels[str(level.strokes)] = {
                "own_loss": level.loss,
                "fp32_loss": fp32_loss(image, config, strokes, stores["fp32"]),
            }
        row[precision] = {"cpu_s": round(cpu, 1), "levels": levels}
        print(f"{name} {precision}: {cpu:.0f} s CPU, {levels}", flush=True)
    row["cpu_ratio_fp32_over_bf16"] = round(row["fp32"]["cpu_s"] / row["bf16"]["cpu_s"], 3)
    row["loss_ratio_bf16_over_fp32"] = {
        level: round(row["bf16"]["levels"][level]["fp32_loss"] / lv["fp32_loss"], 5)
        for level, lv in row["fp32"]["levels"].items()
    }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default="astronaut,coffee,chelsea", help="skimage.data names")
    parser.add_argument("--levels", default="16", help="stroke counts, comma-separated")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", default="bench/results/pruning-weights")
    parser.add_argument("--out", default="bench/results/precision.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.photos = 5, args.photos.split(",")[0]
        args.weights_dir = "bench/results/test-weights"
    torch.set_num_threads(args.threads)
    stores, loss_name, saliency_name = _stores(args)
    config = SketchConfig(
        levels=tuple(int(v) for v in args.levels.split(",")),
        iterations=args.iterations,
        seeds=args.seeds,
        loss_model=loss_name,
        saliency_model=saliency_name,
    )
    native = cpu_computes_bf16()
    scale = (
        f"levels {args.levels} x {args.seeds} seed(s), {args.iterations} iterations, "
        f"{args.threads} threads"
    )
    print(f"precision bench: {loss_name} + {saliency_name}, {scale}; native bf16: {native}")
    rows = []
    report = {
        "benchmark": "precision",
        "scale": scale,
        "models": [loss_name, saliency_name],
        "weights": "random" if not args.quick else "tiny test models",
        "cpu_native_bf16": native,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    for name in args.photos.split(","):
        rows.append(run_photo(name, config, stores))
        write_report(args.out, {**report, "partial": True})
    worst = max(r for row in rows for r in row["loss_ratio_bf16_over_fp32"].values())
    ratios = [row["cpu_ratio_fp32_over_bf16"] for row in rows]
    print(f"{'photo':<10} {'fp32 CPU s':>10} {'bf16 CPU s':>10} {'fp32/bf16':>9}  bf16/fp32 loss")
    for row in rows:
        losses = ", ".join(f"{lv} {r:.4f}" for lv, r in row["loss_ratio_bf16_over_fp32"].items())
        print(
            f"{row['photo']:<10} {row['fp32']['cpu_s']:>10.0f} {row['bf16']['cpu_s']:>10.0f} "
            f"{row['cpu_ratio_fp32_over_bf16']:>9.2f}  {losses}"
        )
    print(f"worst bf16/fp32 loss ratio {worst:.4f} ({'within' if worst <= 1.01 else 'over'} 1 %)")
    write_report(
        args.out,
        {
            **report,
            "worst_loss_ratio_bf16_over_fp32": worst,
            "cpu_ratio_fp32_over_bf16": ratios,
            "within_1_percent": worst <= 1.01,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
