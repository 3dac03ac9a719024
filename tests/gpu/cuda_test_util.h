// Shared helpers for the GPU tests (tests/gpu): skipping without a device, the device
// under test, tolerance tiers, relative error, NaN poisoning of outputs, seeded random
// inputs, TF32 / determinism scopes, and compare_op(), which runs one computation on the
// CPU and on the device from the same inputs and the same upstream gradient and compares
// the outputs and the input gradients.
//
// Every TEST in tests/gpu starts with CXR_REQUIRE_GPU() (or CXR_REQUIRE_REAL_GPU()), so
// on a machine or a build without CUDA the whole suite compiles, links and skips. The
// skip message then is "no CUDA device" (gpu_tests.cmake matches it to report the
// executable as skipped); other skips (not enough memory, ...) use other words.
//
// Tolerance tiers (relative error ||gpu - cpu||_2 / ||cpu||_2 over the whole tensor, in
// double; NaN or inf never passes):
//   kStrictTol     1e-5  TF32 off (cuda::set_allow_tf32(false)): plain fp32 on both sides.
//   kTf32Tol       3e-4  TF32 on, for inputs that TF32 represents exactly (tf32_exact()).
//                        Any indexing, layout or algorithm-selection bug shows up as an
//                        O(1) error, so this catches everything except the rounding itself.
//                        (Exact for direct / implicit-GEMM algorithms and Winograd F(2,3);
//                        Winograd F(4,3) or FFT algorithms round transformed values, which
//                        could come near 3e-4 if cuDNN picks them under TF32.)
//   kTf32RandomTol 2e-3  TF32 on, arbitrary fp32 inputs. TF32 keeps 10 mantissa bits: with
//                        round-to-nearest each operand carries a relative error of about
//                        2e-4 rms, so a product about 2.8e-4 and a GEMM about the same
//                        norm-wise; with truncation the bias roughly doubles that. 3e-4
//                        would therefore fail for correct code on random data; 2e-3 still
//                        catches fp16/bf16 accumulation or inputs (~1e-3 .. 4e-3).
//
// Self-test mode: with no CUDA device and CXR_GPU_TESTS_ON_CPU=1 in the environment, the
// tests that compare a device run against the CPU use the CPU as the "device" (tests that
// need real device features, marked CXR_REQUIRE_REAL_GPU, still skip). Every comparison
// then passes trivially; the mode exists to check the test logic itself (shapes, calls,
// autograd plumbing) on a machine without a GPU. It never turns on by itself.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "runtime/cuda.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace cxr::gputest {

constexpr double kStrictTol = 1e-5;
constexpr double kTf32Tol = 3e-4;
constexpr double kTf32RandomTol = 2e-3;

// ---------------------------------------------------------------- device selection

inline bool selftest_on_cpu() {
  const char* e = std::getenv("CXR_GPU_TESTS_ON_CPU");
  return e != nullptr && std::string(e) == "1";
}
inline bool real_gpu() { return cuda::available(); }
// A CUDA device, or the self-test mode's stand-in.
inline bool device_or_selftest() { return real_gpu() || selftest_on_cpu(); }
// The device under test: cuda:0, or the CPU in self-test mode.
inline Device test_device() { return real_gpu() ? Device::cuda(0) : Device::cpu(); }

}  // namespace cxr::gputest

// First statement of every GPU test. CXR_REQUIRE_GPU honours the self-test mode;
// CXR_REQUIRE_REAL_GPU is for tests of device features (memory, pinned buffers, settings).
#define CXR_REQUIRE_GPU()                                                              \
  do {                                                                                 \
    if (!::cxr::gputest::device_or_selftest()) GTEST_SKIP() << "no CUDA device";       \
  } while (0)
#define CXR_REQUIRE_REAL_GPU()                                                                       \
  do {                                                                                               \
    if (!::cxr::gputest::real_gpu())                                                                 \
      GTEST_SKIP() << (::cxr::gputest::selftest_on_cpu() ? "needs a real device (self-test mode)"    \
                                                         : "no CUDA device");                        \
  } while (0)

namespace cxr::gputest {

// ---------------------------------------------------------------- error report
//
// Every comparison is recorded with its error and bound; at the end of the run the
// closest calls (largest error / bound) are printed, so the first run on a GPU shows how
// much margin each tier really has.

struct ErrRecord {
  std::string what;
  double err, tol;
};
inline std::vector<ErrRecord>& err_records() {
  static std::vector<ErrRecord> v;
  return v;
}
inline void record_err(const std::string& what, double err, double tol) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test = info ? std::string(info->test_suite_name()) + "." + info->name() + ": " : "";
  err_records().push_back({test + what, err, tol});
}

