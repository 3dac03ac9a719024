// CUDA elementwise ops (contracts: kernels/elementwise.h and kernels/cuda/ops.h):
// broadcasting binary ops, axpby / mul / add_inplace / scale, channel bias, reduce_sum
// to a shape, concat and its backward, dropout (same Philox mask as the CPU), dtype
// conversion and scaling by a device scalar.
//
// Parallelisation: pointwise ops are grid-stride loops (256 threads, int64 indices).
// Kernels that decompose a flat index into coordinates use 32-bit index arithmetic
// when every offset fits, 64-bit otherwise; shapes are collapsed on the host first
// (size-1 dims dropped, mergeable neighbours merged) so few divisions remain.
// reduce_sum is deterministic: with the reduced dims innermost, one block per (output,
// chunk) with a fixed-order shared-memory tree in double; otherwise one thread per
// (output, chunk) summing sequentially in double. When the reduced range is split in
// chunks, the double partials go to a scratch buffer and a second kernel adds them in
// chunk order. Concat copies each input with one strided row-copy kernel.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;

inline bool fits32(int64_t n) { return n <= static_cast<int64_t>(INT32_MAX); }

#define CXR_GRID_STRIDE(i, n)                                                                    \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);         \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------- binary broadcast

// Collapsed broadcast geometry: dims [0, nd), dim nd-1 innermost.
struct BcastGeom {
  int nd;
  int64_t size[cpu::kBcastDims];
  int64_t sa[cpu::kBcastDims];
  int64_t sb[cpu::kBcastDims];
};

template <typename I>
__global__ void binary_broadcast_kernel(cpu::BinOp op, BcastGeom g, int64_t n, const float* a, const float* b,
                                        float* y) {
  CXR_GRID_STRIDE(i, n) {
    I rem = static_cast<I>(i), ao = 0, bo = 0;
#pragma unroll
    for (int d = cpu::kBcastDims - 1; d >= 1; --d) {
      if (d < g.nd) {
        const I s = static_cast<I>(g.size[d]);
        const I c = rem % s;
        rem /= s;
        ao += c * static_cast<I>(g.sa[d]);
        bo += c * static_cast<I>(g.sb[d]);
      }
    }
    ao += rem * static_cast<I>(g.sa[0]);  // outermost coordinate: no division needed
    bo += rem * static_cast<I>(g.sb[0]);
    const float av = a[ao], bv = b[bo];
    float r;
    switch (op) {
      case cpu::BinOp::add: r = av + bv; break;
      case cpu::BinOp::sub: r = av - bv; break;
      case cpu::BinOp::mul: r = av * bv; break;
      default: r = av; break;
    }
    y[i] = r;
  }
}

// ---------------------------------------------------------------- pointwise

__global__ void axpby_kernel(int64_t n, float alpha, const float* a, float beta, const float* b, float* y) {
  CXR_GRID_STRIDE(i, n) y[i] = alpha * a[i] + beta * b[i];
}

