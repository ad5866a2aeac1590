#!/usr/bin/env bash
# GPU check for thermokern on a machine with an NVIDIA GPU and its own PyTorch (no venv made).
#
#   bash bench/gpu_check.sh                                    # call 1 of a lease
#   GPU_CHECK_STEPS="bench_full ncu memcheck racecheck sgld" bash bench/gpu_check.sh   # call 2
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh               # rehearsal on a CPU machine
#
# Steps (run in the order of GPU_CHECK_STEPS; each under `timeout`, later steps run even when
# one fails; all within a time budget):
#   info        nvidia-smi, toolkit and Python package versions
#   build       pip install --no-build-isolation --no-deps -e .  (this GPU's SM arch only, all
#               cores; on a warm machine ninja recompiles only what changed)
#   tests       GPU tests in parallel (pytest-xdist when installed):
#               pytest tests -k "cuda or gpu or triton" with TRITON_INTERPRET=0, junit XML
#   distributed bench/distributed_check.py under torchrun, one NCCL rank per GPU
#   memcheck    compute-sanitizer --tool memcheck  on a reduced bench/sanitize_cases.py set
#   racecheck   compute-sanitizer --tool racecheck on a reduced bench/sanitize_cases.py set
#   bench       thermokern bench --quick --json/--plot into $OUT (the ops with targets first)
#   bench_full  thermokern bench at the full shapes (GPU_CHECK_BENCH_ARGS adds flags)
#   sgld        python bench/bench_optim.py: the SGLD optimizer step against the loop, foreach
#               and compile (a multi-tensor op outside `thermokern bench`; ratios to the log,
#               a line per case as it is measured; at most 60 s)
#   ncu         Nsight Compute on one launch of each of TARGET_OPS per provider and a copy of its
#               input (bench/ncu_targets.py; GPU_CHECK_NCU_ARGS adds its flags, default
#               16384x131072 bf16): a table of time, DRAM bytes and GB/s against the copy,
#               throughput, occupancy and registers, to the log and ncu.csv (at most 90 s)
# pytest and the benchmark are stopped with SIGINT at their limit, so that pytest prints its
# summary (and writes the junit XML) and the benchmark's JSON keeps what it measured.
# Triton and Inductor compile caches live in build/ (ignored, kept between calls on a warm
# machine), so later steps and calls do not compile the same kernels again.
# Everything goes to $OUT: gpu_check.log, tests.xml, <gpu>-<stamp>.json/.png, ncu.csv and
# ncu-order.json (at most 8 files, the device tool's limit). The exit status is 1 when any step
# failed or was skipped. A step's reserve for the steps after it applies only when some follow.
#
# The device image (the device tool's KINDS.md: torch 2.11, Triton 3.6, Python 3.12, no
# internet) lists no expecttest (not needed by opcheck in torch 2.11 or 2.14) and no setuptools
# version; the info step prints both, and the build step stops with a clear message when
# setuptools is older than pyproject.toml needs (carry a wheel then).
#
# Environment:
#   PYTHON                 interpreter (default: python3 from PATH)
#   OUT                    results folder (default: bench/results)
#   CUDA_HOME              CUDA toolkit (default: /usr/local/cuda, else nvcc's from PATH)
#   THERMOKERN_CUDA_ARCHS  SM archs to build (default: the visible GPU's, e.g. "90")
#   MAX_JOBS               parallel compile jobs (default: all cores)
#   GPU_CHECK_STEPS        steps to run (default "info build tests bench distributed")
#   GPU_CHECK_BUDGET_S     total seconds for all steps (default 420; the steps shrink to fit)
#   GPU_CHECK_PYTEST_K     pytest -k expression (default "cuda or gpu or triton")
#   GPU_CHECK_PYTEST_ARGS  extra pytest arguments (e.g. "--lf" or a test id)
#   GPU_CHECK_WORKERS      pytest-xdist workers (default 12)
#   GPU_CHECK_BENCH_ARGS   extra `thermokern bench` arguments; a --shape applies to every op
#                          it fits, so name the ops too, e.g. "--dtype bfloat16 --shape
#                          16384x131072 --op softmax_entropy --op entropy_regularized_cross_entropy
#                          --op token_logprobs --op logsumexp --op langevin_step"
#   GPU_CHECK_NCU_ARGS     extra bench/ncu_targets.py arguments (e.g. "--op logsumexp --shape
#                          4096x131072")
#   GPU_CHECK_DEVICE       cuda (default) or cpu: rehearse the steps on a machine without a GPU
#                          (no sanitizer or profiler; sanitize_cases, ncu_targets and the
#                          benchmark on CPU tensors)

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

