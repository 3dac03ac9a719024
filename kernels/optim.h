// Optimizer updates on one parameter tensor (n elements), in place, PyTorch semantics.
//
// sgd:  g' = g + wd*p;  buf = first_step ? g' : momentum*buf + (1-dampening)*g'
//       d = nesterov ? g' + momentum*buf : buf   (momentum == 0: d = g', buf unused)
//       p -= lr * d
// adam: decoupled (AdamW): p *= 1 - lr*wd;  otherwise g' = g + wd*p
//       m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'^2
//       p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)      (t = step, from 1)
// ema:  e = decay*e + (1-decay)*p
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

struct SgdHyper {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};
struct AdamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // AdamW
};

template <typename T>
void sgd_update(ThreadPool& pool, int64_t n, const SgdHyper& h, bool first_step, T* p, const T* g, T* buf);
template <typename T>
void adam_update(ThreadPool& pool, int64_t n, const AdamHyper& h, int64_t step, T* p, const T* g, T* m, T* v);
template <typename T>
void ema_update(ThreadPool& pool, int64_t n, double decay, const T* p, T* e);

}  // namespace cxr::cpu
