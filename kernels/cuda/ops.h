// The CUDA implementations of the core ops: the same contracts as the CPU kernels in
// kernels/*.h (see those headers for the math), fp32 only, all pointers on the
// context's device, all work queued on the context's stream (asynchronous unless a
// function says it returns a host value). Plain C++: callable from code built without
// nvcc. Defined only in builds with the CUDA backend (CXR_WITH_CUDA).
//
// Determinism: every op here gives bit-identical results for identical inputs when
// the context is in deterministic mode; reductions never use floating-point atomics.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/activation.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/optim.h"
#include "kernels/pool.h"

namespace cxr::cuda {

struct Context;
Context& context(int device);

// ---- GEMM (cuBLAS), row-major, same contract as cpu::gemm; TF32 when the context allows
void gemm(Context& ctx, cpu::Trans ta, cpu::Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// ---- convolution (cuDNN; algorithm chosen once per shape and cached in the context)
void conv2d_forward(Context& ctx, const cpu::Conv2dShape& s, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_data(Context& ctx, const cpu::Conv2dShape& s, const float* dy, const float* w, float* dx);
// dw assigned; db (may be null) assigned.
void conv2d_backward_weight(Context& ctx, const cpu::Conv2dShape& s, const float* x, const float* dy, float* dw,
                            float* db);

// ---- batch normalisation (same contract as kernels/batchnorm.h)
void batchnorm_forward_train(Context& ctx, int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, double eps, float* y, float* save_mean, float* save_invstd);
void batchnorm_forward_eval(Context& ctx, int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, double eps,
                            float* y);
void batchnorm_backward(Context& ctx, bool training, int64_t N, int64_t C, int64_t HW, const float* x,
                        const float* dy, const float* gamma, const float* mean, const float* invstd, float* dx,
                        float* dgamma, float* dbeta);
// running_mean = (1-m)*running_mean + m*save_mean
// running_var  = (1-m)*running_var  + m*var_unbiased,  var_unbiased = (1/invstd^2 - eps) * count/(count-1)
// (count = N*HW; with count == 1 the biased variance is used), C elements.
void batchnorm_update_running(Context& ctx, int64_t C, double momentum, int64_t count, double eps,
                              const float* save_mean, const float* save_invstd, float* running_mean,
                              float* running_var);

// Eval mode: mean = running_mean, invstd = 1/sqrt(running_var + eps), C elements.
void batchnorm_eval_stats(Context& ctx, int64_t C, double eps, const float* running_mean, const float* running_var,
                          float* mean, float* invstd);

// ---- pooling (same contract as kernels/pool.h; backwards gather, no atomics)
void max_pool2d_forward(Context& ctx, const cpu::Pool2dShape& s, const float* x, float* y, int64_t* argmax);
void max_pool2d_backward(Context& ctx, const cpu::Pool2dShape& s, const float* dy, const int64_t* argmax, float* dx);
void avg_pool2d_forward(Context& ctx, const cpu::Pool2dShape& s, const float* x, float* y);
void avg_pool2d_backward(Context& ctx, const cpu::Pool2dShape& s, const float* dy, float* dx);
void global_avg_pool_forward(Context& ctx, int64_t NC, int64_t HW, const float* x, float* y);
void global_avg_pool_backward(Context& ctx, int64_t NC, int64_t HW, const float* dy, float* dx);

// ---- activations (kernels/activation.h)
void act_forward(Context& ctx, cpu::Act act, double alpha, int64_t n, const float* x, float* y);
void act_backward(Context& ctx, cpu::Act act, double alpha, int64_t n, const float* x, const float* y,
                  const float* dy, float* dx);

// ---- elementwise (kernels/elementwise.h)
void binary_broadcast(Context& ctx, cpu::BinOp op, const cpu::Broadcast& bc, const float* a, const float* b,
                      float* y);
void axpby(Context& ctx, int64_t n, float alpha, const float* a, float beta, const float* b, float* y);
void mul(Context& ctx, int64_t n, const float* a, const float* b, float* y);
void add_inplace(Context& ctx, int64_t n, const float* x, float* y);
void scale(Context& ctx, int64_t n, float alpha, const float* x, float* y);
// y[i] += b[(i / inner) % C]  for i < n (bias add over (outer, C, inner) layouts).
void add_channel_bias(Context& ctx, int64_t n, int64_t C, int64_t inner, const float* b, float* y);
void reduce_sum(Context& ctx, const int64_t in_shape[cpu::kBcastDims], const bool reduce[cpu::kBcastDims],
                const float* x, float* y);
void concat(Context& ctx, int64_t outer, int64_t inner, int64_t n_inputs, const float* const* xs,
            const int64_t* sizes, float* y);
void concat_backward(Context& ctx, int64_t outer, int64_t inner, int64_t n_inputs, const float* dy,
                     const int64_t* sizes, float* const* dxs);
// Same mask as cpu::dropout_forward for the same (seed, base).
void dropout_forward(Context& ctx, int64_t n, double p, uint64_t seed, uint64_t base, const float* x, float* y,
                     float* mask);
// Converts n elements between dtypes on the device (f32 <-> f64 <-> i64; i64 truncates).
void convert(Context& ctx, int64_t n, int src_dtype, const void* src, int dst_dtype, void* dst);

// ---- softmax and losses (kernels/softmax.h)
void softmax_forward(Context& ctx, bool log, int64_t outer, int64_t D, int64_t inner, const float* x, float* y);
void softmax_backward(Context& ctx, bool log, int64_t outer, int64_t D, int64_t inner, const float* y,
                      const float* dy, float* dx);
// Fused log-softmax + NLL: reads logits once per pass, writes the scalar loss (device)
// and dlogits (device, may be null) scaled by grad_scale. `grad_scale` is a host value.
// Returns false (after waiting for the stream) when a target is outside [0, C).
bool cross_entropy(Context& ctx, int64_t N, int64_t C, const float* logits, const int64_t* target,
                   const float* weight, double eps, float* loss, float* dlogits, float grad_scale);
void bce_with_logits(Context& ctx, int64_t n, int64_t L, const float* x, const float* y, const float* pos_weight,
                     float* loss, float* dx, float* dy, float grad_scale);
void mse(Context& ctx, int64_t n, const float* a, const float* b, float* loss, float* da, float* db,
         float grad_scale);
// loss backward helpers: when the upstream gradient is a device scalar rather than a
// host value, dx[i] *= *g for n elements.
void scale_by_device_scalar(Context& ctx, int64_t n, const float* g, float* dx);

// ---- fused multi-tensor optimizer updates (kernels/optim.h): one launch per call
// covers every tensor in the list (split internally into launches of bounded size).
struct SgdSlot {
  float* p;
  const float* g;
  float* buf;  // null when momentum == 0
  int64_t n;
};
struct AdamSlot {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
};
struct EmaSlot {
  const float* p;
  float* e;
  int64_t n;
};
void sgd_update_multi(Context& ctx, const cpu::SgdHyper& h, bool first_step, const std::vector<SgdSlot>& slots);
// All slots share `step` (t, from 1).
void adam_update_multi(Context& ctx, const cpu::AdamHyper& h, int64_t step, const std::vector<AdamSlot>& slots);
void ema_update_multi(Context& ctx, double decay, const std::vector<EmaSlot>& slots);
// Sum of squares of all the tensors, computed deterministically, returned to the host
// (waits for the stream).
double sum_of_squares_multi(Context& ctx, const std::vector<std::pair<const float*, int64_t>>& tensors);

}  // namespace cxr::cuda
