"""The loss a time budget reaches with planning (fewer seeds, then fewer iterations) and without.

Two parts:

* **Paired runs** on the CPU: ``sketch()`` of the bundled sample photo with full-size RN101 and
  ViT-B/32 with random weights (written once, loaded through the engine's ModelStore as
  bench/memory.py and bench/profile_step.py do; never downloaded), the same settings and the
  same ``--budget`` once planned and once with the pre-#22 budget (``plan_budget=False``: stop
  when the next step would not fit). Both sides find the models loaded (the budget then
  counts the job alone, not a load that only the first run would pay). Reports per run: steps,
  sketches per step, the notes, the best evaluation loss per level, wall and CPU time and the
  load average; per pair the planned/unplanned loss ratio per level (below 1: planning won).
* **The dialog's time limits** (no torch work): what the default job (4 levels x 3 seeds x
  2000 iterations) gets in 2 min, 10 min and 1 h for a given full step time and model load
  time, with and without planning. The real ``BudgetPlanner`` and ``StepBudget`` run on a fake
  clock whose steps cost what issue 22 measured on this machine kind, not the planner's own
  model: a step of ``n`` of the 12 sketches costs ``t_full (s + (1 - s)(n - 1)/11)`` with
  ``s`` = 8.0 s / 55.6 s (1 level x 1 seed against the default 4 x 3), so the planner's
  guess and its re-plan are both exercised (the first step's warm-up is left out).

    python bench/planning.py [--budget 210] [--levels 16] [--seeds 3] [--pairs 1]
                             [--threads 2] [--default-step-s 55.6,17.6] [--load-s 26]
                             [--one-sketch-share 0.144]
                             [--out bench/results/planning.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import add_precision_option, write_report

DIALOG_LIMITS_S = (120.0, 600.0, 3600.0)
DEFAULT_LEVELS, DEFAULT_SEEDS, DEFAULT_ITERATIONS, DEFAULT_VIEWS = 4, 3, 2000, 4
#: a step of one sketch against one of all twelve, as issue 22 measured them (8.0 s, 55.6 s)
ONE_SKETCH_SHARE = 8.0 / 55.6


def measured_step_s(
    full_step_s: float, sketches: int, of: int, one_share: float = ONE_SKETCH_SHARE
) -> float:
    """A step of ``sketches`` of ``of``: linear between the two measured points (a step of
    one sketch costs ``one_share`` of a step of all)."""
    share = one_share + (1 - one_share) * (sketches - 1) / (of - 1)
    return full_step_s * share


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(
    budget_s: float,
    load_s: float,
    full_step_s: float,
    plan: bool,
    one_share: float = ONE_SKETCH_SHARE,
) -> dict[str, Any]:
    """The default job in ``budget_s`` on a fake clock: steps, sketches per level, notes."""
    import torch

    from clipasso_server.engine.optimise import (
        FINAL_RESERVE,
        BestIterate,
        StepBudget,
        StepReport,
    )
    from clipasso_server.engine.planning import BudgetPlanner

    sketches = DEFAULT_LEVELS * DEFAULT_SEEDS
    clock = FakeClock(load_s)
    budget = StepBudget(budget_s, clock)
    planner = BudgetPlanner(
        levels=DEFAULT_LEVELS,
        seeds=DEFAULT_SEEDS,
        iterations=DEFAULT_ITERATIONS,
        augmentations=DEFAULT_VIEWS,
        budget_s=budget_s,
        deadline=budget_s,
        clock=clock,
    )
    best = BestIterate(torch.zeros(sketches, 1, 4, 2))
    rng = random.Random(0)
    best.update([rng.random() for _ in range(sketches)], torch.zeros(sketches, 1, 4, 2))
    iterations, steps, notes = DEFAULT_ITERATIONS, 0, []
    budget.begin()
    while steps < iterations and budget.allows_another():
        active = sum(not f for f in best.frozen)
        clock.now += measured_step_s(full_step_s, active, sketches, one_share)
        steps += 1
        budget.step_done()
        if plan:
            decision = planner(StepReport(steps, best, True, budget.step_time_s, iterations))
            if decision is not None:
                best.retire(decision.retire)
                iterations = max(steps, decision.iterations or iterations)
                if decision.note:
                    notes.append(decision.note)
    clock.now += FINAL_RESERVE * full_step_s
    kept = sum(not r for r in best.retired) // DEFAULT_LEVELS
    return {
        "budget_s": budget_s,
        "planned": plan,
        "steps": steps,
        "seeds_per_level_at_end": kept,
        "ends_at_s": round(clock.now, 1),
        "notes": notes,
    }


def dialog_table(
    step_times: list[float], load_s: float, one_share: float = ONE_SKETCH_SHARE
) -> list[dict[str, Any]]:
    rows = []
    for step_s in step_times:
        for limit in DIALOG_LIMITS_S:
            for plan in (False, True):
                row = simulate(limit, load_s, step_s, plan, one_share)
                row["full_step_s"] = step_s
                row["load_s"] = load_s
                row["one_sketch_share"] = one_share
                rows.append(row)
                print(
                    f"  step {step_s:5.1f} s, limit {limit / 60:5.0f} min, "
                    f"{'planned  ' if plan else 'unplanned'}: {row['steps']:4d} steps, "
                    f"{row['seeds_per_level_at_end']} seed(s) a level at the end"
                    + "".join(f"\n      {note}" for note in row["notes"]),
                    flush=True,
                )
    return rows


def one_run(store, image, config, plan: bool) -> dict[str, Any]:
    from clipasso_server.engine.sketcher import sketch

    steps: list[tuple[int, float | None]] = []

    def progress(report) -> None:
        steps.append((report.step, report.step_time_s))

    load_before = os.getloadavg()
    began, cpu_began = time.perf_counter(), time.process_time()
    result = sketch(image, config, store, progress=progress, plan_budget=plan)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    row = {
        "planned": plan,
        "budget_s": config.time_budget_s,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "steps_run": result.steps_run,
        "stop_reason": result.stop_reason,
        "notes": list(result.schedule_notes),
        "loss": {str(level.strokes): level.loss for level in result.levels},
        "seed_losses": result.extra["seed_losses"],
        "last_step_time_s": steps[-1][1] if steps else None,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(
        f"  {'planned  ' if plan else 'unplanned'}: {row['steps_run']} steps in {row['wall_s']} s "
        f"(CPU {row['cpu_s']} s, load {row['loadavg_before'][0]}->{row['loadavg_after'][0]}), "
        f"stopped by {row['stop_reason']}, loss {row['loss']}"
        + (f"\n    note: {row['notes'][0]}" if row["notes"] else ""),
        flush=True,
    )
    return row


def paired_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from memory import write_random_weights

    from clipasso_server.commands.sketch import sample_image_path
    from clipasso_server.engine.clip_models import ModelStore
    from clipasso_server.engine.image_input import load_image_file
    from clipasso_server.engine.types import SketchConfig

    torch.set_num_threads(args.threads)
    weights = Path(args.weights_dir)
    write_random_weights(weights, ("RN101", "ViT-B-32"))
    store = ModelStore(torch.device("cpu"), weights, allow_download=False, precision=args.precision)
    began = time.perf_counter()
    store.loss_model("RN101"), store.saliency_model("ViT-B-32")
    print(f"models loaded in {time.perf_counter() - began:.1f} s", flush=True)
    image = load_image_file(sample_image_path())
    config = SketchConfig(
        levels=tuple(int(v) for v in args.levels.split(",")),
        seeds=args.seeds,
        iterations=args.iterations,
        time_budget_s=args.budget,
    )
    pairs = []
    for i in range(args.pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        print(f"pair {i + 1}:", flush=True)
        runs = {plan: one_run(store, image, config, plan) for plan in order}
        ratios = {
            level: runs[True]["loss"][level] / runs[False]["loss"][level]
            for level in runs[True]["loss"]
        }
        print(f"  planned/unplanned loss per level: {ratios}", flush=True)
        pairs.append({"planned": runs[True], "unplanned": runs[False], "loss_ratio": ratios})
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=210.0, help="seconds per run")
    parser.add_argument("--levels", default="16")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=1, help="0: the dialog table only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", default="bench/results/planning-weights")
    parser.add_argument(
        "--default-step-s",
        default="55.6,17.6",
        help="full default step times (s) for the dialog table, comma-separated",
    )
    parser.add_argument("--load-s", type=float, default=26.0, help="model loading, seconds")
    parser.add_argument(
        "--one-sketch-share",
        type=float,
        default=ONE_SKETCH_SHARE,
        help="a step of 1 sketch / a step of all 12 (default 8.0/55.6, float32 as measured)",
    )
    parser.add_argument("--out", default="bench/results/planning.json")
    add_precision_option(parser)
    args = parser.parse_args(argv)

    print("the dialog's time limits, default job (4 levels x 3 seeds x 2000 iterations):")
    table = dialog_table(
        [float(v) for v in args.default_step_s.split(",")], args.load_s, args.one_sketch_share
    )
    pairs = paired_runs(args) if args.pairs else []
    write_report(
        args.out,
        {
            "benchmark": "planning",
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "settings": {
                "levels": args.levels,
                "seeds": args.seeds,
                "iterations": args.iterations,
                "budget_s": args.budget,
                "models": "RN101 (loss) and ViT-B-32 (saliency), full size, random weights",
                "photo": "the bundled sample.png",
            },
            "pairs": pairs,
            "dialog_table": table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
