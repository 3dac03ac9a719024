// The per-device CUDA context and the checking helpers every CUDA source uses.
// Included only by .cu files (it needs the CUDA, cuBLAS and cuDNN headers).
//
// A Context holds everything one device's ops need: the stream all its work is queued
// on, the cuBLAS and cuDNN handles bound to that stream, the device's properties, the
// settings (TF32, deterministic, sync-after-launch) and the cuDNN algorithm cache. One
// Context exists per device, created on first use by cuda::context(device); ops receive
// it explicitly.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "runtime/error.h"

namespace cxr::cuda {

// Key of a cuDNN convolution algorithm choice: the problem and the settings it was
// chosen under. `kind` is 0 forward, 1 backward-data, 2 backward-filter.
struct ConvAlgoKey {
  int64_t v[16] = {};
  int kind = 0;
  bool tf32 = false, deterministic = false;
  bool operator<(const ConvAlgoKey& o) const;
};
struct ConvAlgoChoice {
  int algo = 0;             // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t value
  int math_type = 0;        // cudnnMathType_t
  size_t workspace = 0;     // bytes
};

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cudaDeviceProp prop{};
  bool tf32 = true;           // TF32 allowed for fp32 convs/GEMMs (only where prop.major >= 8)
  bool deterministic = false;
  bool sync_launches = false;
  std::mutex algo_mutex;      // guards conv_algos
  std::map<ConvAlgoKey, ConvAlgoChoice> conv_algos;
  // Host-to-device input copies (copy_to_device_async): their own stream, and one event
  // per outstanding copy, by ticket.
  std::mutex copy_mutex;
  cudaStream_t copy_stream = nullptr;
  uint64_t next_ticket = 1;
  std::map<uint64_t, cudaEvent_t> copies;

  bool use_tf32() const { return tf32 && prop.major >= 8; }
  int num_sms() const { return prop.multiProcessorCount; }
};

// The context of `device` (created and made current on first use). Also makes the
// device current for the calling thread.
Context& context(int device);

// ---- errors ----
// True for errors after which the CUDA context is unusable (illegal address, launch
// failure, ...): every later call fails too and only a new process recovers.
bool is_sticky(cudaError_t e);
[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line);
[[noreturn]] void throw_cudnn(cudnnStatus_t s, const char* what, const char* file, int line);

// Checks that a kernel launch was accepted; with ctx.sync_launches also waits for it
// and reports a fault it caused, naming `what`.
void check_launch(Context& ctx, const char* what, const char* file, int line);

}  // namespace cxr::cuda

#define CXR_CUDA_CHECK(expr)                                                          \
  do {                                                                                \
    const cudaError_t cxr_e_ = (expr);                                                \
    if (cxr_e_ != cudaSuccess) [[unlikely]]                                           \
      ::cxr::cuda::throw_cuda(cxr_e_, #expr, __FILE__, __LINE__);                      \
  } while (0)
#define CXR_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                \
    const cublasStatus_t cxr_s_ = (expr);                                             \
    if (cxr_s_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                 \
      ::cxr::cuda::throw_cublas(cxr_s_, #expr, __FILE__, __LINE__);                    \
  } while (0)
#define CXR_CUDNN_CHECK(expr)                                                         \
  do {                                                                                \
    const cudnnStatus_t cxr_s_ = (expr);                                              \
    if (cxr_s_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                                  \
      ::cxr::cuda::throw_cudnn(cxr_s_, #expr, __FILE__, __LINE__);                     \
  } while (0)
// After every <<<...>>> launch: CXR_LAUNCH_CHECK(ctx, "kernel name");
#define CXR_LAUNCH_CHECK(ctx, what) ::cxr::cuda::check_launch((ctx), (what), __FILE__, __LINE__)

namespace cxr::cuda {

// Scratch device memory from the caching allocator, released (to the cache) at scope
// exit. Safe to free while kernels using it are still queued: the block is only handed
// out again to work on the same stream, which runs after them.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Context& ctx, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept { swap(o); return *this; }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return bytes_; }

 private:
  void swap(DeviceBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(cap_, o.cap_);
    std::swap(device_, o.device_);
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0, cap_ = 0;
  int device_ = 0;
};

// Grid size for a grid-stride loop over n elements with `block` threads per block:
// enough blocks to fill the device a few times over, never more than needed.
inline unsigned grid_for(const Context& ctx, int64_t n, int block = 256) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(ctx.num_sms()) * 8;
  const int64_t g = need < cap ? need : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

}  // namespace cxr::cuda
