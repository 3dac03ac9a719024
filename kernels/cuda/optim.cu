// CUDA fused multi-tensor optimizer updates (contract: kernels/optim.h, the math of
// kernels/cpu/optim.cpp in float) and a deterministic sum of squares over many tensors.
//
// Parallelisation: the non-empty tensors of a call are packed, up to kMaxSlots at a
// time, into a by-value __grid_constant__ kernel parameter (pointers, sizes and the
// prefix sum of their block counts). Each 256-thread block updates one kChunk-element
// chunk of one tensor, finding its tensor by a linear search of the prefix; a call
// needs one launch per kMaxSlots tensors. sum_of_squares_multi writes one double
// partial per block (fixed-order tree in shared memory), then a single-block kernel
// adds the partials in fixed order, and the result is copied to the host.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"
#include "runtime/error.h"

namespace cxr::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int kMaxSlots = 48;
constexpr int64_t kChunk = 16384;            // elements per block
constexpr int64_t kMaxBlocks = int64_t(1) << 30;  // per launch (grid.x limit is 2^31-1)

struct SqSlot {
  const float* p;
  int64_t n;
};

// Tensors of one launch: block b handles chunk b - block_start[s] of slot s, where
// block_start[s] <= b < block_start[s+1].
template <typename Slot>
struct Pack {
  Slot slot[kMaxSlots];
  int block_start[kMaxSlots + 1];
  int count;
};
static_assert(sizeof(Pack<AdamSlot>) + 64 <= 4096, "kernel parameter struct must stay under 4 KB");

// The slot and element range [begin, end) of this block.
template <typename Slot>
__device__ __forceinline__ int find_chunk(const Pack<Slot>& pk, int64_t& begin, int64_t& end) {
  const int b = static_cast<int>(blockIdx.x);
  int s = 0;
  while (s + 1 < pk.count && b >= pk.block_start[s + 1]) ++s;
  begin = static_cast<int64_t>(b - pk.block_start[s]) * kChunk;
  const int64_t e = begin + kChunk, n = pk.slot[s].n;
  end = e < n ? e : n;
  return s;
}

// Applies op(slot, i) to every element of every slot of the pack.
template <typename Slot, typename Op>
__global__ void __launch_bounds__(kBlock) multi_kernel(const __grid_constant__ Pack<Slot> pk, Op op) {
  int64_t begin, end;
  const int s = find_chunk(pk, begin, end);
  const Slot slot = pk.slot[s];
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) op(slot, i);
}

struct SgdOp {
  float lr, mom, wd, damp;
  bool use_momentum, nesterov, first_step;
  __device__ void operator()(const SgdSlot& s, int64_t i) const {
    const float p = s.p[i];
    float d = s.g[i] + wd * p;
    if (use_momentum) {
      const float b = first_step ? d : mom * s.buf[i] + damp * d;
      s.buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    s.p[i] = p - lr * d;
  }
};

struct AdamOp {
  float step_size, inv_sqrt_bc2, b1, b2, eps, wd, decay;
  bool decoupled;
  __device__ void operator()(const AdamSlot& s, int64_t i) const {
    float p = s.p[i], g = s.g[i];
    if (decoupled) p *= decay;
    else g += wd * p;
    const float m = b1 * s.m[i] + (1.0f - b1) * g;
    const float v = b2 * s.v[i] + (1.0f - b2) * g * g;
    s.m[i] = m;
    s.v[i] = v;
    s.p[i] = p - step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
  }
};

struct EmaOp {
  float d, one_minus;
  __device__ void operator()(const EmaSlot& s, int64_t i) const { s.e[i] = d * s.e[i] + one_minus * s.p[i]; }
};

// One double partial per block: sum of squares of its chunk, fixed-order tree.
__global__ void __launch_bounds__(kBlock) sumsq_kernel(const __grid_constant__ Pack<SqSlot> pk, double* partial) {
  __shared__ double sh[kBlock];
  int64_t begin, end;
  const int s = find_chunk(pk, begin, end);
  const float* p = pk.slot[s].p;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) {
    const double v = static_cast<double>(p[i]);
    acc += v * v;
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
#pragma unroll
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// Single block: out[0] = sum of partial[0, n) in a fixed order.
__global__ void __launch_bounds__(kBlock) sum_partials_kernel(int64_t n, const double* partial, double* out) {
  __shared__ double sh[kBlock];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kBlock) acc += partial[i];
  sh[threadIdx.x] = acc;
  __syncthreads();
#pragma unroll
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = sh[0];
}

inline int64_t blocks_for(int64_t n) { return (n + kChunk - 1) / kChunk; }

// Packs the non-empty slots and calls launch(pack, blocks, first_block) for each full
// pack (first_block: blocks of the earlier packs of this call).
template <typename Slot, typename Launch>
void for_each_pack(const std::vector<Slot>& slots, Launch&& launch) {
  Pack<Slot> pk{};
  int64_t blocks = 0, done = 0;
  for (const Slot& s : slots) {
    if (s.n <= 0) continue;
    const int64_t nb = blocks_for(s.n);
    CXR_CHECK(nb <= kMaxBlocks, "cuda optimizer: tensor of ", s.n, " elements is too large");
    if (pk.count == kMaxSlots || blocks + nb > kMaxBlocks) {
      launch(pk, blocks, done);
      done += blocks;
      pk.count = 0;
      blocks = 0;
    }
    pk.slot[pk.count] = s;
    pk.block_start[pk.count] = static_cast<int>(blocks);
    blocks += nb;
    ++pk.count;
    pk.block_start[pk.count] = static_cast<int>(blocks);
  }
  if (pk.count > 0) launch(pk, blocks, done);
}

template <typename Slot, typename Op>
void run_multi(Context& ctx, const std::vector<Slot>& slots, const Op& op, const char* what) {
  for_each_pack(slots, [&](const Pack<Slot>& pk, int64_t blocks, int64_t) {
    multi_kernel<Slot, Op><<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream>>>(pk, op);
    CXR_LAUNCH_CHECK(ctx, what);
  });
}

}  // namespace