__global__ void mul_kernel(int64_t n, const float* a, const float* b, float* y) {
  CXR_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

__global__ void add_inplace_kernel(int64_t n, const float* x, float* y) {
  CXR_GRID_STRIDE(i, n) y[i] += x[i];
}

__global__ void scale_kernel(int64_t n, float alpha, const float* x, float* y) {
  CXR_GRID_STRIDE(i, n) y[i] = alpha * x[i];
}

__global__ void scale_by_device_scalar_kernel(int64_t n, const float* g, float* dx) {
  const float s = *g;
  CXR_GRID_STRIDE(i, n) dx[i] *= s;
}

template <typename I>
__global__ void add_channel_bias_kernel(int64_t n, int64_t C, int64_t inner, const float* b, float* y) {
  const I c_ = static_cast<I>(C), in_ = static_cast<I>(inner);
  CXR_GRID_STRIDE(i, n) y[i] += b[(static_cast<I>(i) / in_) % c_];
}

// ---------------------------------------------------------------- reduce_sum

// Up to three collapsed dims (outer to inner) of the input: the kept or the reduced ones.
struct Dims3 {
  int n;
  int64_t size[3];
  int64_t stride[3];
};

struct ReduceGeom {
  Dims3 keep, red;
  int64_t out_n;    // number of outputs
  int64_t R;        // elements summed per output
  int64_t chunk;    // reduced elements per task
  int64_t nchunks;  // tasks per output
};

// Input offset of flat index `idx` over the dims of `d` (0 when d has no dims).
template <typename I>
__device__ __forceinline__ I dims_offset(const Dims3& d, I idx) {
  I off = 0;
#pragma unroll
  for (int k = 2; k >= 1; --k) {
    if (k < d.n) {
      const I s = static_cast<I>(d.size[k]);
      off += (idx % s) * static_cast<I>(d.stride[k]);
      idx /= s;
    }
  }
  if (d.n > 0) off += idx * static_cast<I>(d.stride[0]);
  return off;
}

// One block per task (output o, chunk c), task = c*out_n + o; tree in double.
template <typename I>
__global__ void __launch_bounds__(kBlock) reduce_block_kernel(ReduceGeom g, const float* x, float* y,
                                                              double* partial) {
  __shared__ double sh[kBlock];
  const int64_t tasks = g.out_n * g.nchunks;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t o = task % g.out_n, c = task / g.out_n;
    const I base = dims_offset<I>(g.keep, static_cast<I>(o));
    const int64_t r0 = c * g.chunk;
    const int64_t r1 = r0 + g.chunk < g.R ? r0 + g.chunk : g.R;
    double s = 0.0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += kBlock)
      s += static_cast<double>(x[base + dims_offset<I>(g.red, static_cast<I>(r))]);
    sh[threadIdx.x] = s;
    __syncthreads();
#pragma unroll
    for (int w = kBlock / 2; w > 0; w >>= 1) {
      if (static_cast<int>(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      if (partial) partial[task] = sh[0];
      else y[o] = static_cast<float>(sh[0]);
    }
    __syncthreads();  // sh is rewritten by the next task
  }
}

// One thread per task (output o, chunk c), task = c*out_n + o (adjacent threads read
// adjacent outputs); sequential double sum over the chunk with an odometer.
template <typename I>
__global__ void reduce_thread_kernel(ReduceGeom g, const float* x, float* y, double* partial) {
  const int64_t tasks = g.out_n * g.nchunks;
  CXR_GRID_STRIDE(task, tasks) {
    const int64_t o = task % g.out_n, c = task / g.out_n;
    const I base = dims_offset<I>(g.keep, static_cast<I>(o));
    const I r0 = static_cast<I>(c * g.chunk);
    const I r1 = static_cast<I>(c * g.chunk + g.chunk < g.R ? c * g.chunk + g.chunk : g.R);
    I cr[3] = {0, 0, 0}, off = 0;
    {
      I rem = r0;
#pragma unroll
      for (int k = 2; k >= 0; --k) {
        if (k < g.red.n) {
          const I s = static_cast<I>(g.red.size[k]);
          cr[k] = rem % s;
          rem /= s;
          off += cr[k] * static_cast<I>(g.red.stride[k]);
        }
      }
    }
    double s = 0.0;
    for (I r = r0; r < r1; ++r) {
      s += static_cast<double>(x[base + off]);
#pragma unroll
      for (int k = 2; k >= 0; --k) {
        if (k < g.red.n) {
          off += static_cast<I>(g.red.stride[k]);
          if (++cr[k] < static_cast<I>(g.red.size[k])) break;
          off -= cr[k] * static_cast<I>(g.red.stride[k]);
          cr[k] = 0;
        }
      }
    }
    if (partial) partial[task] = s;
    else y[o] = static_cast<float>(s);
  }
}

// y[o] = sum over chunks c (in order) of partial[c*out_n + o].
__global__ void reduce_finish_kernel(int64_t out_n, int64_t nchunks, const double* partial, float* y) {
  CXR_GRID_STRIDE(o, out_n) {
    double s = 0.0;
    for (int64_t c = 0; c < nchunks; ++c) s += partial[c * out_n + o];
    y[o] = static_cast<float>(s);
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------- concat

// dst[o*dst_pitch + k] = src[o*src_pitch + k] for o < rows, k < len.
template <typename I>
__global__ void copy_rows_kernel(int64_t rows, int64_t len, const float* src, int64_t src_pitch, float* dst,
                                 int64_t dst_pitch) {
  const int64_t n = rows * len;
  const I len_ = static_cast<I>(len), sp = static_cast<I>(src_pitch), dp = static_cast<I>(dst_pitch);
  CXR_GRID_STRIDE(j, n) {
    const I jj = static_cast<I>(j), o = jj / len_, k = jj - o * len_;
    dst[o * dp + k] = src[o * sp + k];
  }
}

void copy_rows(Context& ctx, int64_t rows, int64_t len, const float* src, int64_t src_pitch, float* dst,
               int64_t dst_pitch) {
  const int64_t n = rows * len;
  if (n == 0) return;
  const int64_t max_off = (rows - 1) * (src_pitch > dst_pitch ? src_pitch : dst_pitch) + len;
  if (fits32(max_off) && fits32(n))
    copy_rows_kernel<uint32_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(rows, len, src, src_pitch, dst, dst_pitch);
  else
    copy_rows_kernel<uint64_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(rows, len, src, src_pitch, dst, dst_pitch);
  CXR_LAUNCH_CHECK(ctx, "copy_rows_kernel");
}

// ---------------------------------------------------------------- dropout

// Thread per Philox block q: elements 4q .. 4q+3 share the counter base + q.
__global__ void dropout_kernel(int64_t n, float pf, float keep_scale, uint64_t seed, uint64_t base, const float* x,
                               float* y, float* mask) {
  const int64_t nq = (n + 3) / 4;
  CXR_GRID_STRIDE(q, nq) {
    const PhiloxBlock bits = philox4x32(seed, base + static_cast<uint64_t>(q), 0);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * q + k;
      if (i < n) {
        const bool keep = bits_to_uniform(bits.v[k]) >= pf;
        const float m = keep ? keep_scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
      }
    }
  }
}

// ---------------------------------------------------------------- convert

template <typename S, typename D>
__global__ void convert_kernel(int64_t n, const S* src, D* dst) {
  CXR_GRID_STRIDE(i, n) dst[i] = static_cast<D>(src[i]);
}

template <typename S>
void convert_from(Context& ctx, int64_t n, const S* src, int dst_dtype, void* dst) {
  const unsigned grid = grid_for(ctx, n);
  switch (dst_dtype) {
    case 0: convert_kernel<S, float><<<grid, kBlock, 0, ctx.stream>>>(n, src, static_cast<float*>(dst)); break;
    case 1: convert_kernel<S, double><<<grid, kBlock, 0, ctx.stream>>>(n, src, static_cast<double*>(dst)); break;
    case 2: convert_kernel<S, int64_t><<<grid, kBlock, 0, ctx.stream>>>(n, src, static_cast<int64_t*>(dst)); break;
    default: CXR_CHECK(false, "cuda::convert: unknown destination dtype code ", dst_dtype);
  }
  CXR_LAUNCH_CHECK(ctx, "convert_kernel");
}

size_t dtype_bytes(int code) { return code == 0 ? 4 : 8; }

}  // namespace

// ================================================================ public entry points

void binary_broadcast(Context& ctx, cpu::BinOp op, const cpu::Broadcast& bc, const float* a, const float* b,
                      float* y) {
  const int64_t n = bc.numel();
  if (n <= 0) return;
  BcastGeom g{};
  g.nd = 0;
  for (int d = 0; d < cpu::kBcastDims; ++d) {
    const int64_t s = bc.shape[d];
    if (s == 1) continue;
    if (g.nd > 0 && g.sa[g.nd - 1] == bc.a_stride[d] * s && g.sb[g.nd - 1] == bc.b_stride[d] * s) {
      g.size[g.nd - 1] *= s;  // the previous (outer) dim continues into this one
      g.sa[g.nd - 1] = bc.a_stride[d];
      g.sb[g.nd - 1] = bc.b_stride[d];
    } else {
      g.size[g.nd] = s;
      g.sa[g.nd] = bc.a_stride[d];
      g.sb[g.nd] = bc.b_stride[d];
      ++g.nd;
    }
  }
  if (g.nd == 0) {  // a single element
    g.nd = 1;
    g.size[0] = 1;
    g.sa[0] = g.sb[0] = 0;
  }
  int64_t max_a = 0, max_b = 0;  // largest offsets read from a and b
  for (int d = 0; d < g.nd; ++d) {
    max_a += (g.size[d] - 1) * g.sa[d];
    max_b += (g.size[d] - 1) * g.sb[d];
  }
  if (fits32(n) && fits32(max_a) && fits32(max_b))
    binary_broadcast_kernel<uint32_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(op, g, n, a, b, y);
  else
    binary_broadcast_kernel<uint64_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(op, g, n, a, b, y);
  CXR_LAUNCH_CHECK(ctx, "binary_broadcast_kernel");
}

void axpby(Context& ctx, int64_t n, float alpha, const float* a, float beta, const float* b, float* y) {
  if (n <= 0) return;
  axpby_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, alpha, a, beta, b, y);
  CXR_LAUNCH_CHECK(ctx, "axpby_kernel");
}

