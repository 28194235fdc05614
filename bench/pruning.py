"""The full schedule against the fast one (seed pruning, issue 22 part 2): CPU time and the loss
of the sketch each keeps, on the same photos and weights; and how many iterations the sketch
kept needs to come near its final loss.

Full-size RN101 (loss) and ViT-B/32 (saliency) with random weights, written once as safetensors
under --weights-dir and loaded through the real ModelStore; skimage's bundled photos; the real
``sketch()``, at a stated reduced scale (default: 1 level of 16 strokes, 3 seeds, 40
iterations, evaluated every 2 steps; the fast schedule's rounds fall at its shares of the
iterations run, here after 10 and 20 steps). Random weights make the losses meaningless as
pictures; what is compared is the optimisation, which runs the same arithmetic as with
trained weights. On a shared 2-core machine one full run at this scale takes about 7 CPU
minutes, which is what limits the scale.

A sketch's trajectory does not depend on the others in the batch (see ``optimise``), so the
seed the fast schedule keeps runs exactly as in the full run. The full run records every
seed's best evaluation loss at every evaluation (progress snapshots; evaluations every 2
steps by default, five times as often as the engine's default, for a finer trajectory and
rounds at their intended shares of a short run), and the fast schedule's choice is derived
from those trajectories with the same rule the policy uses (``pruning.rounds``,
``pruning.ranked``); the fast schedule also runs for real on the first --real-fast photos,
to show the two agree and to measure its CPU time. The other photos' fast CPU time is
estimated as full CPU time x the measured fast/full ratio (the ratio of work, sketch-steps,
is printed too). Other rounds (ALTERNATIVES) are derived only.

    nice python bench/pruning.py [--photos astronaut,coffee,chelsea] [--levels 16]
        [--seeds 3] [--iterations 40] [--eval-every 2] [--real-fast 1] [--threads 2]
        [--out bench/results/pruning.json] [--quick]

--quick is a smoke run with the tiny test models (20 iterations, one photo).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import add_precision_option, write_report

from clipasso_server.engine import pruning
from clipasso_server.engine.clip_models import ModelStore, write_test_weights
from clipasso_server.engine.sketcher import sketch
from clipasso_server.engine.types import Progress, SketchConfig, SketchResult

#: (warm-up share, last share) of other fast schedules, derived from the same trajectories
ALTERNATIVES = ((0.25, 0.25), (0.1, 0.25), (0.1, 0.1), (0.5, 0.5))
#: 2(c): how near the final loss counts as there
TOLERANCES = (0.01, 0.005)


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")


def bench_weights(args: argparse.Namespace) -> tuple[Path, str, str]:
    """The models' weight files written once under --weights-dir (random full-size RN101 and
    ViT-B/32, or the tiny test models with --quick): the folder and the two models' names."""
    weights = Path(args.weights_dir)
    if args.quick:
        write_test_weights(weights)
        return weights, "test-tiny-rn", "test-tiny-vit"
    from memory import write_random_weights

    write_random_weights(weights, ("RN101", "ViT-B-32"))
    return weights, "RN101", "ViT-B-32"


def _store(args: argparse.Namespace) -> tuple[ModelStore, str, str]:
    weights, *names = bench_weights(args)
    store = ModelStore("cpu", weights, allow_download=False, precision=args.precision)
    store.loss_model(names[0])  # loaded before any timing
    store.saliency_model(names[1])
    return store, *names


def run_one(image, config: SketchConfig, store: ModelStore) -> dict:
    """One sketch() run: its CPU and wall time, every seed's best evaluation loss after each
    evaluation (``trajectory``: [evaluated step, {level: [loss per seed]}]), the final result."""
    trajectory: list[tuple[int, dict[str, list[float]]]] = []

    def progress(report: Progress) -> None:
        if report.step % 10 == 0:
            print(
                f"  {config.schedule} step {report.step}: {time.process_time() - cpu:.0f} s CPU",
                flush=True,
            )
        if report.snapshot is not None:
            trajectory.append((report.step - 1, report.snapshot.extra["seed_losses"]))

    cpu, wall = time.process_time(), time.perf_counter()
    result: SketchResult = sketch(image, config, store, progress=progress, snapshot_every_s=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "steps_run": result.steps_run,
        "trajectory": trajectory,
        "final": result.extra["seed_losses"],
        "chosen": {
            str(level.strokes): {"seed": level.seed, "loss": level.loss} for level in result.levels
        },
        "notes": list(result.schedule_notes),
    }


