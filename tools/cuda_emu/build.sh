#!/usr/bin/env bash
# Builds the host emulation of the hand-written CUDA kernels (see README.md here) into
# build-emu/ and runs the comparison harness against the CPU kernels.
#   tools/cuda_emu/build.sh [group]      (group: elementwise, activation, optim, pool,
#                                         batchnorm, softmax; default all)
#   EMU_SMS=132 tools/cuda_emu/build.sh  (the H100's SM count: its launch shapes)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/build-emu
mkdir -p "$OUT/src" "$OUT/obj"
for f in elementwise activation optim pool batchnorm softmax; do
  python3 "$HERE/transform.py" "$ROOT/kernels/cuda/$f.cu" "$OUT/src/$f.cpp"
done
# A template kernel passed by name needs its argument spelled out for the host compiler.
sed -i 's/, map1_kernel, /, map1_kernel<F>, /; s/, map3_kernel, /, map3_kernel<F>, /' "$OUT/src/activation.cpp"
FL="-std=c++20 -O1 -g -fsanitize=address -ffp-contract=off -I$HERE/inc -I$ROOT -w"
pids=()
for f in "$OUT"/src/*.cpp "$HERE/harness.cpp" "$ROOT"/kernels/cpu/{elementwise,activation,optim,pool,batchnorm,softmax}.cpp \
         "$ROOT"/runtime/{thread_pool,error}.cpp; do
  g++ $FL -c "$f" -o "$OUT/obj/$(basename "$(dirname "$f")")_$(basename "$f").o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
g++ -fsanitize=address "$OUT"/obj/*.o -o "$OUT/harness" -lpthread
ASAN_OPTIONS=detect_leaks=0 "$OUT/harness" "$@"