void mul(Context& ctx, int64_t n, const float* a, const float* b, float* y) {
  if (n <= 0) return;
  mul_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, a, b, y);
  CXR_LAUNCH_CHECK(ctx, "mul_kernel");
}

void add_inplace(Context& ctx, int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  add_inplace_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, x, y);
  CXR_LAUNCH_CHECK(ctx, "add_inplace_kernel");
}

void scale(Context& ctx, int64_t n, float alpha, const float* x, float* y) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, alpha, x, y);
  CXR_LAUNCH_CHECK(ctx, "scale_kernel");
}

void scale_by_device_scalar(Context& ctx, int64_t n, const float* g, float* dx) {
  if (n <= 0) return;
  scale_by_device_scalar_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, g, dx);
  CXR_LAUNCH_CHECK(ctx, "scale_by_device_scalar_kernel");
}

void add_channel_bias(Context& ctx, int64_t n, int64_t C, int64_t inner, const float* b, float* y) {
  if (n <= 0) return;
  CXR_CHECK(C > 0 && inner > 0, "cuda::add_channel_bias: C and inner must be positive, got C=", C,
            ", inner=", inner);
  if (fits32(n) && fits32(C) && fits32(inner))
    add_channel_bias_kernel<uint32_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, C, inner, b, y);
  else
    add_channel_bias_kernel<uint64_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, C, inner, b, y);
  CXR_LAUNCH_CHECK(ctx, "add_channel_bias_kernel");
}

