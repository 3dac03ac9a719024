#!/usr/bin/env bash
# The whole test suite from a clean checkout: dependencies, build, ctest. GPU tests
# skip themselves on machines without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
