// CUDA softmax / log-softmax (forward, backward) over (outer, D, inner) and the fused
// losses: cross entropy (log-softmax + weighted NLL with label smoothing), BCE with
// logits and MSE. Same formulas as kernels/cpu/softmax.cpp.
//
// Parallelisation (deterministic, no atomics):
// - softmax: a row is the D elements of one (outer, inner) pair. Rows with D <= 64 are
//   handled by one thread each (adjacent threads take adjacent `inner`, so loads are
//   coalesced when inner > 1); longer rows by one block each (32/128/256 threads), with
//   max and sums reduced by a fixed warp/block tree (sums in double).
// - cross_entropy: kernel 1, one block per sample: max, sum of exp and the smoothing
//   term in double -> per-sample record (and an "invalid target" flag); kernel 2, one
//   block: W, the NLL and smoothing sums reduced in fixed order -> loss, W and sum_c w[c];
//   kernel 3 (when dlogits is wanted), elementwise: dlogits from the per-sample records.
//   The flag is copied to the host at the end (the only synchronisation).
// - bce_with_logits, mse: elementwise kernel writes the gradients and per-block double
//   partial sums of the loss terms; one block then reduces the partials in order.

#include <cmath>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kSmallRow = 64;  // rows up to this length use one thread per row

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
// std::max semantics: (a < b) ? b : a, so a NaN operand on the right is ignored, as in
// the CPU loops.
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? b : a; }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// Reduces v over the block (blockDim.x a multiple of 32, at most 1024) and returns the
// same result to every thread. Every thread of the block must call it. `sm` holds 32 Ts.
template <typename T, typename Op>
__device__ T block_reduce(T v, T* sm, Op op, T identity) {
  v = warp_reduce(v, op);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();  // earlier readers of sm are done
  if (lane == 0) sm[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T t = warp_reduce(lane < n_warps ? sm[lane] : identity, op);
    __syncwarp();
    if (lane == 0) sm[0] = t;
  }
  __syncthreads();
  return sm[0];
}

__device__ __forceinline__ int64_t thread_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Threads for a block-per-row kernel over rows of length D.
int row_threads(int64_t D) { return D <= 256 ? 32 : D <= 2048 ? 128 : 256; }

unsigned row_grid(const Context& ctx, int64_t rows, int threads) {
  const int64_t cap = static_cast<int64_t>(ctx.num_sms()) * (2048 / threads);
  return static_cast<unsigned>(rows < cap ? rows : cap);
}

// ---- softmax ----

// One thread per row, float arithmetic in the CPU's order.
__global__ void softmax_fwd_thread(bool log, int64_t rows, int64_t D, int64_t inner, const float* __restrict__ x,
                                   float* __restrict__ y) {
  for (int64_t r = thread_start(); r < rows; r += grid_stride()) {
    const int64_t o = r / inner, in = r % inner, base = o * D * inner + in;
    const float* xr = x + base;
    float* yr = y + base;
    float mx = -INFINITY;
    for (int64_t d = 0; d < D; ++d) mx = MaxOp()(mx, xr[d * inner]);
    float sum = 0.0f;
    for (int64_t d = 0; d < D; ++d) sum += expf(xr[d * inner] - mx);
    if (log) {
      const float lse = mx + logf(sum);
      for (int64_t d = 0; d < D; ++d) yr[d * inner] = xr[d * inner] - lse;
    } else {
      for (int64_t d = 0; d < D; ++d) yr[d * inner] = expf(xr[d * inner] - mx) / sum;
    }
  }
}

// One block per row (grid-stride over rows; the loop bound is uniform in the block).
__global__ void softmax_fwd_block(bool log, int64_t rows, int64_t D, int64_t inner, const float* __restrict__ x,
                                  float* __restrict__ y) {
  __shared__ float smf[32];
  __shared__ double smd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r / inner, in = r % inner, base = o * D * inner + in;
    const float* xr = x + base;
    float* yr = y + base;
    float mx = -INFINITY;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) mx = MaxOp()(mx, xr[d * inner]);
    mx = block_reduce(mx, smf, MaxOp(), -INFINITY);
    double s = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) s += static_cast<double>(expf(xr[d * inner] - mx));
    const float sum = static_cast<float>(block_reduce(s, smd, SumOp(), 0.0));
    if (log) {
      const float lse = mx + logf(sum);
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d * inner] = xr[d * inner] - lse;
    } else {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d * inner] = expf(xr[d * inner] - mx) / sum;
    }
  }
}