void reduce_sum(Context& ctx, const int64_t in_shape[cpu::kBcastDims], const bool reduce[cpu::kBcastDims],
                const float* x, float* y) {
  int64_t in_n = 1, out_n = 1;
  for (int d = 0; d < cpu::kBcastDims; ++d) {
    in_n *= in_shape[d];
    if (!reduce[d]) out_n *= in_shape[d];
  }
  if (out_n == 0) return;
  if (in_n == 0) {  // summing over an empty dim: zeros
    CXR_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * static_cast<size_t>(out_n), ctx.stream));
    return;
  }
  const int64_t R = in_n / out_n;
  if (R == 1) {
    CXR_CUDA_CHECK(cudaMemcpyAsync(y, x, sizeof(float) * static_cast<size_t>(out_n), cudaMemcpyDeviceToDevice,
                                   ctx.stream));
    return;
  }
  // Collapse: drop size-1 dims, merge neighbours with the same flag (x is contiguous).
  int m = 0;
  int64_t msize[cpu::kBcastDims], mstride[cpu::kBcastDims];
  bool mred[cpu::kBcastDims];
  {
    int64_t stride = in_n;
    for (int d = 0; d < cpu::kBcastDims; ++d) {
      stride /= in_shape[d];  // contiguous stride of dim d
      if (in_shape[d] == 1) continue;
      if (m > 0 && mred[m - 1] == reduce[d]) {
        msize[m - 1] *= in_shape[d];
        mstride[m - 1] = stride;
      } else {
        msize[m] = in_shape[d];
        mstride[m] = stride;
        mred[m] = reduce[d];
        ++m;
      }
    }
  }
  ReduceGeom g{};
  for (int k = 0; k < m; ++k) {  // merged flags alternate, so each list has at most 3 dims
    Dims3& dst = mred[k] ? g.red : g.keep;
    dst.size[dst.n] = msize[k];
    dst.stride[dst.n] = mstride[k];
    ++dst.n;
  }
  g.out_n = out_n;
  g.R = R;
  const bool use32 = fits32(in_n);
  const bool inner_reduced = mred[m - 1];  // m >= 1 since R > 1
  const int64_t sms = ctx.num_sms();
  // Block per task when the reduced dims are innermost and long enough to fill a block;
  // otherwise thread per task (coalesced across adjacent outputs).
  const bool block_mode = inner_reduced && R > 32;
  int64_t nchunks;
  if (block_mode) {
    const int64_t want = ceil_div(sms * 8, out_n);  // about 8 blocks per SM in all
    const int64_t most = ceil_div(R, 4096);         // at least 4096 elements per block task
    nchunks = want < most ? want : most;
  } else {
    const int64_t want = ceil_div(sms * 2048, out_n);  // about 2048 threads per SM
    const int64_t most = ceil_div(R, 64);              // at least 64 elements per thread task
    nchunks = want < most ? want : most;
  }
  if (nchunks < 1) nchunks = 1;
  g.chunk = ceil_div(R, nchunks);
  g.nchunks = ceil_div(R, g.chunk);
  const int64_t tasks = out_n * g.nchunks;
  DeviceBuffer scratch;
  double* partial = nullptr;
  if (g.nchunks > 1) {
    scratch = DeviceBuffer(ctx, sizeof(double) * static_cast<size_t>(tasks));
    partial = scratch.as<double>();
  }
  if (block_mode) {
    const int64_t cap = sms * 32;
    const unsigned grid = static_cast<unsigned>(tasks < cap ? tasks : cap);
    if (use32) reduce_block_kernel<uint32_t><<<grid, kBlock, 0, ctx.stream>>>(g, x, y, partial);
    else reduce_block_kernel<uint64_t><<<grid, kBlock, 0, ctx.stream>>>(g, x, y, partial);
    CXR_LAUNCH_CHECK(ctx, "reduce_block_kernel");
  } else {
    if (use32) reduce_thread_kernel<uint32_t><<<grid_for(ctx, tasks), kBlock, 0, ctx.stream>>>(g, x, y, partial);
    else reduce_thread_kernel<uint64_t><<<grid_for(ctx, tasks), kBlock, 0, ctx.stream>>>(g, x, y, partial);
    CXR_LAUNCH_CHECK(ctx, "reduce_thread_kernel");
  }
  if (partial) {
    reduce_finish_kernel<<<grid_for(ctx, out_n), kBlock, 0, ctx.stream>>>(out_n, g.nchunks, partial, y);
    CXR_LAUNCH_CHECK(ctx, "reduce_finish_kernel");
  }
}

