#!/usr/bin/env bash
# GPU check for thermokern on a machine with an NVIDIA GPU and its own PyTorch (no venv made).
#
#   bash bench/gpu_check.sh            # from anywhere; works in the repository root
#
# Steps (each under `timeout`, later steps run even when one fails; all within a time budget):
#   info       nvidia-smi, toolkit and Python package versions
#   build      pip install --no-build-isolation --no-deps -e .  (only this GPU's SM arch)
#   tests      GPU tests: pytest tests -k "cuda or gpu or triton" with TRITON_INTERPRET=0
#   distributed  bench/distributed_check.py under torchrun, one NCCL rank per GPU
#   memcheck   compute-sanitizer --tool memcheck  on bench/sanitize_cases.py
#   racecheck  compute-sanitizer --tool racecheck on bench/sanitize_cases.py
#   bench      thermokern bench --device cuda --quick --json/--plot into $OUT
# The log goes to $OUT/gpu_check.log; the exit status is 1 when any step failed or was skipped.
#
# Environment:
#   PYTHON                 interpreter (default: python from PATH)
#   OUT                    results folder (default: bench/results)
#   CUDA_HOME              CUDA toolkit (default: /usr/local/cuda)
#   THERMOKERN_CUDA_ARCHS  SM archs to build (default: the visible GPU's, e.g. "90")
#   GPU_CHECK_BUDGET_S     total seconds for all steps (default 460; the steps shrink to fit)
#   GPU_CHECK_PYTEST_K     pytest -k expression (default "cuda or gpu or triton")
#   GPU_CHECK_BENCH_FULL   1: the full benchmark instead of --quick (needs a larger budget)
#   GPU_CHECK_SKIP         space-separated step names to skip (e.g. "racecheck")

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

export PY="${PYTHON:-python}"
OUT="${OUT:-$ROOT/bench/results}"
mkdir -p "$OUT" || exit 1
export OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$CUDA_HOME/compute-sanitizer:$PATH"
export TRITON_INTERPRET=0          # real Triton kernels (tests/conftest.py only sets a default)
export PYTHONUNBUFFERED=1
export ROOT

BUDGET_S="${GPU_CHECK_BUDGET_S:-460}"
SKIP=" ${GPU_CHECK_SKIP:-} "
START_S=$SECONDS
STEP_NAMES=()
STEP_STATUS=()
STEP_SECONDS=()
FAILED=0

remaining() { echo $((BUDGET_S - (SECONDS - START_S))); }

record() {  # record NAME STATUS SECONDS
    STEP_NAMES+=("$1")
    STEP_STATUS+=("$2")
    STEP_SECONDS+=("$3")
}

# run_step NAME CAP_S RESERVE_S FUNCTION: run FUNCTION under timeout, at most CAP_S seconds and
# leaving RESERVE_S seconds of the budget to the steps after it.
run_step() {
    local name="$1" cap="$2" reserve="$3" fn="$4"
    local left limit rc t0 status
    if [[ "$SKIP" == *" $name "* ]]; then
        echo; echo "=== [$name] skipped (GPU_CHECK_SKIP)"
        record "$name" "SKIPPED (GPU_CHECK_SKIP)" 0
        return 0
    fi
    left=$(remaining)
    limit=$((left - reserve))
    ((limit < 30)) && limit=$((left < 30 ? left : 30))  # a floor, so that a short budget still tries
    ((limit > cap)) && limit=$cap
    if ((limit < 20)); then
        echo; echo "=== [$name] not run: ${left}s of the ${BUDGET_S}s budget left"
        record "$name" "SKIPPED (out of time)" 0
        FAILED=1
        return 0
    fi
    echo
    echo "=== [$name] $(date +%T) timeout ${limit}s (budget left ${left}s)"
    t0=$SECONDS
    timeout --kill-after=10 "$limit" bash -c "$fn"
    rc=$?
    if ((rc == 0)); then
        status="PASS"
    elif ((rc == 124 || rc == 137)); then
        status="TIMEOUT (${limit}s)"
        FAILED=1
    else
        status="FAIL (rc=$rc)"
        FAILED=1
    fi
    echo "=== [$name] $status after $((SECONDS - t0))s"
    record "$name" "$status" $((SECONDS - t0))
}

