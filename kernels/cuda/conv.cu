// 2-D convolution on the GPU (same contract as kernels/conv.h: NCHW, cross-correlation,
// groups, stride, padding, dilation; outputs assigned, never accumulated).
//
// The convolutions themselves are cuDNN's legacy API (cudnnConvolutionForward,
// ...BackwardData, ...BackwardFilter); the bias add and the bias gradient are small
// kernels here (the bias gradient is a fixed-order reduction in double, no atomics).
//
// Algorithm choice, once per (shape, kind, TF32, deterministic) and cached in
// ctx.conv_algos:
//  - normal mode: cudnnFind*AlgorithmEx benchmarks the candidates on the real buffers
//    (the output is overwritten, which is fine: the real call follows) with a workspace
//    of at most min(1 GiB, free memory / 4); the fastest usable result wins;
//  - deterministic mode: cuDNN's heuristic ranking (cudnnGet*Algorithm_v7), which does
//    not depend on timing, so every run picks the same algorithm; results that are not
//    CUDNN_DETERMINISTIC (and the atomics-based BWD_DATA_ALGO_0, BWD_FILTER_ALGO_0/3)
//    are skipped; workspace cap min(1 GiB, device memory / 8).
//  Without TF32 the descriptor's math type is CUDNN_FMA_MATH (no tensor cores) and
//  tensor-op results are refused; CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (fp16 down-
//  conversion) is always refused.
//
// cuDNN tensors are limited to 2^31 elements, so a large batch is processed in chunks of
// images (the weight gradient accumulates the chunks in order with beta = 1, which is
// still deterministic). The algorithms of every chunk size are chosen before the first
// chunk runs, because a Find overwrites the output.
#include <algorithm>
#include <climits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

bool ConvAlgoKey::operator<(const ConvAlgoKey& o) const {
  for (int i = 0; i < 16; ++i)
    if (v[i] != o.v[i]) return v[i] < o.v[i];
  return std::tie(kind, tf32, deterministic) < std::tie(o.kind, o.tf32, o.deterministic);
}

