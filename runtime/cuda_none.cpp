// Build without the CUDA backend: no devices; device allocations throw; pinned buffers
// are ordinary aligned host memory.
#include <cstdlib>
#include <cstring>

#include "runtime/cuda.h"

namespace cxr::cuda {

namespace {
[[noreturn]] void no_backend(const char* what) {
  throw Error(std::string(what) + ": this build of cxr has no CUDA backend (configure with -DCXR_CUDA=ON)");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count() { return 0; }
std::string device_description(int index) {
  return "no CUDA device " + std::to_string(index) + ": this build has no CUDA backend";
}
std::string runtime_version() { return ""; }
std::string driver_version() { return ""; }
std::string cudnn_version() { return ""; }
std::string cublas_version() { return ""; }

void set_allow_tf32(bool, int) { no_backend("set_allow_tf32"); }
bool allow_tf32(int) { return false; }
void set_deterministic(bool, int) { no_backend("set_deterministic"); }
bool deterministic(int) { return false; }
void set_sync_launches(bool, int) { no_backend("set_sync_launches"); }
bool sync_launches(int) { return false; }
void synchronize(int) {}

MemoryStats memory_stats(int) { return {}; }
void reset_peak_memory(int) {}
void empty_cache(int) {}
void device_memory(int, size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = 0;
  *total_bytes = 0;
}

void* device_alloc(size_t bytes, int device, size_t*) {
  no_backend(("cannot allocate " + std::to_string(bytes) + " bytes on cuda:" + std::to_string(device)).c_str());
}
void device_free(void*, size_t, int) {}
void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (!dd.is_cpu() || !sd.is_cpu()) no_backend("copy to or from a CUDA device");
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void memset_zero(void*, size_t, int) { no_backend("memset on a CUDA device"); }
bool copy_done(uint64_t, int) { return true; }
void wait_copy(uint64_t, int) {}
uint64_t upload_async(void*, const void*, size_t, int, uint64_t) { no_backend("copy to a CUDA device"); }
void compute_wait(uint64_t, int) {}
uint64_t record_event(int) { no_backend("an event on a CUDA device"); }
void fill(void*, DType, int64_t, double, int) { no_backend("fill on a CUDA device"); }
void convert(int, int64_t, DType, const void*, DType, void*) { no_backend("dtype conversion on a CUDA device"); }

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  ptr_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!ptr_) throw OutOfMemory("host allocation of " + std::to_string(bytes) + " bytes for a pinned buffer failed");
}
void PinnedBuffer::release() noexcept {
  std::free(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  pinned_ = false;
}
PinnedBuffer::~PinnedBuffer() { release(); }

}  // namespace cxr::cuda
