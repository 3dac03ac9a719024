// Every differentiable op in nn/functional.h: forward values against hand-written
// reference loops, gradients against central finite differences in double precision
// (tests/gradcheck.h), and f32 forward against f64 forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

namespace cxr {
namespace {

using testing::expect_gradcheck;
using testing::GradcheckOptions;
using V = std::vector<Tensor>;
using Fn = std::function<Tensor(const V&)>;

// ------------------------------------------------------------------ helpers

Tensor normal(const Shape& s, uint64_t seed, double sd = 1.0, double mean = 0.0) {
  Generator g(seed);
  return rand_normal(s, g, mean, sd, DType::f64);
}

Tensor uniform(const Shape& s, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return rand_uniform(s, g, lo, hi, DType::f64);
}

Tensor req(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

// Uniform values in [lo, hi) moved at least `gap` away from each kink, so that the
// finite differences never straddle one.
Tensor uniform_away(const Shape& s, uint64_t seed, double lo, double hi, std::initializer_list<double> kinks,
                    double gap = 1e-2) {
  Tensor t = uniform(s, seed, lo, hi);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i)
    for (double k : kinks)
      if (std::abs(p[i] - k) < gap) p[i] = k + (p[i] >= k ? gap : -gap);
  return t;
}

// Distinct values 0.05 apart in random order: max-pool windows have no ties.
Tensor distinct(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s, DType::f64);
  const int64_t n = t.numel();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  Generator g(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[g.next_below(static_cast<uint64_t>(i + 1))]);
  for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = 0.05 * static_cast<double>(perm[i] - n / 2);
  return t;
}

void expect_values(const Tensor& got, const std::vector<double>& want, double tol, const std::string& what = "") {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(static_cast<size_t>(got.numel()), want.size()) << what << " " << got.str();
  const std::vector<double> g = got.to_vector();
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(std::abs(g[i] - want[i]) <= tol * (1.0 + std::abs(want[i]))) && bad++ < 5)
      ADD_FAILURE() << what << " element " << i << ": got " << g[i] << ", want " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

// Runs fn on f32 copies of the f64 inputs and on the same (rounded) values in f64, and
// expects ||y32 - y64|| / ||y64|| <= rtol. Integer inputs pass through unchanged.
void expect_f32_matches_f64(const Fn& fn, const V& in64, double rtol = 1e-5) {
  V a32, a64;
  for (const Tensor& t : in64) {
    if (t.defined() && t.dtype() == DType::f64) {
      Tensor t32 = t.to(DType::f32);
      a32.push_back(t32);
      a64.push_back(t32.to(DType::f64));
    } else {
      a32.push_back(t);
      a64.push_back(t);
    }
  }
  nn::NoGradGuard no_grad;
  const Tensor y32 = fn(a32), y64 = fn(a64);
  ASSERT_EQ(y32.dtype(), DType::f32);
  ASSERT_EQ(y64.dtype(), DType::f64);
  ASSERT_EQ(y32.shape(), y64.shape());
  const std::vector<double> u = y32.to_vector(), v = y64.to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    diff += (u[i] - v[i]) * (u[i] - v[i]);
    norm += v[i] * v[i];
  }
  EXPECT_LE(std::sqrt(diff), rtol * std::max(std::sqrt(norm), 1e-30)) << "f32 " << y32.str() << " vs f64";
}

// Like expect_f32_matches_f64 for the backward: the gradients of sum(fn(x) * R) with
// respect to each input that requires grad, computed in f32 and in f64 from the same
// f32-rounded inputs and R, agree to rtol norm-wise (as does the output).
void expect_f32_grads_match_f64(const Fn& fn, const V& in64, double rtol = 1e-5) {
  auto run = [&](DType dt, std::vector<std::vector<double>>& grads) {
    V in;
    for (const Tensor& t : in64) {
      if (!t.defined() || t.dtype() != DType::f64) {
        in.push_back(t);
        continue;
      }
      Tensor c = t.to(DType::f32).to(dt);
      if (t.requires_grad()) c.set_requires_grad(true);
      in.push_back(c);
    }
    Tensor y = fn(in);
    Generator g(5);
    nn::backward(y, rand_uniform(y.shape(), g, -1.0, 1.0, DType::f32).to(dt));
    grads.push_back(y.to_vector());
    for (const Tensor& t : in)
      if (t.defined() && t.requires_grad()) grads.push_back(t.grad().to_vector());
  };
  std::vector<std::vector<double>> g32, g64;
  run(DType::f32, g32);
  run(DType::f64, g64);
  ASSERT_EQ(g32.size(), g64.size());
  for (size_t i = 0; i < g32.size(); ++i) {
    double diff = 0, norm = 0;
    for (size_t j = 0; j < g32[i].size(); ++j) {
      diff += (g32[i][j] - g64[i][j]) * (g32[i][j] - g64[i][j]);
      norm += g64[i][j] * g64[i][j];
    }
    EXPECT_LE(std::sqrt(diff), rtol * std::max(std::sqrt(norm), 1e-30))
        << (i == 0 ? "output" : "gradient of requiring input #" + std::to_string(i - 1));
  }
}

// Runs body with the default pool at each thread count, restoring the count after.
void with_threads(int n, const std::function<void()>& body) {
  const int before = get_num_threads();
  set_num_threads(n);
  body();
  set_num_threads(before);
}

// ------------------------------------------------------------------ elementwise

// Reference for a (op) b with NumPy broadcasting; returns the values and sets `out`.
std::vector<double> broadcast_ref(const Tensor& a, const Tensor& b, char op, Shape& out) {
  const size_t nd = std::max(a.dim(), b.dim());
  Shape as(nd, 1), bs(nd, 1);
  std::copy(a.shape().begin(), a.shape().end(), as.begin() + (nd - a.shape().size()));
  std::copy(b.shape().begin(), b.shape().end(), bs.begin() + (nd - b.shape().size()));
  out.assign(nd, 1);
  for (size_t d = 0; d < nd; ++d) out[d] = std::max(as[d], bs[d]);
  const std::vector<double> av = a.to_vector(), bv = b.to_vector();
  std::vector<double> y(static_cast<size_t>(shape_numel(out)));
  std::vector<int64_t> idx(nd, 0);
  for (size_t i = 0; i < y.size(); ++i) {
    int64_t rem = static_cast<int64_t>(i), ai = 0, bi = 0, astr = 1, bstr = 1;
    for (int64_t d = static_cast<int64_t>(nd) - 1; d >= 0; --d) {
      const int64_t k = rem % out[d];
      rem /= out[d];
      ai += (as[d] == 1 ? 0 : k) * astr;
      bi += (bs[d] == 1 ? 0 : k) * bstr;
      astr *= as[d];
      bstr *= bs[d];
    }
    const double x = av[ai], z = bv[bi];
    y[i] = op == '+' ? x + z : op == '-' ? x - z : x * z;
  }
  return y;
}

struct BinCase {
  Shape a, b;
};
const std::vector<BinCase> kBinCases = {
    {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {3, 1}},          {{3, 1}, {2, 3, 4}},
    {{2, 1, 4}, {1, 3, 1}}, {{4}, {2, 3, 4}},             {{}, {2, 3}},
    {{2, 3}, {}},           {{2, 1, 3, 1, 2}, {1, 2, 1, 2, 1}}, {{7}, {1}},
};

TEST(Elementwise, ForwardMatchesBroadcastReference) {
  uint64_t seed = 1;
  for (const BinCase& c : kBinCases)
    for (char op : {'+', '-', '*'}) {
      const Tensor a = normal(c.a, seed++), b = normal(c.b, seed++);
      const Tensor y = op == '+' ? nn::add(a, b) : op == '-' ? nn::sub(a, b) : nn::mul(a, b);
      Shape out;
      const std::vector<double> want = broadcast_ref(a, b, op, out);
      const std::string what = std::string(1, op) + " " + shape_str(c.a) + " " + shape_str(c.b);
      EXPECT_EQ(y.shape(), out) << what;
      expect_values(y, want, 1e-15, what);
    }
}

TEST(Elementwise, Gradcheck) {
  uint64_t seed = 100;
  for (const BinCase& c : kBinCases) {
    const V in = {req(normal(c.a, seed++)), req(normal(c.b, seed++))};
    SCOPED_TRACE(shape_str(c.a) + " op " + shape_str(c.b));
    expect_gradcheck([](const V& v) { return nn::add(v[0], v[1]); }, in);
    expect_gradcheck([](const V& v) { return nn::sub(v[0], v[1]); }, in);
    expect_gradcheck([](const V& v) { return nn::mul(v[0], v[1]); }, in);
  }
}

TEST(Elementwise, GradOnlyOneSide) {
  const Tensor a = req(normal({2, 3, 4}, 1)), b = normal({3, 1}, 2);
  expect_gradcheck([](const V& v) { return nn::sub(v[0], v[1]); }, {a, b});
  expect_gradcheck([](const V& v) { return nn::mul(v[1], v[0]); }, {b, a});
  const Tensor c = normal({2, 3, 4}, 3), d = req(normal({4}, 4));
  expect_gradcheck([](const V& v) { return nn::sub(v[0], v[1]); }, {c, d});
}

TEST(Elementwise, MulScalar) {
  const Tensor x = normal({3, 4}, 7);
  std::vector<double> want = x.to_vector();
  for (double& w : want) w *= -2.5;
  expect_values(nn::mul_scalar(x, -2.5), want, 1e-15);
  expect_gradcheck([](const V& v) { return nn::mul_scalar(v[0], -2.5); }, {req(normal({3, 4}, 8))});
  expect_gradcheck([](const V& v) { return nn::mul_scalar(v[0], 0.0); }, {req(normal({5}, 9))});
}

TEST(Elementwise, F32MatchesF64) {
  for (const BinCase& c : kBinCases) {
    const V in = {normal(c.a, 11), normal(c.b, 12)};
    expect_f32_matches_f64([](const V& v) { return nn::add(v[0], v[1]); }, in);
    expect_f32_matches_f64([](const V& v) { return nn::sub(v[0], v[1]); }, in);
    expect_f32_matches_f64([](const V& v) { return nn::mul(v[0], v[1]); }, in);
  }
  expect_f32_matches_f64([](const V& v) { return nn::mul_scalar(v[0], 0.3); }, {normal({9}, 13)});
}

// ------------------------------------------------------------------ shape ops

