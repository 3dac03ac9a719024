#!/usr/bin/env bash
# End-to-end training speed on a real PNG folder: `cxr train` against PyTorch + torchvision
# (ImageFolder + DataLoader, bench/torch_train_folder.py) with the same architecture, batch
# size, augmentation, optimizer and thread count, both decoding and resizing the same PNGs.
#
#   bench/compare_train_folder.sh [build-dir]
# env: ROUNDS (3), EPOCHS (3), COUNT (2000 images), SRC_SIZE (128 px files), SIZE (64 px
#      input), BATCH (32), THREADS (2), WORKERS (2: cxr's decoding threads),
#      TORCH_WORKERS ("0 1 2": DataLoader num_workers, one PyTorch run per value; T:W
#      runs PyTorch with T threads instead of THREADS, e.g. "1:1"),
#      ORDER (resize-first | augment-first, see torch_train_folder.py),
#      RESNET (1: also resnet18, small stem), RESNET_COUNT (400), RESNET_ROUNDS (2),
#      RESNET_TORCH_WORKERS ("0 2"),
#      WORK (/tmp/cxr_train_folder: data sets and run directories), PYTHON (/usr/bin/python3)
# Images/s counts training images over training-loop seconds (decode + augment + forward +
# backward + update; cxr's validation is excluded), over epochs 2..EPOCHS only (epoch 1 is
# warm-up for both). The engines run in alternating rounds, as the machine may be shared;
# "per round" compares each PyTorch run with the cxr run of its own round (median of those
# ratios first), which is steadier when the machine's load drifts.
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
EPOCHS=${EPOCHS:-3}
COUNT=${COUNT:-2000}
SRC_SIZE=${SRC_SIZE:-128}
SIZE=${SIZE:-64}
BATCH=${BATCH:-32}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
TORCH_WORKERS=${TORCH_WORKERS:-"0 1 2"}
ORDER=${ORDER:-resize-first}
RESNET=${RESNET:-1}
RESNET_COUNT=${RESNET_COUNT:-400}
RESNET_ROUNDS=${RESNET_ROUNDS:-2}
RESNET_TORCH_WORKERS=${RESNET_TORCH_WORKERS:-"0 2"}
WORK=${WORK:-/tmp/cxr_train_folder}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
CXR="$BUILD/tools/cxr"
[ -x "$CXR" ] || { echo "error: $CXR not found; build it first (cmake --build $BUILD --target cxr_cli)" >&2; exit 1; }
"$PYTHON" -c "import torch, torchvision" 2>/dev/null ||
  { echo "error: $PYTHON cannot import torch and torchvision (apt-get install python3-torch python3-torchvision)" >&2; exit 1; }
[ "$EPOCHS" -ge 2 ] || { echo "error: EPOCHS must be >= 2 (epoch 1 is warm-up)" >&2; exit 1; }
mkdir -p "$WORK"

echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  $(nproc) cores"
echo "# $("$PYTHON" -c 'import torch, torchvision; print("torch", torch.__version__, " torchvision", torchvision.__version__)')  $("$CXR" version | head -n 1)"

dataset() {  # count -> prints the folder, generating it once
  local dir="$WORK/synth_${1}_${SRC_SIZE}"
  if [ ! -f "$dir/synth.json" ]; then
    "$CXR" synth --out "$dir" --count "$1" --size "$SRC_SIZE" --seed 1 --no-masks --overwrite >"$WORK/synth.log" 2>&1 ||
      { cat "$WORK/synth.log" >&2; exit 1; }
  fi
  echo "$dir"
}

