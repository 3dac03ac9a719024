// Philox-4x32-10 and the Generator: known answers, determinism, counter independence,
// distribution statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "runtime/rng.h"

namespace cxr {
namespace {

// The Random123 known-answer vectors for philox4x32_10 (kat_vectors): counter and key
// all zeros, and all ones. philox4x32(key64, counter_lo, counter_hi) packs the words
// little-end first: ctr = {lo, lo>>32, hi, hi>>32}, key = {k, k>>32}.
TEST(Philox, KnownAnswerZero) {
  const PhiloxBlock b = philox4x32(0, 0, 0);
  EXPECT_EQ(b.v[0], 0x6627e8d5u);
  EXPECT_EQ(b.v[1], 0xe169c58du);
  EXPECT_EQ(b.v[2], 0xbc57ac4cu);
  EXPECT_EQ(b.v[3], 0x9b00dbd8u);
}

TEST(Philox, KnownAnswerAllOnes) {
  const PhiloxBlock b = philox4x32(~uint64_t{0}, ~uint64_t{0}, ~uint64_t{0});
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[1], 0x41c83b0eu);
  EXPECT_EQ(b.v[2], 0xa20bc7c6u);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
}

TEST(Philox, KnownAnswerPi) {
  // ctr = {243f6a88 85a308d3 13198a2e 03707344}, key = {a4093822 299f31d0}
  const PhiloxBlock b = philox4x32(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull);
  EXPECT_EQ(b.v[0], 0xd16cfe09u);
  EXPECT_EQ(b.v[1], 0x94fdccebu);
  EXPECT_EQ(b.v[2], 0x5001e420u);
  EXPECT_EQ(b.v[3], 0x24126ea1u);
}

TEST(Philox, BitsIndexIntoBlocks) {
  const PhiloxBlock b0 = philox4x32(7, 10, 0), b1 = philox4x32(7, 11, 0);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(philox_bits(7, 10, i), b0.v[i]);
  for (uint64_t i = 4; i < 8; ++i) EXPECT_EQ(philox_bits(7, 10, i), b1.v[i - 4]);
  EXPECT_EQ(philox_bits(7, 10, 0, 5), philox4x32(7, 10, 5).v[0]);
}

TEST(Philox, UniformConversions) {
  EXPECT_EQ(bits_to_uniform(0), 0.0f);
  EXPECT_LT(bits_to_uniform(0xffffffffu), 1.0f);
  EXPECT_GT(bits_to_uniform_open(0), 0.0);
  EXPECT_EQ(bits_to_uniform_open(0xffffffffu), 1.0);
}

std::vector<double> draw_uniform(uint64_t seed, int64_t n, DType dt = DType::f64) {
  Generator g(seed);
  return rand_uniform({n}, g, 0.0, 1.0, dt).to_vector();
}

TEST(Generator, SameSeedSameNumbers) {
  EXPECT_EQ(draw_uniform(42, 1000), draw_uniform(42, 1000));
  Generator a(9), b(9);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.next_u32(), b.next_u32());
  Generator c(9), d(9);
  EXPECT_EQ(rand_normal({257}, c, 0, 1, DType::f64).to_vector(), rand_normal({257}, d, 0, 1, DType::f64).to_vector());
}

TEST(Generator, DifferentSeedsDiffer) {
  const auto a = draw_uniform(1, 256), b = draw_uniform(2, 256);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  EXPECT_LT(same, 3);
  Generator g1(1), g2(2);
  EXPECT_NE(g1.next_u32(), g2.next_u32());
}

TEST(Generator, ConsecutiveFillsDiffer) {
  Generator g(3);
  const auto a = rand_uniform({64}, g, 0, 1, DType::f64).to_vector();
  const auto b = rand_uniform({64}, g, 0, 1, DType::f64).to_vector();
  EXPECT_NE(a, b);
}