TEST(Shape, ReshapeAndFlatten) {
  const Tensor x = normal({2, 3, 2, 2}, 20);
  EXPECT_EQ(nn::reshape(x, {4, -1}).shape(), (Shape{4, 6}));
  EXPECT_EQ(nn::reshape(x, {4, -1}).to_vector(), x.to_vector());
  EXPECT_EQ(nn::flatten(x).shape(), (Shape{2, 12}));
  EXPECT_EQ(nn::flatten(x, 0).shape(), (Shape{24}));
  EXPECT_EQ(nn::flatten(x, 2).shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(nn::flatten(x, -1).shape(), (Shape{2, 3, 2, 2}));
  EXPECT_EQ(nn::flatten(x, -2).shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(nn::flatten(x).to_vector(), x.to_vector());

  const V in = {req(normal({2, 3, 2, 2}, 21))};
  expect_gradcheck([](const V& v) { return nn::reshape(v[0], {4, -1}); }, in);
  expect_gradcheck([](const V& v) { return nn::reshape(v[0], {24}); }, in);
  for (int64_t d : {0, 1, 2, -1})
    expect_gradcheck([d](const V& v) { return nn::flatten(v[0], d); }, in);
  // Reshape inside a longer chain: the gradient reaches x through the view.
  expect_gradcheck([](const V& v) { return nn::mul(nn::reshape(v[0], {6, 4}), nn::reshape(v[0], {6, 4})); }, in);
}

struct ConcatCase {
  int64_t dim;
  std::vector<Shape> shapes;
};
const std::vector<ConcatCase> kConcatCases = {
    {0, {{1, 3, 2}, {2, 3, 2}, {3, 3, 2}}},
    {1, {{2, 1, 2}, {2, 3, 2}, {2, 2, 2}}},
    {-1, {{2, 3, 1}, {2, 3, 3}, {2, 3, 2}}},
    {2, {{2, 2, 4}, {2, 2, 1}}},
    {0, {{5}}},
};

TEST(Shape, ConcatForward) {
  uint64_t seed = 30;
  for (const ConcatCase& c : kConcatCases) {
    V xs;
    for (const Shape& s : c.shapes) xs.push_back(normal(s, seed++));
    const Tensor y = nn::concat(xs, c.dim);
    const int64_t nd = xs[0].dim(), dim = c.dim < 0 ? c.dim + nd : c.dim;
    Shape out = xs[0].shape();
    out[dim] = 0;
    for (const Tensor& x : xs) out[dim] += x.size(dim);
    ASSERT_EQ(y.shape(), out);
    // Reference: walk the output and find the input each element comes from.
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dim; ++d) outer *= out[d];
    for (int64_t d = dim + 1; d < nd; ++d) inner *= out[d];
    std::vector<double> want;
    for (int64_t o = 0; o < outer; ++o)
      for (const Tensor& x : xs) {
        const std::vector<double> xv = x.to_vector();
        const int64_t len = x.size(dim) * inner;
        want.insert(want.end(), xv.begin() + o * len, xv.begin() + (o + 1) * len);
      }
    expect_values(y, want, 0.0, "concat dim " + std::to_string(c.dim));
  }
}

TEST(Shape, ConcatGradcheck) {
  uint64_t seed = 40;
  for (const ConcatCase& c : kConcatCases) {
    V xs;
    for (const Shape& s : c.shapes) xs.push_back(req(normal(s, seed++)));
    SCOPED_TRACE("concat dim " + std::to_string(c.dim));
    const int64_t dim = c.dim;
    expect_gradcheck([dim](const V& v) { return nn::concat(v, dim); }, xs);
  }
  // Only some inputs require grad, and one tensor given twice (its gradient is the sum).
  const Tensor a = req(normal({2, 3}, 50)), b = normal({2, 2}, 51);
  expect_gradcheck([](const V& v) { return nn::concat({v[0], v[1], v[0]}, 1); }, {a, b});
}

TEST(Shape, ConcatF32MatchesF64) {
  expect_f32_matches_f64([](const V& v) { return nn::concat(v, 1); }, {normal({2, 1, 2}, 1), normal({2, 3, 2}, 2)});
}

// ------------------------------------------------------------------ reductions

// Reference sum/mean over `dims` (empty = all) in keepdim element order.
std::vector<double> reduce_ref(const Tensor& x, std::vector<int64_t> dims, bool mean) {
  const int64_t nd = x.dim();
  std::vector<bool> red(nd, dims.empty());
  for (int64_t d : dims) red[d < 0 ? d + nd : d] = true;
  Shape keep = x.shape();
  int64_t count = 1;
  for (int64_t d = 0; d < nd; ++d)
    if (red[d]) {
      count *= keep[d];
      keep[d] = 1;
    }
  std::vector<double> y(static_cast<size_t>(shape_numel(keep)), 0.0);
  const std::vector<double> xv = x.to_vector();
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t rem = i, o = 0, stride = 1;
    for (int64_t d = nd - 1; d >= 0; --d) {
      const int64_t k = rem % x.shape()[d];
      rem /= x.shape()[d];
      o += (red[d] ? 0 : k) * stride;
      stride *= keep[d];
    }
    y[o] += xv[i];
  }
  if (mean)
    for (double& v : y) v /= static_cast<double>(count);
  return y;
}

struct ReduceCase {
  std::vector<int64_t> dims;
  bool keepdim;
  Shape out;  // expected output shape for x (2, 3, 4)
};
const std::vector<ReduceCase> kReduceCases = {
    {{}, false, {}},         {{}, true, {1, 1, 1}},     {{1}, false, {2, 4}},      {{1}, true, {2, 1, 4}},
    {{0, 2}, false, {3}},    {{0, 2}, true, {1, 3, 1}}, {{-1}, false, {2, 3}},     {{-3, -1}, true, {1, 3, 1}},
    {{0, 1, 2}, false, {}},
};

TEST(Reduce, ForwardMatchesReference) {
  const Tensor x = normal({2, 3, 4}, 60);
  for (const ReduceCase& c : kReduceCases)
    for (bool is_mean : {false, true}) {
      const Tensor y = is_mean ? nn::mean(x, c.dims, c.keepdim) : nn::sum(x, c.dims, c.keepdim);
      const std::string what = std::string(is_mean ? "mean" : "sum") + " dims " + std::to_string(c.dims.size()) +
                               (c.keepdim ? " keepdim" : "");
      EXPECT_EQ(y.shape(), c.out) << what;
      expect_values(y, reduce_ref(x, c.dims, is_mean), 1e-14, what);
    }
  // A 0-d input reduces to itself.
  EXPECT_EQ(nn::sum(Tensor::scalar(2.5, DType::f64)).item(), 2.5);
}

TEST(Reduce, Gradcheck) {
  const V in = {req(normal({2, 3, 4}, 61))};
  for (const ReduceCase& c : kReduceCases) {
    const auto dims = c.dims;
    const bool kd = c.keepdim;
    expect_gradcheck([dims, kd](const V& v) { return nn::sum(v[0], dims, kd); }, in);
    expect_gradcheck([dims, kd](const V& v) { return nn::mean(v[0], dims, kd); }, in);
  }
}

TEST(Reduce, F32MatchesF64) {
  const V in = {normal({3, 5, 7}, 62, 1.0, 2.0)};
  for (const ReduceCase& c : kReduceCases) {
    const auto dims = c.dims;
    expect_f32_matches_f64([dims](const V& v) { return nn::sum(v[0], dims); }, in);
    expect_f32_matches_f64([dims](const V& v) { return nn::mean(v[0], dims, true); }, in);
  }
}

// ------------------------------------------------------------------ activations

double act_ref(cpu::Act a, double x, double alpha) {
  const double sig = 1.0 / (1.0 + std::exp(-x));
  switch (a) {
    case cpu::Act::relu: return x > 0 ? x : 0;
    case cpu::Act::leaky_relu: return x > 0 ? x : alpha * x;
    case cpu::Act::relu6: return std::min(std::max(x, 0.0), 6.0);
    case cpu::Act::sigmoid: return sig;
    case cpu::Act::tanh: return std::tanh(x);
    case cpu::Act::gelu: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case cpu::Act::silu: return x * sig;
  }
  return 0;
}

struct ActCase {
  cpu::Act act;
  double alpha;
};
const std::vector<ActCase> kActs = {{cpu::Act::relu, 0},    {cpu::Act::leaky_relu, 0.01}, {cpu::Act::leaky_relu, 0.2},
                                    {cpu::Act::relu6, 0},   {cpu::Act::sigmoid, 0},       {cpu::Act::tanh, 0},
                                    {cpu::Act::gelu, 0},    {cpu::Act::silu, 0}};

// Values over both sides of every kink (0 and 6), none within 1e-2 of one.
Tensor act_input(uint64_t seed) { return uniform_away({3, 4, 5}, seed, -4.0, 8.0, {0.0, 6.0}); }

TEST(Activation, ForwardMatchesFormula) {
  const Tensor x = act_input(70);
  for (const ActCase& c : kActs) {
    std::vector<double> want;
    for (double v : x.to_vector()) want.push_back(act_ref(c.act, v, c.alpha));
    expect_values(nn::activation(x, c.act, c.alpha), want, 1e-14, cpu::act_name(c.act));
  }
  // The named wrappers are the same ops.
  EXPECT_EQ(nn::relu(x).to_vector(), nn::activation(x, cpu::Act::relu).to_vector());
  EXPECT_EQ(nn::leaky_relu(x).to_vector(), nn::activation(x, cpu::Act::leaky_relu, 0.01).to_vector());
  EXPECT_EQ(nn::relu6(x).to_vector(), nn::activation(x, cpu::Act::relu6).to_vector());
  EXPECT_EQ(nn::sigmoid(x).to_vector(), nn::activation(x, cpu::Act::sigmoid).to_vector());
  EXPECT_EQ(nn::tanh(x).to_vector(), nn::activation(x, cpu::Act::tanh).to_vector());
  EXPECT_EQ(nn::gelu(x).to_vector(), nn::activation(x, cpu::Act::gelu).to_vector());
  EXPECT_EQ(nn::silu(x).to_vector(), nn::activation(x, cpu::Act::silu).to_vector());
  // Saturation stays finite.
  const Tensor big = Tensor::from_vector(std::vector<double>{-800, 800}, {2});
  for (const ActCase& c : kActs)
    for (double v : nn::activation(big, c.act, c.alpha).to_vector()) EXPECT_TRUE(std::isfinite(v)) << cpu::act_name(c.act);
}

TEST(Activation, Gradcheck) {
  for (const ActCase& c : kActs) {
    SCOPED_TRACE(cpu::act_name(c.act));
    const V in = {req(act_input(71))};
    expect_gradcheck([c](const V& v) { return nn::activation(v[0], c.act, c.alpha); }, in);
  }
}

TEST(Activation, F32MatchesF64) {
  for (const ActCase& c : kActs) {
    SCOPED_TRACE(cpu::act_name(c.act));
    expect_f32_matches_f64([c](const V& v) { return nn::activation(v[0], c.act, c.alpha); }, {act_input(72)});
  }
}

// ------------------------------------------------------------------ dropout

TEST(Dropout, ForwardMaskAndScale) {
  const double p = 0.3;
  const Tensor x = normal({100, 100}, 80, 1.0, 3.0);
  Generator gen(1234);
  const Tensor y = nn::dropout(x, p, true, gen);
  EXPECT_EQ(gen.offset(), 2500u);  // ceil(10000 / 4) blocks reserved
  const auto xv = x.to_vector(), yv = y.to_vector();
  int64_t dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0) {
      ++dropped;
    } else {
      ASSERT_NEAR(yv[i], xv[i] / (1 - p), 1e-12);
    }
  }
  // 10000 Bernoulli(0.3) draws: std 46; allow 5 sigma.
  EXPECT_NEAR(static_cast<double>(dropped), 3000.0, 230.0);
  // The mask is a function of (seed, offset): the same generator state gives the same y,
  // the next call a different one.
  Generator same(1234);
  EXPECT_EQ(nn::dropout(x, p, true, same).to_vector(), yv);
  EXPECT_NE(nn::dropout(x, p, true, same).to_vector(), yv);
}

