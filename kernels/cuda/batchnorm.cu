// CUDA batch normalisation over (N, C, HW): training/eval forwards, backward, running
// statistics update and eval statistics. Same math as kernels/cpu/batchnorm.cpp (two-pass
// mean then centred biased variance, all statistics in double).
//
// Parallelisation (deterministic, no atomics):
// - Channel reductions use a 2-D grid (channel c = blockIdx.x, slice s = blockIdx.y).
//   The channel's count = N*HW elements (element j -> x[(j/HW*C + c)*HW + j%HW]) are cut
//   into S fixed slices; each block sums its slice in double (per-thread strided sums,
//   then a fixed warp/block tree) into partial[c*S + s]. A per-channel kernel then adds
//   the S partials in order. S depends only on the shape and the SM count.
// - Per-channel coefficients (scale/shift, or the backward's a/b/d) are computed once
//   per channel in double, then an elementwise grid-stride kernel applies them; it
//   tracks the channel of its element incrementally instead of dividing per element.

#include <cmath>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;  // every kernel here assumes blockDim.x == kBlock
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMinSlice = 4096;  // elements per reduction block, at least

__device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// Sum over the block; the result is valid in thread 0. `sm` holds kBlock/32 doubles.
__device__ double block_sum(double v, double* sm) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // earlier users of sm are done
  if (lane == 0) sm[warp] = v;
  __syncthreads();
  double r = 0.0;
  if (warp == 0) r = warp_sum(lane < kBlock / 32 ? sm[lane] : 0.0);
  return r;
}

// Walks the elements j = j0 + threadIdx.x, j0 + threadIdx.x + kBlock, ... < j1 of channel c,
// calling f(offset) with the element's flat offset in the (N, C, HW) tensor.
struct ChannelWalk {
  int64_t HW, CHW;
  int64_t step_n, step_i;  // kBlock = step_n*HW + step_i
};

template <typename F>
__device__ __forceinline__ void walk_channel(const ChannelWalk& g, int64_t c, int64_t j0, int64_t j1, F f) {
  int64_t j = j0 + threadIdx.x;
  if (j >= j1) return;
  int64_t i = j % g.HW;
  int64_t off = (j / g.HW) * g.CHW + c * g.HW + i;
  const int64_t off_step = g.step_n * g.CHW + g.step_i;
  for (; j < j1; j += kBlock) {
    f(off);
    i += g.step_i;
    off += off_step;
    if (i >= g.HW) {  // crossed into the next sample's plane
      i -= g.HW;
      off += g.CHW - g.HW;
    }
  }
}

ChannelWalk make_walk(int64_t C, int64_t HW) {
  ChannelWalk g;
  g.HW = HW;
  g.CHW = C * HW;
  g.step_n = kBlock / HW;
  g.step_i = kBlock % HW;
  return g;
}

// The fixed cut of each channel into slices for the reduction kernels.
struct Slicing {
  int64_t S = 1, chunk = 0;
};

Slicing make_slicing(const Context& ctx, int64_t C, int64_t count) {
  Slicing sl;
  const int64_t by_size = (count + kMinSlice - 1) / kMinSlice;
  const int64_t target_blocks = static_cast<int64_t>(ctx.num_sms()) * 8;
  const int64_t by_occupancy = (target_blocks + C - 1) / C;
  int64_t S = by_size < by_occupancy ? by_size : by_occupancy;
  if (S > 65535) S = 65535;
  if (S < 1) S = 1;
  sl.S = S;
  sl.chunk = (count + S - 1) / S;
  return sl;
}

// Pass 1 (mean == nullptr): partial sums of x. Pass 2: partial sums of (x - mean[c])^2.
__global__ void bn_stat_partials(const float* __restrict__ x, ChannelWalk g, int64_t count, int64_t chunk,
                                 const double* __restrict__ mean, double* __restrict__ part) {
  __shared__ double sm[kBlock / 32];
  const int64_t c = blockIdx.x, s = blockIdx.y;
  const int64_t j0 = s * chunk;
  const int64_t j1 = j0 + chunk < count ? j0 + chunk : count;
  double acc = 0.0;
  if (mean == nullptr) {
    walk_channel(g, c, j0, j1, [&](int64_t off) { acc += static_cast<double>(x[off]); });
  } else {
    const double m = mean[c];
    walk_channel(g, c, j0, j1, [&](int64_t off) {
      const double d = static_cast<double>(x[off]) - m;
      acc += d * d;
    });
  }
  const double r = block_sum(acc, sm);
  if (threadIdx.x == 0) part[c * gridDim.y + s] = r;
}