void sgd_update_multi(Context& ctx, const cpu::SgdHyper& h, bool first_step, const std::vector<SgdSlot>& slots) {
  SgdOp op{};
  op.lr = static_cast<float>(h.lr);
  op.mom = static_cast<float>(h.momentum);
  op.wd = static_cast<float>(h.weight_decay);
  op.damp = static_cast<float>(1.0 - h.dampening);
  op.use_momentum = h.momentum != 0;
  op.nesterov = h.nesterov;
  op.first_step = first_step;
  run_multi(ctx, slots, op, "sgd_update_multi");
}

void adam_update_multi(Context& ctx, const cpu::AdamHyper& h, int64_t step, const std::vector<AdamSlot>& slots) {
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  AdamOp op{};
  op.step_size = static_cast<float>(h.lr / bc1);
  op.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  op.b1 = static_cast<float>(h.beta1);
  op.b2 = static_cast<float>(h.beta2);
  op.eps = static_cast<float>(h.eps);
  op.wd = static_cast<float>(h.weight_decay);
  op.decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
  op.decoupled = h.decoupled;
  run_multi(ctx, slots, op, "adam_update_multi");
}

void ema_update_multi(Context& ctx, double decay, const std::vector<EmaSlot>& slots) {
  EmaOp op{static_cast<float>(decay), static_cast<float>(1.0 - decay)};
  run_multi(ctx, slots, op, "ema_update_multi");
}

double sum_of_squares_multi(Context& ctx, const std::vector<std::pair<const float*, int64_t>>& tensors) {
  std::vector<SqSlot> slots;
  slots.reserve(tensors.size());
  int64_t total = 0;
  for (const auto& t : tensors) {
    if (t.second <= 0) continue;
    slots.push_back({t.first, t.second});
    total += blocks_for(t.second);
  }
  if (total == 0) return 0.0;
  DeviceBuffer buf(ctx, sizeof(double) * static_cast<size_t>(total + 1));  // partials, then the result
  double* partial = buf.as<double>();
  for_each_pack(slots, [&](const Pack<SqSlot>& pk, int64_t blocks, int64_t first_block) {
    sumsq_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream>>>(pk, partial + first_block);
    CXR_LAUNCH_CHECK(ctx, "sum_of_squares_multi");
  });
  sum_partials_kernel<<<1, kBlock, 0, ctx.stream>>>(total, partial, partial + total);
  CXR_LAUNCH_CHECK(ctx, "sum_of_squares_multi (final sum)");
  double result = 0.0;
  CXR_CUDA_CHECK(cudaMemcpyAsync(&result, partial + total, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
  CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return result;
}

}  // namespace cxr::cuda