TEST(Dropout, IdentityWhenEvalOrZero) {
  const Tensor x = normal({4, 5}, 81);
  Generator gen(1);
  EXPECT_TRUE(nn::dropout(x, 0.5, false, gen).same_storage(x));
  EXPECT_TRUE(nn::dropout(x, 0.0, true, gen).same_storage(x));
  EXPECT_EQ(gen.offset(), 0u);  // no random numbers used
}

TEST(Dropout, MaskDoesNotDependOnThreadCount) {
  const Tensor x = normal({300, 200}, 82, 1.0, 1.0);  // large enough to be split over threads
  std::vector<double> one, four;
  with_threads(1, [&] {
    Generator g(7);
    one = nn::dropout(x, 0.5, true, g).to_vector();
  });
  with_threads(4, [&] {
    Generator g(7);
    four = nn::dropout(x, 0.5, true, g).to_vector();
  });
  EXPECT_EQ(one, four);
}

TEST(Dropout, Gradcheck) {
  for (double p : {0.1, 0.5, 0.9}) {
    SCOPED_TRACE("p = " + std::to_string(p));
    // The generator is recreated inside fn: every evaluation draws the same mask.
    expect_gradcheck(
        [p](const V& v) {
          Generator gen(4321);
          return nn::dropout(v[0], p, true, gen);
        },
        {req(normal({4, 5, 6}, 83))});
  }
  expect_f32_matches_f64(
      [](const V& v) {
        Generator gen(99);
        return nn::dropout(v[0], 0.25, true, gen);
      },
      {normal({64}, 84)});
}

// ------------------------------------------------------------------ conv2d

// The definition: a 7-deep loop over (n, k, p, q) and (c, r, s).
std::vector<double> conv_ref(const Tensor& x, const Tensor& w, const Tensor& b, const nn::Conv2dOptions& o) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = w.size(0), Cg = w.size(1), R = w.size(2), S = w.size(3), Kg = K / o.groups;
  const int64_t P = (H + 2 * o.pad_h - o.dil_h * (R - 1) - 1) / o.stride_h + 1;
  const int64_t Q = (W + 2 * o.pad_w - o.dil_w * (S - 1) - 1) / o.stride_w + 1;
  const std::vector<double> xv = x.to_vector(), wv = w.to_vector();
  const std::vector<double> bv = b.defined() ? b.to_vector() : std::vector<double>(K, 0.0);
  std::vector<double> y(static_cast<size_t>(N * K * P * Q));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double acc = bv[k];
          const int64_t g = k / Kg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t s = 0; s < S; ++s) {
                const int64_t ih = p * o.stride_h - o.pad_h + r * o.dil_h;
                const int64_t iw = q * o.stride_w - o.pad_w + s * o.dil_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += wv[((k * Cg + c) * R + r) * S + s] * xv[((n * C + g * Cg + c) * H + ih) * W + iw];
              }
          y[((n * K + k) * P + p) * Q + q] = acc;
        }
  (void)C;
  return y;
}

struct ConvCase {
  const char* name;
  int64_t N, C, H, W, K, R, S;
  nn::Conv2dOptions o;  // stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups
  bool bias;
};

const std::vector<ConvCase> kConvCases = {
    {"3x3_pad1_bias", 1, 3, 7, 5, 4, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
    {"3x3_stride2_batch3", 3, 2, 7, 5, 3, 3, 3, {2, 2, 1, 1, 1, 1, 1}, false},
    {"dilation2", 2, 2, 7, 6, 2, 3, 3, {1, 1, 2, 2, 2, 2, 1}, true},
    {"groups2", 2, 4, 5, 5, 6, 3, 3, {1, 1, 1, 1, 1, 1, 2}, true},
    {"groups2_stride2_nobias", 1, 4, 7, 5, 4, 3, 3, {2, 2, 0, 0, 1, 1, 2}, false},
    {"depthwise", 2, 4, 5, 6, 4, 3, 3, {1, 1, 1, 1, 1, 1, 4}, true},
    {"depthwise_mult2", 3, 3, 7, 5, 6, 3, 3, {1, 1, 1, 1, 1, 1, 3}, true},
    {"depthwise_mult2_stride2_dil2", 1, 2, 7, 6, 4, 3, 3, {2, 2, 2, 2, 2, 2, 2}, false},
    {"depthwise_rect_asym", 1, 2, 5, 7, 2, 3, 2, {1, 2, 1, 1, 1, 1, 2}, true},
    {"pointwise_1x1", 3, 3, 7, 5, 5, 1, 1, {1, 1, 0, 0, 1, 1, 1}, true},
    {"1x1_stride2", 1, 3, 7, 5, 2, 1, 1, {2, 2, 0, 0, 1, 1, 1}, false},
    {"1x1_pad1", 1, 2, 3, 4, 3, 1, 1, {1, 1, 1, 1, 1, 1, 1}, true},
    {"rect_kernel_asym", 2, 2, 6, 7, 3, 2, 3, {1, 2, 0, 1, 2, 1, 1}, true},
    {"kernel_equals_input", 1, 2, 3, 3, 2, 3, 3, {1, 1, 0, 0, 1, 1, 1}, true},
    {"pad_exceeds_input", 1, 1, 2, 2, 2, 3, 3, {1, 1, 2, 2, 1, 1, 1}, false},
    {"stride3_odd", 2, 3, 8, 7, 2, 2, 2, {3, 3, 1, 0, 1, 1, 1}, true},
    {"pointwise_groups2", 2, 4, 3, 5, 6, 1, 1, {1, 1, 0, 0, 1, 1, 2}, true},
    {"depthwise_1x1", 1, 3, 4, 4, 3, 1, 1, {1, 1, 0, 0, 1, 1, 3}, false},
    {"depthwise_pad_exceeds_input", 1, 2, 2, 3, 2, 3, 3, {1, 1, 2, 2, 1, 1, 2}, true},
    {"depthwise_stride3_pad2", 2, 2, 8, 9, 2, 3, 3, {3, 3, 2, 2, 1, 1, 2}, true},
    {"depthwise_rect_stride", 1, 3, 6, 9, 6, 2, 4, {2, 3, 1, 2, 2, 1, 3}, false},
};

struct ConvInputs {
  Tensor x, w, b;
};
ConvInputs conv_inputs(const ConvCase& c, uint64_t seed) {
  ConvInputs in;
  in.x = normal({c.N, c.C, c.H, c.W}, seed);
  in.w = normal({c.K, c.C / c.o.groups, c.R, c.S}, seed + 1, 0.5);
  if (c.bias) in.b = normal({c.K}, seed + 2);
  return in;
}

TEST(Conv2d, ForwardMatchesNaiveLoop) {
  for (const ConvCase& c : kConvCases) {
    const ConvInputs in = conv_inputs(c, 90);
    const Tensor y = nn::conv2d(in.x, in.w, in.b, c.o);
    const int64_t P = (c.H + 2 * c.o.pad_h - c.o.dil_h * (c.R - 1) - 1) / c.o.stride_h + 1;
    const int64_t Q = (c.W + 2 * c.o.pad_w - c.o.dil_w * (c.S - 1) - 1) / c.o.stride_w + 1;
    EXPECT_EQ(y.shape(), (Shape{c.N, c.K, P, Q})) << c.name;
    expect_values(y, conv_ref(in.x, in.w, in.b, c.o), 1e-12, c.name);
  }
}

TEST(Conv2d, Gradcheck) {
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(c.name);
    ConvInputs in = conv_inputs(c, 91);
    const auto o = c.o;
    expect_gradcheck([o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); },
                     {req(in.x), req(in.w), c.bias ? req(in.b) : Tensor()});
  }
}

TEST(Conv2d, GradcheckSubsetsOfInputs) {
  // Backward must cope with any subset of (x, w, b) requiring grad.
  for (const ConvCase& c : {kConvCases[0], kConvCases[3], kConvCases[6], kConvCases[9]}) {
    SCOPED_TRACE(c.name);
    const auto o = c.o;
    const Fn f = [o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); };
    ConvInputs a = conv_inputs(c, 92);
    expect_gradcheck(f, {req(a.x), a.w, a.b});
    ConvInputs b = conv_inputs(c, 93);
    expect_gradcheck(f, {b.x, req(b.w), b.b});
    if (c.bias) {
      ConvInputs d = conv_inputs(c, 94);
      expect_gradcheck(f, {d.x, d.w, req(d.b)});
    }
  }
}

TEST(Conv2d, ThreadCountsAgree) {
  // Per-image and threaded-GEMM paths, and chunked weight-gradient sums, for 1..4 threads.
  for (const ConvCase& c : {kConvCases[0], kConvCases[1], kConvCases[6], kConvCases[9]}) {
    std::vector<std::vector<double>> ys, dws, dxs;
    for (int t : {1, 2, 4})
      with_threads(t, [&] {
        ConvInputs in = conv_inputs(c, 95);
        req(in.x);
        req(in.w);
        Tensor y = nn::conv2d(in.x, in.w, in.b, c.o);
        nn::backward(y, normal(y.shape(), 96));
        ys.push_back(y.to_vector());
        dxs.push_back(in.x.grad().to_vector());
        dws.push_back(in.w.grad().to_vector());
      });
    for (size_t i = 1; i < ys.size(); ++i) {
      for (size_t j = 0; j < ys[0].size(); ++j) ASSERT_NEAR(ys[i][j], ys[0][j], 1e-12) << c.name;
      for (size_t j = 0; j < dxs[0].size(); ++j) ASSERT_NEAR(dxs[i][j], dxs[0][j], 1e-12) << c.name;
      for (size_t j = 0; j < dws[0].size(); ++j) ASSERT_NEAR(dws[i][j], dws[0][j], 1e-12) << c.name;
    }
  }
}

TEST(Conv2d, LargerConvSplitsGemm) {
  // 2*K*P*Q*C*R*S = 3.7 MFLOP: above the threshold where the GEMMs split over threads.
  const ConvCase c = {"large", 1, 16, 20, 20, 32, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true};
  ConvInputs in = conv_inputs(c, 97);
  with_threads(2, [&] { expect_values(nn::conv2d(in.x, in.w, in.b, c.o), conv_ref(in.x, in.w, in.b, c.o), 1e-11); });
  GradcheckOptions opt;
  opt.max_checks = 25;
  expect_gradcheck([o = c.o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); },
                   {req(in.x), req(in.w), req(in.b)}, opt);
}

TEST(Conv2d, F32MatchesF64) {
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(c.name);
    const ConvInputs in = conv_inputs(c, 98);
    const auto o = c.o;
    expect_f32_matches_f64([o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); }, {in.x, in.w, in.b});
  }
}

