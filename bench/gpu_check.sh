#!/usr/bin/env bash
# One command for a machine with CUDA: everything the issue asks of a GPU, in under 12 minutes,
# every figure as JSON in OUTDIR.
#
#   bench/gpu_check.sh OUTDIR
#
# 1. the engine tests on the GPU (pytest --device cuda, where the suite has that option);
# 2. bench/step.py and bench/render.py on CUDA (full-size random RN101; ViT-B-32 in the job);
#    the RN101 step again with the loss model under torch.compile (CUDA graphs; inductor);
# 3. a full default job (4 levels x 3 seeds, 2000 iterations, or as many as a time budget
#    lets through, then extrapolated) through a real daemon on the GPU, with peak GPU memory;
# 4. OUTDIR/summary.json: each figure against its target (one default step <= 15 ms on one
#    H100-class GPU, the whole default job <= 30 s), and what failed.
# Without CUDA it says so, writes {"cuda": false} to OUTDIR/summary.json and exits 0.
# PYTHON (default: .venv/bin/python, else python3) is the interpreter with torch.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bench/gpu_check.sh OUTDIR" >&2
    exit 2
fi
OUT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
START=$(date +%s)

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is false): nothing to check"
    echo '{"cuda": false}' > "$OUT/summary.json"
    exit 0
fi
"$PYTHON" - > "$OUT/gpu.json" <<'PY'
import json, torch
p = torch.cuda.get_device_properties(0)
print(json.dumps({"name": p.name, "total_bytes": p.total_memory, "count": torch.cuda.device_count(),
                  "torch": torch.__version__, "cuda": torch.version.cuda}))
PY
echo "gpu_check: $(cat "$OUT/gpu.json")"

declare -A STATUS
run() {  # run NAME SECONDS COMMAND...: output in OUT/NAME.log, exit status kept
    local name=$1 limit=$2
    shift 2
    local begin=$(date +%s)
    echo "gpu_check: $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    STATUS[$name]=$?
    echo "gpu_check: $name exit ${STATUS[$name]} in $(( $(date +%s) - begin )) s"
    tail -n 3 "$OUT/$name.log"
}

DEVICE_OPTS=()
if "$PYTHON" -m pytest --help 2>/dev/null | grep -q -- '--device'; then
    DEVICE_OPTS=(--device cuda)
fi
run engine_tests 150 "$PYTHON" -m pytest tests/engine -q -x -p no:cacheprovider \
    "${DEVICE_OPTS[@]}" --junitxml "$OUT/engine_tests.xml"
run step 90 "$PYTHON" bench/step.py --device cuda --out "$OUT/step.json"
# the same RN101 step with the loss model under torch.compile: CUDA graphs, then plain inductor
run step_graphs 120 "$PYTHON" bench/step.py --device cuda --models rn101 \
    --compile reduce-overhead --out "$OUT/step_graphs.json"
run step_compiled 120 "$PYTHON" bench/step.py --device cuda --models rn101 \
    --compile max-autotune-no-cudagraphs --out "$OUT/step_compiled.json"
run render 60 "$PYTHON" bench/render.py --device cuda --out "$OUT/render.json"
run job 200 "$PYTHON" bench/gpu_job.py --device cuda --budget 120 --out "$OUT/job.json"

TOTAL=$(( $(date +%s) - START ))
STATUSES=$(for k in "${!STATUS[@]}"; do printf '%s=%s\n' "$k" "${STATUS[$k]}"; done)
OUT="$OUT" TOTAL="$TOTAL" STATUSES="$STATUSES" DEVICE_OPTS="${DEVICE_OPTS[*]}" \
    "$PYTHON" bench/gpu_summary.py
