#include <cmath>

#include "kernels/batchnorm.h"

namespace cxr::cpu {

// Channels are independent, so every kernel splits over C; within a channel the
// sums run over n then hw in order (deterministic). Sums are accumulated in double.

template <typename T>
void batchnorm_forward_train(ThreadPool& pool, int64_t N, int64_t C, int64_t HW, const T* x, const T* gamma,
                             const T* beta, double eps, T* y, T* save_mean, T* save_invstd) {
  const double count = static_cast<double>(N * HW);
  pool.parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) sum += xc[i];
      }
      const double mean = sum / count;
      double sq = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          const double d = xc[i] - mean;
          sq += d * d;
        }
      }
      const double invstd = 1.0 / std::sqrt(sq / count + eps);
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      const T scale = static_cast<T>(invstd * (gamma ? gamma[c] : 1.0));
      const T shift = static_cast<T>((beta ? beta[c] : 0.0) - mean * invstd * (gamma ? gamma[c] : 1.0));
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        T* yc = y + (n * C + c) * HW;
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
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        const T* dyc = dy + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          sum_dy += dyc[i];
          sum_dy_xhat += dyc[i] * (xc[i] - m) * is;
        }
      }
      if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
      if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
      if (!dx) continue;
      const double g = gamma ? gamma[c] : 1.0;
      const double k = g * is;
      const double mean_dy = training ? sum_dy / count : 0.0;
      const double mean_dy_xhat = training ? sum_dy_xhat / count : 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        const T* dyc = dy + (n * C + c) * HW;
        T* dxc = dx + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          const double xhat = (xc[i] - m) * is;
          dxc[i] = static_cast<T>(k * (dyc[i] - mean_dy - xhat * mean_dy_xhat));
        }
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