export PY="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/bench/results}"
mkdir -p "$OUT" || exit 1
export OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

export DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [[ -z "${CUDA_HOME:-}" ]]; then
    if [[ -x /usr/local/cuda/bin/nvcc ]]; then
        CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null 2>&1; then
        CUDA_HOME="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
    fi
fi
if [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then
    export CUDA_HOME
    export PATH="$CUDA_HOME/bin:$CUDA_HOME/compute-sanitizer:$PATH"
else
    echo "gpu_check: no nvcc found (CUDA_HOME=${CUDA_HOME:-unset}); the build will have no CUDA kernels"
    unset CUDA_HOME
fi
if [[ "$DEVICE" == cuda ]]; then
    export TRITON_INTERPRET=0      # real Triton kernels
else
    export TRITON_INTERPRET=1      # the rehearsal runs Triton through its interpreter
fi
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="$ROOT/build/triton-cache"
export TORCHINDUCTOR_CACHE_DIR="$ROOT/build/inductor-cache"
mkdir -p "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"
export ROOT

BUDGET_S="${GPU_CHECK_BUDGET_S:-420}"
STEPS="${GPU_CHECK_STEPS:-info build tests bench distributed}"
START_S=$SECONDS
STEP_NAMES=()
STEP_STATUS=()
STEP_SECONDS=()
FAILED=0

remaining() { echo $((BUDGET_S - (SECONDS - START_S))); }

# run_step NAME CAP_S RESERVE_S SIGNAL FUNCTION: run FUNCTION under timeout, at most CAP_S
# seconds and leaving RESERVE_S seconds of the budget to the steps after it; at the limit it
# gets SIGNAL (INT for pytest and the benchmark, which then report what they saw), and
# SIGKILL 20 s later.
run_step() {
    local name="$1" cap="$2" reserve="$3" sig="$4" fn="$5"
    local left limit rc t0 status
    left=$(remaining)
    limit=$((left - reserve))
    ((limit > cap)) && limit=$cap
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo; echo "=== [$name] not run: ${left}s of the ${BUDGET_S}s budget left"
        record "$name" "SKIPPED (out of time)" 0
        FAILED=1
        return 0
    fi
    echo
    echo "=== [$name] $(date +%T) timeout ${limit}s (budget left ${left}s)"
    t0=$SECONDS
    timeout --signal="$sig" --kill-after=20 "$limit" bash -c "$fn"
    rc=$?
    if ((rc == 0)); then
        status="PASS"
    elif ((rc == 124 || rc == 137)) || ((SECONDS - t0 >= limit)); then
        status="TIMEOUT (${limit}s, rc=$rc)"
        FAILED=1
    else
        status="FAIL (rc=$rc)"
        FAILED=1
    fi
    echo "=== [$name] $status after $((SECONDS - t0))s"
    record "$name" "$status" $((SECONDS - t0))
}

record() {  # record NAME STATUS SECONDS
    STEP_NAMES+=("$1")
    STEP_STATUS+=("$2")
    STEP_SECONDS+=("$3")
}

# ----------------------------------------------------------------------------- steps
step_info() {
    nvidia-smi || echo "nvidia-smi failed"
    echo "--- nvcc: $(command -v nvcc || echo missing)"
    nvcc --version 2>/dev/null | tail -2
    echo "--- compute-sanitizer: $(command -v compute-sanitizer || echo missing)"
    echo "--- ncu: $(command -v ncu || echo 'not on PATH') $(ncu --version 2>/dev/null | tail -1)"
    echo "--- CPUs: $(nproc), memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for dist in ("triton", "setuptools", "numpy", "pybind11", "pytest", "pytest-xdist", "pytest-timeout", "pytest-benchmark", "hypothesis",
             "expecttest", "ninja", "matplotlib", "tqdm", "liger-kernel", "quack-kernels"):
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
    if [[ -z "${THERMOKERN_CUDA_ARCHS:-}" && "$DEVICE" == cuda ]]; then
        THERMOKERN_CUDA_ARCHS="$("$PY" -c 'import torch; M, m = torch.cuda.get_device_capability(); print(f"{M}{m}")')" || return 1
    fi
    export THERMOKERN_CUDA_ARCHS="${THERMOKERN_CUDA_ARCHS:-90}"
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    echo "CUDA_HOME=${CUDA_HOME:-} THERMOKERN_CUDA_ARCHS=$THERMOKERN_CUDA_ARCHS MAX_JOBS=$MAX_JOBS"
    # pyproject's license string needs setuptools >= 77 (torch 2.11 wants < 82): on an image
    # with an older one, carry a setuptools wheel (the device tool's README says how).
    "$PY" -c 'import setuptools, sys; v = tuple(int(p) for p in setuptools.__version__.split(".")[:2]); sys.exit(v < (77, 0))' \
        || { echo "build: setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)') < 77; carry a newer wheel"; return 1; }
    "$PY" -m pip install --no-build-isolation --no-deps -e . || return 1
    "$PY" - <<'EOF'
import os, thermokern
info = thermokern.available_backends()
for name, b in info.items():
    print(f"  {name:9s} available={b.available} devices={b.devices} {b.reason}")
if os.environ["DEVICE"] == "cuda":
    assert info["cuda"].available and "cuda" in info["cuda"].devices, "the CUDA backend is not usable after the build"
EOF
}

