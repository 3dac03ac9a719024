// CUDA runtime: device tensors (creation, fills, dtype conversion, host <-> device and
// device <-> device copies, exact round trips for every dtype and odd sizes), the caching
// allocator's statistics and cache, out-of-memory reporting and recovery, pinned host
// buffers, per-device settings, device names and invalid device indices.
// Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_test_util.h"
#include "expect_error.h"
#include "nn/functional.h"
#include "runtime/cuda.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace cxr {
namespace {

using namespace gputest;

const DType kDtypes[] = {DType::f32, DType::f64, DType::i64};
const int64_t kSizes[] = {0, 1, 7, 33, (int64_t{1} << 20) + 3};

// A CPU tensor of n elements with random contents: normal values for floats, full-range
// 64-bit integers (negative ones included) for i64.
Tensor random_host(DType dt, const Shape& shape, Generator& g) {
  if (dt != DType::i64) return rand_normal(shape, g, 0.0, 3.0, dt);
  Tensor t = Tensor::empty(shape, DType::i64);
  int64_t* p = t.data<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<int64_t>((static_cast<uint64_t>(g.next_u32()) << 32) | g.next_u32());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const std::vector<char> x = host_bytes(a), y = host_bytes(b);
  return x == y;
}

// First use of the device (context, handles) outside the measured regions.
void warm_up(int dev = 0) {
  Tensor t = Tensor::zeros({1024}, DType::f32, Device::cuda(dev));
  (void)nn::relu(t).to_vector();
  cuda::synchronize(dev);
}

// "sm_90" in the device description -> 90 (0 when absent).
int compute_capability(int dev) {
  const std::string d = cuda::device_description(dev);
  const size_t at = d.find("sm_");
  if (at == std::string::npos) return 0;
  return std::atoi(d.c_str() + at + 3);
}

// ---------------------------------------------------------------- tensors

TEST(CudaTensor, RoundTripIsExactForEveryDtypeAndSize) {
  CXR_REQUIRE_REAL_GPU();
  Generator g(11);
  const Device dev = Device::cuda(0);
  for (DType dt : kDtypes)
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      const Tensor host = random_host(dt, {n}, g);
      const Tensor d = host.to(dev);
      EXPECT_TRUE(d.device() == dev) << d.str();
      EXPECT_EQ(d.dtype(), dt);
      EXPECT_EQ(d.shape(), host.shape());
      EXPECT_EQ(d.numel(), n);
      const Tensor back = d.to(Device::cpu());
      EXPECT_TRUE(back.device().is_cpu());
      EXPECT_TRUE(same_bytes(back, host));
      // to_vector() reads device tensors directly.
      EXPECT_EQ(d.to_vector(), host.to_vector());
      if (n == 1) {
        const double v = host.to_vector()[0];
        EXPECT_EQ(d.item(), v);
      }
    }
  // Multi-dimensional and empty shapes keep their shape.
  for (const Shape& s : std::vector<Shape>{{2, 0, 3}, {3, 5, 7, 1, 2}, {}}) {
    const Tensor host = random_host(DType::f32, s, g);
    const Tensor d = host.to(dev);
    EXPECT_EQ(d.shape(), s);
    EXPECT_TRUE(same_bytes(d.to(Device::cpu()), host)) << shape_str(s);
  }
}

TEST(CudaTensor, CreationAndFillOnDevice) {
  CXR_REQUIRE_REAL_GPU();
  const Device dev = Device::cuda(0);
  for (DType dt : kDtypes)
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      const Tensor z = Tensor::zeros({n}, dt, dev);
      EXPECT_TRUE(z.device() == dev);
      EXPECT_EQ(z.to_vector(), std::vector<double>(static_cast<size_t>(n), 0.0));
      const double value = dt == DType::i64 ? -7.0 : 2.5;
      const Tensor f = Tensor::full({n}, value, dt, dev);
      EXPECT_EQ(f.to_vector(), std::vector<double>(static_cast<size_t>(n), value));
      EXPECT_EQ(Tensor::ones({n}, dt, dev).to_vector(), std::vector<double>(static_cast<size_t>(n), 1.0));
      Tensor e = Tensor::empty({n}, dt, dev);
      e.fill_(dt == DType::i64 ? 123456789012.0 : -3.25);
      EXPECT_EQ(e.to_vector(), std::vector<double>(static_cast<size_t>(n), dt == DType::i64 ? 123456789012.0 : -3.25));
      if (dt != DType::i64) {
        // NaN fills are what poison() relies on.
        poison(e);
        for (double v : e.to_vector()) ASSERT_TRUE(std::isnan(v));
      }
    }
  // A one-element device tensor's item().
  EXPECT_EQ(Tensor::full({}, 0.375, DType::f32, dev).item(), 0.375);
  EXPECT_EQ(Tensor::full({1}, -42.0, DType::i64, dev).item(), -42.0);
}

