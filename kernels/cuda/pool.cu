// CUDA pooling over NCHW planes: max / average 2-D pooling (forward and backward) and
// global average pooling. Same contracts and tie/padding rules as kernels/cpu/pool.cpp.
//
// Parallelisation:
// - 2-D forwards: one thread per output element (grid-stride, int64 indices); each
//   thread scans its window in the CPU's (h, w) order.
// - 2-D backwards are gathers: one thread per input element walks the output windows
//   that contain it in ascending (p, q) order and sums their contributions. That is the
//   order in which the CPU scatter accumulates into the same element, so dx matches the
//   CPU bit for bit, with no atomics.
// - global_avg_pool_forward: one warp per plane (small planes) or one block per plane
//   (large planes), accumulating in double with a fixed-shape tree (deterministic).
//   The backward is an elementwise broadcast.

#include <cmath>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;
constexpr unsigned kFullMask = 0xffffffffu;

// The pooling geometry as plain numbers for the device (Pool2dShape's P()/Q() are host-only).
struct Geom {
  int64_t H, W, P, Q, kh, kw, sh, sw, ph, pw;
};

Geom make_geom(const cpu::Pool2dShape& s) {
  return Geom{s.H, s.W, s.P(), s.Q(), s.kh, s.kw, s.sh, s.sw, s.ph, s.pw};
}

__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int64_t thread_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Range of output rows p (inclusive) whose window [p*s - pad, p*s - pad + k) contains
// input row h; empty when lo > hi.
__device__ __forceinline__ void covering(int64_t h, int64_t k, int64_t s, int64_t pad, int64_t P, int64_t& lo,
                                         int64_t& hi) {
  const int64_t hp = h + pad;  // >= 0
  lo = hp >= k ? (hp - k) / s + 1 : 0;
  hi = imin(hp / s, P - 1);
}

__global__ void max_pool_fwd_kernel(Geom g, int64_t total, const float* __restrict__ x, float* __restrict__ y,
                                    int64_t* __restrict__ argmax) {
  for (int64_t o = thread_start(); o < total; o += grid_stride()) {
    const int64_t q = o % g.Q, t = o / g.Q;
    const int64_t p = t % g.P, plane = t / g.P;
    const float* xp = x + plane * g.H * g.W;
    const int64_t h0 = p * g.sh - g.ph, w0 = q * g.sw - g.pw;
    const int64_t hb = imax(h0, 0), he = imin(h0 + g.kh, g.H);
    const int64_t wb = imax(w0, 0), we = imin(w0 + g.kw, g.W);
    // A window made only of padding keeps (-inf, -1), as on the CPU.
    float best = -INFINITY;
    int64_t best_i = -1;
    bool nan = false;
    for (int64_t h = hb; h < he && !nan; ++h)
      for (int64_t w = wb; w < we; ++w) {
        const float v = xp[h * g.W + w];
        // First maximum wins; NaN wins and stops the scan (propagates).
        if (best_i < 0 || v > best || v != v) {
          best = v;
          best_i = h * g.W + w;
          if (v != v) {
            nan = true;
            break;
          }
        }
      }
    y[o] = best;
    if (argmax) argmax[o] = best_i;
  }
}

__global__ void max_pool_bwd_kernel(Geom g, int64_t total, const float* __restrict__ dy,
                                    const int64_t* __restrict__ argmax, float* __restrict__ dx) {
  const int64_t PQ = g.P * g.Q;
  for (int64_t e = thread_start(); e < total; e += grid_stride()) {
    const int64_t w = e % g.W, t = e / g.W;
    const int64_t h = t % g.H, plane = t / g.H;
    int64_t p0, p1, q0, q1;
    covering(h, g.kh, g.sh, g.ph, g.P, p0, p1);
    covering(w, g.kw, g.sw, g.pw, g.Q, q0, q1);
    const int64_t me = h * g.W + w;
    const int64_t* ap = argmax + plane * PQ;
    const float* dp = dy + plane * PQ;
    float acc = 0.0f;
    for (int64_t p = p0; p <= p1; ++p)
      for (int64_t q = q0; q <= q1; ++q)
        if (ap[p * g.Q + q] == me) acc += dp[p * g.Q + q];
    dx[e] = acc;
  }
}

