#!/usr/bin/env bash
# Installs a built cxr into a temporary prefix and builds an application outside the tree
# against it, twice: with CMake (find_package(cxr)) and with pkg-config (C and C++), then
# runs them and checks that the C and C++ APIs give the same probabilities.
#
#   scripts/test_install.sh [BUILD_DIR]        (default build; it must be built already)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cxr-install-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PREFIX="$WORK/prefix"

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
echo "test_install: installed into $PREFIX"

# 1. CMake consumer.
cmake -S "$ROOT/tests/consumer" -B "$WORK/cmake-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/cmake-build" >/dev/null
mkdir -p "$WORK/run1"
cpp=$("$WORK/cmake-build/consumer_cpp" "$WORK/run1")
c=$("$WORK/cmake-build/consumer_c" "$WORK/run1")
echo "  find_package: $cpp"
echo "  find_package: $c"
[ -s "$WORK/run1/cam.png" ] || { echo "test_install: no Grad-CAM overlay written" >&2; exit 1; }
[ "${cpp#cpp: }" != "$cpp" ] && [ "$(echo "$cpp" | cut -d' ' -f2-4)" = "$(echo "$c" | cut -d' ' -f2-4)" ] ||
  { echo "test_install: the C and C++ APIs disagree" >&2; exit 1; }

# 2. pkg-config consumer (static link: --static brings the private dependencies).
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg-config --exists cxr || { echo "test_install: pkg-config cannot find cxr" >&2; exit 1; }
static=""
[ -e "$PREFIX/lib/libcxr.a" ] && static="--static"
# A shared libcxr outside the loader's search path: point the loader at the prefix, as an
# application installed there would with an rpath or ldconfig.
[ -e "$PREFIX/lib/libcxr.so" ] && export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
c++ -std=c++20 -O1 "$ROOT/tests/consumer/consumer.cpp" -o "$WORK/pc_cpp" $(pkg-config --cflags --libs $static cxr)
cc -O1 -c "$ROOT/tests/consumer/consumer.c" -o "$WORK/consumer_c.o" $(pkg-config --cflags cxr)
c++ "$WORK/consumer_c.o" -o "$WORK/pc_c" $(pkg-config --libs $static cxr)
mkdir -p "$WORK/run2"
cpp2=$("$WORK/pc_cpp" "$WORK/run2")
c2=$("$WORK/pc_c" "$WORK/run2")
echo "  pkg-config:   $cpp2"
echo "  pkg-config:   $c2"
[ "$(echo "$cpp2" | cut -d' ' -f2-4)" = "$(echo "$c2" | cut -d' ' -f2-4)" ] ||
  { echo "test_install: the C and C++ APIs disagree (pkg-config build)" >&2; exit 1; }
echo "test_install: passed"