__global__ void softmax_bwd_thread(bool log, int64_t rows, int64_t D, int64_t inner, const float* __restrict__ y,
                                   const float* __restrict__ dy, float* __restrict__ dx) {
  for (int64_t r = thread_start(); r < rows; r += grid_stride()) {
    const int64_t o = r / inner, in = r % inner, base = o * D * inner + in;
    float acc = 0.0f;
    if (log) {
      for (int64_t d = 0; d < D; ++d) acc += dy[base + d * inner];
      for (int64_t d = 0; d < D; ++d) {
        const int64_t k = base + d * inner;
        dx[k] = dy[k] - expf(y[k]) * acc;
      }
    } else {
      for (int64_t d = 0; d < D; ++d) acc += dy[base + d * inner] * y[base + d * inner];
      for (int64_t d = 0; d < D; ++d) {
        const int64_t k = base + d * inner;
        dx[k] = y[k] * (dy[k] - acc);
      }
    }
  }
}

__global__ void softmax_bwd_block(bool log, int64_t rows, int64_t D, int64_t inner, const float* __restrict__ y,
                                  const float* __restrict__ dy, float* __restrict__ dx) {
  __shared__ double smd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r / inner, in = r % inner, base = o * D * inner + in;
    double a = 0.0;
    if (log) {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) a += static_cast<double>(dy[base + d * inner]);
    } else {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        const int64_t k = base + d * inner;
        a += static_cast<double>(dy[k]) * static_cast<double>(y[k]);
      }
    }
    const float acc = static_cast<float>(block_reduce(a, smd, SumOp(), 0.0));
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const int64_t k = base + d * inner;
      dx[k] = log ? dy[k] - expf(y[k]) * acc : y[k] * (dy[k] - acc);
    }
  }
}

// ---- cross entropy ----

struct CeRow {
  double mx, s;       // row max and sum of exp(z - mx): p = exp(z - mx) / s
  double wy;          // weight of the target class
  double nll;         // wy * (lse - z[target])
  double smooth;      // sum_c w[c] * (lse - z[c])
};

__global__ void ce_rows_kernel(int64_t N, int64_t C, const float* __restrict__ logits,
                               const int64_t* __restrict__ target, const float* __restrict__ weight,
                               CeRow* __restrict__ rows, int* __restrict__ bad) {
  __shared__ double smd[32];
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int64_t t = target[i];
    if (t < 0 || t >= C) {  // uniform in the block
      if (threadIdx.x == 0) {
        *bad = 1;
        rows[i] = CeRow{0.0, 1.0, 0.0, 0.0, 0.0};
      }
      continue;
    }
    const float* z = logits + i * C;
    double mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = MaxOp()(mx, static_cast<double>(z[c]));
    mx = block_reduce(mx, smd, MaxOp(), static_cast<double>(-INFINITY));
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += exp(static_cast<double>(z[c]) - mx);
    s = block_reduce(s, smd, SumOp(), 0.0);
    const double lse = mx + ::log(s);
    double sm = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      sm += (weight ? static_cast<double>(weight[c]) : 1.0) * (lse - static_cast<double>(z[c]));
    sm = block_reduce(sm, smd, SumOp(), 0.0);
    if (threadIdx.x == 0) {
      const double wy = weight ? static_cast<double>(weight[t]) : 1.0;
      rows[i] = CeRow{mx, s, wy, wy * (lse - static_cast<double>(z[t])), sm};
    }
  }
}

// One block: totals over samples (and sum_c w[c]) in fixed order; writes the loss and
// tot = {W, sum_c w[c]} for the dlogits kernel.
__global__ void ce_total_kernel(int64_t N, int64_t C, const CeRow* __restrict__ rows,
                                const float* __restrict__ weight, double eps, double eps_c,
                                float* __restrict__ loss, double* __restrict__ tot) {
  __shared__ double smd[32];
  double W = 0.0, nll = 0.0, smooth = 0.0, wall = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    W += rows[i].wy;
    nll += rows[i].nll;
    smooth += rows[i].smooth;
  }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) wall += weight ? static_cast<double>(weight[c]) : 1.0;
  W = block_reduce(W, smd, SumOp(), 0.0);
  nll = block_reduce(nll, smd, SumOp(), 0.0);
  smooth = block_reduce(smooth, smd, SumOp(), 0.0);
  wall = block_reduce(wall, smd, SumOp(), 0.0);
  if (threadIdx.x == 0) {
    *loss = static_cast<float>(((1.0 - eps) * nll + eps_c * smooth) / W);
    tot[0] = W;
    tot[1] = wall;
  }
}

