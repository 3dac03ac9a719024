// CUDA runtime side of the engine: per-device contexts, the caching device allocator,
// copies, fills, pinned host buffers, error reporting and version queries.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"
#include "runtime/cuda.h"

namespace cxr::cuda {

// ---------------------------------------------------------------- errors

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

static std::string where(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}

void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  std::string msg = std::string("CUDA error in ") + what + " (" + where(file, line) + "): " + cudaGetErrorName(e) +
                    ": " + cudaGetErrorString(e);
  if (is_sticky(e)) {
    msg += ". This error is sticky: the CUDA context is unusable and every later CUDA call will fail; "
           "restart the process (run with CXR_CUDA_SYNC=1 or under compute-sanitizer to find the faulting kernel)";
  } else {
    cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  }
  if (e == cudaErrorMemoryAllocation) throw OutOfMemory(msg);
  throw Error(msg);
}

void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  throw Error(std::string("cuBLAS error in ") + what + " (" + where(file, line) + "): " + cublasGetStatusName(s) +
              ": " + cublasGetStatusString(s));
}

void throw_cudnn(cudnnStatus_t s, const char* what, const char* file, int line) {
  throw Error(std::string("cuDNN error in ") + what + " (" + where(file, line) + "): " + cudnnGetErrorString(s));
}

void check_launch(Context& ctx, const char* what, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda(e, (std::string("launch of ") + what).c_str(), file, line);
  if (ctx.sync_launches) {
    e = cudaStreamSynchronize(ctx.stream);
    if (e != cudaSuccess) throw_cuda(e, (std::string("kernel ") + what + " (synchronised after launch)").c_str(), file, line);
  }
}

// ---------------------------------------------------------------- devices and contexts

bool built_with_cuda() { return true; }

int device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();  // "no device" / "no driver" is not sticky
      return 0;
    }
    return c;
  }();
  return n;
}

std::string device_description(int index) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return "no CUDA device " + std::to_string(index) + ": " + cudaGetErrorString(err);
  }
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
}

static std::string version_str(int v, int major_div, int minor_div, int minor_mod) {
  return std::to_string(v / major_div) + "." + std::to_string((v / minor_div) % minor_mod);
}

std::string runtime_version() { return version_str(CUDART_VERSION, 1000, 10, 100); }

std::string driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v == 0) {
    cudaGetLastError();
    return "";
  }
  return version_str(v, 1000, 10, 100);
}

std::string cudnn_version() {
  const size_t v = cudnnGetVersion();  // major*10000 + minor*100 + patch from cuDNN 9
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

std::string cublas_version() {
  int ma = 0, mi = 0, pa = 0;
  if (cublasGetProperty(MAJOR_VERSION, &ma) != CUBLAS_STATUS_SUCCESS) return "";
  cublasGetProperty(MINOR_VERSION, &mi);
  cublasGetProperty(PATCH_LEVEL, &pa);
  return std::to_string(ma) + "." + std::to_string(mi) + "." + std::to_string(pa);
}

static bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
}

namespace {
struct Registry {
  std::mutex mutex;
  std::vector<Context*> contexts;  // never destroyed: storages freed at exit still find them
};
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}
}  // namespace

Context& context(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw ValueError("CUDA device " + std::to_string(device) + " does not exist: " +
                     (n == 0 ? std::string("no CUDA device is present") : std::to_string(n) + " device(s) found"));
  Registry& r = registry();
  Context* ctx = nullptr;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.contexts.empty()) r.contexts.assign(static_cast<size_t>(n), nullptr);
    ctx = r.contexts[static_cast<size_t>(device)];
    if (!ctx) {
      auto fresh = std::make_unique<Context>();
      fresh->device = device;
      CXR_CUDA_CHECK(cudaSetDevice(device));
      CXR_CUDA_CHECK(cudaGetDeviceProperties(&fresh->prop, device));
      CXR_CUDA_CHECK(cudaStreamCreateWithFlags(&fresh->stream, cudaStreamNonBlocking));
      CXR_CUBLAS_CHECK(cublasCreate(&fresh->cublas));
      CXR_CUBLAS_CHECK(cublasSetStream(fresh->cublas, fresh->stream));
      CXR_CUDNN_CHECK(cudnnCreate(&fresh->cudnn));
      CXR_CUDNN_CHECK(cudnnSetStream(fresh->cudnn, fresh->stream));
      fresh->tf32 = env_flag("CXR_TF32", true);
      fresh->deterministic = env_flag("CXR_DETERMINISTIC", false);
      fresh->sync_launches = env_flag("CXR_CUDA_SYNC", false);
      ctx = fresh.release();
      r.contexts[static_cast<size_t>(device)] = ctx;
      return *ctx;
    }
  }
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess || cur != device) CXR_CUDA_CHECK(cudaSetDevice(device));
  return *ctx;
}

