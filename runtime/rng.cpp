#include "runtime/rng.h"

#include "runtime/thread_pool.h"

namespace cxr {

uint64_t Generator::next_below(uint64_t n) {
  CXR_CHECK(n > 0, "Generator::next_below(0)");
  // 64 random bits; draws in the incomplete top range [limit, 2^64) are rejected, which
  // removes the modulo bias. Each attempt draws a fresh block: a retry must be as random
  // as the first draw, or the results it decides are not uniform.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    const PhiloxBlock b = philox4x32(seed_, reserve(4), 0);
    const uint64_t x = (static_cast<uint64_t>(b.v[0]) << 32) | b.v[1];
    if (x < limit) return x % n;
  }
}

template <typename T>
static void fill_uniform_t(T* p, int64_t n, uint64_t seed, uint64_t base, double lo, double hi) {
  // Element i depends only on (seed, base, i): the split over threads cannot change it.
  default_thread_pool().parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      p[i] = static_cast<T>(lo + (hi - lo) * bits_to_uniform(philox_bits(seed, base, static_cast<uint64_t>(i))));
  });
}

template <typename T>
static void fill_normal_t(T* p, int64_t n, uint64_t seed, uint64_t base, double mean, double sd) {
  // Box-Muller on pairs (2k, 2k+1): both values come from one Philox block, so any
  // pair can be computed on its own, once.
  constexpr double kTwoPi = 6.283185307179586;
  const int64_t pairs = (n + 1) / 2;
  default_thread_pool().parallel_for(pairs, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const uint64_t i = 2 * static_cast<uint64_t>(k);
      const PhiloxBlock blk = philox4x32(seed, base + (i >> 2), 0);
      const double u1 = bits_to_uniform_open(blk.v[i & 3]);
      const double u2 = bits_to_uniform(blk.v[(i & 3) + 1]);
      const double r = std::sqrt(-2.0 * std::log(u1));
      p[i] = static_cast<T>(mean + sd * r * std::cos(kTwoPi * u2));
      if (static_cast<int64_t>(i) + 1 < n) p[i + 1] = static_cast<T>(mean + sd * r * std::sin(kTwoPi * u2));
    }
  });
}

void Generator::fill_uniform(Tensor& t, double lo, double hi) {
  CXR_CHECK(t.device().is_cpu(), "fill_uniform: ", t.str(), " is not on the CPU");
  const uint64_t base = reserve(t.numel());
  dispatch_float(t.dtype(), "fill_uniform", [&]<typename T>() {
    fill_uniform_t(t.data<T>(), t.numel(), seed_, base, lo, hi);
  });
  t.bump_version();
}

void Generator::fill_normal(Tensor& t, double mean, double stddev) {
  CXR_CHECK(t.device().is_cpu(), "fill_normal: ", t.str(), " is not on the CPU");
  const uint64_t base = reserve(t.numel() + 1);
  dispatch_float(t.dtype(), "fill_normal", [&]<typename T>() {
    fill_normal_t(t.data<T>(), t.numel(), seed_, base, mean, stddev);
  });
  t.bump_version();
}

Tensor rand_uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  gen.fill_uniform(t, lo, hi);
  return t;
}

Tensor rand_normal(const Shape& shape, Generator& gen, double mean, double stddev, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  gen.fill_normal(t, mean, stddev);
  return t;
}

}  // namespace cxr