# ----------------------------------------------------------------------------- steps
step_info() {
    set -u
    nvidia-smi || echo "nvidia-smi failed"
    echo "--- nvcc: $(command -v nvcc || echo missing)"
    nvcc --version 2>/dev/null | tail -2
    echo "--- compute-sanitizer: $(command -v compute-sanitizer || echo missing)"
    echo "--- CPUs: $(nproc), memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for dist in ("triton", "pytest", "pytest-benchmark", "hypothesis", "ninja", "matplotlib", "tqdm", "liger-kernel", "quack-kernels"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist} -")
print("gpu available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
EOF
}

step_build() {
    set -u
    if [[ -z "${THERMOKERN_CUDA_ARCHS:-}" ]]; then
        THERMOKERN_CUDA_ARCHS="$("$PY" -c 'import torch; M, m = torch.cuda.get_device_capability(); print(f"{M}{m}")')" || return 1
        export THERMOKERN_CUDA_ARCHS
    fi
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    echo "CUDA_HOME=$CUDA_HOME THERMOKERN_CUDA_ARCHS=$THERMOKERN_CUDA_ARCHS MAX_JOBS=$MAX_JOBS"
    "$PY" -m pip install --no-build-isolation --no-deps -e . || return 1
    "$PY" - <<'EOF'
import thermokern
info = thermokern.available_backends()
for name, b in info.items():
    print(f"  {name:9s} available={b.available} devices={b.devices} {b.reason}")
assert info["cuda"].available and "cuda" in info["cuda"].devices, "the CUDA backend is not usable after the build"
EOF
}

step_tests() {
    set -u
    "$PY" -m pytest tests -q -p no:cacheprovider -k "${GPU_CHECK_PYTEST_K:-cuda or gpu or triton}"
    local rc=$?
    ((rc == 5)) && echo "pytest: no GPU tests were selected"
    return $rc
}

step_memcheck() {
    set -u
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$PY" bench/sanitize_cases.py
}

step_racecheck() {
    set -u
    # shared-memory hazards do not depend on the element type much: two dtypes keep it short
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool racecheck --error-exitcode 1 \
        "$PY" bench/sanitize_cases.py --dtypes float32,bfloat16
}

step_bench() {
    set -u
    local dev stamp quick=(--quick)
    dev="$("$PY" -c 'import torch; print(torch.cuda.get_device_name())' | tr -c 'A-Za-z0-9._\n-' '-')"
    stamp="$(date +%Y%m%d-%H%M%S)"
    [[ "${GPU_CHECK_BENCH_FULL:-0}" == 1 ]] && quick=()
    local json="$OUT/${dev}-${stamp}.json" png="$OUT/${dev}-${stamp}.png"
    if "$PY" -c "import thermokern.cli" 2>/dev/null; then
        "$PY" -m thermokern.cli bench --device cuda ${quick[@]+"${quick[@]}"} \
            --json "$json" --plot "$png"
        return
    fi
    echo "thermokern.cli is not importable; calling thermokern.benchmark.run directly"
    "$PY" -c "
import sys, thermokern.benchmark as b
b.run(device='cuda', quick=${#quick[@]} > 0, json_path=sys.argv[1], plot_path=sys.argv[2])
" "$json" "$png"
}

# thermokern.distributed over NCCL: one rank per GPU (a single GPU still runs the cuda and
# triton paths through a one-rank group; several GPUs test the real merge).
step_distributed() {
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=gpu bench/distributed_check.py
}

export -f step_info step_build step_tests step_distributed step_memcheck step_racecheck step_bench

echo "thermokern gpu_check $(date -Is) in $ROOT; log: $LOG; budget ${BUDGET_S}s"
#        name       cap  reserve (for the steps after it)
run_step info        60    400 step_info
run_step build      300    240 step_build
run_step tests      150    200 step_tests
run_step distributed 60    170 step_distributed
run_step memcheck   120    140 step_memcheck
run_step racecheck  100    120 step_racecheck
run_step bench      400      0 step_bench

echo
echo "=== summary ($((SECONDS - START_S))s of ${BUDGET_S}s)"
for i in "${!STEP_NAMES[@]}"; do
    printf '  %-10s %-24s %4ss\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECONDS[$i]}"
done
ls -l "$OUT" 2>/dev/null | sed 's/^/  /'
if ((FAILED)); then
    echo "gpu_check: FAILED"
    exit 1
fi
echo "gpu_check: all steps passed"
exit 0