void set_allow_tf32(bool on, int device) { context(device).tf32 = on; }
bool allow_tf32(int device) { return device >= 0 && device < device_count() && context(device).use_tf32(); }
void set_deterministic(bool on, int device) { context(device).deterministic = on; }
bool deterministic(int device) { return device >= 0 && device < device_count() && context(device).deterministic; }
void set_sync_launches(bool on, int device) { context(device).sync_launches = on; }
bool sync_launches(int device) { return device >= 0 && device < device_count() && context(device).sync_launches; }

void synchronize(int device) {
  Context& ctx = context(device);
  CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

// ---------------------------------------------------------------- caching allocator

namespace {

// Size classes: multiples of 512 B below 1 MiB; above, 8 classes per power of two
// (at most 12.5% slack), so a training loop's repeated shapes hit the same classes.
size_t size_class(size_t bytes) {
  constexpr size_t kSmall = 1 << 20;
  if (bytes < kSmall) return ((bytes + 511) / 512) * 512;
  if (bytes > (SIZE_MAX >> 2)) return bytes;  // absurd request: no rounding (it would overflow); cudaMalloc fails
  size_t pow2 = kSmall;
  while (pow2 <= bytes / 2) pow2 *= 2;
  const size_t step = pow2 / 8;
  return ((bytes + step - 1) / step) * step;
}

struct DeviceCache {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free;
  MemoryStats stats;
};

DeviceCache& cache(int device) {
  // Never destroyed: Storage destructors of static tensors may free blocks during exit.
  static std::mutex* m = new std::mutex();
  static std::vector<DeviceCache*>* caches = new std::vector<DeviceCache*>();
  std::lock_guard<std::mutex> lock(*m);
  if (caches->size() <= static_cast<size_t>(device)) caches->resize(static_cast<size_t>(device) + 1, nullptr);
  DeviceCache*& c = (*caches)[static_cast<size_t>(device)];
  if (!c) c = new DeviceCache();
  return *c;
}

// Frees every cached block of c (c.mutex held). The caller's device is current.
void release_cached(DeviceCache& c) {
  for (auto& [cls, v] : c.free) {
    for (void* p : v) cudaFree(p);
    c.stats.cached -= cls * v.size();
  }
  c.free.clear();
  c.stats.reserved = c.stats.allocated + c.stats.cached;
}

std::string mib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

void* device_alloc(size_t bytes, int device, size_t* capacity) {
  Context& ctx = context(device);  // validates the index and makes the device current
  (void)ctx;
  *capacity = 0;
  if (bytes == 0) return nullptr;
  const size_t cls = size_class(bytes);
  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  void* p = nullptr;
  auto it = c.free.find(cls);
  if (it != c.free.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    c.stats.cached -= cls;
  } else {
    cudaError_t e = cudaMalloc(&p, cls);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cached(c);  // cudaFree waits for the device, so no queued work still uses them
      e = cudaMalloc(&p, cls);
    }
    if (e != cudaSuccess) {
      if (e != cudaErrorMemoryAllocation) throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
      throw OutOfMemory("CUDA out of memory on cuda:" + std::to_string(device) + ": tried to allocate " +
                        std::to_string(bytes) + " bytes (" + mib(bytes) + "); the device has " + std::to_string(free_b) +
                        " bytes free (" + mib(free_b) + ") of " + std::to_string(total_b) + " bytes total (" +
                        mib(total_b) + "); the engine holds " + std::to_string(c.stats.allocated) +
                        " bytes in live tensors (" + mib(c.stats.allocated) + ") and " +
                        std::to_string(c.stats.cached) + " bytes cached (returned before this report)");
    }
    c.stats.device_mallocs += 1;
  }
  c.stats.allocations += 1;  // served requests only (a thrown OutOfMemory is not counted)
  c.stats.allocated += cls;
  if (c.stats.allocated > c.stats.peak_allocated) c.stats.peak_allocated = c.stats.allocated;
  c.stats.reserved = c.stats.allocated + c.stats.cached;
  *capacity = cls;
  return p;
}

void device_free(void* p, size_t capacity, int device) {
  if (!p) return;
  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.free[capacity].push_back(p);
  c.stats.allocated -= capacity;
  c.stats.cached += capacity;
  c.stats.reserved = c.stats.allocated + c.stats.cached;
}

MemoryStats memory_stats(int device) {
  if (device < 0 || device >= device_count()) return {};
  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void reset_peak_memory(int device) {
  if (device < 0 || device >= device_count()) return;
  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.peak_allocated = c.stats.allocated;
}

void empty_cache(int device) {
  if (device < 0 || device >= device_count()) return;
  context(device);  // make the device current for cudaFree
  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  release_cached(c);
}

void device_memory(int device, size_t* free_bytes, size_t* total_bytes) {
  context(device);
  CXR_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

DeviceBuffer::DeviceBuffer(Context& ctx, size_t bytes) : bytes_(bytes), device_(ctx.device) {
  ptr_ = device_alloc(bytes, ctx.device, &cap_);
}
DeviceBuffer::~DeviceBuffer() { device_free(ptr_, cap_, device_); }

// ---------------------------------------------------------------- copies and fills

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  if (dd.is_cpu() && sd.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
  if (dd.is_cuda() && sd.is_cpu()) {
    // Pageable source: the call returns once the data is staged, so src may be freed.
    Context& ctx = context(dd.index);
    CXR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream));
    if (ctx.sync_launches) CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    return;
  }
  if (dd.is_cpu() && sd.is_cuda()) {
    Context& ctx = context(sd.index);
    CXR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream));
    CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    return;
  }
  if (dd.index == sd.index) {
    Context& ctx = context(dd.index);
    CXR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx.stream));
    return;
  }
  // Between two devices: let the source's queued work finish, then copy and wait.
  CXR_CUDA_CHECK(cudaStreamSynchronize(context(sd.index).stream));
  Context& dctx = context(dd.index);
  CXR_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, bytes, dctx.stream));
  CXR_CUDA_CHECK(cudaStreamSynchronize(dctx.stream));
}

