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

// y[i] = f(x[i]) over [0, n) in parallel chunks. The pointers are copied into locals
// inside the chunk so the loop reads them from registers (through captured references
// they were reloaded every iteration and the loop stayed scalar).
template <typename T, typename F>
void map1(ThreadPool& pool, int64_t n, const T* x, T* y, F f) {
  pool.parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    const T* xs = x;
    T* ys = y;
    for (int64_t i = b; i < e; ++i) ys[i] = f(xs[i]);
  });
}

// dx[i] = f(x[i], y[i], dy[i]); dx may alias dy.
template <typename T, typename F>
void map3(ThreadPool& pool, int64_t n, const T* x, const T* y, const T* dy, T* dx, F f) {
  pool.parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    const T* xs = x;
    const T* ys = y;
    const T* dys = dy;
    T* dxs = dx;
    for (int64_t i = b; i < e; ++i) dxs[i] = f(xs[i], ys[i], dys[i]);
  });
}
}  // namespace

template <typename T>
void act_forward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, T* y) {
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map1(pool, n, x, y, [](T v) { return v > T(0) ? v : T(0); }); break;
    case Act::leaky_relu: map1(pool, n, x, y, [a](T v) { return v > T(0) ? v : a * v; }); break;
    case Act::relu6: map1(pool, n, x, y, [](T v) { return std::min(std::max(v, T(0)), T(6)); }); break;
    case Act::sigmoid: map1(pool, n, x, y, [](T v) { return sigmoid(v); }); break;
    case Act::tanh: map1(pool, n, x, y, [](T v) { return std::tanh(v); }); break;
    case Act::gelu: map1(pool, n, x, y, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2))); }); break;
    case Act::silu: map1(pool, n, x, y, [](T v) { return v * sigmoid(v); }); break;
  }
}

template <typename T>
void act_backward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, const T* y, const T* dy, T* dx) {
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map3(pool, n, x, y, dy, dx, [](T v, T, T g) { return v > T(0) ? g : T(0); }); break;
    case Act::leaky_relu: map3(pool, n, x, y, dy, dx, [a](T v, T, T g) { return v > T(0) ? g : a * g; }); break;
    case Act::relu6:
      map3(pool, n, x, y, dy, dx, [](T v, T, T g) { return (v > T(0) && v < T(6)) ? g : T(0); });
      break;
    case Act::sigmoid: map3(pool, n, x, y, dy, dx, [](T, T o, T g) { return g * o * (T(1) - o); }); break;
    case Act::tanh: map3(pool, n, x, y, dy, dx, [](T, T o, T g) { return g * (T(1) - o * o); }); break;
    case Act::gelu:
      map3(pool, n, x, y, dy, dx, [](T v, T, T g) {
        const T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
        const T pdf = std::exp(T(-0.5) * v * v) * T(0.3989422804014327);  // 1/sqrt(2*pi)
        return g * (cdf + v * pdf);
      });
      break;
    case Act::silu:
      map3(pool, n, x, y, dy, dx, [](T v, T, T g) {
        const T s = sigmoid(v);
        return g * s * (T(1) + v * (T(1) - s));
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