// Shapes that reach the tiled paths of the im2col convolution: several pixel-range
// tiles per image (a boundary in the middle of an output row), a 1x1 conv read straight
// from x in pixel ranges, and images batched into multi-image tiles with a remainder.
// K = 16 puts the f32 GEMMs on the AVX2 path.
const std::vector<ConvCase> kTiledConvCases = {
    {"pixel_tiles_mid_row", 2, 64, 23, 22, 16, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
    {"pixel_tiles_stride2_groups2", 1, 128, 45, 45, 16, 3, 3, {2, 2, 1, 1, 1, 1, 2}, true},
    {"pointwise_pixel_tiles", 2, 600, 21, 21, 16, 1, 1, {1, 1, 0, 0, 1, 1, 1}, false},
    {"multi_image_tiles", 20, 64, 5, 5, 16, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
};

TEST(Conv2d, TiledPathsForwardMatchesNaiveLoop) {
  for (const ConvCase& c : kTiledConvCases)
    for (int threads : {1, 4})
      with_threads(threads, [&] {
        const ConvInputs in = conv_inputs(c, 99);
        expect_values(nn::conv2d(in.x, in.w, in.b, c.o), conv_ref(in.x, in.w, in.b, c.o), 1e-11,
                      std::string(c.name) + " threads " + std::to_string(threads));
      });
}

TEST(Conv2d, TiledPathsGradcheck) {
  GradcheckOptions opt;
  opt.max_checks = 20;
  for (const ConvCase& c : kTiledConvCases) {
    SCOPED_TRACE(c.name);
    ConvInputs in = conv_inputs(c, 100);
    expect_gradcheck([o = c.o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); },
                     {req(in.x), req(in.w), c.bias ? req(in.b) : Tensor()}, opt);
  }
}

TEST(Conv2d, F32GradientsMatchF64) {
  // The f32 GEMMs (AVX2 kernel at these sizes) against f64 for forward, dx, dw and db.
  std::vector<ConvCase> cases = kTiledConvCases;
  cases.push_back(kConvCases[0]);
  cases.push_back(kConvCases[6]);
  for (const ConvCase& c : cases)
    for (int threads : {1, 4})
      with_threads(threads, [&] {
        SCOPED_TRACE(std::string(c.name) + " threads " + std::to_string(threads));
        ConvInputs in = conv_inputs(c, 101);
        expect_f32_grads_match_f64([o = c.o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); },
                                   {req(in.x), req(in.w), c.bias ? req(in.b) : Tensor()});
      });
}

// ------------------------------------------------------------------ linear, matmul

std::vector<double> matmul_ref(const Tensor& a, const Tensor& b, bool b_transposed) {
  const int64_t M = a.size(0), K = a.size(1), N = b_transposed ? b.size(0) : b.size(1);
  const auto av = a.to_vector(), bv = b.to_vector();
  std::vector<double> y(static_cast<size_t>(M * N), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += av[m * K + k] * (b_transposed ? bv[n * K + k] : bv[k * N + n]);
      y[m * N + n] = acc;
    }
  return y;
}

TEST(Linear, ForwardMatchesReference) {
  for (auto [N, I, O] : {std::tuple<int64_t, int64_t, int64_t>{3, 5, 4}, {1, 1, 1}, {7, 33, 3}, {100, 100, 120}}) {
    const Tensor x = normal({N, I}, 110), w = normal({O, I}, 111), b = normal({O}, 112);
    std::vector<double> want = matmul_ref(x, w, true);
    expect_values(nn::linear(x, w, Tensor()), want, 1e-12, "linear no bias");
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) want[n * O + o] += b.to_vector()[o];
    const Tensor y = nn::linear(x, w, b);
    EXPECT_EQ(y.shape(), (Shape{N, O}));
    expect_values(y, want, 1e-12, "linear");
  }
}

TEST(Linear, Gradcheck) {
  const Fn f = [](const V& v) { return nn::linear(v[0], v[1], v[2]); };
  expect_gradcheck(f, {req(normal({3, 5}, 113)), req(normal({4, 5}, 114)), req(normal({4}, 115))});
  expect_gradcheck(f, {req(normal({3, 5}, 116)), req(normal({4, 5}, 117)), Tensor()});
  expect_gradcheck(f, {req(normal({1, 7}, 118)), normal({2, 7}, 119), normal({2}, 120)});
  expect_gradcheck(f, {normal({2, 3}, 121), normal({4, 3}, 122), req(normal({4}, 123))});
  GradcheckOptions opt;
  opt.max_checks = 30;
  expect_gradcheck(f, {req(normal({100, 100}, 124)), req(normal({120, 100}, 125)), req(normal({120}, 126))}, opt);
  expect_f32_matches_f64(f, {normal({7, 33}, 127), normal({3, 33}, 128), normal({3}, 129)});
}

TEST(Matmul, ForwardMatchesReference) {
  // Small, and large enough to split along M (M >= N) or N (M < N).
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{3, 4, 5}, {1, 1, 1}, {7, 1, 33}, {128, 96, 96},
                         {64, 128, 160}}) {
    const Tensor a = normal({M, K}, 130), b = normal({K, N}, 131);
    const Tensor y = nn::matmul(a, b);
    EXPECT_EQ(y.shape(), (Shape{M, N}));
    with_threads(2, [&] { expect_values(nn::matmul(a, b), matmul_ref(a, b, false), 1e-12, "matmul"); });
    with_threads(1, [&] { expect_values(nn::matmul(a, b), matmul_ref(a, b, false), 1e-12, "matmul 1 thread"); });
  }
}

TEST(Matmul, Gradcheck) {
  const Fn f = [](const V& v) { return nn::matmul(v[0], v[1]); };
  expect_gradcheck(f, {req(normal({3, 4}, 132)), req(normal({4, 5}, 133))});
  expect_gradcheck(f, {req(normal({1, 6}, 134)), req(normal({6, 1}, 135))});
  expect_gradcheck(f, {normal({3, 4}, 136), req(normal({4, 2}, 137))});
  expect_gradcheck(f, {req(normal({3, 4}, 138)), normal({4, 2}, 139)});
  GradcheckOptions opt;
  opt.max_checks = 30;
  expect_gradcheck(f, {req(normal({128, 96}, 140)), req(normal({96, 96}, 141))}, opt);
  expect_gradcheck(f, {req(normal({64, 128}, 142)), req(normal({128, 160}, 143))}, opt);
  expect_f32_matches_f64(f, {normal({7, 33}, 144), normal({33, 5}, 145)});
}

TEST(Matmul, F32GradientsMatchF64) {
  // Sizes on the AVX2 SGEMM path (M, N >= 8, M*N*K >= 2^18) with ragged edges.
  for (int threads : {1, 3}) {
    with_threads(threads, [] {
      expect_f32_grads_match_f64([](const V& v) { return nn::matmul(v[0], v[1]); },
                                 {req(normal({61, 300}, 146)), req(normal({300, 37}, 147))});
      expect_f32_grads_match_f64([](const V& v) { return nn::linear(v[0], v[1], v[2]); },
                                 {req(normal({64, 300}, 148)), req(normal({40, 300}, 149)), req(normal({40}, 150))});
    });
  }
}

// C = alpha * op(A) op(B) + beta * C through cpu::gemm / gemm_parallel against a double
// loop. A and B carry NaN in their row padding (lda, ldb larger than needed), so a read
// outside the logical matrix shows; C carries a sentinel in its padding, which must
// survive, and NaN everywhere when beta == 0 (the contract says C is not read then).
template <typename T>
void check_gemm(int64_t M, int64_t N, int64_t K, cpu::Trans ta, cpu::Trans tb, T alpha, T beta, int64_t pad,
                bool parallel, double rtol) {
  const bool at = ta == cpu::Trans::yes, bt = tb == cpu::Trans::yes;
  const int64_t lda = (at ? M : K) + pad, ldb = (bt ? K : N) + pad, ldc = N + pad;
  const T nan = std::numeric_limits<T>::quiet_NaN(), sentinel = T(12345);
  std::vector<T> A(static_cast<size_t>((at ? K : M) * lda), nan), B(static_cast<size_t>((bt ? N : K) * ldb), nan);
  std::vector<T> C(static_cast<size_t>(M * ldc), sentinel);
  Generator g(static_cast<uint64_t>(M * 1000003 + N * 1009 + K * 7 + pad + (at ? 2 : 0) + (bt ? 1 : 0)));
  auto a = [&](int64_t i, int64_t k) -> T& { return at ? A[k * lda + i] : A[i * lda + k]; };
  auto b = [&](int64_t k, int64_t j) -> T& { return bt ? B[j * ldb + k] : B[k * ldb + j]; };
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) a(i, k) = static_cast<T>(2 * g.next_double() - 1);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) b(k, j) = static_cast<T>(2 * g.next_double() - 1);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? nan : static_cast<T>(2 * g.next_double() - 1);
  const std::vector<T> C0 = C;
  if (parallel)
    cpu::gemm_parallel<T>(default_thread_pool(), ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta,
                          C.data(), ldc);
  else
    cpu::gemm<T>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  int bad = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        ref += static_cast<double>(a(i, k)) * b(k, j);
        mag += std::abs(static_cast<double>(a(i, k)) * b(k, j));
      }
      ref *= alpha;
      mag *= std::abs(static_cast<double>(alpha));
      if (beta != T(0)) {
        ref += static_cast<double>(beta) * C0[i * ldc + j];
        mag += std::abs(static_cast<double>(beta) * C0[i * ldc + j]);
      }
      const double got = C[i * ldc + j];
      if (!(std::abs(got - ref) <= rtol * mag + 1e-30) && bad++ < 3)
        ADD_FAILURE() << "C[" << i << "," << j << "] = " << got << ", want " << ref;
    }
    for (int64_t j = N; j < ldc; ++j)
      if (C[i * ldc + j] != sentinel && bad++ < 3) ADD_FAILURE() << "padding of C row " << i << " written";
  }
  EXPECT_EQ(bad, 0) << "gemm M=" << M << " N=" << N << " K=" << K << " ta=" << at << " tb=" << bt
                    << " alpha=" << alpha << " beta=" << beta << " pad=" << pad << (parallel ? " parallel" : "");
}

struct GemmShape {
  int64_t M, N, K;
};
// Around the f32 kernel's blocking (6x16 micro-tiles; KC 256, MC 96, NC 2048) and its
// size threshold, plus tiny shapes that stay on Eigen.
const std::vector<GemmShape> kGemmShapes = {{8, 16, 2048}, {13, 37, 600}, {97, 33, 100}, {200, 70, 31},
                                            {9, 2100, 16}, {64, 64, 64},  {3, 5, 7},     {1, 1, 1},
                                            {8, 8, 8},     {16, 16, 0},   {6, 16, 257}};

TEST(Gemm, F32AndF64MatchReference) {
  for (const GemmShape& sh : kGemmShapes)
    for (cpu::Trans ta : {cpu::Trans::no, cpu::Trans::yes})
      for (cpu::Trans tb : {cpu::Trans::no, cpu::Trans::yes})
        for (auto [alpha, beta] : {std::pair<double, double>{1, 0}, {1, 1}, {0.5, -2}})
          for (int64_t pad : {0, 3}) {
            check_gemm<float>(sh.M, sh.N, sh.K, ta, tb, static_cast<float>(alpha), static_cast<float>(beta), pad,
                              false, 1e-5);
            check_gemm<double>(sh.M, sh.N, sh.K, ta, tb, alpha, beta, pad, false, 1e-13);
          }
}

