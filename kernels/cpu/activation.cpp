#include <algorithm>
#include <cmath>

#include "kernels/activation.h"

namespace cxr::cpu {

const char* act_name(Act a) {
  switch (a) {
    case Act::relu: return "relu";
    case Act::leaky_relu: return "leaky_relu";
    case Act::relu6: return "relu6";
    case Act::sigmoid: return "sigmoid";
    case Act::tanh: return "tanh";
    case Act::gelu: return "gelu";
    case Act::silu: return "silu";
  }
  return "?";
}

namespace {
constexpr int64_t kGrain = 1 << 14;

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T, typename F>
void map(ThreadPool& pool, int64_t n, F f) {
  pool.parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}
}  // namespace

template <typename T>
void act_forward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, T* y) {
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map<T>(pool, n, [&](int64_t i) { y[i] = x[i] > T(0) ? x[i] : T(0); }); break;
    case Act::leaky_relu: map<T>(pool, n, [&](int64_t i) { y[i] = x[i] > T(0) ? x[i] : a * x[i]; }); break;
    case Act::relu6: map<T>(pool, n, [&](int64_t i) { y[i] = std::min(std::max(x[i], T(0)), T(6)); }); break;
    case Act::sigmoid: map<T>(pool, n, [&](int64_t i) { y[i] = sigmoid(x[i]); }); break;
    case Act::tanh: map<T>(pool, n, [&](int64_t i) { y[i] = std::tanh(x[i]); }); break;
    case Act::gelu:
      map<T>(pool, n, [&](int64_t i) { y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(M_SQRT1_2))); });
      break;
    case Act::silu: map<T>(pool, n, [&](int64_t i) { y[i] = x[i] * sigmoid(x[i]); }); break;
  }
}

template <typename T>
void act_backward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, const T* y, const T* dy, T* dx) {
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map<T>(pool, n, [&](int64_t i) { dx[i] = x[i] > T(0) ? dy[i] : T(0); }); break;
    case Act::leaky_relu: map<T>(pool, n, [&](int64_t i) { dx[i] = x[i] > T(0) ? dy[i] : a * dy[i]; }); break;
    case Act::relu6:
      map<T>(pool, n, [&](int64_t i) { dx[i] = (x[i] > T(0) && x[i] < T(6)) ? dy[i] : T(0); });
      break;
    case Act::sigmoid: map<T>(pool, n, [&](int64_t i) { dx[i] = dy[i] * y[i] * (T(1) - y[i]); }); break;
    case Act::tanh: map<T>(pool, n, [&](int64_t i) { dx[i] = dy[i] * (T(1) - y[i] * y[i]); }); break;
    case Act::gelu:
      map<T>(pool, n, [&](int64_t i) {
        const T cdf = T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
        const T pdf = std::exp(T(-0.5) * x[i] * x[i]) * T(0.3989422804014327);  // 1/sqrt(2*pi)
        dx[i] = dy[i] * (cdf + x[i] * pdf);
      });
      break;
    case Act::silu:
      map<T>(pool, n, [&](int64_t i) {
        const T s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
      });
      break;
  }
}

template void act_forward<float>(ThreadPool&, Act, double, int64_t, const float*, float*);
template void act_forward<double>(ThreadPool&, Act, double, int64_t, const double*, double*);
template void act_backward<float>(ThreadPool&, Act, double, int64_t, const float*, const float*, const float*, float*);
template void act_backward<double>(ThreadPool&, Act, double, int64_t, const double*, const double*, const double*,
                                   double*);

}  // namespace cxr::cpu