TEST(CudaTensor, DtypeConversionOnDeviceMatchesCpu) {
  CXR_REQUIRE_REAL_GPU();
  const Device dev = Device::cuda(0);
  Generator g(12);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, (int64_t{1} << 20) + 3}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    // Floats with fractions and signs (truncation toward zero for i64), within i64 range.
    const Tensor f32 = rand_normal({n}, g, 0.0, 1000.0, DType::f32);
    const Tensor f64 = rand_normal({n}, g, 0.0, 1e6, DType::f64);
    // Integers that f32 (|v| <= 2^24) and f64 (|v| <= 2^53) hold exactly.
    Tensor i_small = Tensor::empty({n}, DType::i64), i_large = Tensor::empty({n}, DType::i64);
    for (int64_t i = 0; i < n; ++i) {
      i_small.data<int64_t>()[i] = static_cast<int64_t>(g.next_below(uint64_t{1} << 25)) - (int64_t{1} << 24);
      i_large.data<int64_t>()[i] = static_cast<int64_t>(g.next_below(uint64_t{1} << 54)) - (int64_t{1} << 53);
    }
    struct Case {
      const Tensor* src;
      DType to;
      const char* name;
    };
    const Case cases[] = {{&f32, DType::f64, "f32->f64"}, {&f32, DType::i64, "f32->i64"},
                          {&f64, DType::f32, "f64->f32"}, {&f64, DType::i64, "f64->i64"},
                          {&i_small, DType::f32, "i64->f32"}, {&i_large, DType::f64, "i64->f64"}};
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name);
      const Tensor d = c.src->to(dev).to(c.to);
      EXPECT_TRUE(d.device() == dev) << d.str();
      EXPECT_EQ(d.dtype(), c.to);
      EXPECT_TRUE(same_bytes(d, c.src->to(c.to)));
    }
    // Converting to the same dtype keeps the values.
    EXPECT_TRUE(same_bytes(f32.to(dev).to(DType::f32), f32));
  }
}

TEST(CudaTensor, CopiesBetweenAndWithinDevices) {
  CXR_REQUIRE_REAL_GPU();
  const Device dev = Device::cuda(0);
  Generator g(13);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, (int64_t{1} << 20) + 3}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const Tensor host = randn({n}, g);
    const Tensor a = host.to(dev);
    // cuda -> cuda with copy_.
    Tensor b = Tensor::empty({n}, DType::f32, dev);
    b.copy_(a);
    EXPECT_TRUE(same_bytes(b, host));
    // clone() on the device: new storage, same values, independent.
    Tensor c = a.clone();
    EXPECT_TRUE(c.device() == dev);
    EXPECT_FALSE(c.same_storage(a));
    EXPECT_TRUE(same_bytes(c, host));
    c.fill_(1.0);
    EXPECT_TRUE(same_bytes(a, host)) << "filling a clone changed the original";
    // cpu -> existing cuda tensor, cuda -> existing cpu tensor.
    Tensor d = Tensor::zeros({n}, DType::f32, dev);
    d.copy_(host);
    EXPECT_TRUE(same_bytes(d, host));
    Tensor h2 = Tensor::zeros({n}, DType::f32);
    h2.copy_(d);
    EXPECT_TRUE(same_bytes(h2, host));
    // A reshaped view copies the same bytes.
    EXPECT_TRUE(same_bytes(a.view({n, 1}).to(Device::cpu()), host));
  }
  if (cuda::device_count() >= 2) {
    const Tensor host = randn({(1 << 20) + 3}, g);
    const Tensor on1 = host.to(dev).to(Device::cuda(1));
    EXPECT_TRUE(on1.device() == Device::cuda(1));
    EXPECT_TRUE(same_bytes(on1, host));
    Tensor back = Tensor::empty(host.shape(), DType::f32, dev);
    back.copy_(on1);
    EXPECT_TRUE(same_bytes(back, host));
  }
}

// ---------------------------------------------------------------- allocator

