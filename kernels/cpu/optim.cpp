#include <cmath>

#include "kernels/optim.h"

namespace cxr::cpu {

namespace {
constexpr int64_t kGrain = 1 << 14;
}

template <typename T>
void sgd_update(ThreadPool& pool, int64_t n, const SgdHyper& h, bool first_step, T* p_, const T* g_, T* buf_) {
  const T lr = static_cast<T>(h.lr), mom = static_cast<T>(h.momentum), wd = static_cast<T>(h.weight_decay);
  const T damp = static_cast<T>(1.0 - h.dampening);
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    T* __restrict p = p_;
    const T* __restrict g = g_;
    T* __restrict buf = buf_;
    for (int64_t i = s; i < e; ++i) {
      T d = g[i] + wd * p[i];
      if (h.momentum != 0) {
        buf[i] = first_step ? d : mom * buf[i] + damp * d;
        d = h.nesterov ? d + mom * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  });
}

template <typename T>
void adam_update(ThreadPool& pool, int64_t n, const AdamHyper& h, int64_t step, T* p_, const T* g_, T* m_, T* v_) {
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  const T step_size = static_cast<T>(h.lr / bc1);
  const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(bc2));
  const T b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2), eps = static_cast<T>(h.eps);
  const T wd = static_cast<T>(h.weight_decay), decay = static_cast<T>(1.0 - h.lr * h.weight_decay);
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    T* __restrict p = p_;
    const T* __restrict g = g_;
    T* __restrict m = m_;
    T* __restrict v = v_;
    for (int64_t i = s; i < e; ++i) {
      T gi = g[i];
      if (h.decoupled) p[i] *= decay;
      else gi += wd * p[i];
      m[i] = b1 * m[i] + (T(1) - b1) * gi;
      v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  });
}

template <typename T>
void ema_update(ThreadPool& pool, int64_t n, double decay, const T* p, T* e) {
  const T d = static_cast<T>(decay), one_minus = static_cast<T>(1.0 - decay);
  pool.parallel_for(n, kGrain, [&](int64_t s, int64_t en) {
    for (int64_t i = s; i < en; ++i) e[i] = d * e[i] + one_minus * p[i];
  });
}

#define CXR_INSTANTIATE(T)                                                                       \
  template void sgd_update<T>(ThreadPool&, int64_t, const SgdHyper&, bool, T*, const T*, T*);    \
  template void adam_update<T>(ThreadPool&, int64_t, const AdamHyper&, int64_t, T*, const T*, T*, T*); \
  template void ema_update<T>(ThreadPool&, int64_t, double, const T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
