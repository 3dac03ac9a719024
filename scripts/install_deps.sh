#!/usr/bin/env bash
# Installs what cxr needs to build and test on Debian 12 (run as root). Packages
# already present are left alone, so repeated runs are quick.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git libeigen3-dev nlohmann-json3-dev libgtest-dev libgmock-dev
      libbenchmark-dev libpng-dev libjpeg62-turbo-dev libcli11-dev libjpeg-turbo-progs libtomlplusplus-dev libssl-dev
      python3 python3-pip python3-numpy chromium)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Python safetensors package checks that our model files load in the reference
# implementation (Debian 12 does not package it; PyPI does).
if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
  python3 -m pip install -q safetensors numpy 2>/dev/null ||
    python3 -m pip install -q --break-system-packages safetensors numpy
fi