namespace {

using cpu::Conv2dShape;

enum Kind : int { kFwd = 0, kBwdData = 1, kBwdFilter = 2 };
const char* const kOpName[3] = {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"};
constexpr size_t kMaxWorkspace = size_t(1) << 30;

std::string shape_str(int kind, const Conv2dShape& s) {
  return detail::cat(kOpName[kind], " N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " K=", s.K, " R=", s.R,
                     " S=", s.S, " stride=", s.stride_h, "x", s.stride_w, " pad=", s.pad_h, "x", s.pad_w,
                     " dil=", s.dil_h, "x", s.dil_w, " groups=", s.groups);
}

[[noreturn]] void fail_cudnn(cudnnStatus_t st, int kind, const Conv2dShape& s, const char* expr, const char* file,
                             int line) {
  const std::string what = shape_str(kind, s) + ": " + expr;
  throw_cudnn(st, what.c_str(), file, line);
}

// Like CXR_CUDNN_CHECK, with the op and the shape in the message.
#define CONV_CUDNN_CHECK(kind, s, expr)                                  \
  do {                                                                   \
    const cudnnStatus_t cxr_cs_ = (expr);                                \
    if (cxr_cs_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                    \
      fail_cudnn(cxr_cs_, (kind), (s), #expr, __FILE__, __LINE__);       \
  } while (0)

// ---- RAII descriptors ----
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { CXR_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { (void)cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { CXR_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { (void)cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { CXR_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { (void)cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// The descriptors of the problem for a chunk of `nb` images: x (nb, C, H, W),
// y (nb, K, P, Q), w (K, C/groups, R, S). All sizes were checked to fit in int.
struct ConvDescs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  ConvDescs(int kind, const Conv2dShape& s, int64_t nb) {
    auto i = [](int64_t v) { return static_cast<int>(v); };
    CONV_CUDNN_CHECK(kind, s, cudnnSetTensor4dDescriptor(x.d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(nb), i(s.C),
                                                         i(s.H), i(s.W)));
    CONV_CUDNN_CHECK(kind, s, cudnnSetTensor4dDescriptor(y.d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(nb), i(s.K),
                                                         i(s.P()), i(s.Q())));
    CONV_CUDNN_CHECK(kind, s, cudnnSetFilter4dDescriptor(w.d, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, i(s.K),
                                                         i(s.C / s.groups), i(s.R), i(s.S)));
    CONV_CUDNN_CHECK(kind, s, cudnnSetConvolution2dDescriptor(conv.d, i(s.pad_h), i(s.pad_w), i(s.stride_h),
                                                              i(s.stride_w), i(s.dil_h), i(s.dil_w),
                                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CONV_CUDNN_CHECK(kind, s, cudnnSetConvolutionGroupCount(conv.d, i(s.groups)));
  }
};

// The buffers of one call (or one chunk). fwd: x, w -> out = y; bwd data: y = dy, w ->
// out = dx; bwd filter: x, y = dy -> out = dw. Unused inputs are null.
struct Bufs {
  const float* x;
  const float* w;
  const float* y;
  float* out;
};

// One algorithm candidate, whichever kind produced it.
struct Candidate {
  int algo;
  cudnnStatus_t status;
  size_t memory;
  cudnnDeterminism_t determinism;
  cudnnMathType_t math;
};
template <class Perf>
std::vector<Candidate> to_candidates(const std::vector<Perf>& perf, int n) {
  std::vector<Candidate> out;
  for (int i = 0; i < n && i < static_cast<int>(perf.size()); ++i)
    out.push_back({static_cast<int>(perf[i].algo), perf[i].status, perf[i].memory, perf[i].determinism,
                   perf[i].mathType});
  return out;
}

int algo_count(int kind) {
  if (kind == kFwd) return CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  if (kind == kBwdData) return CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
}

// Algorithms documented as using atomics (never used in deterministic mode, whatever
// the determinism field says).
bool known_nondeterministic(int kind, int algo) {
  if (kind == kBwdData) return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
  if (kind == kBwdFilter)
    return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  return false;
}

// Workspace of `algo` under the math type currently set on d.conv; false when cuDNN
// does not support the algorithm for this problem.
bool workspace_of(Context& ctx, int kind, const ConvDescs& d, int algo, size_t* bytes) {
  *bytes = 0;
  cudnnStatus_t st;
  if (kind == kFwd)
    st = cudnnGetConvolutionForwardWorkspaceSize(ctx.cudnn, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                 static_cast<cudnnConvolutionFwdAlgo_t>(algo), bytes);
  else if (kind == kBwdData)
    st = cudnnGetConvolutionBackwardDataWorkspaceSize(ctx.cudnn, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                      static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), bytes);
  else
    st = cudnnGetConvolutionBackwardFilterWorkspaceSize(ctx.cudnn, d.x.d, d.y.d, d.conv.d, d.w.d,
                                                        static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), bytes);
  return st == CUDNN_STATUS_SUCCESS;
}

// The ranked candidates: benchmarked (find) or from cuDNN's heuristics.
std::vector<Candidate> rank_algos(Context& ctx, int kind, const Conv2dShape& s, const ConvDescs& d, const Bufs& b,
                                  bool find, size_t ws_bytes, void* ws) {
  int max_count = 0, n = 0;
  if (kind == kFwd) {
    CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionForwardAlgorithmMaxCount(ctx.cudnn, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_count, 1));
    if (find)
      CONV_CUDNN_CHECK(kind, s, cudnnFindConvolutionForwardAlgorithmEx(ctx.cudnn, d.x.d, b.x, d.w.d, b.w, d.conv.d,
                                                                       d.y.d, b.out, static_cast<int>(perf.size()), &n,
                                                                       perf.data(), ws, ws_bytes));
    else
      CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionForwardAlgorithm_v7(ctx.cudnn, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                                       static_cast<int>(perf.size()), &n, perf.data()));
    return to_candidates(perf, n);
  }
  if (kind == kBwdData) {
    CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionBackwardDataAlgorithmMaxCount(ctx.cudnn, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max_count, 1));
    if (find)
      CONV_CUDNN_CHECK(kind, s, cudnnFindConvolutionBackwardDataAlgorithmEx(
                                    ctx.cudnn, d.w.d, b.w, d.y.d, b.y, d.conv.d, d.x.d, b.out,
                                    static_cast<int>(perf.size()), &n, perf.data(), ws, ws_bytes));
    else
      CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.cudnn, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                                            static_cast<int>(perf.size()), &n,
                                                                            perf.data()));
    return to_candidates(perf, n);
  }
  CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(ctx.cudnn, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(max_count, 1));
  if (find)
    CONV_CUDNN_CHECK(kind, s, cudnnFindConvolutionBackwardFilterAlgorithmEx(
                                  ctx.cudnn, d.x.d, b.x, d.y.d, b.y, d.conv.d, d.w.d, b.out,
                                  static_cast<int>(perf.size()), &n, perf.data(), ws, ws_bytes));
  else
    CONV_CUDNN_CHECK(kind, s, cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.cudnn, d.x.d, d.y.d, d.conv.d, d.w.d,
                                                                            static_cast<int>(perf.size()), &n,
                                                                            perf.data()));
  return to_candidates(perf, n);
}

ConvAlgoChoice choose_algo(Context& ctx, int kind, const Conv2dShape& s, const ConvDescs& d, const Bufs& b) {
  const bool tf32 = ctx.use_tf32(), det = ctx.deterministic;
  const cudnnMathType_t search_math = tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  CONV_CUDNN_CHECK(kind, s, cudnnSetConvolutionMathType(d.conv.d, search_math));

  size_t cap = std::min(kMaxWorkspace, ctx.prop.totalGlobalMem / 8);
  std::vector<Candidate> cands;
  if (det) {
    cands = rank_algos(ctx, kind, s, d, b, false, 0, nullptr);
  } else {
    // Benchmark with as much workspace as the hungriest candidate wants, within limits.
    size_t want = 0, bytes = 0;
    for (int a = 0; a < algo_count(kind); ++a)
      if (workspace_of(ctx, kind, d, a, &bytes)) want = std::max(want, bytes);
    size_t free_b = 0, total_b = 0;
    CXR_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    cap = std::min({want, kMaxWorkspace, free_b / 4});
    DeviceBuffer ws;
    if (cap > 0) {
      try {
        ws = DeviceBuffer(ctx, cap);
      } catch (const OutOfMemory&) {
        cap = 0;  // benchmark only the algorithms that need no workspace
      }
    }
    cands = rank_algos(ctx, kind, s, d, b, true, cap, ws.get());
  }

  for (const Candidate& c : cands) {
    if (c.status != CUDNN_STATUS_SUCCESS) continue;
    if (det && (c.determinism != CUDNN_DETERMINISTIC || known_nondeterministic(kind, c.algo))) continue;
    if (c.math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
    if (!tf32 && c.math == CUDNN_TENSOR_OP_MATH) continue;
    const cudnnMathType_t math = tf32 ? c.math : CUDNN_FMA_MATH;
    CONV_CUDNN_CHECK(kind, s, cudnnSetConvolutionMathType(d.conv.d, math));
    size_t bytes = 0;
    if (!workspace_of(ctx, kind, d, c.algo, &bytes)) continue;
    bytes = std::max(bytes, c.memory);
    if (bytes > cap) continue;
    return {c.algo, static_cast<int>(math), bytes};
  }
  // Last resort: the general-purpose, deterministic GEMM-based algorithms.
  CONV_CUDNN_CHECK(kind, s, cudnnSetConvolutionMathType(d.conv.d, search_math));
  int fallback = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  if (kind == kBwdData) fallback = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  if (kind == kBwdFilter) fallback = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  size_t bytes = 0;
  if (workspace_of(ctx, kind, d, fallback, &bytes)) return {fallback, static_cast<int>(search_math), bytes};
  throw Error(detail::cat(shape_str(kind, s), ": no usable cuDNN algorithm (tf32=", tf32, ", deterministic=", det,
                          ", ", cands.size(), " candidates)"));
}

// The cached (or newly chosen) algorithm of `d` for a chunk of nb images; sets the
// chosen math type on d.conv.
ConvAlgoChoice prepare(Context& ctx, int kind, const Conv2dShape& s, int64_t nb, const ConvDescs& d, const Bufs& b) {
  ConvAlgoKey key;
  const int64_t vals[] = {nb,         s.C,        s.H,     s.W,     s.K,     s.R,     s.S,
                          s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dil_h, s.dil_w, s.groups};
  std::copy(std::begin(vals), std::end(vals), key.v);
  key.kind = kind;
  key.tf32 = ctx.use_tf32();
  key.deterministic = ctx.deterministic;
  ConvAlgoChoice c;
  {
    std::lock_guard<std::mutex> lock(ctx.algo_mutex);
    auto it = ctx.conv_algos.find(key);
    if (it == ctx.conv_algos.end()) it = ctx.conv_algos.emplace(key, choose_algo(ctx, kind, s, d, b)).first;
    c = it->second;
  }
  CONV_CUDNN_CHECK(kind, s, cudnnSetConvolutionMathType(d.conv.d, static_cast<cudnnMathType_t>(c.math_type)));
  return c;
}

void execute(Context& ctx, int kind, const Conv2dShape& s, const ConvDescs& d, const ConvAlgoChoice& c,
             const Bufs& b, void* ws, size_t ws_bytes, float beta) {
  const float alpha = 1.0f;
  if (kind == kFwd)
    CONV_CUDNN_CHECK(kind, s, cudnnConvolutionForward(ctx.cudnn, &alpha, d.x.d, b.x, d.w.d, b.w, d.conv.d,
                                                      static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, ws_bytes,
                                                      &beta, d.y.d, b.out));
  else if (kind == kBwdData)
    CONV_CUDNN_CHECK(kind, s, cudnnConvolutionBackwardData(ctx.cudnn, &alpha, d.w.d, b.w, d.y.d, b.y, d.conv.d,
                                                           static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws,
                                                           ws_bytes, &beta, d.x.d, b.out));
  else
    CONV_CUDNN_CHECK(kind, s, cudnnConvolutionBackwardFilter(ctx.cudnn, &alpha, d.x.d, b.x, d.y.d, b.y, d.conv.d,
                                                             static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws,
                                                             ws_bytes, &beta, d.w.d, b.out));
}

// Runs one convolution kind over the whole batch (N, C, H, W, K, P, Q all > 0).
void run_conv(Context& ctx, int kind, const Conv2dShape& s, const Bufs& b) {
  const int64_t P = s.P(), Q = s.Q(), CHW = s.C * s.H * s.W, KPQ = s.K * P * Q;
  const int64_t vals[] = {s.C, s.H, s.W, s.K, s.R, s.S, P, Q, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dil_h,
                          s.dil_w, s.groups};
  for (int64_t v : vals) CXR_CHECK(v <= INT_MAX, shape_str(kind, s), ": a size exceeds cuDNN's int range");
  CXR_CHECK(s.K * (s.C / s.groups) * s.R * s.S <= INT_MAX, shape_str(kind, s),
            ": the weight exceeds cuDNN's 2^31-element tensor limit");
  // Images per chunk so that each chunk's x and y stay within 2^31 elements.
  const int64_t per_chunk = INT_MAX / std::max(CHW, KPQ);
  CXR_CHECK(per_chunk >= 1, shape_str(kind, s), ": one image exceeds cuDNN's 2^31-element tensor limit");
  const int64_t nb = std::min(s.N, per_chunk), rem = s.N % nb;

  ConvDescs full(kind, s, nb);
  std::optional<ConvDescs> last;
  if (rem) last.emplace(kind, s, rem);
  const ConvAlgoChoice cf = prepare(ctx, kind, s, nb, full, b);
  ConvAlgoChoice cl;
  if (last) cl = prepare(ctx, kind, s, rem, *last, b);
  const size_t ws_bytes = std::max(cf.workspace, last ? cl.workspace : size_t(0));
  DeviceBuffer ws;
  if (ws_bytes > 0) {
    try {
      ws = DeviceBuffer(ctx, ws_bytes);
    } catch (const OutOfMemory& e) {
      throw OutOfMemory(detail::cat(shape_str(kind, s), ": cuDNN workspace of ", ws_bytes, " bytes: ", e.what()));
    }
  }
  for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
    const bool is_last = last && n0 + nb > s.N;
    Bufs cb = b;
    if (cb.x) cb.x += n0 * CHW;
    if (cb.y) cb.y += n0 * KPQ;
    if (kind == kFwd) cb.out += n0 * KPQ;
    if (kind == kBwdData) cb.out += n0 * CHW;
    // The weight gradient sums over images: later chunks accumulate, in order.
    const float beta = kind == kBwdFilter && n0 > 0 ? 1.0f : 0.0f;
    execute(ctx, kind, s, is_last ? *last : full, is_last ? cl : cf, cb, ws.get(), ws_bytes, beta);
  }
}

void check_params(int kind, const Conv2dShape& s) {
  CXR_CHECK(s.groups >= 1 && s.stride_h >= 1 && s.stride_w >= 1 && s.dil_h >= 1 && s.dil_w >= 1 && s.pad_h >= 0 &&
                s.pad_w >= 0 && s.C % s.groups == 0 && s.K % s.groups == 0 && s.R >= 1 && s.S >= 1,
            shape_str(kind, s), ": invalid convolution parameters");
}

void zero(Context& ctx, float* p, int64_t n) {
  if (n > 0) CXR_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(n) * sizeof(float), ctx.stream));
}

// y[i] += b[(i / PQ) % K] over n = N*K*PQ elements.
__global__ void add_bias_kernel(int64_t n, int64_t K, int64_t PQ, const float* __restrict__ b, float* __restrict__ y) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] += b[(i / PQ) % K];
}

