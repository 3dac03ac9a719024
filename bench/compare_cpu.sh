#!/usr/bin/env bash
# CPU training-step comparison against PyTorch's CPU build, both run here in one go on
# the same cores: simple_cnn (batch 64, 1x28x28) and resnet18 with the small-image stem
# (batch 32, 1x64x64). Then the kernel micro-benchmarks (conv GFLOP/s next to SGEMM).
#
#   bench/compare_cpu.sh [build-dir]        (env: THREADS, ITERS, ROUNDS, PYTHON)
# Needs PyTorch for $PYTHON (Debian: apt-get install python3-torch; PYTHON=/usr/bin/python3).
set -euo pipefail
BUILD=${1:-build}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-20}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench/bench_train_step"
[ -x "$BIN" ] || { echo "error: $BIN not found; build first (cmake --build $BUILD)" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "error: $PYTHON cannot import torch" >&2; exit 1; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  threads=$THREADS"
echo "# torch $("$PYTHON" -c 'import torch; print(torch.__version__)')  cxr $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')"
# This machine is shared: the two engines run in alternating rounds and each reports
# the median and the minimum over all its rounds' steps.
ROUNDS=${ROUNDS:-3}
printf "| %-34s | %16s | %16s | %12s |\n" "training step (fwd+bwd+Adam)" "cxr ms med/min" "torch ms med/min" "ratio med/min"
printf "|%s|%s|%s|%s|\n" "------------------------------------" "------------------" "------------------" "---------------"
run() {  # name, args...
  local name=$1; shift
  local cj="" tj=""
  for ((r = 0; r < ROUNDS; r++)); do
    cj+="$("$BIN" "$@" --threads "$THREADS" --iters "$ITERS")"$'\n'
    tj+="$("$PYTHON" "$HERE/torch_train_step.py" "$@" --threads "$THREADS" --iters "$ITERS")"$'\n'
  done
  "$PYTHON" - "$name" "$cj" "$tj" <<'PY'
import json, statistics, sys
name, cj, tj = sys.argv[1], sys.argv[2], sys.argv[3]
def agg(text):
    rows = [json.loads(l) for l in text.splitlines() if l.strip()]
    return statistics.median(r["median_ms"] for r in rows), min(r["min_ms"] for r in rows)
cm, cn = agg(cj)
tm, tn = agg(tj)
print(f"| {name:<34} | {cm:7.1f} / {cn:6.1f} | {tm:7.1f} / {tn:6.1f} | {tm / cm:5.2f} / {tn / cn:4.2f} |")
PY
}
run "simple_cnn b64 1x28x28" --model simple_cnn --batch 64 --size 28
run "resnet18 (small stem) b32 1x64x64" --model resnet18 --batch 32 --size 64 --stem small
echo "(ratio = torch time / cxr time; > 1 means cxr is faster)"
echo
if [ -x "$BUILD/bench/bench_kernels" ]; then
  CXR_NUM_THREADS=$THREADS "$BUILD/bench/bench_kernels" --benchmark_min_time=0.5 2>/dev/null |
    awk '/^BM_/ { for (i = 1; i <= NF; i++) if ($i ~ /FLOPS=/) { sub("FLOPS=", "", $i); f = $i }; print $1, f, $NF }'
fi