class ErrorReport : public ::testing::Environment {
 public:
  void TearDown() override {
    auto& v = err_records();
    if (v.empty()) return;
    auto ratio = [](const ErrRecord& r) {
      const double q = r.tol > 0 ? r.err / r.tol : r.err;
      return std::isnan(q) ? std::numeric_limits<double>::infinity() : q;
    };
    std::vector<ErrRecord> s = v;
    std::stable_sort(s.begin(), s.end(), [&](const ErrRecord& a, const ErrRecord& b) { return ratio(a) > ratio(b); });
    std::cout << "[ margins  ] " << v.size() << " comparisons; the closest to their bounds:\n";
    for (size_t i = 0; i < std::min<size_t>(s.size(), 15); ++i)
      std::cout << "[ margins  ]   err " << s[i].err << " / bound " << s[i].tol << "  " << s[i].what << "\n";
    std::cout << std::flush;
  }
};
inline ::testing::Environment* const kErrorReportEnv = ::testing::AddGlobalTestEnvironment(new ErrorReport);

// ---------------------------------------------------------------- comparisons

// ||a - b||_2 / ||b||_2 over all elements, in double; b is the reference. Both tensors
// may be on any device (they are copied to the host) and of any dtype. Returns +inf when
// either is undefined or the shapes differ, NaN when any element of either is NaN or inf
// (so such a result never passes a `< tol` test), and the absolute norm ||a - b|| when
// ||b|| is zero (two all-zero tensors give 0).
inline double rel_err(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return std::numeric_limits<double>::quiet_NaN();
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  return norm > 0 ? std::sqrt(diff) / std::sqrt(norm) : std::sqrt(diff);
}

// ||a - b|| / max(||b||, floor): rel_err with a floor under the reference norm, for
// tensors whose reference can be (analytically) zero while the values carry rounding
// noise of the size of their neighbours', e.g. a gradient that cancels exactly in exact
// arithmetic. Same +inf / NaN conventions as rel_err.
inline double rel_err_floor(const Tensor& a, const Tensor& b, double floor) {
  if (!a.defined() || !b.defined() || a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return std::numeric_limits<double>::quiet_NaN();
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  const double d = std::max(std::sqrt(norm), floor);
  return d > 0 ? std::sqrt(diff) / d : std::sqrt(diff);
}

// Where `got` differs most from `want`, for failure messages.
inline std::string worst_element(const Tensor& got, const Tensor& want) {
  if (!got.defined() || !want.defined() || got.numel() != want.numel()) return "";
  const std::vector<double> x = got.to_vector(), y = want.to_vector();
  size_t at = 0;
  double worst = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = std::isfinite(x[i]) ? std::abs(x[i] - y[i]) : std::numeric_limits<double>::infinity();
    if (d > worst) worst = d, at = i;
  }
  std::ostringstream os;
  os.precision(9);
  if (!x.empty()) os << "worst element " << at << ": got " << x[at] << ", want " << y[at];
  return os.str();
}

// Expects rel_err(got, want) < tol (NaN fails); records the error; returns it.
inline double expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  const double err = rel_err(got, want);
  record_err(what, err, tol);
  EXPECT_TRUE(err < tol) << what << ": relative error " << err << " (bound " << tol << ") for "
                         << (got.defined() ? got.str() : "undefined") << " vs reference "
                         << (want.defined() ? want.str() : "undefined") << "; " << worst_element(got, want);
  return err;
}

// Expects every element to be bit-identical after conversion to double (exact for f32;
// NaN never equals), with equal shapes.
inline void expect_exact(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined() && want.defined()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what << ": " << got.str() << " vs " << want.str();
  const std::vector<double> x = got.to_vector(), y = want.to_vector();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i]) || std::signbit(x[i]) != std::signbit(y[i])) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << x.size() << " elements differ; first at " << first << ": got "
                    << (first >= 0 ? x[first] : 0.0) << ", want " << (first >= 0 ? y[first] : 0.0);
}

// Raw bytes of a tensor (copied to the host), for bit-identity checks.
inline std::vector<char> host_bytes(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const char* p = static_cast<const char*>(h.raw_data());
  return std::vector<char>(p, p + h.nbytes());
}

// ---------------------------------------------------------------- inputs

// A copy of t on the device under test (always a new tensor, also in self-test mode,
// where Tensor::to(cpu) of a CPU tensor would return t itself). Undefined stays undefined.
inline Tensor to_device(const Tensor& t) {
  if (!t.defined()) return t;
  const Device d = test_device();
  return d.is_cpu() ? t.clone() : t.to(d);
}

