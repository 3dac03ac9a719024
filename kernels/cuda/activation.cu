// CUDA pointwise activations and their backward (contract: kernels/activation.h), with
// exactly the formulas of kernels/cpu/activation.cpp in float: the same comparisons
// (so the same derivative at 0 and at the relu6 boundaries, and the same NaN
// behaviour), the backward of sigmoid / tanh from y, the others from x.
//
// Parallelisation: one grid-stride kernel per activation (a functor template
// parameter), 256 threads per block, int64 indices. dx may alias dy: each element is
// read before it is written by the same thread.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;
constexpr float kSqrt1_2 = 0.70710678118654752440f;     // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.3989422804014327f;      // 1/sqrt(2*pi)

// 1/(1+exp(-x)): exp overflows to inf for x < -88, giving 0, as on the CPU.
__device__ __forceinline__ float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

// ---- forward: y = f(x)
struct ReluF {
  __device__ float operator()(float v) const { return v > 0.0f ? v : 0.0f; }
};
struct LeakyReluF {
  float a;
  __device__ float operator()(float v) const { return v > 0.0f ? v : a * v; }
};
struct Relu6F {  // std::min(std::max(v, 0), 6) with std's argument order (NaN passes through)
  __device__ float operator()(float v) const {
    const float m = v < 0.0f ? 0.0f : v;
    return 6.0f < m ? 6.0f : m;
  }
};
struct SigmoidF {
  __device__ float operator()(float v) const { return sigmoidf(v); }
};
struct TanhF {
  __device__ float operator()(float v) const { return tanhf(v); }
};
struct GeluF {
  __device__ float operator()(float v) const { return 0.5f * v * (1.0f + erff(v * kSqrt1_2)); }
};
struct SiluF {
  __device__ float operator()(float v) const { return v * sigmoidf(v); }
};

// ---- backward: dx = f'(x or y) * dy, arguments (x, y, dy)
struct ReluB {
  __device__ float operator()(float v, float, float g) const { return v > 0.0f ? g : 0.0f; }
};
struct LeakyReluB {
  float a;
  __device__ float operator()(float v, float, float g) const { return v > 0.0f ? g : a * g; }
};
struct Relu6B {
  __device__ float operator()(float v, float, float g) const { return (v > 0.0f && v < 6.0f) ? g : 0.0f; }
};
struct SigmoidB {
  __device__ float operator()(float, float o, float g) const { return g * o * (1.0f - o); }
};
struct TanhB {
  __device__ float operator()(float, float o, float g) const { return g * (1.0f - o * o); }
};
struct GeluB {
  __device__ float operator()(float v, float, float g) const {
    const float cdf = 0.5f * (1.0f + erff(v * kSqrt1_2));
    const float pdf = expf(-0.5f * v * v) * kInvSqrt2Pi;
    return g * (cdf + v * pdf);
  }
};
struct SiluB {
  __device__ float operator()(float v, float, float g) const {
    const float s = sigmoidf(v);
    return g * s * (1.0f + v * (1.0f - s));
  }
};

template <typename F>
__global__ void map1_kernel(int64_t n, const float* x, float* y, F f) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = f(x[i]);
}

// x or y may be null when the functor does not read it.
template <typename F>
__global__ void map3_kernel(int64_t n, const float* x, const float* y, const float* dy, float* dx, F f) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float xv = x ? x[i] : 0.0f;
    const float yv = y ? y[i] : 0.0f;
    dx[i] = f(xv, yv, dy[i]);
  }
}

template <typename F>
void launch1(Context& ctx, int64_t n, const float* x, float* y, F f) {
  map1_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, x, y, f);
  CXR_LAUNCH_CHECK(ctx, "act_forward");
}

// Passes only the input the formula uses (the other as null, so it is not read).
template <typename F>
void launch3(Context& ctx, int64_t n, bool uses_y, const float* x, const float* y, const float* dy, float* dx,
             F f) {
  map3_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, uses_y ? nullptr : x, uses_y ? y : nullptr, dy,
                                                            dx, f);
  CXR_LAUNCH_CHECK(ctx, "act_backward");
}

}  // namespace

void act_forward(Context& ctx, cpu::Act act, double alpha, int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  const float a = static_cast<float>(alpha);
  switch (act) {
    case cpu::Act::relu: launch1(ctx, n, x, y, ReluF{}); break;
    case cpu::Act::leaky_relu: launch1(ctx, n, x, y, LeakyReluF{a}); break;
    case cpu::Act::relu6: launch1(ctx, n, x, y, Relu6F{}); break;
    case cpu::Act::sigmoid: launch1(ctx, n, x, y, SigmoidF{}); break;
    case cpu::Act::tanh: launch1(ctx, n, x, y, TanhF{}); break;
    case cpu::Act::gelu: launch1(ctx, n, x, y, GeluF{}); break;
    case cpu::Act::silu: launch1(ctx, n, x, y, SiluF{}); break;
  }
}

void act_backward(Context& ctx, cpu::Act act, double alpha, int64_t n, const float* x, const float* y,
                  const float* dy, float* dx) {
  if (n <= 0) return;
  const float a = static_cast<float>(alpha);
  switch (act) {
    case cpu::Act::relu: launch3(ctx, n, false, x, y, dy, dx, ReluB{}); break;
    case cpu::Act::leaky_relu: launch3(ctx, n, false, x, y, dy, dx, LeakyReluB{a}); break;
    case cpu::Act::relu6: launch3(ctx, n, false, x, y, dy, dx, Relu6B{}); break;
    case cpu::Act::sigmoid: launch3(ctx, n, true, x, y, dy, dx, SigmoidB{}); break;
    case cpu::Act::tanh: launch3(ctx, n, true, x, y, dy, dx, TanhB{}); break;
    case cpu::Act::gelu: launch3(ctx, n, false, x, y, dy, dx, GeluB{}); break;
    case cpu::Act::silu: launch3(ctx, n, false, x, y, dy, dx, SiluB{}); break;
  }
}

}  // namespace cxr::cuda