compare() {  # model, data dir, rounds, torch num_workers values
  local model=$1 data=$2 rounds=$3 torch_workers=$4 log="$WORK/$1.jsonl"
  : >"$log"
  echo "# $model: $(find "$data/train" -name '*.png' | wc -l) training PNGs of ${SRC_SIZE}px in $data -> ${SIZE}px, batch $BATCH, $EPOCHS epochs, $rounds rounds"
  for ((r = 1; r <= rounds; r++)); do
    echo "#   round $r: load $(cut -d' ' -f1-3 /proc/loadavg)"
    local run="$WORK/run-$model"
    rm -rf "$run"
    "$CXR" train "$data" --out "$run" --model "$model" --image-size "$SIZE" --batch-size "$BATCH" \
      --threads "$THREADS" --workers "$WORKERS" --epochs "$EPOCHS" --optimizer adamw --lr 1e-3 \
      --schedule constant --progress none >"$WORK/cxr-$model.out"
    "$PYTHON" - "$run/history.csv" "$WORK/cxr-$model.out" "cxr train (threads $THREADS, workers $WORKERS)" >>"$log" <<'PY'
import csv, json, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
m = re.search(r"\((\d+) parameters\)", open(sys.argv[2]).read())
print(json.dumps({"config": sys.argv[3], "parameters": int(m.group(1)) if m else None,
                  "epochs": [float(r["images_per_s"]) for r in rows]}))
PY
    for tw in $torch_workers; do  # W, or T:W for a thread count other than THREADS
      local t=$THREADS w=$tw
      if [[ $tw == *:* ]]; then t=${tw%%:*} w=${tw#*:}; fi
      "$PYTHON" "$HERE/torch_train_folder.py" "$data" --model "$model" --size "$SIZE" --batch "$BATCH" \
        --threads "$t" --workers "$w" --epochs "$EPOCHS" --order "$ORDER" |
        "$PYTHON" -c 'import json, sys
j = json.loads(sys.stdin.read())
print(json.dumps({"config": "torch (threads %d, num_workers %d)" % (j["threads"], j["workers"]),
                  "parameters": j["parameters"], "epochs": [e["images_per_s"] for e in j["epochs"]]}))' >>"$log"
    done
  done
  "$PYTHON" - "$log" "$model" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
configs, rounds = {}, []  # rounds: one {config: median of its epochs 2..N} per round
for r in rows:
    if r["config"].startswith("cxr"):
        rounds.append({})
    c = configs.setdefault(r["config"], {"parameters": r["parameters"], "rates": [], "first": []})
    c["rates"] += r["epochs"][1:]
    c["first"].append(r["epochs"][0])
    rounds[-1][r["config"]] = statistics.median(r["epochs"][1:])
cxr = next(k for k in configs if k.startswith("cxr"))
med = {k: statistics.median(v["rates"]) for k, v in configs.items()}
paired = {k: statistics.median(rd[cxr] / rd[k] for rd in rounds if k in rd) for k in configs}
torch_best = max((k for k in configs if k != cxr), key=lambda k: med[k])
print("# parameters: " + ", ".join(f"{k.split(' ')[0]} {v['parameters']}" for k, v in list(configs.items())[:2]))
print(f"\n| {sys.argv[2]}: engine / config | images/s median (min-max), epochs 2..N | epoch 1 | cxr / this | cxr / this, per round |")
print("|---|---|---|---|---|")
for k, v in configs.items():
    ratio = "" if k == cxr else f"{med[cxr] / med[k]:.2f}"
    pr = "" if k == cxr else f"{paired[k]:.2f} (" + ", ".join(f"{rd[cxr] / rd[k]:.2f}" for rd in rounds if k in rd) + ")"
    print(f"| {k} | {med[k]:.1f} ({min(v['rates']):.1f}-{max(v['rates']):.1f}) | {statistics.median(v['first']):.1f} | {ratio} | {pr} |")
print(f"\ncxr / fastest PyTorch ({torch_best}): {med[cxr] / med[torch_best]:.2f} (medians), "
      f"{paired[torch_best]:.2f} (median of per-round ratios)\n")
PY
}

data=$(dataset "$COUNT") || exit 1
compare simple_cnn "$data" "$ROUNDS" "$TORCH_WORKERS"
if [ "$RESNET" = 1 ]; then
  data=$(dataset "$RESNET_COUNT") || exit 1
  compare resnet18 "$data" "$RESNET_ROUNDS" "$RESNET_TORCH_WORKERS"
fi
