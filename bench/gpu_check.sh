#!/usr/bin/env bash
# GPU verification in one call, meant to finish inside 10 minutes on an H100:
#   1. configure and build with the CUDA backend (sm_90 only, to build fast),
#   2. run the whole test suite, CPU tests and the `gpu`-labelled tests, printing failures,
#   3. run the GPU tests under compute-sanitizer memcheck,
#   4. time training steps against PyTorch on the same GPU and print a table,
#   5. keep every log under $OUT (default ./gpu_check_out).
#
#   bench/gpu_check.sh [all|build|test|memcheck|bench]...   (default: all)
#
# Dependencies: CMake, ninja, nvcc and cuDNN (found in the toolkit, in CUDNN_ROOT, or in
# the Python wheel nvidia-cudnn); Eigen, nlohmann-json and GoogleTest from the system or,
# when .devdeps/ holds their Debian packages (scripts/fetch_device_deps.sh), from there.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
BUILD=${BUILD:-$ROOT/build-gpu}
JOBS=${JOBS:-$(nproc)}
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(all)
want() { for s in "${STEPS[@]}"; do [ "$s" = all ] || [ "$s" = "$1" ] && return 0; done; return 1; }
say() { printf '\n== %s\n' "$*" | tee -a "$OUT/summary.txt"; }
STATUS=0

# ---------------------------------------------------------------- environment
PREFIX_ARGS=()
if [ -d .devdeps ] && ls .devdeps/*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/cxr-devroot
  for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cxr-devroot; done
  PREFIX_ARGS+=("-DCMAKE_PREFIX_PATH=/tmp/cxr-devroot/usr")
fi
if [ -z "${CUDNN_ROOT:-}" ] && [ ! -f /usr/local/cuda/include/cudnn.h ] && [ ! -f /usr/include/cudnn.h ]; then
  CUDNN_ROOT=$(python3 -c 'import os, nvidia.cudnn as m; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])' 2>/dev/null || true)
  [ -n "$CUDNN_ROOT" ] && export CUDNN_ROOT
fi
if [ -n "${CUDNN_ROOT:-}" ]; then
  export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
  # The wheel ships only libcudnn.so.9; give the linker the unversioned name it looks for.
  if [ ! -e "$CUDNN_ROOT/lib/libcudnn.so" ] && [ -e "$CUDNN_ROOT/lib/libcudnn.so.9" ]; then
    ln -sf libcudnn.so.9 "$CUDNN_ROOT/lib/libcudnn.so" 2>/dev/null || true
  fi
fi
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  echo "CUDNN_ROOT=${CUDNN_ROOT:-<toolkit>}"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
} > "$OUT/env.txt"
say "environment"; cat "$OUT/env.txt" | tee -a "$OUT/summary.txt"

# ---------------------------------------------------------------- build
if want build; then
  say "build ($BUILD)"
  if ! cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCXR_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCXR_BUILD_EXAMPLES=OFF "${PREFIX_ARGS[@]}" ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} >"$OUT/configure.log" 2>&1; then
    tail -40 "$OUT/configure.log"; echo "configure failed"; exit 1
  fi
  grep -E "cxr:" "$OUT/configure.log" | tee -a "$OUT/summary.txt"
  if ! cmake --build "$BUILD" -j "$JOBS" >"$OUT/build.log" 2>&1; then
    grep -E "error|Error" -A4 "$OUT/build.log" | head -120; echo "build failed"; exit 1
  fi
  echo "build ok" | tee -a "$OUT/summary.txt"
fi

# ---------------------------------------------------------------- tests
if want test; then
  say "CPU tests"
  ctest --test-dir "$BUILD" -LE gpu -j "$JOBS" --output-on-failure >"$OUT/ctest_cpu.log" 2>&1 || STATUS=1
  grep -E "tests passed|Failed|FAILED|Not Run|\*\*\*" "$OUT/ctest_cpu.log" | tail -20 | tee -a "$OUT/summary.txt"
  say "GPU tests"
  ctest --test-dir "$BUILD" -L gpu --output-on-failure >"$OUT/ctest_gpu.log" 2>&1 || STATUS=1
  grep -E "^\[  FAILED|tests passed|Failed|SKIPPED|\*\*\*" "$OUT/ctest_gpu.log" | sort | uniq | head -60 | tee -a "$OUT/summary.txt"
  # the failing assertions themselves, for the first few failures
  grep -B2 -A8 "Failure$" "$OUT/ctest_gpu.log" | head -150 > "$OUT/gpu_failures.txt"
  head -150 "$OUT/gpu_failures.txt"
fi

# ---------------------------------------------------------------- compute-sanitizer
if want memcheck; then
  say "compute-sanitizer memcheck"
  for t in "$BUILD"/tests/test_cuda_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    # The long training-curve test runs unsanitized above; memcheck covers every kernel through the rest.
    compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 "$t" \
      --gtest_filter="${MEMCHECK_FILTER:--*TrainingCurve*:*MoreThanTwoToThe31*}" >"$OUT/memcheck_$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc, $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$name.log" | tail -1)" | tee -a "$OUT/summary.txt"
    [ $rc -eq 0 ] || STATUS=1
  done
fi

# ---------------------------------------------------------------- benchmarks against PyTorch
if want bench; then
  say "training step, cxr vs PyTorch on the same GPU (median of ${ITERS:-30} steps)"
  BENCH_LOG="$OUT/bench.jsonl"
  : >"$BENCH_LOG"
  run_pair() {  # model batch size stem tf32
    local args=(--model "$1" --batch "$2" --size "$3" --channels 1 --classes 2 --stem "$4" --warmup 5 --iters "${ITERS:-30}" --device cuda --tf32 "$5")
    "$BUILD/bench/bench_train_step" "${args[@]}" >>"$BENCH_LOG" 2>>"$OUT/bench.err" || echo "cxr $1 failed" | tee -a "$OUT/summary.txt"
    python3 bench/torch_train_step.py "${args[@]}" >>"$BENCH_LOG" 2>>"$OUT/bench.err" || echo "torch $1 failed" | tee -a "$OUT/summary.txt"
  }
  run_pair simple_cnn 256 28 auto 1
  run_pair simple_cnn 256 28 auto 0
  run_pair resnet18 128 224 imagenet 1
  run_pair resnet18 128 224 imagenet 0
  python3 - "$BENCH_LOG" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
cx = {(r["model"], r["batch"], r["tf32"]): r for r in rows if r["engine"] == "cxr"}
pt = {(r["model"], r["batch"], r["tf32"]): r for r in rows if r["engine"].startswith("pytorch")}
print(f"{'model':<11}{'batch':>6}{'tf32':>5}{'cxr ms':>10}{'torch ms':>10}{'ratio':>8}   (ratio = torch/cxr, >1: cxr faster)")
for k in sorted(set(cx) | set(pt)):
    c, p = cx.get(k), pt.get(k)
    cm = c["median_ms"] if c else float("nan")
    pm = p["median_ms"] if p else float("nan")
    print(f"{k[0]:<11}{k[1]:>6}{k[2]:>5}{cm:>10.2f}{pm:>10.2f}{pm / cm if c and p else float('nan'):>8.2f}")
PY
fi

say "done (status $STATUS); logs in $OUT"
exit $STATUS