__global__ void ce_grad_kernel(int64_t N, int64_t C, const float* __restrict__ logits,
                               const int64_t* __restrict__ target, const float* __restrict__ weight, double eps,
                               double eps_c, double grad_scale, const CeRow* __restrict__ rows,
                               const double* __restrict__ tot, float* __restrict__ dlogits) {
  const double k = grad_scale / tot[0];
  const double wall = tot[1];
  const int64_t total = N * C;
  for (int64_t e = thread_start(); e < total; e += grid_stride()) {
    const int64_t i = e / C, c = e - i * C;
    const int64_t t = target[i];
    if (t < 0 || t >= C) {  // result unspecified (the call returns false); keep it finite
      dlogits[e] = 0.0f;
      continue;
    }
    const CeRow r = rows[i];
    const double p = exp(static_cast<double>(logits[e]) - r.mx) / r.s;
    const double onehot = c == t ? 1.0 : 0.0;
    const double wc = weight ? static_cast<double>(weight[c]) : 1.0;
    const double g = (1.0 - eps) * r.wy * (p - onehot) + eps_c * (wall * p - wc);
    dlogits[e] = static_cast<float>(k * g);
  }
}

// ---- bce / mse ----

// softplus(x) = log(1 + exp(x)) without overflow; sigmoid split by sign (as the CPU).
__device__ __forceinline__ double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
__device__ __forceinline__ double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

__global__ void bce_kernel(int64_t n, int64_t L, const float* __restrict__ x, const float* __restrict__ y,
                           const float* __restrict__ pos_weight, double k, float* __restrict__ dx,
                           float* __restrict__ dy, double* __restrict__ part) {
  __shared__ double smd[32];
  double acc = 0.0;
  for (int64_t e = thread_start(); e < n; e += grid_stride()) {
    const double pw = pos_weight ? static_cast<double>(pos_weight[e % L]) : 1.0;
    const double xi = x[e], yi = y[e];
    const double sp_neg = softplus(-xi), sp_pos = softplus(xi);
    acc += pw * yi * sp_neg + (1.0 - yi) * sp_pos;
    if (dx) {
      const double s = sigmoid(xi);
      dx[e] = static_cast<float>(k * (pw * yi * (s - 1.0) + (1.0 - yi) * s));
    }
    if (dy) dy[e] = static_cast<float>(k * (pw * sp_neg - sp_pos));
  }
  acc = block_reduce(acc, smd, SumOp(), 0.0);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void mse_kernel(int64_t n, const float* __restrict__ a, const float* __restrict__ b, double k,
                           float* __restrict__ da, float* __restrict__ db, double* __restrict__ part) {
  __shared__ double smd[32];
  double acc = 0.0;
  for (int64_t e = thread_start(); e < n; e += grid_stride()) {
    const double d = static_cast<double>(a[e]) - static_cast<double>(b[e]);
    acc += d * d;
    if (da) da[e] = static_cast<float>(k * d);
    if (db) db[e] = static_cast<float>(-k * d);
  }
  acc = block_reduce(acc, smd, SumOp(), 0.0);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// One block: loss = (sum of the partials, in fixed order) / n.
__global__ void mean_of_partials(int64_t n_parts, const double* __restrict__ part, double n,
                                 float* __restrict__ loss) {
  __shared__ double smd[32];
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < n_parts; j += blockDim.x) acc += part[j];
  acc = block_reduce(acc, smd, SumOp(), 0.0);
  if (threadIdx.x == 0) *loss = static_cast<float>(acc / n);
}

}  // namespace

void softmax_forward(Context& ctx, bool log, int64_t outer, int64_t D, int64_t inner, const float* x, float* y) {
  if (outer <= 0 || D <= 0 || inner <= 0) return;
  const int64_t rows = outer * inner;
  if (D <= kSmallRow) {
    softmax_fwd_thread<<<grid_for(ctx, rows, kBlock), kBlock, 0, ctx.stream>>>(log, rows, D, inner, x, y);
  } else {
    const int threads = row_threads(D);
    softmax_fwd_block<<<row_grid(ctx, rows, threads), threads, 0, ctx.stream>>>(log, rows, D, inner, x, y);
  }
  CXR_LAUNCH_CHECK(ctx, log ? "log_softmax_forward" : "softmax_forward");
}

