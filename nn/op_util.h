// Internal helpers shared by the functional op files.
#pragma once

#include <string>

#include "kernels/cuda/ops.h"
#include "nn/autograd.h"
#include "runtime/tensor.h"
#include "runtime/thread_pool.h"

namespace cxr::nn::detail {

inline ThreadPool& pool() { return default_thread_pool(); }

inline void check_defined(const char* op, const Tensor& t, const char* what) {
  CXR_CHECK(t.defined(), op, ": ", what, " is undefined");
}

// A defined, non-empty, floating-point tensor: f32 or f64 on the CPU, f32 on CUDA.
inline void check_input(const char* op, const Tensor& t, const char* what) {
  check_defined(op, t, what);
  CXR_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ", what, " must be f32 or f64, got ",
            t.str());
  CXR_CHECK(t.device().is_cpu() || t.dtype() == DType::f32, op, ": ", what, " is ", t.str(),
            "; CUDA ops support f32 only (f64 is for CPU gradient checks)");
  CXR_CHECK(t.numel() > 0, op, ": ", what, " ", t.str(), " is empty");
}

// Runs cpu_fn.template operator()<T>() for a CPU tensor t (T its float type), or
// gpu_fn(cuda::Context&) for a CUDA tensor. gpu_fn must be a generic lambda
// ([&](auto& ctx) {...}) so that builds without CUDA never instantiate it.
template <typename CpuFn, typename GpuFn>
void on_device(const Tensor& t, const char* op, CpuFn&& cpu_fn, GpuFn&& gpu_fn) {
  if (t.device().is_cuda()) {
#if defined(CXR_WITH_CUDA)
    gpu_fn(cuda::context(t.device().index));
#else
    (void)gpu_fn;
    throw Error(std::string(op) + ": " + t.str() + " is on a CUDA device but this build has no CUDA backend");
#endif
  } else {
    dispatch_float(t.dtype(), op, cpu_fn);
  }
}

inline void check_same(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  CXR_CHECK(a.dtype() == b.dtype(), op, ": ", an, " ", a.str(), " and ", bn, " ", b.str(), " differ in dtype");
  CXR_CHECK(a.device() == b.device(), op, ": ", an, " ", a.str(), " and ", bn, " ", b.str(),
            " are on different devices");
}

inline Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

inline int64_t wrap_dim(const char* op, int64_t d, int64_t ndim) {
  CXR_CHECK(d >= -ndim && d < ndim, op, ": dim ", d, " out of range for a tensor of ", ndim, " dims");
  return d < 0 ? d + ndim : d;
}

// Runs gpu_fn(cuda::Context&) for CUDA device `device` (gpu_fn a generic lambda, as
// for on_device); throws in builds without CUDA.
template <typename GpuFn>
void run_cuda(const char* op, int device, GpuFn&& gpu_fn) {
#if defined(CXR_WITH_CUDA)
  (void)op;
  gpu_fn(cuda::context(device));
#else
  (void)gpu_fn;
  throw Error(std::string(op) + ": cuda:" + std::to_string(device) + " needs the CUDA backend, absent from this build");
#endif
}

}  // namespace cxr::nn::detail
