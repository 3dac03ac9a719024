// Pointwise activations, y = f(x), and their backward dx = dy * f'(x).
//   relu(x)        = max(x, 0)
//   leaky_relu(x)  = x > 0 ? x : alpha*x
//   relu6(x)       = min(max(x, 0), 6)
//   sigmoid(x)     = 1 / (1 + exp(-x))
//   tanh(x)
//   gelu(x)        = x * Phi(x) = 0.5*x*(1 + erf(x/sqrt(2)))      (exact, PyTorch's default)
//   silu(x)        = x * sigmoid(x)
// The backward receives both x and y (either may be used); dx may alias dy.
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

enum class Act : uint8_t { relu, leaky_relu, relu6, sigmoid, tanh, gelu, silu };
const char* act_name(Act a);

template <typename T>
void act_forward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, T* y);
template <typename T>
void act_backward(ThreadPool& pool, Act act, double alpha, int64_t n, const T* x, const T* y, const T* dy, T* dx);

}  // namespace cxr::cpu
