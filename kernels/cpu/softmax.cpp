#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/softmax.h"

namespace cxr::cpu {

template <typename T>
void softmax_forward(ThreadPool& pool, bool log, int64_t outer, int64_t D, int64_t inner, const T* x, T* y) {
  pool.parallel_for(outer * inner, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t o = r / inner, in = r % inner;
      const T* xr = x + o * D * inner + in;
      T* yr = y + o * D * inner + in;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t d = 0; d < D; ++d) mx = std::max(mx, xr[d * inner]);
      T sum = 0;
      for (int64_t d = 0; d < D; ++d) sum += std::exp(xr[d * inner] - mx);
      if (log) {
        const T lse = mx + std::log(sum);
        for (int64_t d = 0; d < D; ++d) yr[d * inner] = xr[d * inner] - lse;
      } else {
        for (int64_t d = 0; d < D; ++d) yr[d * inner] = std::exp(xr[d * inner] - mx) / sum;
      }
    }
  });
}

template <typename T>
void softmax_backward(ThreadPool& pool, bool log, int64_t outer, int64_t D, int64_t inner, const T* y, const T* dy,
                      T* dx) {
  pool.parallel_for(outer * inner, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t o = r / inner, in = r % inner, base = o * D * inner + in;
      T acc = 0;
      if (log) {
        for (int64_t d = 0; d < D; ++d) acc += dy[base + d * inner];
        for (int64_t d = 0; d < D; ++d) dx[base + d * inner] = dy[base + d * inner] - std::exp(y[base + d * inner]) * acc;
      } else {
        for (int64_t d = 0; d < D; ++d) acc += dy[base + d * inner] * y[base + d * inner];
        for (int64_t d = 0; d < D; ++d) dx[base + d * inner] = y[base + d * inner] * (dy[base + d * inner] - acc);
      }
    }
  });
}

template <typename T>
bool cross_entropy(int64_t N, int64_t C, const T* logits, const int64_t* target, const T* weight, double eps,
                   T* loss, T* dlogits, T grad_scale) {
  for (int64_t i = 0; i < N; ++i)
    if (target[i] < 0 || target[i] >= C) return false;
  double wsum_all = 0;  // sum_c w[c]
  for (int64_t c = 0; c < C; ++c) wsum_all += weight ? weight[c] : 1.0;
  double W = 0, nll = 0, smooth = 0;
  for (int64_t i = 0; i < N; ++i) {
    const T* z = logits + i * C;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) mx = std::max<double>(mx, z[c]);
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(z[c] - mx);
    const double lse = mx + std::log(s);
    const double wy = weight ? weight[target[i]] : 1.0;
    W += wy;
    nll += wy * (lse - z[target[i]]);
    for (int64_t c = 0; c < C; ++c) smooth += (weight ? weight[c] : 1.0) * (lse - z[c]);
  }
  *loss = static_cast<T>(((1.0 - eps) * nll + eps / C * smooth) / W);
  if (dlogits) {
    const double k = grad_scale / W;
    for (int64_t i = 0; i < N; ++i) {
      const T* z = logits + i * C;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < C; ++c) mx = std::max<double>(mx, z[c]);
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(z[c] - mx);
      const double wy = weight ? weight[target[i]] : 1.0;
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(z[c] - mx) / s;
        const double onehot = c == target[i] ? 1.0 : 0.0;
        const double wc = weight ? weight[c] : 1.0;
        const double g = (1.0 - eps) * wy * (p - onehot) + eps / C * (wsum_all * p - wc);
        dlogits[i * C + c] = static_cast<T>(k * g);
      }
    }
  }
  return true;
}

namespace {
// softplus(x) = log(1 + exp(x)), computed without overflow.
inline double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}
}  // namespace

template <typename T>
void bce_with_logits(int64_t n, int64_t L, const T* x, const T* y, const T* pos_weight, T* loss, T* dx, T* dy,
                     T grad_scale) {
  double acc = 0;
  const double k = static_cast<double>(grad_scale) / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double pw = pos_weight ? pos_weight[i % L] : 1.0;
    const double xi = x[i], yi = y[i];
    acc += pw * yi * softplus(-xi) + (1.0 - yi) * softplus(xi);
    const double s = sigmoid(xi);
    if (dx) dx[i] = static_cast<T>(k * (pw * yi * (s - 1.0) + (1.0 - yi) * s));
    // d/dy = pw*softplus(-x) - softplus(x)
    if (dy) dy[i] = static_cast<T>(k * (pw * softplus(-xi) - softplus(xi)));
  }
  *loss = static_cast<T>(acc / static_cast<double>(n));
}

template <typename T>
void mse(int64_t n, const T* a, const T* b, T* loss, T* da, T* db, T grad_scale) {
  double acc = 0;
  const double k = 2.0 * static_cast<double>(grad_scale) / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    acc += d * d;
    if (da) da[i] = static_cast<T>(k * d);
    if (db) db[i] = static_cast<T>(-k * d);
  }
  *loss = static_cast<T>(acc / static_cast<double>(n));
}

#define CXR_INSTANTIATE(T)                                                                                        \
  template void softmax_forward<T>(ThreadPool&, bool, int64_t, int64_t, int64_t, const T*, T*);                   \
  template void softmax_backward<T>(ThreadPool&, bool, int64_t, int64_t, int64_t, const T*, const T*, T*);        \
  template bool cross_entropy<T>(int64_t, int64_t, const T*, const int64_t*, const T*, double, T*, T*, T);         \
  template void bce_with_logits<T>(int64_t, int64_t, const T*, const T*, const T*, T*, T*, T*, T);                \
  template void mse<T>(int64_t, const T*, const T*, T*, T*, T*, T);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