TEST(Generator, ElementDoesNotDependOnFillSize) {
  // Element i of a fill is a function of (seed, base, i) only: a fill of 5 values is a
  // prefix of a fill of 1000 from the same state, for uniform and normal.
  for (int64_t n : {1, 2, 3, 5, 7, 33}) {
    const auto big = draw_uniform(11, 1000), small = draw_uniform(11, n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(small[i], big[i]) << "n=" << n << " i=" << i;
    Generator gb(11), gs(11);
    const auto nb = rand_normal({1000}, gb, 0, 1, DType::f64).to_vector();
    const auto ns = rand_normal({n}, gs, 0, 1, DType::f64).to_vector();
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(ns[i], nb[i]) << "normal n=" << n << " i=" << i;
  }
  // f32 and f64 fills draw the same numbers (24-bit uniforms are exact in float).
  EXPECT_EQ(draw_uniform(5, 100, DType::f32), draw_uniform(5, 100, DType::f64));
}

TEST(Generator, ReserveAdvancesByBlocks) {
  Generator g(0);
  EXPECT_EQ(g.offset(), 0u);
  EXPECT_EQ(g.reserve(1), 0u);
  EXPECT_EQ(g.offset(), 1u);
  EXPECT_EQ(g.reserve(4), 1u);
  EXPECT_EQ(g.offset(), 2u);
  EXPECT_EQ(g.reserve(5), 2u);
  EXPECT_EQ(g.offset(), 4u);
  EXPECT_EQ(g.reserve(0), 4u);
  EXPECT_EQ(g.offset(), 4u);
  Tensor t = Tensor::empty({9}, DType::f32);
  g.fill_uniform(t, 0, 1);
  EXPECT_EQ(g.offset(), 7u);  // ceil(9/4) = 3 blocks
}

TEST(Generator, SetStateReplays) {
  Generator g(77);
  (void)rand_uniform({10}, g);
  const uint64_t seed = g.seed(), off = g.offset();
  const auto a = rand_uniform({20}, g, 0, 1, DType::f64).to_vector();
  Generator h(0);
  h.set_state(seed, off);
  EXPECT_EQ(rand_uniform({20}, h, 0, 1, DType::f64).to_vector(), a);
}

TEST(Generator, UniformRangeAndMoments) {
  Generator g(123);
  const int64_t n = 200000;
  const auto v = rand_uniform({n}, g, -2.0, 3.0, DType::f64).to_vector();
  double sum = 0, sq = 0;
  for (double x : v) {
    ASSERT_GE(x, -2.0);
    ASSERT_LT(x, 3.0);
    sum += x;
  }
  const double mean = sum / n;
  for (double x : v) sq += (x - mean) * (x - mean);
  const double var = sq / (n - 1);
  // mean 0.5, var 25/12; standard error of the mean sqrt(25/12/n) ~ 0.0032
  EXPECT_NEAR(mean, 0.5, 0.02);
  EXPECT_NEAR(var, 25.0 / 12.0, 0.03);
  // Histogram of 10 bins: each within 5% of n/10 (std of a bin count ~ 134, 5% = 1000).
  std::vector<int64_t> bins(10, 0);
  for (double x : v) bins[static_cast<int>((x + 2.0) / 5.0 * 10)]++;
  for (int64_t c : bins) EXPECT_NEAR(static_cast<double>(c), n / 10.0, n / 200.0);
}

TEST(Generator, NormalMoments) {
  Generator g(321);
  const int64_t n = 200001;  // odd: the last element has no Box-Muller partner in the fill
  const auto v = rand_normal({n}, g, 1.5, 2.0, DType::f64).to_vector();
  double sum = 0;
  for (double x : v) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
  }
  const double mean = sum / n;
  double sq = 0, m3 = 0, m4 = 0;
  for (double x : v) {
    const double d = x - mean;
    sq += d * d;
    m3 += d * d * d;
    m4 += d * d * d * d;
  }
  const double var = sq / n, sd = std::sqrt(var);
  EXPECT_NEAR(mean, 1.5, 0.02);     // se ~ 0.0045
  EXPECT_NEAR(sd, 2.0, 0.02);       // se ~ 0.0032
  EXPECT_NEAR(m3 / n / (var * sd), 0.0, 0.05);  // skewness
  EXPECT_NEAR(m4 / n / (var * var), 3.0, 0.1);  // kurtosis
  // About 68.3% within one sigma.
  int64_t within = 0;
  for (double x : v) within += std::abs(x - 1.5) < 2.0;
  EXPECT_NEAR(static_cast<double>(within) / n, 0.6827, 0.01);
}

TEST(Generator, NormalFillsF32) {
  Generator g(5);
  Tensor t = rand_normal({1000}, g, 0.0, 1.0, DType::f32);
  EXPECT_EQ(t.dtype(), DType::f32);
  double s = 0;
  for (double x : t.to_vector()) s += x;
  EXPECT_NEAR(s / 1000, 0.0, 0.15);
}

TEST(Generator, FillRejectsIntegerTensors) {
  Generator g(1);
  Tensor t = Tensor::zeros({4}, DType::i64);
  EXPECT_THROW(g.fill_uniform(t, 0, 1), Error);
  EXPECT_THROW(g.fill_normal(t, 0, 1), Error);
}

TEST(Generator, NextDoubleInRange) {
  Generator g(8);
  double sum = 0;
  for (int i = 0; i < 20000; ++i) {
    const double d = g.next_double();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    sum += d;
  }
  EXPECT_NEAR(sum / 20000, 0.5, 0.01);
}

TEST(Generator, NextBelowRangeAndUniformity) {
  Generator g(99);
  EXPECT_THROW(g.next_below(0), Error);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(g.next_below(1), 0u);
  for (uint64_t n : {2ull, 3ull, 7ull, 10ull, 1000ull}) {
    const int draws = 30000;
    std::vector<int64_t> count(std::min<uint64_t>(n, 10), 0);
    for (int i = 0; i < draws; ++i) {
      const uint64_t x = g.next_below(n);
      ASSERT_LT(x, n);
      count[x * count.size() / n]++;  // 10 buckets at most
    }
    // Chi-square against uniform buckets (n = 1000: 10 equal buckets of 100).
    double chi2 = 0;
    const double expect = static_cast<double>(draws) / count.size();
    for (int64_t c : count) chi2 += (c - expect) * (c - expect) / expect;
    // 99.9th percentile of chi-square with 9 degrees of freedom is 27.9.
    EXPECT_LT(chi2, 27.9) << "n=" << n;
  }
  // Every residue of a small n appears.
  std::set<uint64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(g.next_below(5));
  EXPECT_EQ(seen.size(), 5u);
}

TEST(Generator, NextBelowHugeRangeIsUniform) {
  // For n just above 2^63 about half of the 64-bit draws fall in the rejected tail, so
  // the retry path decides half the results. Each result must still be uniform over
  // [0, n): its low 32 bits in particular must look random.
  Generator g(2024);
  const uint64_t n = (uint64_t{1} << 63) + 1;
  const int draws = 4000;
  int low_small = 0, odd = 0;
  for (int i = 0; i < draws; ++i) {
    const uint64_t x = g.next_below(n);
    ASSERT_LT(x, n);
    low_small += (x & 0xffffffffu) < (1u << 20);  // probability 2^-12 for a uniform draw
    odd += x & 1;
  }
  EXPECT_LT(low_small, 10);
  EXPECT_NEAR(static_cast<double>(odd) / draws, 0.5, 0.04);
}

}  // namespace
}  // namespace cxr
