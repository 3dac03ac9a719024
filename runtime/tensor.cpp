#include "runtime/tensor.h"

#include "runtime/cuda.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <new>
#include <sstream>

namespace cxr {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
  }
  return "?";
}

std::string Device::str() const {
  if (type == DeviceType::cpu) return "cpu";
  return "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    CXR_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
              "device '", s, "': expected cpu, cuda or cuda:<index>");
    // Digits only, so stoi can fail only by overflow; report that as bad input too.
    CXR_CHECK(idx.size() <= 9, "device '", s, "': index ", idx, " is out of range");
    return cuda(std::stoi(idx));
  }
  throw ValueError("device '" + s + "': expected cpu, cuda or cuda:<index>");
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// ---------------------------------------------------------------- Storage

namespace {

constexpr size_t kCacheMin = 256 << 10;

// Size classes: multiples of 64 B below kCacheMin; above, 8 classes per power of two
// (at most 12.5% slack).
size_t size_class(size_t bytes) {
  if (bytes < kCacheMin) return ((bytes + 63) / 64) * 64;
  size_t pow2 = kCacheMin;
  while (pow2 * 2 <= bytes) pow2 *= 2;
  const size_t step = pow2 / 8;
  return ((bytes + step - 1) / step) * step;
}

class HostCache {
 public:
  HostCache() {
    const char* env = std::getenv("CXR_HOST_CACHE_MB");
    limit_ = (env ? std::strtoull(env, nullptr, 10) : 2048ull) << 20;
  }
  void* take(size_t cls) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(cls);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= cls;
    return p;
  }
  void give(void* p, size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + cls <= limit_) {
        free_[cls].push_back(p);
        cached_ += cls;
        return;
      }
    }
    std::free(p);
  }
  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [cls, v] : free_)
      for (void* p : v) std::free(p);
    free_.clear();
    cached_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, limit_ = 0;
};

// Never destroyed: storages freed during static destruction still find it.
HostCache& host_cache() {
  static HostCache* cache = new HostCache();
  return *cache;
}

}  // namespace

size_t host_cache_bytes() { return host_cache().cached(); }
void empty_host_cache() { host_cache().clear(); }

namespace {
std::atomic<uint64_t> g_next_version{1};
uint64_t next_version() { return g_next_version.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

Storage::Storage() : version_(next_version()) {}

void Storage::bump_version() const { version_.store(next_version(), std::memory_order_release); }

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  if (device.is_cuda()) {
    s->ptr_ = cuda::device_alloc(bytes, device.index, &s->capacity_);
    s->bytes_ = bytes;
    s->device_ = device;
    return s;
  }
  // 64-byte alignment suits AVX-512 loads and cache lines.
  const size_t cls = size_class(bytes);
  void* p = cls >= kCacheMin ? host_cache().take(cls) : nullptr;
  if (!p && cls) {
    p = std::aligned_alloc(64, cls);
    if (!p && cls >= kCacheMin) {  // give the cached blocks back and try once more
      empty_host_cache();
      p = std::aligned_alloc(64, cls);
    }
    if (!p) throw OutOfMemory("host allocation of " + std::to_string(bytes) + " bytes failed");
  }
  s->ptr_ = p;
  s->bytes_ = bytes;
  s->capacity_ = cls;
  s->device_ = device;
  return s;
}

Storage::~Storage() {
  if (device_.is_cuda()) cuda::device_free(ptr_, capacity_, device_.index);
  else if (ptr_ && capacity_ >= kCacheMin) host_cache().give(ptr_, capacity_);
  else std::free(ptr_);
}

// ---------------------------------------------------------------- Tensor

static void check_shape(const Shape& shape, const char* what) {
  CXR_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), what, ": shape ", shape_str(shape), " has ",
            shape.size(), " dims, at most ", kMaxDims, " are supported");
  for (int64_t d : shape) CXR_CHECK(d >= 0, what, ": negative dimension in shape ", shape_str(shape));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "Tensor::empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (!t.nbytes()) return t;
  if (device.is_cuda()) cuda::memset_zero(t.raw_data(), t.nbytes(), device.index);
  else std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

template <typename T>
static Tensor from_vec(const std::vector<T>& v, const Shape& shape) {
  check_shape(shape, "Tensor::from_vector");
  CXR_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "Tensor::from_vector: ", v.size(),
            " values do not fill shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}
Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s) { return from_vec(v, s); }
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s) { return from_vec(v, s); }
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s) { return from_vec(v, s); }

const Shape& Tensor::shape() const {
  CXR_CHECK(defined(), "shape(): tensor is undefined");
  return impl_->shape;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  CXR_CHECK(d >= -n && d < n, "size(", d, "): dimension out of range for shape ", shape_str(shape()));
  return shape()[d < 0 ? d + n : d];
}

int64_t Tensor::numel() const { return shape_numel(shape()); }

DType Tensor::dtype() const {
  CXR_CHECK(defined(), "dtype(): tensor is undefined");
  return impl_->dtype;
}