step_tests() {
    local par=()
    if "$PY" -c "import xdist" 2>/dev/null; then
        par=(-n "${GPU_CHECK_WORKERS:-12}")
    fi
    if "$PY" -c "import pytest_timeout" 2>/dev/null; then
        par+=(--timeout=300)  # one hung test is reported, not the whole step lost
    fi
    # shellcheck disable=SC2086
    "$PY" -m pytest tests -q -p no:cacheprovider -rfE ${par[@]+"${par[@]}"} \
        --junitxml="$OUT/tests.xml" -k "${GPU_CHECK_PYTEST_K:-cuda or gpu or triton}" \
        ${GPU_CHECK_PYTEST_ARGS:-}
    local rc=$?
    ((rc == 5)) && echo "pytest: no GPU tests were selected"
    return $rc
}

# The sanitizers multiply a kernel's time by 10-100: a reduced set (every kernel, its
# block-boundary widths, two dtypes) keeps them to a minute or two.
SANITIZE_ARGS="--dtypes float32,bfloat16 --widths 1,33,1000,4099,65537 --rows 3"
export SANITIZE_ARGS

sanitize() {  # sanitize TOOL
    local b rc=0
    for b in cuda triton; do
        echo "--- $1: backend $b"
        if [[ "$DEVICE" == cuda ]]; then
            # shellcheck disable=SC2086
            PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$1" --error-exitcode 1 \
                "$PY" bench/sanitize_cases.py --backend "$b" $SANITIZE_ARGS || rc=1
        else
            local cb=cpu
            [[ "$b" == triton ]] && cb=triton
            # shellcheck disable=SC2086
            "$PY" bench/sanitize_cases.py --device cpu --backend "$cb" $SANITIZE_ARGS || rc=1
        fi
    done
    return $rc
}
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }

bench() {  # bench EXTRA_ARGS...
    local dev stamp
    if [[ "$DEVICE" == cuda ]]; then
        dev="$("$PY" -c 'import torch; print(torch.cuda.get_device_name())' | tr -c 'A-Za-z0-9._\n-' '-')"
    else
        dev="cpu-rehearsal"
    fi
    stamp="$(date +%Y%m%d-%H%M%S)"
    # shellcheck disable=SC2086
    "$PY" -m thermokern.cli bench --device "$DEVICE" "$@" ${GPU_CHECK_BENCH_ARGS:-} \
        --json "$OUT/${dev}-${stamp}.json" --plot "$OUT/${dev}-${stamp}.png"
}
# The benchmark runs the ops with GPU targets (the lease issue's) first, so that a run cut at its
# limit still has them, then every other registered op; GPU_CHECK_BENCH_ARGS with --op picks
# the ops itself.
TARGET_OPS="softmax_entropy entropy_regularized_cross_entropy logsumexp langevin_step"
ordered_ops() {
    local op seen=" "
    [[ " ${GPU_CHECK_BENCH_ARGS:-} " == *" --op"* ]] && return 0
    for op in $TARGET_OPS $("$PY" -c 'from thermokern import bench; print(*bench.OPS)'); do
        [[ "$seen" == *" $op "* ]] || { seen+="$op "; echo "--op=$op"; }
    done
}
step_bench() { bench --quick $(ordered_ops); }
step_bench_full() { bench $(ordered_ops); }
step_sgld() { THERMOKERN_BENCH_DEVICE="$DEVICE" "$PY" bench/bench_optim.py 10; }

