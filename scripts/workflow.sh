#!/usr/bin/env bash
# The whole workflow on the built-in synthetic chest X-rays, with the built `cxr`:
#   synth -> train -> infer -> eval -> gradcam
# and where to find the reports. Usage: scripts/workflow.sh [WORK_DIR] (default cxr-demo);
# CXR=path/to/cxr picks the binary (default build/tools/cxr). Any earlier WORK_DIR is replaced.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CXR=${CXR:-$ROOT/build/tools/cxr}
W=${1:-cxr-demo}
[ -x "$CXR" ] || { echo "error: $CXR not found; build first (cmake --build build)" >&2; exit 1; }
rm -rf "$W/run" "$W/eval" "$W/gradcam" "$W/predictions.csv"
mkdir -p "$W"
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "cxr synth: 2000 synthetic chest X-rays (128 px) with lesion masks"
"$CXR" synth --out "$W/data" --count 2000 --size 128 --seed 1 --overwrite
step "cxr train: simple_cnn, settings from configs/synthetic.toml"
"$CXR" train "$W/data" --config "$ROOT/configs/synthetic.toml" --out "$W/run"
step "cxr infer: the held-out test split"
"$CXR" infer "$W/run/model.safetensors" "$W/data/test" --out "$W/predictions.csv"
step "cxr eval: against the test split's folder labels"
"$CXR" eval --predictions "$W/predictions.csv" --truth-folder "$W/data/test" --out "$W/eval"
step "cxr gradcam: heat maps of the test PNEUMONIA images, scored against the lesion masks"
"$CXR" gradcam "$W/run/model.safetensors" "$W/data/test/PNEUMONIA" --out "$W/gradcam" --masks "$W/data/masks"

echo
echo "done in $(( $(date +%s) - start )) s"
echo "training report:   $W/run/report.html"
echo "evaluation report: $W/eval/report.html"
echo "Grad-CAM overlays: $W/gradcam/"