// The destination comes from the caching allocator, whose blocks are reused in the
// compute stream's order; so the copy first waits for the compute work queued so far
// (which may still use the block), then the compute stream waits for the copy. The copy
// thus overlaps host work and later-queued compute of other streams, not the compute
// already queued on this device.
bool copy_done(uint64_t ticket, int device) {
  Context& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.copy_mutex);
  auto it = ctx.copies.find(ticket);
  if (it == ctx.copies.end()) return true;  // finished and collected earlier
  const cudaError_t e = cudaEventQuery(it->second);
  if (e == cudaErrorNotReady) {
    cudaGetLastError();  // not an error: the copy is still running
    return false;
  }
  cudaEventDestroy(it->second);
  ctx.copies.erase(it);
  if (e != cudaSuccess) throw_cuda(e, "host-to-device copy", __FILE__, __LINE__);
  return true;
}

void wait_copy(uint64_t ticket, int device) {
  Context& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.copy_mutex);
  auto it = ctx.copies.find(ticket);
  if (it == ctx.copies.end()) return;
  const cudaError_t e = cudaEventSynchronize(it->second);
  cudaEventDestroy(it->second);
  ctx.copies.erase(it);
  if (e != cudaSuccess) throw_cuda(e, "host-to-device copy", __FILE__, __LINE__);
}