// Bias gradient, stage 1: block (k, sp) sums dy[n, k, :] over images [sp*per, (sp+1)*per)
// in double: thread t takes the flat indices t, t + 256, ... of that slab, then a tree
// reduction in shared memory. Writes db[k] directly when there is one split, else
// partial[k * splits + sp].
constexpr int kDbBlock = 256;
__global__ void bias_grad_kernel(int64_t N, int64_t K, int64_t PQ, int64_t per, const float* __restrict__ dy,
                                 double* __restrict__ partial, float* __restrict__ db) {
  __shared__ double part[kDbBlock];
  const int64_t k = blockIdx.x, sp = blockIdx.y, splits = gridDim.y;
  const int64_t n_end = (sp + 1) * per < N ? (sp + 1) * per : N;
  double acc = 0.0;
  if (PQ > 0) {
    // Flat index j = n * PQ + i within the slab; advancing j by kDbBlock adds (dn, di).
    const int64_t dn = kDbBlock / PQ, di = kDbBlock % PQ;
    int64_t n = sp * per + threadIdx.x / PQ, i = threadIdx.x % PQ;
    while (n < n_end) {
      acc += static_cast<double>(dy[(n * K + k) * PQ + i]);
      n += dn;
      i += di;
      if (i >= PQ) {
        i -= PQ;
        ++n;
      }
    }
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kDbBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (splits == 1) db[k] = static_cast<float>(part[0]);
    else partial[k * splits + sp] = part[0];
  }
}