void softmax_backward(Context& ctx, bool log, int64_t outer, int64_t D, int64_t inner, const float* y,
                      const float* dy, float* dx) {
  if (outer <= 0 || D <= 0 || inner <= 0) return;
  const int64_t rows = outer * inner;
  if (D <= kSmallRow) {
    softmax_bwd_thread<<<grid_for(ctx, rows, kBlock), kBlock, 0, ctx.stream>>>(log, rows, D, inner, y, dy, dx);
  } else {
    const int threads = row_threads(D);
    softmax_bwd_block<<<row_grid(ctx, rows, threads), threads, 0, ctx.stream>>>(log, rows, D, inner, y, dy, dx);
  }
  CXR_LAUNCH_CHECK(ctx, log ? "log_softmax_backward" : "softmax_backward");
}

bool cross_entropy(Context& ctx, int64_t N, int64_t C, const float* logits, const int64_t* target,
                   const float* weight, double eps, float* loss, float* dlogits, float grad_scale) {
  if (N < 0) N = 0;
  if (C < 0) C = 0;
  const double eps_c = eps / static_cast<double>(C);  // as the CPU's eps / C
  DeviceBuffer rows(ctx, static_cast<size_t>(N > 0 ? N : 1) * sizeof(CeRow));
  DeviceBuffer tot(ctx, 2 * sizeof(double));
  DeviceBuffer bad(ctx, sizeof(int));
  CXR_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0, sizeof(int), ctx.stream));
  if (N > 0) {
    const int threads = row_threads(C);
    ce_rows_kernel<<<row_grid(ctx, N, threads), threads, 0, ctx.stream>>>(N, C, logits, target, weight,
                                                                          rows.as<CeRow>(), bad.as<int>());
    CXR_LAUNCH_CHECK(ctx, "cross_entropy (rows)");
  }
  // N == 0 gives W = 0 and a NaN loss, like the CPU.
  ce_total_kernel<<<1, kBlock, 0, ctx.stream>>>(N, C, rows.as<CeRow>(), weight, eps, eps_c, loss,
                                                tot.as<double>());
  CXR_LAUNCH_CHECK(ctx, "cross_entropy (total)");
  if (dlogits && N * C > 0) {
    ce_grad_kernel<<<grid_for(ctx, N * C, kBlock), kBlock, 0, ctx.stream>>>(
        N, C, logits, target, weight, eps, eps_c, static_cast<double>(grad_scale), rows.as<CeRow>(),
        tot.as<double>(), dlogits);
    CXR_LAUNCH_CHECK(ctx, "cross_entropy (dlogits)");
  }
  int host_bad = 0;
  CXR_CUDA_CHECK(cudaMemcpyAsync(&host_bad, bad.get(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream));
  CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return host_bad == 0;
}

void bce_with_logits(Context& ctx, int64_t n, int64_t L, const float* x, const float* y, const float* pos_weight,
                     float* loss, float* dx, float* dy, float grad_scale) {
  if (n < 0) n = 0;
  if (L < 1) L = 1;
  const unsigned grid = n > 0 ? grid_for(ctx, n, kBlock) : 0;
  DeviceBuffer part(ctx, static_cast<size_t>(grid > 0 ? grid : 1) * sizeof(double));
  if (n > 0) {
    const double k = static_cast<double>(grad_scale) / static_cast<double>(n);
    bce_kernel<<<grid, kBlock, 0, ctx.stream>>>(n, L, x, y, pos_weight, k, dx, dy, part.as<double>());
    CXR_LAUNCH_CHECK(ctx, "bce_with_logits (terms)");
  }
  // n == 0 gives 0/0 = NaN, like the CPU.
  mean_of_partials<<<1, kBlock, 0, ctx.stream>>>(grid, part.as<double>(), static_cast<double>(n), loss);
  CXR_LAUNCH_CHECK(ctx, "bce_with_logits (mean)");
}

void mse(Context& ctx, int64_t n, const float* a, const float* b, float* loss, float* da, float* db,
         float grad_scale) {
  if (n < 0) n = 0;
  const unsigned grid = n > 0 ? grid_for(ctx, n, kBlock) : 0;
  DeviceBuffer part(ctx, static_cast<size_t>(grid > 0 ? grid : 1) * sizeof(double));
  if (n > 0) {
    const double k = 2.0 * static_cast<double>(grad_scale) / static_cast<double>(n);
    mse_kernel<<<grid, kBlock, 0, ctx.stream>>>(n, a, b, k, da, db, part.as<double>());
    CXR_LAUNCH_CHECK(ctx, "mse (terms)");
  }
  mean_of_partials<<<1, kBlock, 0, ctx.stream>>>(grid, part.as<double>(), static_cast<double>(n), loss);
  CXR_LAUNCH_CHECK(ctx, "mse (mean)");
}

}  // namespace cxr::cuda
