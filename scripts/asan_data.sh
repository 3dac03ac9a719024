#!/usr/bin/env bash
# The data-module tests under AddressSanitizer + UndefinedBehaviorSanitizer (leak checks
# on), in their own build directory. Builds whichever of test_image*, test_transforms,
# test_dataset, test_loader and test_synth exist, runs each, and exits non-zero if any
# fails or reports an error.
#
#   scripts/asan_data.sh [build-dir]      (default build-asan; JOBS=n sets build parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
jobs=${JOBS:-2}
sanitize="-fsanitize=address,undefined -fno-omit-frame-pointer"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCXR_CUDA=OFF \
  -DCXR_BUILD_BENCH=OFF -DCXR_BUILD_EXAMPLES=OFF -DCXR_BUILD_TOOLS=OFF \
  -DCMAKE_CXX_FLAGS="$sanitize" -DCMAKE_C_FLAGS="$sanitize" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null

# The data tests this checkout has (other data tests may not be written yet).
mapfile -t targets < <(cmake --build "$build" --target help |
  sed -n 's/^\(test_image[A-Za-z0-9_]*\|test_transforms\|test_dataset\|test_loader\|test_synth\): .*/\1/p' | sort -u)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "asan_data: no data test targets found" >&2
  exit 1
fi
echo "asan_data: building ${targets[*]}"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=()
for t in "${targets[@]}"; do
  exe=$(find "$build" -type f -name "$t" -perm -u+x | head -n 1)
  echo "asan_data: running $t"
  log="$build/$t.asan.log"
  if ! "$exe" >"$log" 2>&1; then
    failed+=("$t")
  elif grep -qE "runtime error:|ERROR: (Address|Leak)Sanitizer" "$log"; then
    failed+=("$t")
  fi
  tail -n 3 "$log"
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "asan_data: FAILED: ${failed[*]} (logs: $build/<test>.asan.log)" >&2
  exit 1
fi
echo "asan_data: all ${#targets[@]} data test programs passed with no sanitizer reports"
