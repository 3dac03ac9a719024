// Tensor: an n-dimensional array (up to 5 dims) with a dtype, a device and
// reference-counted contiguous storage. Copies of a Tensor share the same data
// (like a shared_ptr); clone() makes a deep copy. NCHW is the logical layout.
//
// The autograd fields (requires_grad, grad, grad_fn) live here so that every tensor
// can take part in a graph; the graph itself (Node, backward) is defined in nn/.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace cxr {

enum class DType : uint8_t { f32, f64, i64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const;
  // Parses "cpu", "cuda", "cuda:1".
  static Device parse(const std::string& s);
};

using Shape = std::vector<int64_t>;
constexpr int kMaxDims = 5;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// A block of memory on one device. Move-only, owned through shared_ptr by tensors.
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  // A number that changes whenever the engine writes this storage's contents (copy_,
  // fill_, the random initialisers, optimizer updates, load_state_dict). Values are
  // unique across all storages of the process, so (version) alone identifies
  // one state of one block: caches derived from the data (packed convolution weights)
  // are keyed on it. Code that writes through data<T>() itself calls bump_version().
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  void bump_version() const;

 private:
  Storage();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  size_t capacity_ = 0;  // bytes actually allocated (size class of the host cache)
  Device device_;
  mutable std::atomic<uint64_t> version_;
};

// Host blocks of 256 KiB and more are kept in a cache by size class when freed and
// reused by later allocations, so a training loop stops paying page faults and kernel
// zeroing for its activations every step. The cache holds at most
// CXR_HOST_CACHE_MB (environment, default 2048) MiB of free blocks.
size_t host_cache_bytes();   // free bytes held by the cache
void empty_host_cache();     // returns them to the system

namespace nn { class Node; }
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;

  // ---- creation (contents as named; empty() leaves memory uninitialised) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32);
  // Copies `values` (numel must match shape) into a new CPU tensor.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);

  // ---- properties ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  // Size of dimension d; negative d counts from the end.
  int64_t size(int64_t d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string str() const;  // "f32[64, 1, 28, 28] on cpu"

  // Typed pointer to the first element; throws if T does not match dtype().
  template <typename T>
  T* data() const {
    CXR_CHECK(defined(), "data(): tensor is undefined");
    CXR_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a tensor of dtype ",
              dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;
  // Value of a one-element tensor, converted to double.
  double item() const;
  // Copies the elements out as doubles (CPU only; for tests and small reads).
  std::vector<double> to_vector() const;

  // ---- conversion and copies (no autograd; see nn/ for differentiable versions) ----
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  // A view sharing storage with a new shape of the same numel; one dim may be -1.
  Tensor view(const Shape& shape) const;
  // Copies src's elements into this tensor (same numel and dtype).
  void copy_(const Tensor& src);
  void fill_(double value);
  bool same_storage(const Tensor& other) const;
  // The storage's version (see Storage::version); 0 for an undefined tensor.
  uint64_t version() const;
  // Marks the data as changed; call after writing it through data<T>().
  void bump_version() const;

  // ---- autograd state ----
  bool requires_grad() const;
  // Only leaves (tensors not produced by a recorded op) may have requires_grad set.
  Tensor& set_requires_grad(bool on);
  // Accumulated gradient (undefined until a backward reaches this tensor).
  Tensor grad() const;
  void set_grad(const Tensor& g);
  // Ask a non-leaf tensor to keep its gradient in grad() after backward.
  void retain_grad();
  bool retains_grad() const;
  bool is_leaf() const;
  const std::shared_ptr<nn::Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<nn::Node> fn);
  // A new tensor sharing data but cut from the graph (no grad_fn, requires_grad false).
  Tensor detach() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<nn::Node> grad_fn;
  Tensor grad;
};

// Calls fn.template operator()<T>() with T the C++ type of a floating dtype.
template <typename F>
decltype(auto) dispatch_float(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    default: break;
  }
  throw ValueError(detail::cat(op, ": expected a floating-point tensor (f32 or f64), got ", dtype_name(t)));
}

}  // namespace cxr
