// Pooling over NCHW planes.
//
// Window: kernel (kh, kw), stride (sh, sw), zero padding (ph, pw), floor output size:
//   P = (H + 2*ph - kh) / sh + 1, Q likewise.
// max_pool2d: padded positions never win; `argmax` (N*C*P*Q) records the flat h*W+w
//   index of the winner inside its plane (first one on ties) for the backward.
//   argmax may be null (inference): only the values are computed.
// avg_pool2d: divides by kh*kw (padding counted, PyTorch's count_include_pad=true).
// global_avg_pool: (N, C, H, W) -> (N, C) means.
// Backwards assign dx.
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

struct Pool2dShape {
  int64_t N = 1, C = 1, H = 1, W = 1;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t P() const { return H + 2 * ph < kh ? 0 : (H + 2 * ph - kh) / sh + 1; }
  int64_t Q() const { return W + 2 * pw < kw ? 0 : (W + 2 * pw - kw) / sw + 1; }
};

template <typename T>
void max_pool2d_forward(ThreadPool& pool, const Pool2dShape& s, const T* x, T* y, int64_t* argmax);
template <typename T>
void max_pool2d_backward(ThreadPool& pool, const Pool2dShape& s, const T* dy, const int64_t* argmax, T* dx);
template <typename T>
void avg_pool2d_forward(ThreadPool& pool, const Pool2dShape& s, const T* x, T* y);
template <typename T>
void avg_pool2d_backward(ThreadPool& pool, const Pool2dShape& s, const T* dy, T* dx);
template <typename T>
void global_avg_pool_forward(ThreadPool& pool, int64_t NC, int64_t HW, const T* x, T* y);
template <typename T>
void global_avg_pool_backward(ThreadPool& pool, int64_t NC, int64_t HW, const T* dy, T* dx);

}  // namespace cxr::cpu