void concat(Context& ctx, int64_t outer, int64_t inner, int64_t n_inputs, const float* const* xs,
            const int64_t* sizes, float* y) {
  int64_t total = 0;
  for (int64_t i = 0; i < n_inputs; ++i) total += sizes[i];
  int64_t at = 0;
  for (int64_t i = 0; i < n_inputs; ++i) {
    const int64_t len = sizes[i] * inner;
    copy_rows(ctx, outer, len, xs[i], len, y + at, total * inner);
    at += len;
  }
}

void concat_backward(Context& ctx, int64_t outer, int64_t inner, int64_t n_inputs, const float* dy,
                     const int64_t* sizes, float* const* dxs) {
  int64_t total = 0;
  for (int64_t i = 0; i < n_inputs; ++i) total += sizes[i];
  int64_t at = 0;
  for (int64_t i = 0; i < n_inputs; ++i) {
    const int64_t len = sizes[i] * inner;
    if (dxs[i]) copy_rows(ctx, outer, len, dy + at, total * inner, dxs[i], len);
    at += len;
  }
}

void dropout_forward(Context& ctx, int64_t n, double p, uint64_t seed, uint64_t base, const float* x, float* y,
                     float* mask) {
  if (n <= 0) return;
  const float keep_scale = static_cast<float>(1.0 / (1.0 - p));
  const float pf = static_cast<float>(p);
  const int64_t nq = (n + 3) / 4;
  dropout_kernel<<<grid_for(ctx, nq), kBlock, 0, ctx.stream>>>(n, pf, keep_scale, seed, base, x, y, mask);
  CXR_LAUNCH_CHECK(ctx, "dropout_kernel");
}

void convert(Context& ctx, int64_t n, int src_dtype, const void* src, int dst_dtype, void* dst) {
  CXR_CHECK(src_dtype >= 0 && src_dtype <= 2 && dst_dtype >= 0 && dst_dtype <= 2,
            "cuda::convert: unknown dtype codes ", src_dtype, " -> ", dst_dtype);
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    CXR_CUDA_CHECK(cudaMemcpyAsync(dst, src, dtype_bytes(src_dtype) * static_cast<size_t>(n),
                                   cudaMemcpyDeviceToDevice, ctx.stream));
    return;
  }
  switch (src_dtype) {
    case 0: convert_from(ctx, n, static_cast<const float*>(src), dst_dtype, dst); break;
    case 1: convert_from(ctx, n, static_cast<const double*>(src), dst_dtype, dst); break;
    default: convert_from(ctx, n, static_cast<const int64_t*>(src), dst_dtype, dst); break;
  }
}

}  // namespace cxr::cuda

#undef CXR_GRID_STRIDE