TEST(CudaMemory, StatsTrackAllocationsAndCachedBlocksAreReused) {
  CXR_REQUIRE_REAL_GPU();
  warm_up();
  cuda::synchronize();
  cuda::empty_cache();
  cuda::reset_peak_memory();
  const int64_t n = (int64_t{3} << 20) + 5;  // ~12 MiB, odd size
  const size_t bytes = static_cast<size_t>(n) * 4;
  const cuda::MemoryStats s0 = cuda::memory_stats();
  EXPECT_EQ(s0.peak_allocated, s0.allocated);
  EXPECT_EQ(s0.cached, 0u);
  EXPECT_EQ(s0.reserved, s0.allocated + s0.cached);
  cuda::MemoryStats s1;
  {
    const Tensor t = Tensor::empty({n}, DType::f32, Device::cuda(0));
    s1 = cuda::memory_stats();
    EXPECT_GE(s1.allocated, s0.allocated + bytes);
    EXPECT_GE(s1.peak_allocated, s1.allocated);
    EXPECT_EQ(s1.allocations, s0.allocations + 1);
    EXPECT_EQ(s1.device_mallocs, s0.device_mallocs + 1) << "the cache was emptied, so this needs a cudaMalloc";
    EXPECT_EQ(s1.reserved, s1.allocated + s1.cached);
  }
  // Freed: back to the earlier allocation, the block is cached, the peak remains.
  const cuda::MemoryStats s2 = cuda::memory_stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_GE(s2.cached, bytes);
  EXPECT_EQ(s2.peak_allocated, s1.peak_allocated);
  EXPECT_EQ(s2.reserved, s2.allocated + s2.cached);
  cuda::reset_peak_memory();
  EXPECT_EQ(cuda::memory_stats().peak_allocated, s2.allocated);
  // The same size again reuses the cached block: no new cudaMalloc.
  {
    const Tensor t = Tensor::empty({n}, DType::f32, Device::cuda(0));
    const cuda::MemoryStats s3 = cuda::memory_stats();
    EXPECT_EQ(s3.device_mallocs, s2.device_mallocs);
    EXPECT_EQ(s3.allocations, s2.allocations + 1);
    EXPECT_EQ(s3.allocated, s1.allocated);
    EXPECT_LT(s3.cached, s2.cached) << "the reused block is still counted as cached";
  }
  // Many same-size allocations in a loop (a training step's pattern) need no mallocs
  // after the first round.
  const uint64_t before = cuda::memory_stats().device_mallocs;
  for (int i = 0; i < 20; ++i) {
    const Tensor a = Tensor::empty({n}, DType::f32, Device::cuda(0));
    const Tensor b = Tensor::empty({1000}, DType::f32, Device::cuda(0));
  }
  EXPECT_LE(cuda::memory_stats().device_mallocs, before + 1);  // at most the small block's first malloc
}

TEST(CudaMemory, EmptyCacheReturnsCachedBlocks) {
  CXR_REQUIRE_REAL_GPU();
  warm_up();
  const int64_t big = int64_t{64} << 20;  // 256 MiB of f32
  {
    const Tensor a = Tensor::empty({big}, DType::f32, Device::cuda(0));
    const Tensor b = Tensor::empty({33}, DType::f32, Device::cuda(0));
    const Tensor c = Tensor::empty({(1 << 20) + 7}, DType::f32, Device::cuda(0));
  }
  cuda::synchronize();
  const cuda::MemoryStats s = cuda::memory_stats();
  EXPECT_GE(s.cached, static_cast<size_t>(big) * 4);
  size_t free0 = 0, total0 = 0;
  cuda::device_memory(0, &free0, &total0);
  cuda::empty_cache();
  const cuda::MemoryStats e = cuda::memory_stats();
  EXPECT_EQ(e.cached, 0u);
  EXPECT_EQ(e.reserved, e.allocated);
  EXPECT_EQ(e.allocated, s.allocated);
  size_t free1 = 0, total1 = 0;
  cuda::device_memory(0, &free1, &total1);
  EXPECT_EQ(total1, total0);
  // The driver got the 256 MiB block back (with slack for other users of the device).
  EXPECT_GE(free1 + (size_t{64} << 20), free0 + static_cast<size_t>(big) * 4);
}

