// 2-D convolution (cross-correlation, as in every DL framework), NCHW.
//
//   x  (N, C, H, W)      w  (K, C/groups, R, S)      b  (K) or null
//   y  (N, K, P, Q)      P = (H + 2*pad_h - dil_h*(R-1) - 1) / stride_h + 1, Q likewise
//   y[n,k,p,q] = b[k] + sum_{c in group(k), r, s} w[k,c,r,s] * x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw]
//
// Backward: conv2d_backward_data writes dx (assigns); conv2d_backward_weight writes dw
// and db (assigns). Outputs never alias inputs.
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

struct Conv2dShape {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t K = 1, R = 1, S = 1;         // output channels, kernel height, width
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  // 0 when the dilated kernel does not fit the padded input (C++ division would
  // truncate a negative numerator towards zero and claim one output row).
  int64_t P() const {
    const int64_t num = H + 2 * pad_h - dil_h * (R - 1) - 1;
    return num < 0 ? 0 : num / stride_h + 1;
  }
  int64_t Q() const {
    const int64_t num = W + 2 * pad_w - dil_w * (S - 1) - 1;
    return num < 0 ? 0 : num / stride_w + 1;
  }
};

template <typename T>
void conv2d_forward(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_backward_data(ThreadPool& pool, const Conv2dShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_weight(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* dy, T* dw, T* db);

}  // namespace cxr::cpu