// New CPU f32 tensors from a Generator. Each test makes its own Generator with a fixed
// seed, so inputs are reproducible and independent of test order.
inline Tensor randn(const Shape& s, Generator& g, double sd = 1.0, double mean = 0.0) {
  return rand_normal(s, g, mean, sd, DType::f32);
}
inline Tensor randu(const Shape& s, Generator& g, double lo, double hi) { return rand_uniform(s, g, lo, hi, DType::f32); }

// Values k/8 with integer k uniform in [-16, 16]: at most 5 significant bits, so TF32
// holds them exactly, every product of two of them is exact in fp32 and TF32 alike, and
// so is every sum of up to 65536 such products. A GEMM or convolution of such inputs is
// therefore exact whatever the summation order or TF32 setting (for direct and implicit-
// GEMM algorithms), which isolates TF32-path bugs from TF32 rounding.
inline Tensor tf32_exact(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(static_cast<int64_t>(g.next_below(33)) - 16) / 8.0f;
  return t;
}

// A CPU i64 tensor of class indices in [0, classes).
inline Tensor rand_labels(int64_t n, int64_t classes, Generator& g) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int64_t>(g.next_below(static_cast<uint64_t>(classes)));
  return Tensor::from_vector(v, {n});
}

inline Tensor req(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

// ---------------------------------------------------------------- NaN poisoning
//
// A kernel that forgets to write part of its output must not pass by luck (zeroed fresh
// memory, or an earlier identical result left in a reused block). Two tools:
//
// poison(t): fills an existing device tensor with NaN, for outputs written in place.
//
// poison_allocator(sizes): for ops that allocate their outputs. The device allocator
// caches freed blocks by size class and hands them to later allocations of that class.
// This first returns every cached block to the driver (empty_cache, so no old block of
// those sizes is left), then allocates `copies` blocks of each byte size, fills them with
// NaN and frees them: the next allocations of those sizes (the op's outputs, saved
// tensors and gradients) receive NaN-filled memory, and any element the op does not write
// stays NaN and fails every comparison. Live tensors are untouched. Fills are queued on
// the device's stream, before the op's work. On the CPU (self-test mode) the same calls
// poison the host block cache (blocks of 256 KiB and more).
inline void poison(Tensor& t) { t.fill_(std::numeric_limits<double>::quiet_NaN()); }

inline void poison_allocator(const std::vector<size_t>& byte_sizes, int copies = 4) {
  const Device dev = test_device();
  if (dev.is_cuda()) cuda::empty_cache(dev.index);
  std::set<size_t> sizes(byte_sizes.begin(), byte_sizes.end());
  std::vector<Tensor> hold;
  for (size_t b : sizes) {
    if (b == 0) continue;
    for (int c = 0; c < copies; ++c) {
      Tensor t = Tensor::empty({static_cast<int64_t>((b + 3) / 4)}, DType::f32, dev);
      poison(t);
      hold.push_back(t);
    }
  }
  hold.clear();  // back to the allocator's cache, NaN-filled
}

// poison_allocator for blocks the size of each (defined) tensor in `like`.
inline void poison_like(const std::vector<Tensor>& like, int copies = 4) {
  std::vector<size_t> sizes;
  for (const Tensor& t : like)
    if (t.defined()) sizes.push_back(t.nbytes());
  poison_allocator(sizes, copies);
}

// ---------------------------------------------------------------- settings scopes

// Sets a per-device setting on the device under test for the scope and restores it
// afterwards (no-op on the CPU, which is plain fp32 and deterministic).
template <bool (*Get)(int), void (*Set)(bool, int)>
class SettingScope {
 public:
  explicit SettingScope(bool on) : dev_(test_device()) {
    if (!dev_.is_cuda()) return;
    prev_ = Get(dev_.index);
    Set(on, dev_.index);
  }
  ~SettingScope() {
    if (dev_.is_cuda()) Set(prev_, dev_.index);
  }
  SettingScope(const SettingScope&) = delete;
  SettingScope& operator=(const SettingScope&) = delete;

 private:
  Device dev_;
  bool prev_ = false;
};
using Tf32Scope = SettingScope<cuda::allow_tf32, cuda::set_allow_tf32>;
using DeterministicScope = SettingScope<cuda::deterministic, cuda::set_deterministic>;

// ---------------------------------------------------------------- op comparison

using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;

struct CompareOptions {
  double fwd_tol = kStrictTol;  // output
  double bwd_tol = kStrictTol;  // each input gradient
  bool backward = true;         // run nn::backward(out, R) when the output requires grad
  bool exact = false;           // require bit-identical outputs and gradients instead
  bool i64_on_device = true;    // false: integer inputs (class targets) stay on the CPU
  bool tf32_exact_grad = false; // draw R with tf32_exact() (for the TF32 tier)
  bool poison = true;           // poison_allocator before the device forward and backward
  uint64_t seed = 4242;         // for R
};

// The tensors of one comparison, after both runs (running statistics updated in place,
// gradients in grad()), for checks beyond the output and the gradients.
struct Comparison {
  Inputs cpu_in, dev_in;
  Tensor cpu_out, dev_out;
  bool ok = false;  // both runs completed
};

// Runs fn on CPU copies and on device copies of `inputs` (CPU tensors; f32 inputs with
// requires_grad get gradients, others are constants), compares the outputs, then runs
// nn::backward(out, R) on both with the same R (uniform in [-1, 1), from o.seed) and
// compares the gradient of every input that requires grad. Exceptions from either run
// are reported as failures naming `what`; the test continues with its next case.
inline Comparison compare_op(const std::string& what, const OpFn& fn, const Inputs& inputs,
                             const CompareOptions& o = {}) {
  SCOPED_TRACE(what);
  Comparison c;
  for (const Tensor& t : inputs) {
    if (!t.defined()) {
      c.cpu_in.push_back(t);
      c.dev_in.push_back(t);
      continue;
    }
    Tensor hc = t.clone(), dc = (t.dtype() == DType::i64 && !o.i64_on_device) ? t.clone() : to_device(t);
    if (t.requires_grad()) {
      hc.set_requires_grad(true);
      dc.set_requires_grad(true);
    }
    c.cpu_in.push_back(hc);
    c.dev_in.push_back(dc);
  }

  // CPU reference.
  Tensor R;
  try {
    c.cpu_out = fn(c.cpu_in);
    if (o.backward && c.cpu_out.requires_grad()) {
      Generator g(o.seed);
      R = o.tf32_exact_grad ? tf32_exact(c.cpu_out.shape(), g) : randu(c.cpu_out.shape(), g, -1.0, 1.0);
      nn::backward(c.cpu_out, R);
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the CPU reference threw: " << e.what();
    return c;
  }

  // Device run, with every output and gradient block poisoned.
  std::vector<Tensor> grads;
  for (const Tensor& t : c.cpu_in)
    if (t.defined() && t.requires_grad() && t.grad().defined()) grads.push_back(t.grad());
  try {
    if (o.poison) {
      std::vector<Tensor> like = grads;
      like.push_back(c.cpu_out);
      poison_like(like);
    }
    c.dev_out = fn(c.dev_in);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the device run threw: " << e.what();
    return c;
  }
  EXPECT_TRUE(c.dev_out.device() == test_device()) << what << ": output " << c.dev_out.str() << " is not on "
                                                   << test_device().str();
  EXPECT_EQ(c.dev_out.dtype(), c.cpu_out.dtype()) << what;
  EXPECT_EQ(c.dev_out.requires_grad(), c.cpu_out.requires_grad()) << what << ": autograd recording differs";
  if (o.exact) expect_exact(c.dev_out, c.cpu_out, what + " output");
  else expect_close(c.dev_out, c.cpu_out, o.fwd_tol, what + " output");

  if (R.defined()) {
    try {
      if (o.poison) poison_like(grads);
      nn::backward(c.dev_out, to_device(R));
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": the device backward threw: " << e.what();
      return c;
    }
    for (size_t i = 0; i < c.cpu_in.size(); ++i) {
      const Tensor& hc = c.cpu_in[i];
      if (!hc.defined() || !hc.requires_grad()) continue;
      const std::string gw = what + " grad of input " + std::to_string(i);
      const Tensor cg = hc.grad(), dg = c.dev_in[i].grad();
      if (!cg.defined()) {
        // An undefined gradient counts as zero.
        if (dg.defined()) expect_close(dg, Tensor::zeros(dg.shape()), o.bwd_tol, gw + " (CPU: none)");
        continue;
      }
      if (!dg.defined()) {
        ADD_FAILURE() << gw << ": the CPU has a gradient, the device none";
        continue;
      }
      EXPECT_TRUE(dg.device() == test_device()) << gw << " is " << dg.str();
      if (o.exact) expect_exact(dg, cg, gw);
      else expect_close(dg, cg, o.bwd_tol, gw);
    }
  }
  c.ok = true;
  return c;
}

}  // namespace cxr::gputest