// Bias gradient, stage 2: db[k] = sum of the splits of k, in order.
__global__ void bias_grad_finish_kernel(int64_t K, int64_t splits, const double* __restrict__ partial,
                                        float* __restrict__ db) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < K; k += stride) {
    double acc = 0.0;
    for (int64_t sp = 0; sp < splits; ++sp) acc += partial[k * splits + sp];
    db[k] = static_cast<float>(acc);
  }
}

void bias_grad(Context& ctx, int64_t N, int64_t K, int64_t PQ, const float* dy, float* db) {
  if (K <= 0) return;
  CXR_CHECK(K <= INT_MAX, "conv2d_backward_weight: K=", K, " exceeds the grid limit of the bias gradient");
  // Split the images so that there are a few blocks per SM; the split depends only on
  // the shape and the device, so the summation order is fixed.
  const int64_t work = N * std::max<int64_t>(PQ, 0);
  const int64_t want_blocks = static_cast<int64_t>(ctx.num_sms()) * 4;
  int64_t splits = 1;
  if (K < want_blocks && work >= int64_t(1) << 16) splits = std::min<int64_t>({(want_blocks + K - 1) / K, N, 65535});
  const int64_t per = std::max<int64_t>((N + splits - 1) / splits, 1);
  if (N > 0) splits = (N + per - 1) / per;  // no empty splits
  splits = std::max<int64_t>(splits, 1);
  DeviceBuffer partial;
  if (splits > 1) partial = DeviceBuffer(ctx, static_cast<size_t>(K * splits) * sizeof(double));
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>(splits));
  bias_grad_kernel<<<grid, kDbBlock, 0, ctx.stream>>>(N, K, std::max<int64_t>(PQ, 0), per, dy,
                                                     partial.as<double>(), db);
  CXR_LAUNCH_CHECK(ctx, "conv2d_backward_weight bias_grad_kernel");
  if (splits > 1) {
    bias_grad_finish_kernel<<<grid_for(ctx, K), 256, 0, ctx.stream>>>(K, splits, partial.as<double>(), db);
    CXR_LAUNCH_CHECK(ctx, "conv2d_backward_weight bias_grad_finish_kernel");
  }
}

}  // namespace