step_ncu() {
    local ncu op rep="$ROOT/build/ncu/targets" order="$OUT/ncu-order.json" ops=()
    # the target ops, unless GPU_CHECK_NCU_ARGS names its own
    [[ " ${GPU_CHECK_NCU_ARGS:-} " == *" --op"* ]] || for op in $TARGET_OPS; do ops+=(--op "$op"); done
    if [[ "$DEVICE" != cuda ]]; then
        # shellcheck disable=SC2086
        "$PY" bench/ncu_targets.py --device cpu --shape 256x4096 --dtype float32 --providers cpu,cpu_ \
            ${ops[@]+"${ops[@]}"} --order "$order" ${GPU_CHECK_NCU_ARGS:-}
        return
    fi
    ncu="$(command -v ncu || ls -d "${CUDA_HOME:-/usr/local/cuda}"/bin/ncu /usr/local/cuda*/nsight-compute*/ncu \
        /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
    [[ -n "$ncu" && -x "$ncu" ]] || { echo "ncu: not found on PATH nor in the toolkit"; return 1; }
    mkdir -p "$(dirname "$rep")"
    # shellcheck disable=SC2086
    "$ncu" --clock-control none --profile-from-start off -f -o "$rep" \
        --metrics "$("$PY" bench/ncu_targets.py --metrics)" \
        "$PY" bench/ncu_targets.py ${ops[@]+"${ops[@]}"} --order "$order" ${GPU_CHECK_NCU_ARGS:-} || return 1
    "$ncu" --import "$rep.ncu-rep" --csv --page raw --print-units base > "$OUT/ncu.csv" || return 1
    "$PY" bench/ncu_targets.py --summarize "$OUT/ncu.csv" --order "$order"
}

# thermokern.distributed over NCCL: one rank per GPU (a single GPU still runs the cuda and
# triton paths through a one-rank group; several GPUs test the real merge).
step_distributed() {
    if [[ "$DEVICE" == cuda ]]; then
        "$PY" -m torch.distributed.run --standalone --nproc_per_node=gpu bench/distributed_check.py
    else
        echo "distributed: needs a GPU (tests/test_distributed.py covers gloo on CPU)"
    fi
}

export TARGET_OPS
export -f step_info step_build step_tests step_distributed step_memcheck step_racecheck \
    step_bench step_bench_full step_sgld step_ncu sanitize bench ordered_ops

# name -> cap (s), reserve for later steps (s), signal at the limit
declare -A CAP=([info]=30 [build]=240 [tests]=300 [distributed]=60 [memcheck]=150 [racecheck]=120
                [bench]=240 [bench_full]=420 [sgld]=60 [ncu]=90)
declare -A RESERVE=([info]=0 [build]=120 [tests]=70 [distributed]=0 [memcheck]=60 [racecheck]=0
                    [bench]=30 [bench_full]=90 [sgld]=0 [ncu]=0)
declare -A SIG=([info]=TERM [build]=TERM [tests]=INT [distributed]=TERM [memcheck]=TERM
                [racecheck]=TERM [bench]=INT [bench_full]=INT [sgld]=TERM [ncu]=TERM)

echo "thermokern gpu_check $(date -Is) in $ROOT on $DEVICE; steps: $STEPS; budget ${BUDGET_S}s; log: $LOG"
read -r -a STEP_LIST <<< "$STEPS"
for i in "${!STEP_LIST[@]}"; do
    step="${STEP_LIST[$i]}"
    if [[ -z "${CAP[$step]:-}" ]]; then
        echo "gpu_check: unknown step '$step' (known: ${!CAP[*]})"
        FAILED=1
        continue
    fi
    reserve="${RESERVE[$step]}"
    ((i + 1 == ${#STEP_LIST[@]})) && reserve=0  # no step after it to keep time for
    run_step "$step" "${CAP[$step]}" "$reserve" "${SIG[$step]}" "step_$step"
done

echo
echo "=== summary ($((SECONDS - START_S))s of ${BUDGET_S}s)"
for i in "${!STEP_NAMES[@]}"; do
    printf '  %-11s %-26s %4ss\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECONDS[$i]}"
done
ls -l "$OUT" 2>/dev/null | sed 's/^/  /'
if ((FAILED)); then
    echo "gpu_check: FAILED"
    exit 1
fi
echo "gpu_check: all steps passed"
exit 0