TEST(Gemm, ParallelSplitsMatchReference) {
  // Above 2 MFLOP gemm_parallel splits along M (M >= N) or N; 3 threads give chunk
  // boundaries that are not multiples of the micro-tile.
  with_threads(3, [] {
    for (const GemmShape& sh : {GemmShape{200, 70, 300}, GemmShape{40, 300, 200}, GemmShape{101, 101, 101}})
      for (cpu::Trans ta : {cpu::Trans::no, cpu::Trans::yes})
        for (cpu::Trans tb : {cpu::Trans::no, cpu::Trans::yes}) {
          check_gemm<float>(sh.M, sh.N, sh.K, ta, tb, 1.0f, 0.0f, 2, true, 1e-5);
          check_gemm<float>(sh.M, sh.N, sh.K, ta, tb, 1.0f, 1.0f, 0, true, 1e-5);
          check_gemm<double>(sh.M, sh.N, sh.K, ta, tb, 1.0, 0.0, 2, true, 1e-13);
        }
  });
}

TEST(Gemm, Avx2KernelDirect) {
  // The AVX2 kernel on its own, including the shapes gemm<float> routes to Eigen.
  std::vector<float> A(6 * 5, 1.0f), B(5 * 7, 2.0f), C(6 * 7, std::numeric_limits<float>::quiet_NaN());
  if (!cpu::sgemm_avx2(cpu::Trans::no, cpu::Trans::no, 6, 7, 5, 1.0f, A.data(), 5, B.data(), 7, 0.0f, C.data(), 7))
    GTEST_SKIP() << "CPU without AVX2/FMA";
  for (float v : C) EXPECT_EQ(v, 10.0f);
  // K == 0 or alpha == 0: C = beta * C, never reading C when beta == 0.
  std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
  ASSERT_TRUE(cpu::sgemm_avx2(cpu::Trans::no, cpu::Trans::no, 6, 7, 0, 1.0f, A.data(), 5, B.data(), 7, 0.0f,
                              C.data(), 7));
  for (float v : C) EXPECT_EQ(v, 0.0f);
  std::fill(C.begin(), C.end(), 3.0f);
  ASSERT_TRUE(cpu::sgemm_avx2(cpu::Trans::no, cpu::Trans::no, 6, 7, 5, 0.0f, A.data(), 5, B.data(), 7, 2.0f,
                              C.data(), 7));
  for (float v : C) EXPECT_EQ(v, 6.0f);
  // Single rows and columns (every edge tile).
  std::vector<float> x(40), y(40), z(1, -1.0f);
  for (int i = 0; i < 40; ++i) x[i] = static_cast<float>(i), y[i] = 1.0f;
  ASSERT_TRUE(cpu::sgemm_avx2(cpu::Trans::no, cpu::Trans::no, 1, 1, 40, 1.0f, x.data(), 40, y.data(), 1, 0.0f,
                              z.data(), 1));
  EXPECT_EQ(z[0], 780.0f);
}

// ------------------------------------------------------------------ pooling

enum class PoolKind { max, avg };

std::vector<double> pool_ref(const Tensor& x, const nn::Pool2dOptions& o, PoolKind kind) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t P = (H + 2 * o.pad_h - o.kernel_h) / o.stride_h + 1;
  const int64_t Q = (W + 2 * o.pad_w - o.kernel_w) / o.stride_w + 1;
  const auto xv = x.to_vector();
  std::vector<double> y;
  for (int64_t i = 0; i < N * C; ++i)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        double best = -INFINITY, sum = 0;
        for (int64_t r = 0; r < o.kernel_h; ++r)
          for (int64_t s = 0; s < o.kernel_w; ++s) {
            const int64_t h = p * o.stride_h - o.pad_h + r, w = q * o.stride_w - o.pad_w + s;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;  // padding: never the max, adds 0
            best = std::max(best, xv[(i * H + h) * W + w]);
            sum += xv[(i * H + h) * W + w];
          }
        y.push_back(kind == PoolKind::max ? best : sum / static_cast<double>(o.kernel_h * o.kernel_w));
      }
  return y;
}

// The float forward on the packed GEMM (AVX2/FMA CPUs): the im2col block written
// straight into the GEMM's panels, by one thread per tile or, with fewer tiles than
// threads, by all threads for a shared tile; weights packed per call or ahead of time.
// Shapes: several K blocks (C*R*S > 256), output channels not a multiple of the
// 6-row panel, column counts not a multiple of 16, strided stems, 1x1 convolutions
// packed straight from x, groups and multi-image tiles.
const std::vector<ConvCase> kPackedConvCases = {
    {"one_image_small_map", 1, 40, 9, 9, 20, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
    {"stem_like_7x7_stride2", 1, 1, 61, 59, 16, 7, 7, {2, 2, 3, 3, 1, 1, 1}, false},
    {"pixel_tiles_one_image", 1, 8, 70, 66, 16, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
    {"large_map_stride2", 1, 3, 150, 150, 8, 3, 3, {2, 2, 1, 1, 1, 1, 1}, true},
    {"pointwise_one_image", 1, 300, 7, 7, 24, 1, 1, {1, 1, 0, 0, 1, 1, 1}, true},
    {"pointwise_multi_image", 6, 32, 5, 5, 16, 1, 1, {1, 1, 0, 0, 1, 1, 1}, false},
    {"multi_image_groups2", 5, 16, 6, 6, 16, 3, 3, {1, 1, 1, 1, 1, 1, 2}, true},
    {"downsample_1x1_stride2", 1, 64, 14, 14, 128, 1, 1, {2, 2, 0, 0, 1, 1, 1}, false},
    {"late_stage_7x7", 1, 288, 7, 7, 38, 3, 3, {1, 1, 1, 1, 1, 1, 1}, true},
};

TEST(Conv2d, PackedF32PathMatchesDefinitionForAnyThreadCount) {
  for (const ConvCase& c : kPackedConvCases) {
    SCOPED_TRACE(c.name);
    const ConvInputs in = conv_inputs(c, 100);
    const Tensor x = in.x.to(DType::f32), w = in.w.to(DType::f32), b = c.bias ? in.b.to(DType::f32) : Tensor();
    // The definition in f64 on the f32-rounded values.
    const std::vector<double> want = conv_ref(x.to(DType::f64), w.to(DType::f64), c.bias ? b.to(DType::f64) : Tensor(), c.o);
    cpu::Conv2dShape s;
    s.N = c.N; s.C = c.C; s.H = c.H; s.W = c.W; s.K = c.K; s.R = c.R; s.S = c.S;
    s.stride_h = c.o.stride_h; s.stride_w = c.o.stride_w; s.pad_h = c.o.pad_h; s.pad_w = c.o.pad_w;
    s.dil_h = c.o.dil_h; s.dil_w = c.o.dil_w; s.groups = c.o.groups;
    cpu::PackedConvWeights packed;
    const bool uses = cpu::conv2d_pack_weights(s, w.data<float>(), packed);
    EXPECT_EQ(uses, cpu::sgemm_avx2_available());
    std::vector<std::vector<double>> runs;
    for (int threads : {1, 2, 3, 4})
      with_threads(threads, [&] {
        const std::string what = std::string(c.name) + " threads " + std::to_string(threads);
        nn::NoGradGuard ng;
        const Tensor y = nn::conv2d(x, w, b, c.o);
        expect_values(y, want, 2e-5, what);
        runs.push_back(y.to_vector());
        if (uses) runs.push_back(nn::conv2d(x, w, b, c.o, &packed).to_vector());
      });
    // Bit-identical whatever the thread count, and with the weights packed ahead.
    for (size_t i = 1; i < runs.size(); ++i) EXPECT_EQ(runs[i], runs[0]) << "run " << i;
  }
}

struct PoolCase {
  const char* name;
  Shape x;
  nn::Pool2dOptions o;  // kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w
};
const std::vector<PoolCase> kPoolCases = {
    {"k2s2", {2, 3, 6, 7}, {2, 2, 2, 2, 0, 0}},       {"k3s2p1", {1, 2, 7, 5}, {3, 3, 2, 2, 1, 1}},
    {"k3s1_overlap", {2, 2, 5, 5}, {3, 3, 1, 1, 0, 0}}, {"k2s1p1", {1, 2, 4, 5}, {2, 2, 1, 1, 1, 1}},
    {"rect", {1, 2, 5, 7}, {2, 3, 1, 2, 1, 1}},       {"whole_plane", {3, 1, 3, 3}, {3, 3, 1, 1, 0, 0}},
    {"k3s3_odd", {1, 3, 7, 8}, {3, 3, 3, 3, 0, 0}},
};

TEST(Pool, MaxForwardMatchesReference) {
  for (const PoolCase& c : kPoolCases) {
    const Tensor x = distinct(c.x, 150);
    const Tensor y = nn::max_pool2d(x, c.o);
    expect_values(y, pool_ref(x, c.o, PoolKind::max), 0.0, c.name);
    EXPECT_EQ(y.size(0), c.x[0]);
    EXPECT_EQ(y.size(1), c.x[1]);
  }
  // Padding never wins, even when every real value is negative.
  const Tensor neg = Tensor::full({1, 1, 2, 2}, -5.0, DType::f64);
  for (double v : nn::max_pool2d(neg, nn::Pool2dOptions::make(2, 1, 1)).to_vector()) EXPECT_EQ(v, -5.0);
}

// Without a gradient to record, max pooling keeps no argmax and takes a separable
// path; its values must equal the recording path's, NaN and -inf included.
TEST(Pool, MaxWithoutArgmaxEqualsRecordingPath) {
  const std::vector<PoolCase> cases = {
      {"stem_k3s2p1", {1, 3, 112, 112}, {3, 3, 2, 2, 1, 1}}, {"k3s2p1_odd", {2, 2, 9, 7}, {3, 3, 2, 2, 1, 1}},
      {"k2s2", {1, 2, 6, 7}, {2, 2, 2, 2, 0, 0}},           {"rect_k2x3", {1, 2, 5, 7}, {2, 3, 1, 2, 1, 1}},
      {"k5s1p2", {1, 1, 6, 6}, {5, 5, 1, 1, 2, 2}},         {"k3s3", {1, 3, 7, 8}, {3, 3, 3, 3, 0, 0}},
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (const PoolCase& c : cases)
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(std::string(c.name) + (dt == DType::f32 ? " f32" : " f64"));
      Tensor x = normal(c.x, 160);
      double* p = x.data<double>();
      for (int64_t i = 0; i < x.numel(); i += 37) p[i] = nan;
      for (int64_t i = 5; i < x.numel(); i += 41) p[i] = -inf;
      for (int64_t i = 11; i < x.numel(); i += 29) p[i] = 0.0;  // ties: first maximum wins either way
      x = x.to(dt);
      std::vector<double> plain;
      {
        nn::NoGradGuard ng;
        plain = nn::max_pool2d(x, c.o).to_vector();
      }
      Tensor xr = x.clone();
      xr.set_requires_grad(true);
      const std::vector<double> rec = nn::max_pool2d(xr, c.o).to_vector();
      ASSERT_EQ(plain.size(), rec.size());
      for (size_t i = 0; i < rec.size(); ++i) {
        if (std::isnan(rec[i])) EXPECT_TRUE(std::isnan(plain[i])) << i;
        else EXPECT_EQ(plain[i], rec[i]) << i;
      }
    }
}

TEST(Pool, AvgForwardMatchesReference) {
  for (const PoolCase& c : kPoolCases) {
    const Tensor x = normal(c.x, 151);
    expect_values(nn::avg_pool2d(x, c.o), pool_ref(x, c.o, PoolKind::avg), 1e-14, c.name);
  }
  // count_include_pad: a 2x2 window with one real value of 4 at the corner averages to 1.
  const Tensor four = Tensor::full({1, 1, 1, 1}, 4.0, DType::f64);
  EXPECT_EQ(nn::avg_pool2d(four, nn::Pool2dOptions::make(2, 1, 1)).to_vector(), (std::vector<double>(4, 1.0)));
}

TEST(Pool, Gradcheck) {
  for (const PoolCase& c : kPoolCases) {
    SCOPED_TRACE(c.name);
    const auto o = c.o;
    expect_gradcheck([o](const V& v) { return nn::max_pool2d(v[0], o); }, {req(distinct(c.x, 152))});
    expect_gradcheck([o](const V& v) { return nn::avg_pool2d(v[0], o); }, {req(normal(c.x, 153))});
  }
}

TEST(Pool, GlobalAvg) {
  const Tensor x = normal({3, 4, 5, 7}, 154);
  const Tensor y = nn::global_avg_pool2d(x);
  EXPECT_EQ(y.shape(), (Shape{3, 4, 1, 1}));
  std::vector<double> want = reduce_ref(x, {2, 3}, true);
  expect_values(y, want, 1e-14);
  expect_gradcheck([](const V& v) { return nn::global_avg_pool2d(v[0]); }, {req(normal({2, 3, 5, 3}, 155))});
  expect_gradcheck([](const V& v) { return nn::global_avg_pool2d(v[0]); }, {req(normal({1, 1, 1, 1}, 156))});
}

TEST(Pool, F32MatchesF64) {
  for (const PoolCase& c : kPoolCases) {
    const auto o = c.o;
    expect_f32_matches_f64([o](const V& v) { return nn::max_pool2d(v[0], o); }, {distinct(c.x, 157)});
    expect_f32_matches_f64([o](const V& v) { return nn::avg_pool2d(v[0], o); }, {normal(c.x, 158)});
  }
  expect_f32_matches_f64([](const V& v) { return nn::global_avg_pool2d(v[0]); }, {normal({2, 3, 9, 9}, 159)});
}

// ------------------------------------------------------------------ batch norm

struct BnRef {
  std::vector<double> y, mean, var_biased, var_unbiased;
};

// Per-channel statistics over (N, H*W) and the normalised output, by hand.
BnRef bn_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  const auto xv = x.to_vector();
  BnRef r;
  r.y.resize(xv.size());
  for (int64_t c = 0; c < C; ++c) {
    std::vector<double> vals;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) vals.push_back(xv[(n * C + c) * HW + i]);
    double m = 0;
    for (double v : vals) m += v;
    m /= static_cast<double>(vals.size());
    double ss = 0;
    for (double v : vals) ss += (v - m) * (v - m);
    r.mean.push_back(m);
    r.var_biased.push_back(ss / static_cast<double>(vals.size()));
    r.var_unbiased.push_back(ss / static_cast<double>(vals.size() - 1));
    const double g = w.defined() ? w.to_vector()[c] : 1.0, beta = b.defined() ? b.to_vector()[c] : 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t at = (n * C + c) * HW + i;
        r.y[at] = (xv[at] - m) / std::sqrt(r.var_biased[c] + eps) * g + beta;
      }
  }
  return r;
}

