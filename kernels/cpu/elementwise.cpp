#include <cstring>

#include "kernels/elementwise.h"
#include "runtime/rng.h"

namespace cxr::cpu {

namespace {
constexpr int64_t kGrain = 1 << 14;
}

int64_t Broadcast::numel() const {
  int64_t n = 1;
  for (int d = 0; d < kBcastDims; ++d) n *= shape[d];
  return n;
}

template <typename T>
static inline T apply(BinOp op, T a, T b) {
  switch (op) {
    case BinOp::add: return a + b;
    case BinOp::sub: return a - b;
    case BinOp::mul: return a * b;
  }
  return a;
}

template <typename T>
void binary_broadcast(ThreadPool& pool, BinOp op, const Broadcast& bc, const T* a, const T* b, T* y) {
  const int64_t n = bc.numel();
  pool.parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    // Multi-index of `begin`, then odometer increments.
    int64_t idx[kBcastDims];
    int64_t rem = begin, ao = 0, bo = 0;
    for (int d = kBcastDims - 1; d >= 0; --d) {
      idx[d] = rem % bc.shape[d];
      rem /= bc.shape[d];
      ao += idx[d] * bc.a_stride[d];
      bo += idx[d] * bc.b_stride[d];
    }
    for (int64_t i = begin; i < end; ++i) {
      y[i] = apply(op, a[ao], b[bo]);
      for (int d = kBcastDims - 1; d >= 0; --d) {
        ao += bc.a_stride[d];
        bo += bc.b_stride[d];
        if (++idx[d] < bc.shape[d]) break;
        ao -= idx[d] * bc.a_stride[d];
        bo -= idx[d] * bc.b_stride[d];
        idx[d] = 0;
      }
    }
  });
}

template <typename T>
void axpby(ThreadPool& pool, int64_t n, T alpha, const T* a_, T beta, const T* b_, T* y_) {
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    // Local copies (not __restrict: y may alias a or b for in-place use).
    const T* a = a_;
    const T* b = b_;
    T* y = y_;
    for (int64_t i = s; i < e; ++i) y[i] = alpha * a[i] + beta * b[i];
  });
}

template <typename T>
void mul(ThreadPool& pool, int64_t n, const T* a_, const T* b_, T* y_) {
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    const T* a = a_;
    const T* b = b_;
    T* y = y_;
    for (int64_t i = s; i < e; ++i) y[i] = a[i] * b[i];
  });
}

template <typename T>
void add_inplace(ThreadPool& pool, int64_t n, const T* x_, T* y_) {
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    const T* __restrict x = x_;
    T* __restrict y = y_;
    for (int64_t i = s; i < e; ++i) y[i] += x[i];
  });
}

template <typename T>
void scale(ThreadPool& pool, int64_t n, T alpha, const T* x_, T* y_) {
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    const T* x = x_;
    T* y = y_;  // in place allowed
    for (int64_t i = s; i < e; ++i) y[i] = alpha * x[i];
  });
}

template <typename T>
void reduce_sum(const int64_t in_shape[kBcastDims], const bool reduce[kBcastDims], const T* x, T* y) {
  int64_t out_stride[kBcastDims], out_n = 1, in_n = 1;
  for (int d = kBcastDims - 1; d >= 0; --d) {
    out_stride[d] = reduce[d] ? 0 : out_n;
    if (!reduce[d]) out_n *= in_shape[d];
    in_n *= in_shape[d];
  }
  std::fill(y, y + out_n, T(0));
  int64_t idx[kBcastDims] = {0, 0, 0, 0, 0}, o = 0;
  for (int64_t i = 0; i < in_n; ++i) {
    y[o] += x[i];
    for (int d = kBcastDims - 1; d >= 0; --d) {
      o += out_stride[d];
      if (++idx[d] < in_shape[d]) break;
      o -= idx[d] * out_stride[d];
      idx[d] = 0;
    }
  }
}

template <typename T>
void concat(int64_t outer, int64_t inner, int64_t n_inputs, const T* const* xs, const int64_t* sizes, T* y) {
  int64_t total = 0;
  for (int64_t i = 0; i < n_inputs; ++i) total += sizes[i];
  for (int64_t o = 0; o < outer; ++o) {
    int64_t at = 0;
    for (int64_t i = 0; i < n_inputs; ++i) {
      const int64_t len = sizes[i] * inner;
      std::memcpy(y + o * total * inner + at, xs[i] + o * len, sizeof(T) * len);
      at += len;
    }
  }
}

template <typename T>
void concat_backward(int64_t outer, int64_t inner, int64_t n_inputs, const T* dy, const int64_t* sizes,
                     T* const* dxs) {
  int64_t total = 0;
  for (int64_t i = 0; i < n_inputs; ++i) total += sizes[i];
  for (int64_t o = 0; o < outer; ++o) {
    int64_t at = 0;
    for (int64_t i = 0; i < n_inputs; ++i) {
      const int64_t len = sizes[i] * inner;
      if (dxs[i]) std::memcpy(dxs[i] + o * len, dy + o * total * inner + at, sizeof(T) * len);
      at += len;
    }
  }
}

template <typename T>
void dropout_forward(ThreadPool& pool, int64_t n, double p, uint64_t seed, uint64_t base, const T* x, T* y, T* mask) {
  const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
  const float pf = static_cast<float>(p);
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const bool keep = bits_to_uniform(philox_bits(seed, base, static_cast<uint64_t>(i))) >= pf;
      mask[i] = keep ? keep_scale : T(0);
      y[i] = x[i] * mask[i];
    }
  });
}

#define CXR_INSTANTIATE(T)                                                                               \
  template void binary_broadcast<T>(ThreadPool&, BinOp, const Broadcast&, const T*, const T*, T*);       \
  template void axpby<T>(ThreadPool&, int64_t, T, const T*, T, const T*, T*);                            \
  template void mul<T>(ThreadPool&, int64_t, const T*, const T*, T*);                                    \
  template void add_inplace<T>(ThreadPool&, int64_t, const T*, T*);                                      \
  template void scale<T>(ThreadPool&, int64_t, T, const T*, T*);                                         \
  template void reduce_sum<T>(const int64_t*, const bool*, const T*, T*);                                \
  template void concat<T>(int64_t, int64_t, int64_t, const T* const*, const int64_t*, T*);               \
  template void concat_backward<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, T* const*);      \
  template void dropout_forward<T>(ThreadPool&, int64_t, double, uint64_t, uint64_t, const T*, T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
