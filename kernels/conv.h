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
#include <vector>

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

// Weights in the layout of the CPU's packed float GEMM, per group. Packing costs a read
// and a write of the weights, which inference pays once per model instead of once per
// call when the caller keeps this (nn::Conv2d does, keyed on the weight's version).
struct PackedConvWeights {
  int64_t K = 0, Cg = 0, R = 0, S = 0, groups = 0;
  size_t per_group = 0;  // floats per group
  std::vector<float> data;
  bool matches(const Conv2dShape& s) const {
    return K == s.K && Cg == s.C / s.groups && R == s.R && S == s.S && groups == s.groups;
  }
};
// True when the float forward of `s` runs on the packed GEMM (CPUs with AVX2 and FMA,
// not depthwise, at least 8 output channels per group); conv2d_pack_weights then fills
// `out` from w (K, C/groups, R, S) and returns true, else leaves it empty and returns false.
bool conv2d_uses_packed_weights(const Conv2dShape& s);
bool conv2d_pack_weights(const Conv2dShape& s, const float* w, PackedConvWeights& out);

// `packed`, when given, must come from conv2d_pack_weights for the same shape and the
// current contents of w (float only; ignored for double).
template <typename T>
void conv2d_forward(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* w, const T* b, T* y,
                    const PackedConvWeights* packed = nullptr);
template <typename T>
void conv2d_backward_data(ThreadPool& pool, const Conv2dShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_weight(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* dy, T* dw, T* db);

}  // namespace cxr::cpu