TEST(BatchNorm, TrainForwardAndRunningStats) {
  for (const Shape& s : {Shape{3, 4, 3, 2}, Shape{6, 4}, Shape{1, 3, 5, 1}}) {
    for (DType dt : {DType::f64, DType::f32}) {
      const int64_t C = s[1];
      const Tensor x = normal(s, 160, 2.0, 1.0).to(dt), w = normal({C}, 161).to(dt), b = normal({C}, 162).to(dt);
      const Tensor rm0 = normal({C}, 163).to(dt), rv0 = uniform({C}, 164, 0.5, 1.5).to(dt);
      Tensor rm = rm0.clone(), rv = rv0.clone();
      const double momentum = 0.2, eps = 1e-3;
      const Tensor y = nn::batch_norm(x, w, b, rm, rv, true, momentum, eps);
      const BnRef ref = bn_ref(x.to(DType::f64), w.to(DType::f64), b.to(DType::f64), eps);
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      const std::string what = shape_str(s) + " " + dtype_name(dt);
      expect_values(y, ref.y, tol, "y " + what);
      std::vector<double> rm_want, rv_want;
      for (int64_t c = 0; c < C; ++c) {
        rm_want.push_back((1 - momentum) * rm0.to_vector()[c] + momentum * ref.mean[c]);
        rv_want.push_back((1 - momentum) * rv0.to_vector()[c] + momentum * ref.var_unbiased[c]);
      }
      expect_values(rm, rm_want, tol, "running_mean " + what);
      expect_values(rv, rv_want, tol, "running_var " + what);
      // Without affine parameters: gamma 1, beta 0.
      Tensor rm2 = rm0.clone(), rv2 = rv0.clone();
      expect_values(nn::batch_norm(x, Tensor(), Tensor(), rm2, rv2, true, momentum, eps),
                    bn_ref(x.to(DType::f64), Tensor(), Tensor(), eps).y, tol, "no affine " + what);
    }
  }
}

TEST(BatchNorm, RunningStatsOverSeveralSteps) {
  // Two steps with the default momentum 0.1 and running stats starting at (0, 1).
  const Tensor x1 = normal({4, 2, 3, 3}, 165, 1.5, 0.5), x2 = normal({4, 2, 3, 3}, 166, 0.5, -1.0);
  Tensor rm = Tensor::zeros({2}, DType::f64), rv = Tensor::ones({2}, DType::f64);
  nn::batch_norm(x1, Tensor(), Tensor(), rm, rv, true);
  nn::batch_norm(x2, Tensor(), Tensor(), rm, rv, true);
  const BnRef a = bn_ref(x1, Tensor(), Tensor(), 1e-5), b = bn_ref(x2, Tensor(), Tensor(), 1e-5);
  std::vector<double> rm_want, rv_want;
  for (int c = 0; c < 2; ++c) {
    rm_want.push_back(0.9 * (0.9 * 0.0 + 0.1 * a.mean[c]) + 0.1 * b.mean[c]);
    rv_want.push_back(0.9 * (0.9 * 1.0 + 0.1 * a.var_unbiased[c]) + 0.1 * b.var_unbiased[c]);
  }
  expect_values(rm, rm_want, 1e-12, "running_mean");
  expect_values(rv, rv_want, 1e-12, "running_var");
  // Training without running statistics is allowed.
  Tensor none;
  EXPECT_NO_THROW(nn::batch_norm(x1, Tensor(), Tensor(), none, none, true));
}

TEST(BatchNorm, EvalForwardUsesRunningStats) {
  for (const Shape& s : {Shape{2, 3, 4, 2}, Shape{5, 3}}) {
    const Tensor x = normal(s, 167), w = normal({3}, 168), b = normal({3}, 169);
    const Tensor rm0 = normal({3}, 170), rv0 = uniform({3}, 171, 0.2, 2.0);
    Tensor rm = rm0.clone(), rv = rv0.clone();
    const double eps = 1e-5;
    const Tensor y = nn::batch_norm(x, w, b, rm, rv, false, 0.1, eps);
    const int64_t N = s[0], C = 3, HW = x.numel() / (N * C);
    std::vector<double> want;
    const auto xv = x.to_vector();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t c = (i / HW) % C;
      want.push_back((xv[i] - rm0.to_vector()[c]) / std::sqrt(rv0.to_vector()[c] + eps) * w.to_vector()[c] +
                     b.to_vector()[c]);
    }
    expect_values(y, want, 1e-12, "eval " + shape_str(s));
    EXPECT_EQ(rm.to_vector(), rm0.to_vector()) << "eval must not update running stats";
    EXPECT_EQ(rv.to_vector(), rv0.to_vector());
  }
}

TEST(BatchNorm, Gradcheck) {
  const Tensor rm0 = normal({4}, 172, 0.5), rv0 = uniform({4}, 173, 0.5, 1.5);
  auto bn = [rm0, rv0](bool training) {
    return [rm0, rv0, training](const V& v) {
      Tensor rm = rm0.clone(), rv = rv0.clone();  // updates must not leak between calls
      return nn::batch_norm(v[0], v[1], v[2], rm, rv, training, 0.1, 1e-5);
    };
  };
  struct Case {
    const char* name;
    Shape x;
    bool training, weight, bias;
  };
  for (const Case& c : {Case{"train_affine_4d", {3, 4, 3, 2}, true, true, true},
                        Case{"train_noaffine_4d", {2, 4, 2, 3}, true, false, false},
                        Case{"train_affine_2d", {5, 4}, true, true, true},
                        Case{"train_noaffine_2d", {6, 4}, true, false, false},
                        Case{"train_weight_only", {2, 4, 2, 2}, true, true, false},
                        Case{"train_bias_only", {2, 4, 2, 2}, true, false, true},
                        Case{"eval_affine_4d", {2, 4, 3, 3}, false, true, true},
                        Case{"eval_noaffine_2d", {3, 4}, false, false, false}}) {
    SCOPED_TRACE(c.name);
    const V in = {req(normal(c.x, 174, 1.5, 0.7)), c.weight ? req(normal({4}, 175)) : Tensor(),
                  c.bias ? req(normal({4}, 176)) : Tensor()};
    expect_gradcheck(bn(c.training), in);
  }
  // Gradient w.r.t. the affine parameters only.
  expect_gradcheck(bn(true), {normal({3, 4, 2, 2}, 177), req(normal({4}, 178)), req(normal({4}, 179))});
}

TEST(BatchNorm, F32MatchesF64) {
  for (bool training : {true, false}) {
    const Tensor rm0 = normal({3}, 180), rv0 = uniform({3}, 181, 0.5, 1.5);
    expect_f32_matches_f64(
        [&](const V& v) {
          Tensor rm = rm0.to(v[0].dtype()), rv = rv0.to(v[0].dtype());
          return nn::batch_norm(v[0], v[1], v[2], rm, rv, training);
        },
        {normal({4, 3, 5, 5}, 182, 2.0, 3.0), normal({3}, 183), normal({3}, 184)});
  }
}

// ------------------------------------------------------------------ softmax

std::vector<double> softmax_ref(const Tensor& x, int64_t dim, bool log) {
  const int64_t nd = x.dim();
  dim = dim < 0 ? dim + nd : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
  for (int64_t d = dim + 1; d < nd; ++d) inner *= x.size(d);
  const int64_t D = x.size(dim);
  const auto xv = x.to_vector();
  std::vector<double> y(xv.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double z = 0;
      for (int64_t d = 0; d < D; ++d) z += std::exp(xv[(o * D + d) * inner + i]);
      for (int64_t d = 0; d < D; ++d) {
        const double v = xv[(o * D + d) * inner + i];
        y[(o * D + d) * inner + i] = log ? v - std::log(z) : std::exp(v) / z;
      }
    }
  return y;
}