namespace {
// A new event owned by ctx.copies under a fresh ticket (copy_mutex held).
uint64_t new_ticket(Context& ctx, cudaEvent_t* ev) {
  CXR_CUDA_CHECK(cudaEventCreateWithFlags(ev, cudaEventDisableTiming));
  const uint64_t ticket = ctx.next_ticket++;
  ctx.copies[ticket] = *ev;
  return ticket;
}
}  // namespace

uint64_t upload_async(void* dst, const void* src, size_t bytes, int device, uint64_t after) {
  Context& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.copy_mutex);
  if (!ctx.copy_stream) CXR_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.copy_stream, cudaStreamNonBlocking));
  if (after != 0) {
    auto it = ctx.copies.find(after);
    if (it != ctx.copies.end()) {
      const cudaEvent_t ev = it->second;
      ctx.copies.erase(it);
      const cudaError_t e = cudaStreamWaitEvent(ctx.copy_stream, ev, 0);
      cudaEventDestroy(ev);  // released once the wait it was recorded for is satisfied
      if (e != cudaSuccess) throw_cuda(e, "cudaStreamWaitEvent", __FILE__, __LINE__);
    }
  }
  cudaEvent_t done = nullptr;
  const uint64_t ticket = new_ticket(ctx, &done);
  if (bytes) CXR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.copy_stream));
  CXR_CUDA_CHECK(cudaEventRecord(done, ctx.copy_stream));
  if (ctx.sync_launches) CXR_CUDA_CHECK(cudaStreamSynchronize(ctx.copy_stream));
  return ticket;
}

void compute_wait(uint64_t ticket, int device) {
  Context& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.copy_mutex);
  auto it = ctx.copies.find(ticket);
  if (it == ctx.copies.end()) return;  // finished and collected
  CXR_CUDA_CHECK(cudaStreamWaitEvent(ctx.stream, it->second, 0));
}

uint64_t record_event(int device) {
  Context& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.copy_mutex);
  cudaEvent_t ev = nullptr;
  const uint64_t ticket = new_ticket(ctx, &ev);
  CXR_CUDA_CHECK(cudaEventRecord(ev, ctx.stream));
  return ticket;
}

void memset_zero(void* p, size_t bytes, int device) {
  if (bytes == 0) return;
  Context& ctx = context(device);
  CXR_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx.stream));
}

namespace {
template <typename T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}
}  // namespace

void fill(void* p, DType t, int64_t n, double value, int device) {
  if (n <= 0) return;
  Context& ctx = context(device);
  const unsigned grid = grid_for(ctx, n);
  switch (t) {
    case DType::f32:
      fill_kernel<float><<<grid, 256, 0, ctx.stream>>>(static_cast<float*>(p), n, static_cast<float>(value));
      break;
    case DType::f64:
      fill_kernel<double><<<grid, 256, 0, ctx.stream>>>(static_cast<double*>(p), n, value);
      break;
    case DType::i64:
      fill_kernel<int64_t><<<grid, 256, 0, ctx.stream>>>(static_cast<int64_t*>(p), n, static_cast<int64_t>(value));
      break;
  }
  CXR_LAUNCH_CHECK(ctx, "fill");
}

void convert(int device, int64_t n, DType src_t, const void* src, DType dst_t, void* dst) {
  if (n <= 0) return;
  convert(context(device), n, static_cast<int>(src_t), src, static_cast<int>(dst_t), dst);
}

// ---------------------------------------------------------------- pinned host memory

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  if (device_count() > 0 && cudaHostAlloc(&ptr_, bytes, cudaHostAllocPortable) == cudaSuccess) {
    pinned_ = true;
    return;
  }
  cudaGetLastError();
  ptr_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!ptr_) throw OutOfMemory("host allocation of " + std::to_string(bytes) + " bytes for a pinned buffer failed");
}

void PinnedBuffer::release() noexcept {
  if (ptr_) {
    if (pinned_) cudaFreeHost(ptr_);
    else std::free(ptr_);
  }
  ptr_ = nullptr;
  bytes_ = 0;
  pinned_ = false;
}

PinnedBuffer::~PinnedBuffer() { release(); }


}  // namespace cxr::cuda