__global__ void avg_pool_fwd_kernel(Geom g, int64_t total, float inv, const float* __restrict__ x,
                                    float* __restrict__ y) {
  for (int64_t o = thread_start(); o < total; o += grid_stride()) {
    const int64_t q = o % g.Q, t = o / g.Q;
    const int64_t p = t % g.P, plane = t / g.P;
    const float* xp = x + plane * g.H * g.W;
    const int64_t h0 = p * g.sh - g.ph, w0 = q * g.sw - g.pw;
    const int64_t hb = imax(h0, 0), he = imin(h0 + g.kh, g.H);
    const int64_t wb = imax(w0, 0), we = imin(w0 + g.kw, g.W);
    float acc = 0.0f;
    for (int64_t h = hb; h < he; ++h)
      for (int64_t w = wb; w < we; ++w) acc += xp[h * g.W + w];
    y[o] = acc * inv;
  }
}

__global__ void avg_pool_bwd_kernel(Geom g, int64_t total, float inv, const float* __restrict__ dy,
                                    float* __restrict__ dx) {
  const int64_t PQ = g.P * g.Q;
  for (int64_t e = thread_start(); e < total; e += grid_stride()) {
    const int64_t w = e % g.W, t = e / g.W;
    const int64_t h = t % g.H, plane = t / g.H;
    int64_t p0, p1, q0, q1;
    covering(h, g.kh, g.sh, g.ph, g.P, p0, p1);
    covering(w, g.kw, g.sw, g.pw, g.Q, q0, q1);
    const float* dp = dy + plane * PQ;
    float acc = 0.0f;
    // The CPU adds g = dy*inv (rounded) per window; __fmul_rn keeps the product from
    // being fused into the add so the sums agree exactly.
    for (int64_t p = p0; p <= p1; ++p)
      for (int64_t q = q0; q <= q1; ++q) acc += __fmul_rn(dp[p * g.Q + q], inv);
    dx[e] = acc;
  }
}

// One warp per plane; lanes stride over the plane, then a butterfly in double.
__global__ void gap_fwd_warp_kernel(int64_t NC, int64_t HW, const float* __restrict__ x, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t plane = blockIdx.x * warps_per_block + (threadIdx.x >> 5); plane < NC; plane += n_warps) {
    const float* xp = x + plane * HW;
    double acc = 0.0;
    for (int64_t j = lane; j < HW; j += 32) acc += static_cast<double>(xp[j]);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(kFullMask, acc, off);
    if (lane == 0) y[plane] = static_cast<float>(acc / static_cast<double>(HW));
  }
}

// One block (kBlock threads) per plane for large planes.
__global__ void gap_fwd_block_kernel(int64_t NC, int64_t HW, const float* __restrict__ x, float* __restrict__ y) {
  __shared__ double part[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t plane = blockIdx.x; plane < NC; plane += gridDim.x) {
    const float* xp = x + plane * HW;
    double acc = 0.0;
    for (int64_t j = threadIdx.x; j < HW; j += kBlock) acc += static_cast<double>(xp[j]);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(kFullMask, acc, off);
    __syncthreads();  // the previous plane's reads of part[] are done
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      double v = lane < kBlock / 32 ? part[lane] : 0.0;
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
      if (lane == 0) y[plane] = static_cast<float>(v / static_cast<double>(HW));
    }
  }
}

__global__ void gap_bwd_kernel(int64_t total, int64_t HW, float fHW, const float* __restrict__ dy,
                               float* __restrict__ dx) {
  for (int64_t e = thread_start(); e < total; e += grid_stride()) dx[e] = dy[e / HW] / fHW;
}

// Number of outputs of a pooling, 0 when the output is empty.
int64_t outputs(const Geom& g, int64_t planes) {
  if (planes <= 0 || g.P <= 0 || g.Q <= 0) return 0;
  return planes * g.P * g.Q;
}

}  // namespace