// Per channel: mean = sum / count (double, kept for pass 2).
__global__ void bn_mean_finalize(int64_t C, int64_t S, double count, const double* __restrict__ part,
                                 double* __restrict__ mean) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t s = 0; s < S; ++s) sum += part[c * S + s];
    mean[c] = sum / count;
  }
}

// Per channel: invstd from the centred sum of squares; saves the statistics and the
// affine coefficients y = x*scale + shift (coef[2c], coef[2c+1]) exactly as the CPU.
__global__ void bn_var_finalize(int64_t C, int64_t S, double count, double eps, const double* __restrict__ part,
                                const double* __restrict__ mean, const float* __restrict__ gamma,
                                const float* __restrict__ beta, float* __restrict__ save_mean,
                                float* __restrict__ save_invstd, float* __restrict__ coef) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double sq = 0.0;
    for (int64_t s = 0; s < S; ++s) sq += part[c * S + s];
    const double m = mean[c];
    const double invstd = 1.0 / sqrt(sq / count + eps);
    save_mean[c] = static_cast<float>(m);
    save_invstd[c] = static_cast<float>(invstd);
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    const double b = beta ? static_cast<double>(beta[c]) : 0.0;
    coef[2 * c] = static_cast<float>(invstd * g);
    coef[2 * c + 1] = static_cast<float>(b - m * invstd * g);
  }
}

// Eval forward coefficients from the running statistics.
__global__ void bn_eval_coef(int64_t C, double eps, const float* __restrict__ gamma, const float* __restrict__ beta,
                             const float* __restrict__ running_mean, const float* __restrict__ running_var,
                             float* __restrict__ coef) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double invstd = 1.0 / sqrt(static_cast<double>(running_var[c]) + eps);
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    const double b = beta ? static_cast<double>(beta[c]) : 0.0;
    coef[2 * c] = static_cast<float>(invstd * g);
    coef[2 * c + 1] = static_cast<float>(b - static_cast<double>(running_mean[c]) * invstd * g);
  }
}

// Grid-stride walk over the flat (N, C, HW) index space that keeps the channel of the
// current element without a division per step.
struct FlatWalk {
  int64_t total, HW, C;
  int64_t step, step_i, step_c;  // step = grid threads; step = (k*C + step_c)*HW + step_i
};

FlatWalk make_flat(int64_t N, int64_t C, int64_t HW, unsigned grid) {
  FlatWalk f;
  f.total = N * C * HW;
  f.HW = HW;
  f.C = C;
  f.step = static_cast<int64_t>(grid) * kBlock;
  f.step_i = f.step % HW;
  f.step_c = (f.step / HW) % C;
  return f;
}

template <typename F>
__device__ __forceinline__ void walk_flat(const FlatWalk& g, F f) {
  int64_t e = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (e >= g.total) return;
  int64_t i = e % g.HW;
  int64_t c = (e / g.HW) % g.C;
  for (; e < g.total; e += g.step) {
    f(e, c);
    i += g.step_i;
    c += g.step_c;
    if (i >= g.HW) {
      i -= g.HW;
      ++c;
    }
    if (c >= g.C) c -= g.C;
  }
}

// y = x*coef[2c] + coef[2c+1]
__global__ void bn_affine(FlatWalk g, const float* __restrict__ x, const float* __restrict__ coef,
                          float* __restrict__ y) {
  walk_flat(g, [&](int64_t e, int64_t c) { y[e] = x[e] * coef[2 * c] + coef[2 * c + 1]; });
}

// Backward partials: sum(dy) and sum(dy * (x - mean[c])) per slice, interleaved in part.
__global__ void bn_bwd_partials(const float* __restrict__ x, const float* __restrict__ dy, ChannelWalk g,
                                int64_t count, int64_t chunk, const float* __restrict__ mean,
                                double* __restrict__ part) {
  __shared__ double sm[kBlock / 32];
  const int64_t c = blockIdx.x, s = blockIdx.y;
  const int64_t j0 = s * chunk;
  const int64_t j1 = j0 + chunk < count ? j0 + chunk : count;
  const double m = static_cast<double>(mean[c]);
  double a = 0.0, b = 0.0;
  walk_channel(g, c, j0, j1, [&](int64_t off) {
    const double gy = static_cast<double>(dy[off]);
    a += gy;
    b += gy * (static_cast<double>(x[off]) - m);
  });
  const double ra = block_sum(a, sm);
  const double rb = block_sum(b, sm);
  if (threadIdx.x == 0) {
    const int64_t k = c * gridDim.y + s;
    part[2 * k] = ra;
    part[2 * k + 1] = rb;
  }
}

