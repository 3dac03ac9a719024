#!/usr/bin/env bash
# The embedding API's tests (test_api: C++ and C API, 8 threads sharing one model) under
# AddressSanitizer + UndefinedBehaviorSanitizer with leak checks, then ThreadSanitizer,
# each in its own build directory. Exits non-zero on a failure or any sanitizer report.
#
#   scripts/sanitize_api.sh [asan|tsan|both]     (default both; JOBS=n sets build parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-both}
jobs=${JOBS:-2}

run() {  # name, build dir, compile flags, link flags, env
  local name=$1 build=$2 cflags=$3 lflags=$4
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCXR_CUDA=OFF -DCXR_NATIVE=OFF \
    -DCXR_BUILD_BENCH=OFF -DCXR_BUILD_EXAMPLES=OFF -DCXR_BUILD_TOOLS=OFF \
    -DCMAKE_CXX_FLAGS="$cflags" -DCMAKE_C_FLAGS="$cflags" \
    -DCMAKE_EXE_LINKER_FLAGS="$lflags" -DCMAKE_SHARED_LINKER_FLAGS="$lflags" >/dev/null
  cmake --build "$build" -j "$jobs" --target test_api
  local log="$build/test_api.$name.log"
  echo "sanitize_api: running test_api under $name"
  if ! "$build/tests/test_api" >"$log" 2>&1 || grep -qE "runtime error:|ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer" "$log"; then
    tail -n 40 "$log"
    echo "sanitize_api: FAILED under $name (log: $log)" >&2
    exit 1
  fi
  tail -n 1 "$log"
}

if [ "$mode" = asan ] || [ "$mode" = both ]; then
  export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run asan build-asan-api "-fsanitize=address,undefined -fno-omit-frame-pointer" "-fsanitize=address,undefined"
fi
if [ "$mode" = tsan ] || [ "$mode" = both ]; then
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  run tsan build-tsan-api "-fsanitize=thread -fno-omit-frame-pointer" "-fsanitize=thread"
fi
echo "sanitize_api: no sanitizer reports"
