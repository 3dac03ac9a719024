// Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
//
// A value is a pure function of (seed, counter), so element i of a fill is the same
// whichever thread (or GPU thread) computes it, and the same seed always gives the
// same numbers. A Generator hands out disjoint counter ranges: each fill of n values
// reserves ceil(n/4) 128-bit blocks and advances its offset past them.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "runtime/tensor.h"

#if defined(__CUDACC__)
#define CXR_HD __host__ __device__
#else
#define CXR_HD
#endif

namespace cxr {

struct PhiloxBlock {
  uint32_t v[4];
};

CXR_HD inline PhiloxBlock philox4x32(uint64_t key64, uint64_t counter_lo, uint64_t counter_hi) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key64), k1 = static_cast<uint32_t>(key64 >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// 32 random bits for element i of the range that starts at block `base`.
CXR_HD inline uint32_t philox_bits(uint64_t seed, uint64_t base, uint64_t i, uint64_t stream = 0) {
  return philox4x32(seed, base + (i >> 2), stream).v[i & 3];
}

// Uniform in [0, 1) with 24 bits of resolution (exactly representable in float).
CXR_HD inline float bits_to_uniform(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }
// Uniform in (0, 1], safe for log().
CXR_HD inline double bits_to_uniform_open(uint32_t x) { return (static_cast<double>(x >> 8) + 1.0) / 16777216.0; }

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed), offset_(0) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }

  // Reserves counters for n values; returns the base block to pass to philox_bits.
  uint64_t reserve(int64_t n) {
    const uint64_t base = offset_;
    offset_ += (static_cast<uint64_t>(n) + 3) / 4;
    return base;
  }
  // Next 32 random bits / a double in [0,1) / an integer in [0, n), sequentially.
  uint32_t next_u32() { return philox_bits(seed_, reserve(1), 0); }
  double next_double() { return static_cast<double>(next_u32()) / 4294967296.0; }
  uint64_t next_below(uint64_t n);

  // Fills a CPU tensor (f32 or f64) in place.
  void fill_uniform(Tensor& t, double lo, double hi);
  void fill_normal(Tensor& t, double mean, double stddev);

 private:
  uint64_t seed_;
  uint64_t offset_;
};

// Convenience: new CPU tensors with uniform [lo, hi) or normal(mean, std) values.
Tensor rand_uniform(const Shape& shape, Generator& gen, double lo = 0.0, double hi = 1.0,
                    DType dtype = DType::f32);
Tensor rand_normal(const Shape& shape, Generator& gen, double mean = 0.0, double stddev = 1.0,
                   DType dtype = DType::f32);

}  // namespace cxr
