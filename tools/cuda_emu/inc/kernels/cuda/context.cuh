#pragma once
#include <cuda_runtime.h>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include "runtime/error.h"
namespace cxr::cuda {
struct Prop { int multiProcessorCount = 2; int major = 9; };
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  Prop prop{};
  bool deterministic = true, sync_launches = false;
  int num_sms() const { return prop.multiProcessorCount; }
};
Context& context(int device);
inline void check_launch_emu(const char* what) {
  if (emu::pending != 1) { fprintf(stderr, "EMU: launch check '%s' with %d pending launches\n", what, emu::pending); abort(); }
  emu::pending = 0;
}
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Context&, size_t bytes) : bytes_(bytes) {
    ptr_ = malloc(bytes ? bytes : 1);
    memset(ptr_, 0xff, bytes);  // NaN pattern: uninitialised reads show up
  }
  ~DeviceBuffer() { free(ptr_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { std::swap(ptr_, o.ptr_); std::swap(bytes_, o.bytes_); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept { std::swap(ptr_, o.ptr_); std::swap(bytes_, o.bytes_); return *this; }
  void* get() const { return ptr_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return bytes_; }
 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};
inline unsigned grid_for(const Context& ctx, int64_t n, int block = 256) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(ctx.num_sms()) * 8;
  const int64_t g = need < cap ? need : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}
}  // namespace cxr::cuda
#define CXR_CUDA_CHECK(expr) do { if ((expr) != 0) abort(); } while (0)
#define CXR_LAUNCH_CHECK(ctx, what) ::cxr::cuda::check_launch_emu(what)