Device Tensor::device() const {
  CXR_CHECK(defined(), "device(): tensor is undefined");
  return impl_->storage->device();
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

void* Tensor::raw_data() const {
  CXR_CHECK(defined(), "raw_data(): tensor is undefined");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

static double read_elem(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

double Tensor::item() const {
  CXR_CHECK(numel() == 1, "item(): tensor ", str(), " has ", numel(), " elements, expected 1");
  if (device().is_cuda()) return to(Device::cpu()).item();  // waits for the device
  return read_elem(raw_data(), dtype(), 0);
}

std::vector<double> Tensor::to_vector() const {
  if (device().is_cuda()) return to(Device::cpu()).to_vector();
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = read_elem(raw_data(), dtype(), i);
  return out;
}

Tensor Tensor::to(Device device) const {
  CXR_CHECK(defined(), "to(device): tensor is undefined");
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);  // throws for CUDA in a build without CUDA
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dt) const {
  CXR_CHECK(defined(), "to(dtype): tensor is undefined");
  if (dt == dtype()) return *this;
  if (device().is_cuda()) {
    Tensor out = empty(shape(), dt, device());
    cuda::convert(device().index, numel(), dtype(), raw_data(), dt, out.raw_data());
    return out;
  }
  Tensor out = empty(shape(), dt);
  const int64_t n = numel();
  const void* src = raw_data();
  for (int64_t i = 0; i < n; ++i) {
    const double v = read_elem(src, dtype(), i);
    switch (dt) {
      case DType::f32: out.data<float>()[i] = static_cast<float>(v); break;
      case DType::f64: out.data<double>()[i] = v; break;
      case DType::i64: out.data<int64_t>()[i] = static_cast<int64_t>(v); break;
    }
  }
  return out;
}

Tensor Tensor::clone() const {
  CXR_CHECK(defined(), "clone(): tensor is undefined");
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::view(const Shape& new_shape) const {
  CXR_CHECK(defined(), "view(): tensor is undefined");
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      CXR_CHECK(infer < 0, "view(", shape_str(new_shape), "): only one dimension may be -1");
      infer = static_cast<int64_t>(i);
    } else {
      CXR_CHECK(s[i] >= 0, "view(", shape_str(new_shape), "): negative dimension");
      known *= s[i];
    }
  }
  if (infer >= 0) {
    CXR_CHECK(known > 0 && numel() % known == 0, "view: cannot reshape ", str(), " to ", shape_str(new_shape));
    s[infer] = numel() / known;
  }
  check_shape(s, "view");
  CXR_CHECK(shape_numel(s) == numel(), "view: cannot reshape ", str(), " (", numel(), " elements) to ",
            shape_str(new_shape), " (", shape_numel(s), " elements)");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = s;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

void Tensor::copy_(const Tensor& src) {
  CXR_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  CXR_CHECK(numel() == src.numel() && dtype() == src.dtype(), "copy_: cannot copy ", src.str(), " into ", str());
  if (!nbytes() || raw_data() == src.raw_data()) return;
  if (device().is_cpu() && src.device().is_cpu()) std::memmove(raw_data(), src.raw_data(), nbytes());
  else cuda::copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
  bump_version();
}

void Tensor::fill_(double value) {
  const int64_t n = numel();
  bump_version();
  if (device().is_cuda()) {
    cuda::fill(raw_data(), dtype(), n, value, device().index);
    return;
  }
  switch (dtype()) {
    case DType::f32: { float* p = data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(value); break; }
    case DType::f64: { double* p = data<double>(); for (int64_t i = 0; i < n; ++i) p[i] = value; break; }
    case DType::i64: { int64_t* p = data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(value); break; }
  }
}

uint64_t Tensor::version() const { return defined() && impl_->storage ? impl_->storage->version() : 0; }

void Tensor::bump_version() const {
  if (defined() && impl_->storage) impl_->storage->bump_version();
}

bool Tensor::same_storage(const Tensor& o) const {
  return defined() && o.defined() && impl_->storage == o.impl_->storage;
}

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  CXR_CHECK(defined(), "set_requires_grad: tensor is undefined");
  CXR_CHECK(is_leaf() || on, "set_requires_grad(false) on a non-leaf tensor ", str(), "; use detach()");
  CXR_CHECK(!on || dtype() != DType::i64, "set_requires_grad: integer tensor ", str(), " cannot require grad");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  CXR_CHECK(defined(), "grad(): tensor is undefined");
  return impl_->grad;
}

void Tensor::set_grad(const Tensor& g) {
  CXR_CHECK(defined(), "set_grad: tensor is undefined");
  if (g.defined())
    CXR_CHECK(g.shape() == shape() && g.dtype() == dtype(), "set_grad: gradient ", g.str(),
              " does not match tensor ", str());
  impl_->grad = g;
}

void Tensor::retain_grad() {
  CXR_CHECK(defined(), "retain_grad: tensor is undefined");
  CXR_CHECK(requires_grad(), "retain_grad: tensor ", str(), " does not require grad");
  impl_->retains_grad = true;
}

bool Tensor::retains_grad() const { return defined() && impl_->retains_grad; }
bool Tensor::is_leaf() const { return !defined() || impl_->grad_fn == nullptr; }

const std::shared_ptr<nn::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<nn::Node> none;
  return defined() ? impl_->grad_fn : none;
}

void Tensor::set_grad_fn(std::shared_ptr<nn::Node> fn) {
  CXR_CHECK(defined(), "set_grad_fn: tensor is undefined");
  impl_->grad_fn = std::move(fn);
  impl_->requires_grad = impl_->grad_fn != nullptr || impl_->requires_grad;
}

Tensor Tensor::detach() const {
  CXR_CHECK(defined(), "detach(): tensor is undefined");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

}  // namespace cxr
