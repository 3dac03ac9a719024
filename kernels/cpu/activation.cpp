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

// Runs f(begin, end) over [0, n) in parallel chunks; each kernel's loop sits inside its
// own lambda so the compiler sees a plain counted loop it can vectorise.
template <typename T, typename F>
void map(ThreadPool& pool, int64_t n, F f) {
  pool.parallel_for(n, kGrain, [&](int64_t b, int64_t e) { f(b, e); });
}
}  // namespace

// Local __restrict copies of the array arguments: without them the lambdas reload the
// captured pointers every iteration and the loops stay scalar.
#define CXR_LOCAL_PTRS_FWD const T* __restrict x = x_; T* __restrict y = y_;
#define CXR_LOCAL_PTRS_BWD \
  const T* __restrict x = x_; const T* __restrict y = y_; const T* __restrict dy = dy_; T* __restrict dx = dx_;

template <typename T>
void act_forward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x_, T* y_) {
#define CXR_LOCAL_PTRS CXR_LOCAL_PTRS_FWD
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = x[i] > T(0) ? x[i] : T(0); } }); break;
    case Act::leaky_relu: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = x[i] > T(0) ? x[i] : a * x[i]; } }); break;
    case Act::relu6: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = std::min(std::max(x[i], T(0)), T(6)); } }); break;
    case Act::sigmoid: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = sigmoid(x[i]); } }); break;
    case Act::tanh: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = std::tanh(x[i]); } }); break;
    case Act::gelu:
      map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(M_SQRT1_2))); } });
      break;
    case Act::silu: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { y[i] = x[i] * sigmoid(x[i]); } }); break;
  }
}

template <typename T>
void act_backward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x_, const T* y_, const T* dy_,
                  T* dx_) {
#undef CXR_LOCAL_PTRS
#define CXR_LOCAL_PTRS CXR_LOCAL_PTRS_BWD
  const T a = static_cast<T>(alpha);
  switch (act) {
    case Act::relu: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { dx[i] = x[i] > T(0) ? dy[i] : T(0); } }); break;
    case Act::leaky_relu: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { dx[i] = x[i] > T(0) ? dy[i] : a * dy[i]; } }); break;
    case Act::relu6:
      map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { dx[i] = (x[i] > T(0) && x[i] < T(6)) ? dy[i] : T(0); } });
      break;
    case Act::sigmoid: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { dx[i] = dy[i] * y[i] * (T(1) - y[i]); } }); break;
    case Act::tanh: map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) { dx[i] = dy[i] * (T(1) - y[i] * y[i]); } }); break;
    case Act::gelu:
      map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) {
        const T cdf = T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
        const T pdf = std::exp(T(-0.5) * x[i] * x[i]) * T(0.3989422804014327);  // 1/sqrt(2*pi)
        dx[i] = dy[i] * (cdf + x[i] * pdf);
      } });
      break;
    case Act::silu:
      map<T>(pool, n, [&](int64_t b, int64_t e) { CXR_LOCAL_PTRS for (int64_t i = b; i < e; ++i) {
        const T s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
      } });
      break;
  }
}

#undef CXR_LOCAL_PTRS

template void act_forward<float>(ThreadPool&, Act, double, int64_t, const float*, float*);
template void act_forward<double>(ThreadPool&, Act, double, int64_t, const double*, double*);
template void act_backward<float>(ThreadPool&, Act, double, int64_t, const float*, const float*, const float*, float*);
template void act_backward<double>(ThreadPool&, Act, double, int64_t, const double*, const double*, const double*,
                                   double*);

}  // namespace cxr::cpu
