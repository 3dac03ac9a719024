// Batch normalisation over (N, H*W) for each channel of x (N, C, HW).
//
// Training: mean/var are the batch statistics (biased var); the kernel writes
//   y = (x - mean) * invstd * gamma + beta,  invstd = 1/sqrt(var + eps)
// and saves mean and invstd (C each) for the backward. Running statistics are
// updated by the caller from the saved values.
// Eval: uses running_mean / running_var.
// gamma / beta may be null (affine = false): gamma = 1, beta = 0.
// Backward (assigns dx, dgamma, dbeta; dgamma/dbeta may be null):
//   training: dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat))
//   eval:     dx = gamma*invstd * dy
//   dgamma = sum(dy * xhat), dbeta = sum(dy)
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

template <typename T>
void batchnorm_forward_train(ThreadPool& pool, int64_t N, int64_t C, int64_t HW, const T* x, const T* gamma,
                             const T* beta, double eps, T* y, T* save_mean, T* save_invstd);
template <typename T>
void batchnorm_forward_eval(ThreadPool& pool, int64_t N, int64_t C, int64_t HW, const T* x, const T* gamma,
                            const T* beta, const T* running_mean, const T* running_var, double eps, T* y);
template <typename T>
void batchnorm_backward(ThreadPool& pool, bool training, int64_t N, int64_t C, int64_t HW, const T* x,
                        const T* dy, const T* gamma, const T* mean, const T* invstd, T* dx, T* dgamma,
                        T* dbeta);

}  // namespace cxr::cpu
