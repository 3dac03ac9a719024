// CUDA devices, memory and settings, as seen from plain C++. Safe to include and call
// in every build: without the CUDA backend (or without a GPU) there are zero devices,
// allocations on a CUDA device throw, and PinnedBuffer falls back to aligned host memory.
//
// Memory: device blocks come from a caching allocator per device. Freed blocks are kept
// by size class and reused by later allocations on the device's stream (all work of one
// device runs in order on one stream, so a block freed on the host can be reused at once).
// When cudaMalloc fails the cache is returned to the driver and the allocation retried;
// if it fails again, cxr::OutOfMemory names the requested bytes, the device's free and
// total memory, and what the engine holds.
//
// Settings (per device, read from the environment when a device is first used):
//   CXR_TF32=0            TF32 tensor-core math off for fp32 convolutions and GEMMs
//                         (on by default on GPUs that have it, sm_80 and newer)
//   CXR_DETERMINISTIC=1   deterministic cuDNN algorithms and no atomics in reductions:
//                         two runs with the same seed give bit-identical results
//   CXR_CUDA_SYNC=1       synchronize and check after every kernel launch, so a fault
//                         is reported by the launch that caused it
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/tensor.h"

namespace cxr::cuda {

// True when this library was built with the CUDA backend.
bool built_with_cuda();
// Number of usable CUDA devices (0 when the backend is absent or no driver/GPU is present).
int device_count();
inline bool available() { return device_count() > 0; }
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or an explanation of why there is none.
std::string device_description(int index);
// CUDA runtime version the engine was built against, e.g. "13.0"; empty without CUDA.
std::string runtime_version();
// Driver version ("13.0") and cuDNN / cuBLAS versions ("9.19.0"); empty when unknown.
std::string driver_version();
std::string cudnn_version();
std::string cublas_version();

// ---- settings (per device; the setters apply to later ops) ----
void set_allow_tf32(bool on, int device = 0);
bool allow_tf32(int device = 0);
void set_deterministic(bool on, int device = 0);
bool deterministic(int device = 0);
void set_sync_launches(bool on, int device = 0);
bool sync_launches(int device = 0);

// Waits for all work queued on the device's stream; reports any asynchronous error.
void synchronize(int device = 0);

// ---- memory ----
struct MemoryStats {
  size_t allocated = 0;       // bytes in live blocks (rounded to their size class)
  size_t peak_allocated = 0;  // high-water mark of `allocated` since start or reset
  size_t cached = 0;          // bytes held in free blocks for reuse
  size_t reserved = 0;        // allocated + cached: what the engine holds from the driver
  uint64_t allocations = 0;   // allocation requests served
  uint64_t device_mallocs = 0;  // of which needed a cudaMalloc
};
MemoryStats memory_stats(int device = 0);
void reset_peak_memory(int device = 0);
// Returns every cached free block of the device to the driver.
void empty_cache(int device = 0);
// Device free and total memory as the driver reports it.
void device_memory(int device, size_t* free_bytes, size_t* total_bytes);

// Raw blocks for Storage. `capacity` receives the bytes actually reserved (size class).
void* device_alloc(size_t bytes, int device, size_t* capacity);
void device_free(void* p, size_t capacity, int device);
// Copies `bytes` between any two devices (cpu <-> cuda, cuda <-> cuda). Copies to the
// host wait for the data; copies to a device are ordered on its stream.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void memset_zero(void* p, size_t bytes, int device);
// True when the work behind this ticket (an upload or a recorded event) has finished
// (does not wait); a finished ticket is collected, and later queries return true.
bool copy_done(uint64_t ticket, int device);
// Waits on the host for the work behind this ticket, and collects it.
void wait_copy(uint64_t ticket, int device);
// For input pipelines that stage batches in device memory of their own (data::Loader):
// upload_async queues a host-to-device copy on the copy stream at once, ordered only
// after the work behind ticket `after` (from record_event; 0 for none, a collected
// ticket counts as done) and never after the compute stream, so it overlaps whatever
// compute is queued. Consuming a ticket as `after` collects it. Returns a ticket for
// copy_done / wait_copy / compute_wait.
uint64_t upload_async(void* dst, const void* src, size_t bytes, int device, uint64_t after = 0);
// Makes the device's compute stream wait (on the GPU, the host does not block) for the
// work behind a ticket; the ticket stays valid.
void compute_wait(uint64_t ticket, int device);
// Records an event at the current end of the compute stream; returns its ticket
// (copy_done tells whether the compute work queued so far has finished).
uint64_t record_event(int device);
// Fills n elements of dtype t at p (on the device) with value.
void fill(void* p, DType t, int64_t n, double value, int device);
// Converts n elements from dtype src_t to dst_t on the device (as static_cast).
void convert(int device, int64_t n, DType src_t, const void* src, DType dst_t, void* dst);

// Page-locked host memory (cudaHostAlloc) for fast, asynchronous host-to-device copies;
// 64-byte aligned ordinary memory in builds or on machines without CUDA. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept { take(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      take(o);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  // True when the memory is page-locked (cudaHostAlloc succeeded).
  bool pinned() const { return pinned_; }

 private:
  void release() noexcept;
  void take(PinnedBuffer& o) noexcept {
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    pinned_ = o.pinned_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
    o.pinned_ = false;
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

}  // namespace cxr::cuda
