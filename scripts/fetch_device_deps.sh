#!/usr/bin/env bash
# Downloads the Debian packages of the header/static dependencies (Eigen, nlohmann-json,
# GoogleTest) into .devdeps/, for a build machine that has the CUDA toolkit but no package
# registry: bench/gpu_check.sh unpacks them there when they are present.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devdeps
cd .devdeps
apt-get download libeigen3-dev nlohmann-json3-dev libgtest-dev libgmock-dev googletest libcli11-dev \
  libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo zlib1g-dev
ls -l
