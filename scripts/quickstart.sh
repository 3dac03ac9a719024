#!/usr/bin/env bash
# Fresh machine to a trained model: install dependencies, build, train simple_cnn on
# generated data and save it (simple_cnn_synthetic.safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
./build/examples/train_synthetic "$@"
