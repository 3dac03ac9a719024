// Per-thread scratch blocks for the CPU kernels (and the image resize): 64-byte aligned, grown on demand, never
// value-initialised, kept for the thread's life (pool workers reuse them every call).
// Each user has its own slot, so a kernel holding one block may call another that uses
// a different one.
#pragma once

#include <cstddef>

namespace cxr::cpu {

enum ScratchSlot : int {
  kScratchGemmB,       // the blocked SGEMM's packed B
  kScratchGemmA,       // the blocked SGEMM's packed A
  kScratchConvRows,    // one channel's im2col rows
  kScratchConvPackedB, // a convolution tile's packed B
  kScratchConvOut,     // a multi-image tile's output before the scatter
  kScratchResize,      // data::resize's intermediate rows (the loader's workers)
  kScratchSlots
};

float* thread_scratch(ScratchSlot slot, size_t floats);

}  // namespace cxr::cpu