def derive_fast(
    run: dict, seeds: int, iterations: int, eval_every: int, warmup: float, last: float
) -> dict:
    """What the fast schedule keeps per level, from a full run's trajectories: the rounds of
    ``pruning.rounds``, each ranking the seeds still running by their best loss so far; a
    retired seed keeps the best it had. Also the sketch-steps run (the work)."""
    at = {step: losses for step, losses in run["trajectory"]}
    plan = pruning.rounds(seeds, iterations, eval_every, warmup, last)
    out, work = {}, 0
    for level, final in run["final"].items():
        running, kept_loss, stopped = list(range(seeds)), {}, {}
        for r in plan:
            losses = at[r.step][level]
            order = pruning.ranked(losses, running)
            for i in order[r.keep :]:
                kept_loss[i], stopped[i] = losses[i], r.step + 1
            running = sorted(order[: r.keep])
        for i in running:
            kept_loss[i], stopped[i] = final[i], iterations
        pick = min(range(seeds), key=lambda i: (kept_loss[i], i))
        work += sum(stopped.values())
        out[level] = {
            "seed_index": pick,
            "loss": kept_loss[pick],
            "pruned": {str(i): stopped[i] for i in range(seeds) if stopped[i] < iterations},
        }
    return {"levels": out, "sketch_steps": work, "rounds": [r.__dict__ for r in plan]}