// Per channel: dgamma, dbeta and dx = a*dy + b*x + d (coef[3c..3c+2]), as the CPU.
// part == nullptr means the sums are not needed (eval mode without dgamma/dbeta).
__global__ void bn_bwd_finalize(int64_t C, int64_t S, double count, bool training, const double* __restrict__ part,
                                const float* __restrict__ gamma, const float* __restrict__ mean,
                                const float* __restrict__ invstd, float* __restrict__ dgamma,
                                float* __restrict__ dbeta, float* __restrict__ coef) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double sum_dy = 0.0, sum_dy_xm = 0.0;
    if (part)
      for (int64_t s = 0; s < S; ++s) {
        sum_dy += part[2 * (c * S + s)];
        sum_dy_xm += part[2 * (c * S + s) + 1];
      }
    const double m = mean[c], is = invstd[c];
    const double sum_dy_xhat = sum_dy_xm * is;
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy);
    if (!coef) continue;
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    const double k = g * is;
    const double mean_dy = training ? sum_dy / count : 0.0;
    const double mean_dy_xhat = training ? sum_dy_xhat / count : 0.0;
    coef[3 * c] = static_cast<float>(k);
    coef[3 * c + 1] = static_cast<float>(-k * mean_dy_xhat * is);
    coef[3 * c + 2] = static_cast<float>(-k * mean_dy + k * mean_dy_xhat * is * m);
  }
}

__global__ void bn_bwd_apply(FlatWalk g, const float* __restrict__ x, const float* __restrict__ dy,
                             const float* __restrict__ coef, float* __restrict__ dx) {
  walk_flat(g, [&](int64_t e, int64_t c) {
    dx[e] = coef[3 * c] * dy[e] + coef[3 * c + 1] * x[e] + coef[3 * c + 2];
  });
}

__global__ void bn_update_running_kernel(int64_t C, double momentum, double unbias, double eps,
                                         const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
                                         float* __restrict__ running_mean, float* __restrict__ running_var) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double is = static_cast<double>(save_invstd[c]);
    const double var = 1.0 / (is * is) - eps;
    running_mean[c] = static_cast<float>((1.0 - momentum) * static_cast<double>(running_mean[c]) +
                                         momentum * static_cast<double>(save_mean[c]));
    running_var[c] =
        static_cast<float>((1.0 - momentum) * static_cast<double>(running_var[c]) + momentum * var * unbias);
  }
}

__global__ void bn_eval_stats_kernel(int64_t C, double eps, const float* __restrict__ running_mean,
                                     const float* __restrict__ running_var, float* __restrict__ mean,
                                     float* __restrict__ invstd) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    mean[c] = running_mean[c];
    invstd[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(running_var[c]) + eps));
  }
}

}  // namespace

void batchnorm_forward_train(Context& ctx, int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, double eps, float* y, float* save_mean, float* save_invstd) {
  if (C <= 0) return;
  const int64_t count = N > 0 && HW > 0 ? N * HW : 0;
  const Slicing sl = make_slicing(ctx, C, count);
  DeviceBuffer part(ctx, static_cast<size_t>(C * sl.S) * sizeof(double));
  DeviceBuffer mean(ctx, static_cast<size_t>(C) * sizeof(double));
  DeviceBuffer coef(ctx, static_cast<size_t>(2 * C) * sizeof(float));
  const ChannelWalk walk = make_walk(C, HW > 0 ? HW : 1);
  const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(sl.S));
  const unsigned cgrid = grid_for(ctx, C, kBlock);
  const double dcount = static_cast<double>(count);
  // With count == 0 the partials are 0 and the statistics come out NaN (0/0), like the CPU.
  bn_stat_partials<<<grid, kBlock, 0, ctx.stream>>>(x, walk, count, sl.chunk, nullptr, part.as<double>());
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_train (sum)");
  bn_mean_finalize<<<cgrid, kBlock, 0, ctx.stream>>>(C, sl.S, dcount, part.as<double>(), mean.as<double>());
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_train (mean)");
  bn_stat_partials<<<grid, kBlock, 0, ctx.stream>>>(x, walk, count, sl.chunk, mean.as<double>(),
                                                   part.as<double>());
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_train (variance)");
  bn_var_finalize<<<cgrid, kBlock, 0, ctx.stream>>>(C, sl.S, dcount, eps, part.as<double>(), mean.as<double>(),
                                                    gamma, beta, save_mean, save_invstd, coef.as<float>());
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_train (invstd)");
  if (count == 0) return;
  const unsigned egrid = grid_for(ctx, N * C * HW, kBlock);
  bn_affine<<<egrid, kBlock, 0, ctx.stream>>>(make_flat(N, C, HW, egrid), x, coef.as<float>(), y);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_train (normalise)");
}

