#!/usr/bin/env bash
# Fresh machine to a trained, evaluated and explained model: install dependencies, build,
# then run the workflow on the built-in synthetic chest X-rays (scripts/workflow.sh:
# synth -> train -> infer -> eval -> gradcam) and print where the reports are.
#   scripts/quickstart.sh [WORK_DIR]      (default cxr-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
scripts/workflow.sh "${1:-cxr-demo}"