def near_final(run: dict, level: str, seed_index: int) -> dict:
    """2(c): the first evaluated step at which the seed's best loss is within each tolerance
    of its final loss (the final evaluation counts as step ``steps_run``)."""
    final = run["final"][level][seed_index]
    points = [(step, losses[level][seed_index]) for step, losses in run["trajectory"]]
    points.append((run["steps_run"], final))
    out = {}
    for tolerance in TOLERANCES:
        out[f"{tolerance:.1%}"] = next(
            step for step, loss in points if abs(loss - final) <= tolerance * abs(final)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default="astronaut,coffee,chelsea", help="skimage.data names")
    parser.add_argument("--levels", default="16", help="stroke counts, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=2, help="the engine's default is 10")
    parser.add_argument("--real-fast", type=int, default=1, help="photos run fast for real")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", default="bench/results/pruning-weights")
    parser.add_argument("--out", default="bench/results/pruning.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models")
    add_precision_option(parser)
    parser.add_argument(
        "--long",
        type=int,
        default=0,
        metavar="ITERATIONS",
        help="instead (2c): one seed of each photo for this many iterations, and when "
        "its best loss came within 1 %% and 0.5 %% of its final one",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.photos = 20, args.photos.split(",")[0]
        args.weights_dir = "bench/results/test-weights"

    torch.set_num_threads(args.threads)
    store, loss_name, saliency_name = _store(args)
    levels = tuple(int(v) for v in args.levels.split(","))
    base = dict(
        levels=levels,
        iterations=args.iterations,
        seeds=args.seeds,
        eval_every=args.eval_every,
        loss_model=loss_name,
        saliency_model=saliency_name,
    )
    scale = (
        f"{len(levels)} level(s) {args.levels} strokes x {args.seeds} seeds, "
        f"{args.iterations} iterations, eval every {args.eval_every}, {args.threads} threads"
    )
    if args.long:
        print(f"pruning bench --long: {loss_name} + {saliency_name}, {args.long} iterations")
        return long_run(args, store, base, loss_name, saliency_name)
    print(f"pruning bench: {loss_name} + {saliency_name}, {scale}", flush=True)
    # one-time costs (allocator, renderer, first convolutions) before anything is timed
    sketch(_photo("camera"), SketchConfig(**{**base, "iterations": 2, "seeds": 1}), store)
    rows = []
    for index, name in enumerate(args.photos.split(",")):
        image = _photo(name)
        full = run_one(image, SketchConfig(**base, schedule="full"), store)
        derived = derive_fast(
            full,
            args.seeds,
            args.iterations,
            args.eval_every,
            pruning.WARMUP_SHARE,
            pruning.LAST_SHARE,
        )
        full_work = args.seeds * len(levels) * args.iterations
        row = {
            "photo": name,
            "full_cpu_s": round(full["cpu_s"], 1),
            "full_wall_s": round(full["wall_s"], 1),
            "work_ratio": round(derived["sketch_steps"] / full_work, 3),
            "levels": {},
            "alternatives": [],
            "full": full,
            "derived_fast": derived,
        }
        for level, chosen in full["chosen"].items():
            fast = derived["levels"][level]
            index_full = min(range(args.seeds), key=lambda i: (full["final"][level][i], i))
            row["levels"][level] = {
                "full_seed_index": index_full,
                "full_loss": chosen["loss"],
                "fast_seed_index": fast["seed_index"],
                "fast_loss": fast["loss"],
                "loss_ratio": fast["loss"] / chosen["loss"],
                "near_final_full": near_final(full, level, index_full),
            }
        for warmup, last in ALTERNATIVES:
            other = derive_fast(full, args.seeds, args.iterations, args.eval_every, warmup, last)
            row["alternatives"].append(
                {
                    "warmup": warmup,
                    "last": last,
                    "work_ratio": round(other["sketch_steps"] / full_work, 3),
                    "worst_loss_ratio": max(
                        other["levels"][lv]["loss"] / full["chosen"][lv]["loss"]
                        for lv in full["chosen"]
                    ),
                }
            )
        if index < args.real_fast:
            fast = run_one(image, SketchConfig(**base, schedule="fast"), store)
            row["fast_real"] = fast
            row["fast_cpu_s"] = round(fast["cpu_s"], 1)
            row["fast_measured"] = True
            row["agree"] = {
                level: {
                    "seed_index_real": fast["chosen"][level]["seed"],
                    "seed_index_derived": derived["levels"][level]["seed_index"],
                    "loss_real": fast["chosen"][level]["loss"],
                    "loss_derived": derived["levels"][level]["loss"],
                    "relative_difference": abs(
                        fast["chosen"][level]["loss"] / derived["levels"][level]["loss"] - 1
                    ),
                }
                for level in fast["chosen"]
            }
        rows.append(row)
        _print_row(row)
        # so far, in case the run is cut short
        write_report(
            args.out, {"benchmark": "pruning", "partial": True, "scale": scale, "rows": rows}
        )

    measured = [r["fast_cpu_s"] / r["full_cpu_s"] for r in rows if r.get("fast_measured")]
    cpu_ratio = sum(measured) / len(measured) if measured else None
    for row in rows:
        if not row.get("fast_measured") and cpu_ratio is not None:
            row["fast_cpu_s"] = round(row["full_cpu_s"] * cpu_ratio, 1)
            row["fast_measured"] = False
        if "fast_cpu_s" in row:
            row["cpu_ratio_full_over_fast"] = round(row["full_cpu_s"] / row["fast_cpu_s"], 3)
    worst = max(lv["loss_ratio"] for r in rows for lv in r["levels"].values())
    verdict = worst <= 1.01
    print()
    print(_table(rows))
    print(
        f"worst fast/full loss ratio {worst:.4f}: fast "
        f"{'may be the default (within 1 %)' if verdict else 'stays an option (over 1 %)'}"
    )
    write_report(
        args.out,
        {
            "benchmark": "pruning",
            "scale": scale,
            "models": [loss_name, saliency_name],
            "weights": "random" if not args.quick else "tiny test models",
            "fast_rounds": {"warmup": pruning.WARMUP_SHARE, "last": pruning.LAST_SHARE},
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "measured_cpu_ratio_fast_over_full": cpu_ratio,
            "worst_loss_ratio_fast_over_full": worst,
            "fast_within_1_percent": verdict,
            "rows": rows,
        },
    )
    return 0


def long_run(args, store: ModelStore, base: dict, loss_name: str, saliency_name: str) -> int:
    """2(c): how the loss of one seed approaches its final value over a longer run, on every
    photo (a sketch's trajectory does not depend on the others in the batch, so one seed
    stands for any). For each evaluated step: the loss a run stopped there would keep,
    relative to the whole run's final loss, and the share of the improvement reached."""
    photos: dict[str, dict] = {}
    config = SketchConfig(**{**base, "iterations": args.long, "seeds": 1})
    for name in args.photos.split(","):
        run = run_one(_photo(name), config, store)
        photos[name] = {"cpu_s": round(run["cpu_s"], 1), "levels": {}, "run": run}
        for level in run["final"]:
            row = _long_level(run, level)
            photos[name]["levels"][level] = row
            near = row["near_final"]
            print(
                f"{name}, level {level}, 1 seed, {args.long} iterations: loss "
                f"{row['start_loss']:.6f} -> {row['final_loss']:.6f}; within 1 % of the final "
                f"loss from step {near['1.0%']}, within 0.5 % from step {near['0.5%']}",
                flush=True,
            )
            for step, ratio, share in row["by_step"]:
                if step % 50 == 0:
                    print(
                        f"  step {step}: loss x{ratio:.4f} of the final, {share:.1%} of the "
                        "improvement",
                        flush=True,
                    )
        write_report(
            args.out,
            {
                "benchmark": "pruning_long",
                "iterations": args.long,
                "eval_every": args.eval_every,
                "threads": args.threads,
                "models": [loss_name, saliency_name],
                "weights": "random" if not args.quick else "tiny test models",
                "photos": photos,
            },
        )
    return 0


def _long_level(run: dict, level: str) -> dict:
    """One level of a --long run: where it came within 1 % / 0.5 % of its final loss, and per
    evaluated step [step, best loss so far / final loss, share of the improvement]."""
    start = run["trajectory"][0][1][level][0]
    final = run["final"][level][0]
    return {
        "near_final": near_final(run, level, 0),
        "start_loss": start,
        "final_loss": final,
        "by_step": [
            [
                step,
                round(losses[level][0] / final, 5),
                round((start - losses[level][0]) / (start - final), 4),
            ]
            for step, losses in run["trajectory"]
        ],
    }


def _print_row(row: dict) -> None:
    text = f"{row['photo']}: full {row['full_cpu_s']:.0f} s CPU"
    if row.get("fast_measured"):
        text += f", fast {row['fast_cpu_s']:.0f} s CPU (measured)"
    for level, lv in row["levels"].items():
        text += (
            f"; level {level}: full keeps seed {lv['full_seed_index']} "
            f"({lv['full_loss']:.5f}), fast seed {lv['fast_seed_index']} "
            f"(x{lv['loss_ratio']:.4f})"
        )
    print(text, flush=True)
    for level, agree in row.get("agree", {}).items():
        print(
            f"  real fast run, level {level}: seed {agree['seed_index_real']} "
            f"(derived {agree['seed_index_derived']}), loss {agree['loss_real']:.6f} "
            f"(derived {agree['loss_derived']:.6f}, relative difference "
            f"{agree['relative_difference']:.1e})",
            flush=True,
        )


def _table(rows: list[dict]) -> str:
    lines = [
        f"{'photo':<10} {'full CPU s':>10} {'fast CPU s':>11} {'full/fast':>9} {'work':>6}  "
        f"{'level':>5} {'fast/full loss':>14}  {'1% at':>6} {'0.5% at':>7}"
    ]
    for row in rows:
        for level, lv in row["levels"].items():
            fast = (
                f"{row['fast_cpu_s']:.0f}{'' if row['fast_measured'] else '*'}"
                if "fast_cpu_s" in row
                else "-"
            )
            ratio = row.get("cpu_ratio_full_over_fast")
            near = lv["near_final_full"]
            lines.append(
                f"{row['photo']:<10} {row['full_cpu_s']:>10.0f} {fast:>11} "
                f"{'-' if ratio is None else f'{ratio:.2f}':>9} {row['work_ratio']:>6.2f}  "
                f"{level:>5} {lv['loss_ratio']:>14.4f}  {near['1.0%']:>6} {near['0.5%']:>7}"
            )
    lines.append(
        "(* estimated from the measured fast/full ratio; work: fast sketch-steps / full; "
        "1% at / 0.5% at: the step by which the full run's kept seed was within that of its "
        "final loss)"
    )
    lines.append("alternative rounds (derived, worst level): warmup,last -> work, loss ratio")
    for row in rows:
        lines.append(
            f"  {row['photo']}: "
            + "; ".join(
                f"{a['warmup']},{a['last']} -> {a['work_ratio']:.2f}, {a['worst_loss_ratio']:.4f}"
                for a in row["alternatives"]
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
