// Elementwise arithmetic, broadcasting, reductions to a shape, concatenation, dropout.
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

constexpr int kBcastDims = 5;

// Shapes and element strides padded on the left to 5 dims; a broadcast input has
// stride 0 along the dims it is broadcast over.
struct Broadcast {
  int64_t shape[kBcastDims];
  int64_t a_stride[kBcastDims];
  int64_t b_stride[kBcastDims];
  int64_t numel() const;
};

enum class BinOp : uint8_t { add, sub, mul };

// y = a (op) b with broadcasting; y has b.shape layout, contiguous.
template <typename T>
void binary_broadcast(ThreadPool& pool, BinOp op, const Broadcast& bc, const T* a, const T* b, T* y);
// y = alpha*a + beta*b, same size (fast path, no broadcast).
template <typename T>
void axpby(ThreadPool& pool, int64_t n, T alpha, const T* a, T beta, const T* b, T* y);
// y = a * b, same size.
template <typename T>
void mul(ThreadPool& pool, int64_t n, const T* a, const T* b, T* y);
// y += x
template <typename T>
void add_inplace(ThreadPool& pool, int64_t n, const T* x, T* y);
// y = alpha * x
template <typename T>
void scale(ThreadPool& pool, int64_t n, T alpha, const T* x, T* y);

// Sum of x (shape in_shape, 5 dims padded) over the dims flagged in `reduce`, written
// to y (the shape with those dims set to 1), assigning. Summation order is fixed.
template <typename T>
void reduce_sum(const int64_t in_shape[kBcastDims], const bool reduce[kBcastDims], const T* x, T* y);

// Concatenation along one axis: each input viewed as (outer, size_i * inner).
// y (outer, sum(size_i) * inner). split_backward is the inverse copy.
template <typename T>
void concat(int64_t outer, int64_t inner, int64_t n_inputs, const T* const* xs, const int64_t* sizes, T* y);
template <typename T>
void concat_backward(int64_t outer, int64_t inner, int64_t n_inputs, const T* dy, const int64_t* sizes,
                     T* const* dxs);

// Inverted dropout: keep element i with probability 1-p using counter-based random
// bits (seed, base, i); mask[i] = keep ? 1/(1-p) : 0 and y = x * mask.
template <typename T>
void dropout_forward(ThreadPool& pool, int64_t n, double p, uint64_t seed, uint64_t base, const T* x, T* y, T* mask);

}  // namespace cxr::cpu
