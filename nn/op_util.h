// Internal helpers shared by the functional op files.
#pragma once

#include <string>

#include "nn/autograd.h"
#include "runtime/tensor.h"
#include "runtime/thread_pool.h"

namespace cxr::nn::detail {

inline ThreadPool& pool() { return default_thread_pool(); }

inline void check_defined(const char* op, const Tensor& t, const char* what) {
  CXR_CHECK(t.defined(), op, ": ", what, " is undefined");
}

// A defined, non-empty, floating-point CPU tensor.
inline void check_input(const char* op, const Tensor& t, const char* what) {
  check_defined(op, t, what);
  CXR_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ", what, " must be f32 or f64, got ",
            t.str());
  CXR_CHECK(t.device().is_cpu(), op, ": ", what, " is ", t.str(),
            "; CUDA tensors are not supported by this build yet");
  CXR_CHECK(t.numel() > 0, op, ": ", what, " ", t.str(), " is empty");
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

}  // namespace cxr::nn::detail
