// Softmax family along one axis of x viewed as (outer, D, inner).
//   softmax:      y = exp(x - max) / sum exp(x - max)
//   log_softmax:  y = x - max - log(sum exp(x - max))
// Backward (assigns dx):
//   softmax:      dx = y * (dy - sum(dy * y))
//   log_softmax:  dx = dy - exp(y) * sum(dy)
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

template <typename T>
void softmax_forward(ThreadPool& pool, bool log, int64_t outer, int64_t D, int64_t inner, const T* x, T* y);
template <typename T>
void softmax_backward(ThreadPool& pool, bool log, int64_t outer, int64_t D, int64_t inner, const T* y, const T* dy,
                      T* dx);

// Losses, mean-reduced to a scalar as PyTorch's default reduction='mean'.
//
// cross_entropy: logits (N, C), integer targets (N) in [0, C), class weights w (C) or
// null (all 1), label smoothing eps in [0, 1):
//   W    = sum_i w[y_i]
//   loss = [ (1-eps) * sum_i w[y_i] * -logp[i, y_i] + (eps/C) * sum_i sum_c w[c] * -logp[i, c] ] / W
// Writes the loss and dlogits = d loss / d logits (N, C) (scaled by `grad_scale`, the
// upstream gradient) when dlogits is not null. Returns false if a target is out of range.
template <typename T>
bool cross_entropy(int64_t N, int64_t C, const T* logits, const int64_t* target, const T* weight, double eps,
                   T* loss, T* dlogits, T grad_scale);

// bce_with_logits: x, y of n elements laid out (n / L, L); pos_weight (L) or null:
//   loss = mean( pw * y * softplus(-x) + (1 - y) * softplus(x) )
// dx, dy (d loss / d target) written when not null, scaled by grad_scale.
template <typename T>
void bce_with_logits(int64_t n, int64_t L, const T* x, const T* y, const T* pos_weight, T* loss, T* dx, T* dy,
                     T grad_scale);

// mse: loss = mean((a - b)^2); da = 2(a-b)/n * grad_scale, db = -da.
template <typename T>
void mse(int64_t n, const T* a, const T* b, T* loss, T* da, T* db, T grad_scale);

}  // namespace cxr::cpu
