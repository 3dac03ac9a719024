#!/usr/bin/env bash
# Per-image predict latency on the CPU, cxr::Model::predict against PyTorch (eval mode,
# no_grad, batch 1), simple_cnn and resnet18 (ImageNet stem) at 1x224x224, in alternating
# rounds on the same cores. Prints a markdown table (medians over rounds of per-round medians).
#
#   bench/compare_predict.sh [build-dir]        (env: THREADS, ITERS, ROUNDS, PYTHON)
set -euo pipefail
BUILD=${1:-build}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-50}
ROUNDS=${ROUNDS:-3}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench/bench_predict"
[ -x "$BIN" ] || { echo "error: $BIN not found; build first (cmake --build $BUILD --target bench_predict)" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "error: $PYTHON cannot import torch (apt-get install python3-torch)" >&2; exit 1; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  threads=$THREADS"
echo "# torch $("$PYTHON" -c 'import torch; print(torch.__version__)')  cxr $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')"
printf "| %-22s | %14s | %14s | %8s |\n" "predict, 1x224x224" "cxr ms (p50)" "torch ms (p50)" "torch/cxr"
printf "|%s|%s|%s|%s|\n" "------------------------" "----------------" "----------------" "----------"
for model in simple_cnn resnet18; do
  cj="" tj=""
  for ((r = 0; r < ROUNDS; r++)); do
    cj+="$("$BIN" --model $model --size 224 --iters "$ITERS" --threads "$THREADS")"$'\n'
    tj+="$("$PYTHON" "$HERE/torch_predict.py" --model $model --size 224 --iters "$ITERS" --threads "$THREADS")"$'\n'
  done
  "$PYTHON" - "$model" "$cj" "$tj" <<'PY'
import json, statistics, sys
name, cj, tj = sys.argv[1], sys.argv[2], sys.argv[3]
med = lambda t: statistics.median(json.loads(l)["median_ms"] for l in t.splitlines() if l.strip())
c, t = med(cj), med(tj)
print(f"| {name:<22} | {c:14.2f} | {t:14.2f} | {t / c:8.2f} |")
PY
done