void max_pool2d_forward(Context& ctx, const cpu::Pool2dShape& s, const float* x, float* y, int64_t* argmax) {
  const Geom g = make_geom(s);
  const int64_t total = outputs(g, s.N * s.C);
  if (total == 0) return;
  max_pool_fwd_kernel<<<grid_for(ctx, total, kBlock), kBlock, 0, ctx.stream>>>(g, total, x, y, argmax);
  CXR_LAUNCH_CHECK(ctx, "max_pool2d_forward");
}

void max_pool2d_backward(Context& ctx, const cpu::Pool2dShape& s, const float* dy, const int64_t* argmax,
                         float* dx) {
  Geom g = make_geom(s);
  const int64_t total = s.N * s.C * s.H * s.W;
  if (total <= 0) return;
  // An empty output gives dx = 0 (every covering range is then empty).
  if (g.P < 0) g.P = 0;
  if (g.Q < 0) g.Q = 0;
  max_pool_bwd_kernel<<<grid_for(ctx, total, kBlock), kBlock, 0, ctx.stream>>>(g, total, dy, argmax, dx);
  CXR_LAUNCH_CHECK(ctx, "max_pool2d_backward");
}

void avg_pool2d_forward(Context& ctx, const cpu::Pool2dShape& s, const float* x, float* y) {
  const Geom g = make_geom(s);
  const int64_t total = outputs(g, s.N * s.C);
  if (total == 0) return;
  const float inv = 1.0f / static_cast<float>(s.kh * s.kw);
  avg_pool_fwd_kernel<<<grid_for(ctx, total, kBlock), kBlock, 0, ctx.stream>>>(g, total, inv, x, y);
  CXR_LAUNCH_CHECK(ctx, "avg_pool2d_forward");
}

void avg_pool2d_backward(Context& ctx, const cpu::Pool2dShape& s, const float* dy, float* dx) {
  Geom g = make_geom(s);
  const int64_t total = s.N * s.C * s.H * s.W;
  if (total <= 0) return;
  if (g.P < 0) g.P = 0;
  if (g.Q < 0) g.Q = 0;
  const float inv = 1.0f / static_cast<float>(s.kh * s.kw);
  avg_pool_bwd_kernel<<<grid_for(ctx, total, kBlock), kBlock, 0, ctx.stream>>>(g, total, inv, dy, dx);
  CXR_LAUNCH_CHECK(ctx, "avg_pool2d_backward");
}

void global_avg_pool_forward(Context& ctx, int64_t NC, int64_t HW, const float* x, float* y) {
  if (NC <= 0) return;
  // HW == 0 gives 0/0 = NaN means, like the CPU.
  if (HW <= 2048) {
    const int64_t warps_per_block = kBlock / 32;
    const unsigned grid = grid_for(ctx, NC, static_cast<int>(warps_per_block));
    gap_fwd_warp_kernel<<<grid, kBlock, 0, ctx.stream>>>(NC, HW, x, y);
  } else {
    const int64_t cap = static_cast<int64_t>(ctx.num_sms()) * 8;
    const unsigned grid = static_cast<unsigned>(NC < cap ? NC : cap);
    gap_fwd_block_kernel<<<grid, kBlock, 0, ctx.stream>>>(NC, HW, x, y);
  }
  CXR_LAUNCH_CHECK(ctx, "global_avg_pool_forward");
}

void global_avg_pool_backward(Context& ctx, int64_t NC, int64_t HW, const float* dy, float* dx) {
  const int64_t total = NC * HW;
  if (NC <= 0 || HW <= 0) return;
  gap_bwd_kernel<<<grid_for(ctx, total, kBlock), kBlock, 0, ctx.stream>>>(total, HW, static_cast<float>(HW), dy,
                                                                          dx);
  CXR_LAUNCH_CHECK(ctx, "global_avg_pool_backward");
}

}  // namespace cxr::cuda