struct SoftmaxCase {
  Shape x;
  int64_t dim;
};
const std::vector<SoftmaxCase> kSoftmaxCases = {{{3, 4, 5}, 0}, {{3, 4, 5}, 1}, {{3, 4, 5}, -1}, {{3, 4, 5}, 2},
                                                {{4, 7}, 1},    {{4, 7}, 0},    {{6}, 0},        {{2, 1, 3}, 1}};

TEST(Softmax, ForwardMatchesReference) {
  for (const SoftmaxCase& c : kSoftmaxCases) {
    const Tensor x = normal(c.x, 190, 2.0);
    expect_values(nn::softmax(x, c.dim), softmax_ref(x, c.dim, false), 1e-13, "softmax");
    expect_values(nn::log_softmax(x, c.dim), softmax_ref(x, c.dim, true), 1e-13, "log_softmax");
    // Rows of the softmax sum to one.
    expect_values(nn::sum(nn::softmax(x, c.dim), {c.dim}), std::vector<double>(x.numel() / x.size(c.dim), 1.0),
                  1e-14, "softmax sums");
  }
  // Large logits: shifted by the max, no overflow.
  const Tensor big = Tensor::from_vector(std::vector<double>{1000, 1001, -1000}, {1, 3});
  const double e = std::exp(-1.0);
  expect_values(nn::softmax(big), {e / (1 + e), 1 / (1 + e), 0.0}, 1e-14, "large softmax");
  expect_values(nn::log_softmax(big), {-std::log1p(std::exp(1.0)), -std::log1p(e), -2001 - std::log1p(e)}, 1e-13,
                "large log_softmax");
}

TEST(Softmax, Gradcheck) {
  for (const SoftmaxCase& c : kSoftmaxCases) {
    SCOPED_TRACE(shape_str(c.x) + " dim " + std::to_string(c.dim));
    const int64_t dim = c.dim;
    const V in = {req(normal(c.x, 191, 2.0))};
    expect_gradcheck([dim](const V& v) { return nn::softmax(v[0], dim); }, in);
    expect_gradcheck([dim](const V& v) { return nn::log_softmax(v[0], dim); }, in);
  }
}

TEST(Softmax, F32MatchesF64) {
  for (const SoftmaxCase& c : kSoftmaxCases) {
    const int64_t dim = c.dim;
    expect_f32_matches_f64([dim](const V& v) { return nn::softmax(v[0], dim); }, {normal(c.x, 192, 3.0)});
    expect_f32_matches_f64([dim](const V& v) { return nn::log_softmax(v[0], dim); }, {normal(c.x, 193, 3.0)});
  }
}

// ------------------------------------------------------------------ cross entropy

// -log softmax of row i at class c, from first principles.
double nll(const std::vector<double>& z, int64_t C, int64_t i, int64_t c) {
  double s = 0;
  for (int64_t k = 0; k < C; ++k) s += std::exp(z[i * C + k]);
  return std::log(s) - z[i * C + c];
}

// PyTorch's mean-reduced cross entropy with class weights and label smoothing (the
// formula in kernels/softmax.h).
double ce_ref(const Tensor& logits, const std::vector<int64_t>& t, const std::vector<double>& w, double eps) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const auto z = logits.to_vector();
  double W = 0, a = 0, smooth = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double wy = w.empty() ? 1.0 : w[t[i]];
    W += wy;
    a += wy * nll(z, C, i, t[i]);
    for (int64_t c = 0; c < C; ++c) smooth += (w.empty() ? 1.0 : w[c]) * nll(z, C, i, c);
  }
  return ((1 - eps) * a + eps / static_cast<double>(C) * smooth) / W;
}

const std::vector<int64_t> kTargets = {0, 3, 1, 1, 2};
const std::vector<double> kClassWeights = {0.5, 2.0, 1.0, 3.0};

TEST(CrossEntropy, ForwardPlain) {
  // A known value: uniform logits over two classes give log 2.
  const Tensor two = Tensor::zeros({1, 2}, DType::f64);
  EXPECT_NEAR(nn::cross_entropy(two, Tensor::from_vector(std::vector<int64_t>{1}, {1})).item(), std::log(2.0), 1e-15);
  // Mean of -log p[i, y_i].
  const Tensor z = normal({5, 4}, 200, 2.0);
  const auto zv = z.to_vector();
  double want = 0;
  for (int64_t i = 0; i < 5; ++i) want += nll(zv, 4, i, kTargets[i]);
  want /= 5;
  const Tensor loss = nn::cross_entropy(z, Tensor::from_vector(kTargets, {5}));
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item(), want, 1e-13);
  // Large logits do not overflow.
  const Tensor big = Tensor::from_vector(std::vector<double>{1000, 0, -1000, 500}, {2, 2});
  EXPECT_NEAR(nn::cross_entropy(big, Tensor::from_vector(std::vector<int64_t>{1, 0}, {2})).item(), (1000 + 1500) / 2.0,
              1e-9);
}

TEST(CrossEntropy, ForwardWeightsAndSmoothing) {
  const Tensor z = normal({5, 4}, 201, 2.0);
  const Tensor t = Tensor::from_vector(kTargets, {5});
  const Tensor w = Tensor::from_vector(kClassWeights, {4});
  const auto zv = z.to_vector();
  // Weights: sum_i w[y_i] * nll_i / sum_i w[y_i].
  double num = 0, den = 0;
  for (int64_t i = 0; i < 5; ++i) {
    num += kClassWeights[kTargets[i]] * nll(zv, 4, i, kTargets[i]);
    den += kClassWeights[kTargets[i]];
  }
  nn::CrossEntropyOptions ow;
  ow.class_weight = w;
  EXPECT_NEAR(nn::cross_entropy(z, t, ow).item(), num / den, 1e-13);
  // Smoothing without weights is cross entropy against the smoothed target
  // q = (1 - eps) * onehot + eps / C, averaged over the batch.
  for (double eps : {0.1, 0.3}) {
    double soft = 0;
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t c = 0; c < 4; ++c) soft += ((c == kTargets[i] ? 1 - eps : 0) + eps / 4) * nll(zv, 4, i, c);
    nn::CrossEntropyOptions os;
    os.label_smoothing = eps;
    EXPECT_NEAR(nn::cross_entropy(z, t, os).item(), soft / 5, 1e-13) << eps;
  }
  // Both: PyTorch's formula, checked on numbers worked out independently.
  nn::CrossEntropyOptions ob;
  ob.class_weight = w;
  ob.label_smoothing = 0.2;
  EXPECT_NEAR(nn::cross_entropy(z, t, ob).item(), ce_ref(z, kTargets, kClassWeights, 0.2), 1e-13);
  // A hand-sized case: logits (1, 2) = [0, 0], target 0, weights (2, 1), eps 0.5:
  // nll = log 2 for both classes, W = 2, loss = (0.5*2*log2 + 0.25*(2+1)*log2) / 2.
  nn::CrossEntropyOptions oh;
  oh.class_weight = Tensor::from_vector(std::vector<double>{2, 1}, {2});
  oh.label_smoothing = 0.5;
  EXPECT_NEAR(nn::cross_entropy(Tensor::zeros({1, 2}, DType::f64), Tensor::from_vector(std::vector<int64_t>{0}, {1}), oh)
                  .item(),
              (1.0 + 0.75) * std::log(2.0) / 2.0, 1e-15);
}

TEST(CrossEntropy, Gradcheck) {
  const Tensor t = Tensor::from_vector(kTargets, {5});
  const Tensor w = Tensor::from_vector(kClassWeights, {4});
  for (int variant = 0; variant < 4; ++variant) {
    nn::CrossEntropyOptions o;
    if (variant & 1) o.class_weight = w;
    if (variant & 2) o.label_smoothing = 0.15;
    SCOPED_TRACE("variant " + std::to_string(variant));
    expect_gradcheck([t, o](const V& v) { return nn::cross_entropy(v[0], t, o); }, {req(normal({5, 4}, 202, 2.0))});
    // The upstream gradient scales the local one: loss used twice and scaled.
    expect_gradcheck(
        [t, o](const V& v) {
          return nn::add(nn::mul_scalar(nn::cross_entropy(v[0], t, o), 3.0), nn::cross_entropy(v[0], t, o));
        },
        {req(normal({5, 4}, 203))});
  }
  expect_gradcheck(
      [](const V& v) { return nn::cross_entropy(v[0], Tensor::from_vector(std::vector<int64_t>{2}, {1})); },
      {req(normal({1, 3}, 204))});
}

TEST(CrossEntropy, F32MatchesF64) {
  const Tensor t = Tensor::from_vector(kTargets, {5});
  nn::CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  expect_f32_matches_f64([&](const V& v) { return nn::cross_entropy(v[0], t); }, {normal({5, 4}, 205, 3.0)});
  expect_f32_matches_f64(
      [&](const V& v) {
        nn::CrossEntropyOptions ow = o;
        ow.class_weight = v[1];
        return nn::cross_entropy(v[0], t, ow);
      },
      {normal({5, 4}, 206, 3.0), Tensor::from_vector(kClassWeights, {4})});
}

// ------------------------------------------------------------------ BCE with logits, MSE

// mean(-[pw*y*log(sigmoid(x)) + (1-y)*log(1-sigmoid(x))]), straight from the definition.
double bce_ref(const Tensor& x, const Tensor& y, const std::vector<double>& pw) {
  const auto xv = x.to_vector(), yv = y.to_vector();
  const int64_t L = x.dim() ? x.size(-1) : 1;
  double acc = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-xv[i]));
    const double p = pw.empty() ? 1.0 : pw.size() == 1 ? pw[0] : pw[i % L];
    acc -= p * yv[i] * std::log(s) + (1 - yv[i]) * std::log(1 - s);
  }
  return acc / static_cast<double>(xv.size());
}

TEST(BceWithLogits, Forward) {
  const Tensor x = normal({4, 3}, 210, 2.0), y = uniform({4, 3}, 211, 0.0, 1.0);
  EXPECT_NEAR(nn::binary_cross_entropy_with_logits(x, y).item(), bce_ref(x, y, {}), 1e-13);
  const std::vector<double> pw = {0.5, 2.0, 3.0};
  EXPECT_NEAR(nn::binary_cross_entropy_with_logits(x, y, Tensor::from_vector(pw, {3})).item(), bce_ref(x, y, pw), 1e-13);
  EXPECT_NEAR(nn::binary_cross_entropy_with_logits(x, y, Tensor::from_vector(std::vector<double>{4.0}, {1})).item(),
              bce_ref(x, y, {4.0}), 1e-13);
  // Extreme logits stay finite and exact: loss = |x| for the wrong hard label.
  const Tensor xe = Tensor::from_vector(std::vector<double>{1000, -1000, 1000, -1000}, {4});
  const Tensor ye = Tensor::from_vector(std::vector<double>{0, 1, 1, 0}, {4});
  EXPECT_NEAR(nn::binary_cross_entropy_with_logits(xe, ye).item(), 500.0, 1e-9);
  // 0-d inputs.
  EXPECT_NEAR(
      nn::binary_cross_entropy_with_logits(Tensor::scalar(0.0, DType::f64), Tensor::scalar(1.0, DType::f64)).item(),
      std::log(2.0), 1e-15);
}

