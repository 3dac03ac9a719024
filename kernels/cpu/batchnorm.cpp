#include <cmath>

#include "kernels/batchnorm.h"

namespace cxr::cpu {

namespace {
// Plane reductions in double with 8 independent lanes combined in a fixed order: the
// lanes let the compiler vectorise, the fixed order keeps results deterministic.
template <typename T>
double plane_sum(const T* __restrict x, int64_t n) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(x[i + l]);
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  for (int l = 0; l < 8; ++l) s += lane[l];
  return s;
}

template <typename T>
double plane_sq_dev(const T* __restrict x, int64_t n, double mean) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double d = static_cast<double>(x[i + l]) - mean;
      lane[l] += d * d;
    }
  double s = 0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    s += d * d;
  }
  for (int l = 0; l < 8; ++l) s += lane[l];
  return s;
}

// sum(dy) and sum(dy * (x - mean)) over a plane.
template <typename T>
void plane_dy_sums(const T* __restrict x, const T* __restrict dy, int64_t n, double mean, double& sdy,
                   double& sdyx) {
  double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double g = dy[i + l];
      a[l] += g;
      b[l] += g * (static_cast<double>(x[i + l]) - mean);
    }
  for (; i < n; ++i) {
    sdy += dy[i];
    sdyx += static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - mean);
  }
  for (int l = 0; l < 8; ++l) {
    sdy += a[l];
    sdyx += b[l];
  }
}
}  // namespace

// Channels are independent, so every kernel splits over C; within a channel the
// sums run over n then hw in order (deterministic). Sums are accumulated in double.

template <typename T>
void batchnorm_forward_train(ThreadPool& pool, int64_t N, int64_t C, int64_t HW, const T* x, const T* gamma,
                             const T* beta, double eps, T* y, T* save_mean, T* save_invstd) {
  const double count = static_cast<double>(N * HW);
  pool.parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n) sum += plane_sum(x + (n * C + c) * HW, HW);
      const double mean = sum / count;
      double sq = 0;
      for (int64_t n = 0; n < N; ++n) sq += plane_sq_dev(x + (n * C + c) * HW, HW, mean);
      const double invstd = 1.0 / std::sqrt(sq / count + eps);
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      const T scale = static_cast<T>(invstd * (gamma ? gamma[c] : 1.0));
      const T shift = static_cast<T>((beta ? beta[c] : 0.0) - mean * invstd * (gamma ? gamma[c] : 1.0));
      for (int64_t n = 0; n < N; ++n) {
        const T* __restrict xc = x + (n * C + c) * HW;
        T* __restrict yc = y + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) yc[i] = xc[i] * scale + shift;
      }
    }
  });
}

template <typename T>
void batchnorm_forward_eval(ThreadPool& pool, int64_t N, int64_t C, int64_t HW, const T* x, const T* gamma,
                            const T* beta, const T* running_mean, const T* running_var, double eps, T* y) {
  pool.parallel_for(N * C, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c = i % C;
      const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
      const double g = gamma ? gamma[c] : 1.0;
      const T scale = static_cast<T>(invstd * g);
      const T shift = static_cast<T>((beta ? beta[c] : 0.0) - running_mean[c] * invstd * g);
      const T* xc = x + i * HW;
      T* yc = y + i * HW;
      for (int64_t j = 0; j < HW; ++j) yc[j] = xc[j] * scale + shift;
    }
  });
}

template <typename T>
void batchnorm_backward(ThreadPool& pool, bool training, int64_t N, int64_t C, int64_t HW, const T* x,
                        const T* dy, const T* gamma, const T* mean, const T* invstd, T* dx, T* dgamma,
                        T* dbeta) {
  const double count = static_cast<double>(N * HW);
  pool.parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double m = mean[c], is = invstd[c];
      double sum_dy = 0, sum_dy_xm = 0;
      for (int64_t n = 0; n < N; ++n)
        plane_dy_sums(x + (n * C + c) * HW, dy + (n * C + c) * HW, HW, m, sum_dy, sum_dy_xm);
      const double sum_dy_xhat = sum_dy_xm * is;
      if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
      if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
      if (!dx) continue;
      const double g = gamma ? gamma[c] : 1.0;
      const double k = g * is;
      const double mean_dy = training ? sum_dy / count : 0.0;
      const double mean_dy_xhat = training ? sum_dy_xhat / count : 0.0;
      // dx = k*(dy - mean_dy - xhat*mean_dy_xhat) = a*dy + b*x + d, with xhat = (x - m)*is
      const T a = static_cast<T>(k), b = static_cast<T>(-k * mean_dy_xhat * is);
      const T d = static_cast<T>(-k * mean_dy + k * mean_dy_xhat * is * m);
      for (int64_t n = 0; n < N; ++n) {
        const T* __restrict xc = x + (n * C + c) * HW;
        const T* __restrict dyc = dy + (n * C + c) * HW;
        T* __restrict dxc = dx + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dxc[i] = a * dyc[i] + b * xc[i] + d;
      }
    }
  });
}

#define CXR_INSTANTIATE(T)                                                                                  \
  template void batchnorm_forward_train<T>(ThreadPool&, int64_t, int64_t, int64_t, const T*, const T*,       \
                                           const T*, double, T*, T*, T*);                                    \
  template void batchnorm_forward_eval<T>(ThreadPool&, int64_t, int64_t, int64_t, const T*, const T*,        \
                                          const T*, const T*, const T*, double, T*);                         \
  template void batchnorm_backward<T>(ThreadPool&, bool, int64_t, int64_t, int64_t, const T*, const T*,      \
                                      const T*, const T*, const T*, T*, T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