TEST(CudaMemory, OutOfMemoryIsReportedAndRecoverable) {
  CXR_REQUIRE_REAL_GPU();
  warm_up();
  size_t free_b = 0, total_b = 0;
  cuda::device_memory(0, &free_b, &total_b);
  ASSERT_GT(total_b, 0u);
  const size_t request = total_b + (size_t{1} << 30);
  const size_t allocated_before = cuda::memory_stats().allocated;
  bool thrown = false;
  try {
    const Tensor t = Tensor::empty({static_cast<int64_t>(request / 4)}, DType::f32, Device::cuda(0));
    ADD_FAILURE() << "allocating " << request << " bytes on a device with " << total_b << " succeeded";
  } catch (const OutOfMemory& e) {
    thrown = true;
    const std::string msg = e.what();
    std::cout << "[ info     ] OutOfMemory message: " << msg << std::endl;
    EXPECT_NE(msg.find("bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find_first_of("0123456789"), std::string::npos) << msg;
    const bool names_request = msg.find(std::to_string(request)) != std::string::npos ||
                               msg.find(std::to_string(request >> 20)) != std::string::npos ||
                               msg.find(std::to_string(request >> 30)) != std::string::npos;
    EXPECT_TRUE(names_request) << "the requested size (" << request << " bytes) is not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cxr::OutOfMemory, got: " << e.what();
  }
  EXPECT_TRUE(thrown);
  // Nothing leaked, and the device still works.
  EXPECT_EQ(cuda::memory_stats().allocated, allocated_before);
  Tensor ok = Tensor::empty({(1 << 20) / 4}, DType::f32, Device::cuda(0));
  ok.fill_(4.0);
  const std::vector<double> v = ok.to_vector();
  EXPECT_EQ(v.front(), 4.0);
  EXPECT_EQ(v.back(), 4.0);
  EXPECT_EQ(nn::relu(ok).to(Device::cpu()).to_vector().back(), 4.0);
}

// ---------------------------------------------------------------- pinned buffers

static_assert(!std::is_copy_constructible_v<cuda::PinnedBuffer>);
static_assert(!std::is_copy_assignable_v<cuda::PinnedBuffer>);
static_assert(std::is_nothrow_move_constructible_v<cuda::PinnedBuffer>);
static_assert(std::is_nothrow_move_assignable_v<cuda::PinnedBuffer>);

TEST(CudaPinned, BufferIsPinnedWritableAndMoveOnly) {
  CXR_REQUIRE_REAL_GPU();
  const cuda::PinnedBuffer empty;
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_FALSE(empty.pinned());

  const size_t bytes = (size_t{1} << 20) + 3;
  cuda::PinnedBuffer a(bytes);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(a.size(), bytes);
  EXPECT_TRUE(a.pinned());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  auto* p = static_cast<unsigned char*>(a.data());
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(i * 31 + 7);
  for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(p[i], static_cast<unsigned char>(i * 31 + 7)) << i;

  // Move construction takes the memory and leaves the source empty.
  void* const mem = a.data();
  cuda::PinnedBuffer b(std::move(a));
  EXPECT_EQ(b.data(), mem);
  EXPECT_EQ(b.size(), bytes);
  EXPECT_TRUE(b.pinned());
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.size(), 0u);
  EXPECT_FALSE(a.pinned());
  // Move assignment releases the target's own memory and takes the source's.
  cuda::PinnedBuffer c(4096);
  c = std::move(b);
  EXPECT_EQ(c.data(), mem);
  EXPECT_EQ(c.size(), bytes);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(static_cast<unsigned char*>(c.data())[12345], static_cast<unsigned char>(12345 * 31 + 7));
  cuda::PinnedBuffer z(0);
  EXPECT_EQ(z.size(), 0u);
}

TEST(CudaPinned, CopiesThroughPinnedMemory) {
  CXR_REQUIRE_REAL_GPU();
  const int64_t n = (1 << 20) + 3;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  cuda::PinnedBuffer buf(bytes);
  auto* f = static_cast<float*>(buf.data());
  for (int64_t i = 0; i < n; ++i) f[i] = static_cast<float>(i % 1000) * 0.5f - 7.0f;
  // Host (pinned) -> device is ordered on the stream; synchronize before reusing buf.
  Tensor t = Tensor::empty({n}, DType::f32, Device::cuda(0));
  cuda::copy_bytes(t.raw_data(), t.device(), buf.data(), Device::cpu(), bytes);
  cuda::synchronize();
  std::memset(buf.data(), 0, bytes);
  const std::vector<double> v = t.to_vector();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(v[i], static_cast<float>(i % 1000) * 0.5f - 7.0f) << i;
  // Device -> host (pinned) waits for the data.
  const Tensor u = nn::mul_scalar(t, 2.0);
  cuda::copy_bytes(buf.data(), Device::cpu(), u.raw_data(), u.device(), bytes);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(f[i], 2.0f * (static_cast<float>(i % 1000) * 0.5f - 7.0f)) << i;
}

// ---------------------------------------------------------------- settings and devices

TEST(CudaSettings, TogglesReadBack) {
  CXR_REQUIRE_REAL_GPU();
  EXPECT_TRUE(cuda::built_with_cuda());
  EXPECT_GE(cuda::device_count(), 1);
  const std::string desc = cuda::device_description(0);
  std::cout << "[ info     ] device 0: " << desc << "; CUDA runtime " << cuda::runtime_version() << ", driver "
            << cuda::driver_version() << ", cuDNN " << cuda::cudnn_version() << ", cuBLAS "
            << cuda::cublas_version() << std::endl;
  EXPECT_NE(desc.find("sm_"), std::string::npos) << desc;
  EXPECT_FALSE(cuda::runtime_version().empty());
  EXPECT_FALSE(cuda::cudnn_version().empty());
  EXPECT_FALSE(cuda::cublas_version().empty());

  const bool tf32 = cuda::allow_tf32(), det = cuda::deterministic(), sync = cuda::sync_launches();
  cuda::set_allow_tf32(false);
  EXPECT_FALSE(cuda::allow_tf32());
  cuda::set_allow_tf32(true);
  if (compute_capability(0) >= 80) {
    EXPECT_TRUE(cuda::allow_tf32()) << desc;
  }
  cuda::set_deterministic(true);
  EXPECT_TRUE(cuda::deterministic());
  cuda::set_deterministic(false);
  EXPECT_FALSE(cuda::deterministic());
  cuda::set_sync_launches(true);
  EXPECT_TRUE(cuda::sync_launches());
  // Ops run (and are checked launch by launch) with synchronous launches.
  const Tensor x = Tensor::full({33, 7}, -2.0, DType::f32, Device::cuda(0));
  EXPECT_EQ(nn::sum(nn::relu(x)).item(), 0.0);
  cuda::set_sync_launches(false);
  EXPECT_FALSE(cuda::sync_launches());
  cuda::synchronize();

  cuda::set_allow_tf32(tf32);
  cuda::set_deterministic(det);
  cuda::set_sync_launches(sync);
  EXPECT_EQ(cuda::allow_tf32(), tf32);
  EXPECT_EQ(cuda::deterministic(), det);
  EXPECT_EQ(cuda::sync_launches(), sync);
}

TEST(CudaDevice, ParseAndNames) {
  CXR_REQUIRE_REAL_GPU();
  EXPECT_TRUE(Device::parse("cuda:0") == Device::cuda(0));
  EXPECT_TRUE(Device::parse("cuda") == Device::cuda(0));
  EXPECT_TRUE(Device::parse("cuda:1") == Device::cuda(1));
  EXPECT_TRUE(Device::parse("cpu") == Device::cpu());
  EXPECT_EQ(Device::cuda(0).str(), "cuda:0");
  EXPECT_TRUE(Device::parse(Device::cuda(3).str()) == Device::cuda(3));
  expect_error([] { Device::parse("cuda:x"); }, {"cuda:x"});
  expect_error([] { Device::parse("gpu"); }, {"gpu"});
  const Tensor t = Tensor::zeros({2, 3}, DType::f32, Device::parse("cuda:0"));
  EXPECT_EQ(t.str(), "f32[2, 3] on cuda:0");
}

TEST(CudaDevice, InvalidIndexIsAClearError) {
  CXR_REQUIRE_REAL_GPU();
  const int n = cuda::device_count();
  const std::string idx = std::to_string(n);
  expect_error([&] { Tensor::empty({4}, DType::f32, Device::cuda(n)); }, {idx.c_str()});
  expect_error([&] { Tensor::zeros({4}, DType::f32, Device::cuda(n + 5)); }, {std::to_string(n + 5).c_str()});
  expect_error([&] { Tensor::zeros({4}).to(Device::cuda(n)); }, {idx.c_str()});
  expect_error([&] { Tensor::empty({4}, DType::f32, Device::cuda(-1)); }, {"-1"});
  // The valid device still works afterwards.
  EXPECT_EQ(Tensor::full({3}, 2.0, DType::f32, Device::cuda(0)).to_vector(), (std::vector<double>{2, 2, 2}));
}

}  // namespace
}  // namespace cxr