void conv2d_forward(Context& ctx, const cpu::Conv2dShape& s, const float* x, const float* w, const float* b,
                    float* y) {
  check_params(kFwd, s);
  const int64_t P = s.P(), Q = s.Q();
  if (s.N <= 0 || s.K <= 0 || P <= 0 || Q <= 0) return;  // y is empty
  const int64_t ny = s.N * s.K * P * Q;
  if (s.C <= 0 || s.H <= 0 || s.W <= 0) zero(ctx, y, ny);  // nothing to convolve: y = bias
  else run_conv(ctx, kFwd, s, Bufs{x, w, nullptr, y});
  if (b) {
    add_bias_kernel<<<grid_for(ctx, ny), 256, 0, ctx.stream>>>(ny, s.K, P * Q, b, y);
    CXR_LAUNCH_CHECK(ctx, "conv2d_forward add_bias_kernel");
  }
}

void conv2d_backward_data(Context& ctx, const cpu::Conv2dShape& s, const float* dy, const float* w, float* dx) {
  check_params(kBwdData, s);
  if (s.N <= 0 || s.C <= 0 || s.H <= 0 || s.W <= 0) return;  // dx is empty
  const int64_t P = s.P(), Q = s.Q();
  if (s.K <= 0 || P <= 0 || Q <= 0) {
    zero(ctx, dx, s.N * s.C * s.H * s.W);
    return;
  }
  run_conv(ctx, kBwdData, s, Bufs{nullptr, w, dy, dx});
}

void conv2d_backward_weight(Context& ctx, const cpu::Conv2dShape& s, const float* x, const float* dy, float* dw,
                            float* db) {
  check_params(kBwdFilter, s);
  if (s.K <= 0) return;  // dw and db are empty
  const int64_t P = s.P(), Q = s.Q();
  const int64_t nw = s.K * (s.C / s.groups) * s.R * s.S;
  if (nw > 0) {
    if (s.N <= 0 || P <= 0 || Q <= 0 || s.H <= 0 || s.W <= 0) zero(ctx, dw, nw);
    else run_conv(ctx, kBwdFilter, s, Bufs{x, nullptr, dy, dw});
  }
  if (db) bias_grad(ctx, s.N, s.K, P > 0 && Q > 0 ? P * Q : 0, dy, db);
}

}  // namespace cxr::cuda