void batchnorm_forward_eval(Context& ctx, int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, double eps,
                            float* y) {
  if (N <= 0 || C <= 0 || HW <= 0) return;
  DeviceBuffer coef(ctx, static_cast<size_t>(2 * C) * sizeof(float));
  bn_eval_coef<<<grid_for(ctx, C, kBlock), kBlock, 0, ctx.stream>>>(C, eps, gamma, beta, running_mean, running_var,
                                                                     coef.as<float>());
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_eval (coefficients)");
  const unsigned egrid = grid_for(ctx, N * C * HW, kBlock);
  bn_affine<<<egrid, kBlock, 0, ctx.stream>>>(make_flat(N, C, HW, egrid), x, coef.as<float>(), y);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_forward_eval (normalise)");
}

void batchnorm_backward(Context& ctx, bool training, int64_t N, int64_t C, int64_t HW, const float* x,
                        const float* dy, const float* gamma, const float* mean, const float* invstd, float* dx,
                        float* dgamma, float* dbeta) {
  if (C <= 0) return;
  const int64_t count = N > 0 && HW > 0 ? N * HW : 0;
  const bool need_dx = dx != nullptr && count > 0;
  if (!need_dx && !dgamma && !dbeta) return;
  // The sums feed dgamma, dbeta and (training only) dx.
  const bool need_sums = dgamma || dbeta || (training && need_dx);
  const Slicing sl = make_slicing(ctx, C, count);
  DeviceBuffer part;
  if (need_sums) {
    part = DeviceBuffer(ctx, static_cast<size_t>(2 * C * sl.S) * sizeof(double));
    const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(sl.S));
    bn_bwd_partials<<<grid, kBlock, 0, ctx.stream>>>(x, dy, make_walk(C, HW > 0 ? HW : 1), count, sl.chunk, mean,
                                                     part.as<double>());
    CXR_LAUNCH_CHECK(ctx, "batchnorm_backward (sums)");
  }
  DeviceBuffer coef;
  if (need_dx) coef = DeviceBuffer(ctx, static_cast<size_t>(3 * C) * sizeof(float));
  bn_bwd_finalize<<<grid_for(ctx, C, kBlock), kBlock, 0, ctx.stream>>>(
      C, sl.S, static_cast<double>(count), training, need_sums ? part.as<double>() : nullptr, gamma, mean, invstd,
      dgamma, dbeta, need_dx ? coef.as<float>() : nullptr);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_backward (coefficients)");
  if (!need_dx) return;
  const unsigned egrid = grid_for(ctx, N * C * HW, kBlock);
  bn_bwd_apply<<<egrid, kBlock, 0, ctx.stream>>>(make_flat(N, C, HW, egrid), x, dy, coef.as<float>(), dx);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_backward (dx)");
}

void batchnorm_update_running(Context& ctx, int64_t C, double momentum, int64_t count, double eps,
                              const float* save_mean, const float* save_invstd, float* running_mean,
                              float* running_var) {
  if (C <= 0) return;
  const double unbias = count > 1 ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
  bn_update_running_kernel<<<grid_for(ctx, C, kBlock), kBlock, 0, ctx.stream>>>(
      C, momentum, unbias, eps, save_mean, save_invstd, running_mean, running_var);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_update_running");
}

void batchnorm_eval_stats(Context& ctx, int64_t C, double eps, const float* running_mean, const float* running_var,
                          float* mean, float* invstd) {
  if (C <= 0) return;
  bn_eval_stats_kernel<<<grid_for(ctx, C, kBlock), kBlock, 0, ctx.stream>>>(C, eps, running_mean, running_var, mean,
                                                                            invstd);
  CXR_LAUNCH_CHECK(ctx, "batchnorm_eval_stats");
}

}  // namespace cxr::cuda