TEST(BceWithLogits, Gradcheck) {
  const Fn f = [](const V& v) { return nn::binary_cross_entropy_with_logits(v[0], v[1], v[2]); };
  expect_gradcheck(f, {req(normal({4, 3}, 212, 2.0)), req(uniform({4, 3}, 213, 0, 1)), Tensor()});
  expect_gradcheck(f, {req(normal({4, 3}, 214, 2.0)), req(uniform({4, 3}, 215, 0, 1)),
                       Tensor::from_vector(std::vector<double>{0.5, 2.0, 3.0}, {3})});
  expect_gradcheck(f, {req(normal({2, 5}, 216, 2.0)), req(uniform({2, 5}, 217, 0, 1)),
                       Tensor::from_vector(std::vector<double>{2.5}, {1})});
  // Only one of the two requiring grad.
  expect_gradcheck(f, {normal({6}, 218), req(uniform({6}, 219, 0, 1)), Tensor()});
  expect_gradcheck(f, {req(normal({6}, 220)), uniform({6}, 221, 0, 1), Tensor()});
  expect_f32_matches_f64(f, {normal({4, 3}, 222, 2.0), uniform({4, 3}, 223, 0, 1),
                             Tensor::from_vector(std::vector<double>{0.5, 2.0, 3.0}, {3})});
}

TEST(MseLoss, ForwardAndGradcheck) {
  const Tensor a = normal({3, 4}, 230), b = normal({3, 4}, 231);
  const auto av = a.to_vector(), bv = b.to_vector();
  double want = 0;
  for (size_t i = 0; i < av.size(); ++i) want += (av[i] - bv[i]) * (av[i] - bv[i]);
  EXPECT_NEAR(nn::mse_loss(a, b).item(), want / 12, 1e-14);
  const Fn f = [](const V& v) { return nn::mse_loss(v[0], v[1]); };
  expect_gradcheck(f, {req(normal({3, 4}, 232)), req(normal({3, 4}, 233))});
  expect_gradcheck(f, {req(normal({7}, 234)), normal({7}, 235)});
  expect_gradcheck(f, {normal({7}, 236), req(normal({7}, 237))});
  expect_f32_matches_f64(f, {normal({3, 4}, 238), normal({3, 4}, 239)});
}

// ------------------------------------------------------------------ multi-chunk paths

// Shapes large enough that every kernel splits its work over 4 threads (elementwise
// kernels use chunks of 16384 elements; the others split rows, planes or channels), so
// the chunk-boundary arithmetic is exercised, compared with the same references.
TEST(MultiChunk, ForwardMatchesReferences) {
  with_threads(4, [] {
    {
      const Tensor a = normal({64, 33, 17}, 300), b = normal({33, 1}, 301);
      Shape out;
      for (char op : {'+', '-', '*'}) {
        const Tensor y = op == '+' ? nn::add(a, b) : op == '-' ? nn::sub(a, b) : nn::mul(b, a);
        expect_values(y, op == '*' ? broadcast_ref(b, a, op, out) : broadcast_ref(a, b, op, out), 1e-15,
                      std::string("broadcast ") + op);
      }
      const Tensor c = normal({64, 33, 17}, 302);
      expect_values(nn::add(a, c), broadcast_ref(a, c, '+', out), 1e-15, "same-shape add");
      expect_values(nn::mul(a, c), broadcast_ref(a, c, '*', out), 1e-15, "same-shape mul");
      std::vector<double> want;
      for (double v : a.to_vector()) want.push_back(act_ref(cpu::Act::gelu, v, 0));
      expect_values(nn::gelu(a), want, 1e-14, "gelu");
    }
    {
      const Tensor x = normal({300, 10}, 303, 2.0);
      expect_values(nn::softmax(x, 1), softmax_ref(x, 1, false), 1e-13, "softmax rows");
      expect_values(nn::log_softmax(x, 0), softmax_ref(x, 0, true), 1e-13, "log_softmax columns");
      const Tensor y = normal({5, 7, 40}, 304);
      expect_values(nn::softmax(y, 1), softmax_ref(y, 1, false), 1e-13, "softmax middle dim");
    }
    {
      const Tensor x = distinct({4, 8, 9, 9}, 305);
      const auto o = nn::Pool2dOptions::make(3, 2, 1);
      expect_values(nn::max_pool2d(x, o), pool_ref(x, o, PoolKind::max), 0.0, "max_pool2d");
      expect_values(nn::avg_pool2d(x, o), pool_ref(x, o, PoolKind::avg), 1e-14, "avg_pool2d");
      expect_values(nn::global_avg_pool2d(x), reduce_ref(x, {2, 3}, true), 1e-14, "global_avg_pool2d");
    }
    {
      const Tensor x = normal({4, 8, 5, 5}, 306, 1.0, 2.0), w = normal({8}, 307), b = normal({8}, 308);
      Tensor rm = normal({8}, 309), rv = uniform({8}, 310, 0.5, 2.0);
      const auto rmv = rm.to_vector(), rvv = rv.to_vector(), wv = w.to_vector(), bv = b.to_vector();
      std::vector<double> want;
      const auto xv = x.to_vector();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const int64_t c = (i / 25) % 8;
        want.push_back((xv[i] - rmv[c]) / std::sqrt(rvv[c] + 1e-5) * wv[c] + bv[c]);
      }
      expect_values(nn::batch_norm(x, w, b, rm, rv, false), want, 1e-12, "batch_norm eval");
      expect_values(nn::batch_norm(x, w, b, rm, rv, true), bn_ref(x, w, b, 1e-5).y, 1e-12, "batch_norm train");
    }
    for (const ConvCase& c : {ConvCase{"depthwise_many_planes", 4, 8, 9, 7, 16, 3, 3, {1, 1, 1, 1, 1, 1, 8}, true},
                              ConvCase{"grouped_batch5", 5, 4, 6, 6, 4, 3, 3, {2, 2, 1, 1, 1, 1, 2}, true}}) {
      ConvInputs in = conv_inputs(c, 311);
      expect_values(nn::conv2d(in.x, in.w, in.b, c.o), conv_ref(in.x, in.w, in.b, c.o), 1e-12, c.name);
      GradcheckOptions opt;
      opt.max_checks = 40;
      expect_gradcheck([o = c.o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); },
                       {req(in.x), req(in.w), req(in.b)}, opt);
    }
  });
}

TEST(MultiChunk, Gradcheck) {
  // Backward kernels split the same way; a random subset of each gradient is checked.
  with_threads(4, [] {
    GradcheckOptions opt;
    opt.max_checks = 40;
    expect_gradcheck([](const V& v) { return nn::mul(v[0], v[1]); },
                     {req(normal({64, 33, 17}, 320)), req(normal({33, 1}, 321))}, opt);
    expect_gradcheck([](const V& v) { return nn::softmax(v[0], 0); }, {req(normal({10, 300}, 322))}, opt);
    expect_gradcheck([](const V& v) { return nn::max_pool2d(v[0], nn::Pool2dOptions::make(2, 2)); },
                     {req(distinct({4, 8, 6, 6}, 323))}, opt);
    expect_gradcheck([](const V& v) { return nn::avg_pool2d(v[0], nn::Pool2dOptions::make(3, 1, 1)); },
                     {req(normal({4, 8, 5, 5}, 324))}, opt);
    expect_gradcheck(
        [](const V& v) {
          Tensor rm, rv;
          return nn::batch_norm(v[0], v[1], v[2], rm, rv, true);
        },
        {req(normal({4, 8, 3, 3}, 325)), req(normal({8}, 326)), req(normal({8}, 327))}, opt);
  });
}

// ------------------------------------------------------------------ composite graph

TEST(Composite, SmallCnnGradcheck) {
  // conv -> batch_norm -> relu -> max_pool -> flatten -> linear -> cross_entropy, the
  // chain a training step runs, with every parameter checked through the whole graph.
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{1, 0, 2}, {3});
  const Fn f = [t](const V& v) {
    Tensor rm, rv;
    Tensor h = nn::conv2d(v[0], v[1], v[2], nn::Conv2dOptions::make(1, 1));
    h = nn::batch_norm(h, v[3], v[4], rm, rv, true);
    h = nn::relu(h);
    h = nn::max_pool2d(h, nn::Pool2dOptions::make(2, 2));
    h = nn::flatten(h);
    h = nn::linear(h, v[5], v[6]);
    return nn::cross_entropy(h, t);
  };
  const V in = {req(normal({3, 2, 5, 4}, 240)), req(normal({4, 2, 3, 3}, 241, 0.5)), req(normal({4}, 242)),
                req(normal({4}, 243, 0.2, 1.0)), req(normal({4}, 244)), req(normal({3, 16}, 245, 0.5)),
                req(normal({3}, 246))};
  expect_gradcheck(f, in);
  expect_f32_matches_f64(f, in);
}

// ------------------------------------------------------------------ the checker itself

TEST(Gradcheck, DetectsAWrongGradient) {
  // A hand-made op whose backward is off by 10% must fail the check.
  const Fn bad = [](const V& v) {
    Tensor y;
    {
      nn::NoGradGuard g;
      y = nn::mul(v[0], v[0]);
    }
    if (nn::needs_record(v)) {
      const Tensor x = v[0];
      nn::record(y, "bad_square", {x}, [x](const Tensor& g, std::vector<Tensor>& gi) {
        gi[0] = nn::mul_scalar(nn::mul(g, x), 2.2);  // should be 2.0
      });
    }
    return y;
  };
  const testing::GradcheckResult r = testing::gradcheck(bad, {req(normal({5}, 250))});
  EXPECT_FALSE(r.ok);
  EXPECT_GT(r.max_abs_error, 1e-3);
  EXPECT_NE(r.message.find("input 0"), std::string::npos) << r.message;
  // The same op with the right factor passes, and the subset option limits the work.
  const Fn good = [](const V& v) { return nn::mul(v[0], v[0]); };
  GradcheckOptions opt;
  opt.max_checks = 7;
  const testing::GradcheckResult ok = testing::gradcheck(good, {req(normal({50}, 251))}, opt);
  EXPECT_TRUE(ok.ok) << ok.message;
  EXPECT_EQ(ok.checked, 7);
  // f32 inputs are refused: finite differences in float are too coarse.
  Tensor f32 = Tensor::ones({3});
  f32.set_requires_grad(true);
  EXPECT_FALSE(testing::gradcheck(good, {f32}).ok);
}

}  // namespace
}  // namespace cxr

// A NaN anywhere in a window makes that window's maximum NaN (as in PyTorch), on the
// 2x2 fast path and the general path alike.
TEST(MaxPool2d, NaNPropagates) {
  using cxr::Tensor;
  namespace nn = cxr::nn;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t k : {2, 3}) {
    Tensor x = Tensor::from_vector(std::vector<float>{1, nan, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {1, 1, 4, 4});
    Tensor y = nn::max_pool2d(x, nn::Pool2dOptions::make(k, k));
    const std::vector<double> v = y.to_vector();
    EXPECT_TRUE(std::isnan(v[0])) << "kernel " << k;
    if (k == 2) {
      EXPECT_EQ(v[1], 8.0);
      EXPECT_EQ(v[2], 14.0);
      EXPECT_EQ(v[3], 16.0);
    }
  }
}
