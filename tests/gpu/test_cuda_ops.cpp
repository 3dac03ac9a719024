// Every op in nn/functional.h on CUDA against the same computation on the CPU (f32 on
// both sides): forward outputs and, through nn::backward(out, R) with one fixed random R,
// the gradient of every input. Shapes are odd on purpose (1, 7, 33, non-multiples of 32
// and 256, N = 1, odd H/W). Device outputs and gradients come from NaN-poisoned memory
// (cuda_test_util.h), so unwritten elements fail. TF32 is off (strict tier, 1e-5) except
// in the TF32 cases of conv2d / linear / matmul. Also: the optimizers, gradient clipping
// and EMA on CUDA parameters, f64 / mixed-device errors, and a tensor of more than 2^31
// elements. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "runtime/cuda.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

using namespace gputest;
using V = Inputs;

const int64_t kBig = (int64_t{1} << 20) + 3;

std::string shp(const Shape& s) { return shape_str(s); }

// Expects f to throw ValueError whose message contains every part.
template <typename F>
void expect_value_error(F&& f, std::initializer_list<const char*> parts, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": expected cxr::ValueError, nothing was thrown";
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << what << ": '" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": expected cxr::ValueError, got: " << e.what();
  }
}

// ================================================================ elementwise

TEST(CudaOps, AddSubMulWithBroadcasting) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(101);
  // (Broadcast operands get gradients summed over the broadcast dims; those sums stay
  // under ~4000 terms, where the CPU's sequential f32 sum is still accurate to ~1e-6.)
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1}, {1}},           {{7}, {7}},           {{33, 1}, {1, 65}},    {{2, 3, 33}, {3, 1}},
      {{}, {2, 7}},         {{7, 5}, {}},         {{1}, {300}},          {{2, 1, 3, 1, 5}, {1, 4, 1, 6, 1}},
      {{257, 33}, {33}},    {{4, 1, 9}, {4, 7, 1}}, {{kBig}, {kBig}},   {{2, 16, 33, 33}, {16, 1, 1}},
      {{1, 1, 1}, {3, 1, 1}}, {{513, 3}, {513, 1}}, {{4099}, {1}},
  };
  const char* names[] = {"add", "sub", "mul"};
  for (const auto& [sa, sb] : cases)
    for (int op = 0; op < 3; ++op) {
      const OpFn fn = [op](const V& v) {
        return op == 0 ? nn::add(v[0], v[1]) : op == 1 ? nn::sub(v[0], v[1]) : nn::mul(v[0], v[1]);
      };
      compare_op(std::string(names[op]) + " " + shp(sa) + " " + shp(sb), fn, {req(randn(sa, g)), req(randn(sb, g))});
    }
  // Only one side requires grad; the other is a constant.
  const OpFn mul = [](const V& v) { return nn::mul(v[0], v[1]); };
  compare_op("mul with constant b", mul, {req(randn({33, 65}, g)), randn({65}, g)});
  compare_op("mul with constant a", mul, {randn({33, 1}, g), req(randn({33, 65}, g))});
  // Inputs that alias: x * x.
  compare_op("mul x*x", [](const V& v) { return nn::mul(v[0], v[0]); }, {req(randn({7, 33}, g))});
}

TEST(CudaOps, MulScalar) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(102);
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 65}, {kBig}, {(int64_t{1} << 22) + 1}})
    for (double k : {2.5, -0.75, 0.0})
      compare_op("mul_scalar " + shp(s) + " by " + std::to_string(k),
                 [k](const V& v) { return nn::mul_scalar(v[0], k); }, {req(randn(s, g))});
}

TEST(CudaOps, ReshapeAndFlatten) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(103);
  const Shape s = {2, 3, 5, 7};
  for (const Shape& to : std::vector<Shape>{{6, 35}, {-1}, {5, -1, 3}, {210, 1}, {1, 2, 105}}) {
    const Comparison c = compare_op("reshape to " + shp(to), [to](const V& v) { return nn::reshape(v[0], to); },
                                    {req(randn(s, g))});
    if (c.ok) {
      EXPECT_EQ(c.dev_out.shape(), c.cpu_out.shape());
    }
  }
  for (int64_t start : {0, 1, 2, 3}) {
    const Comparison c = compare_op("flatten from " + std::to_string(start),
                                    [start](const V& v) { return nn::flatten(v[0], start); }, {req(randn(s, g))});
    if (c.ok) {
      EXPECT_EQ(c.dev_out.shape(), c.cpu_out.shape());
    }
  }
  // Reshape inside a computation (the gradient flows back through the view).
  compare_op("reshape then mul",
             [](const V& v) { return nn::mul(nn::reshape(v[0], {33, 7}), v[1]); },
             {req(randn({7, 33}, g)), req(randn({33, 7}, g))});
}

TEST(CudaOps, Concat) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(104);
  struct Case {
    std::vector<Shape> shapes;
    int64_t dim;
  };
  const std::vector<Case> cases = {
      {{{1, 5}, {7, 5}, {33, 5}}, 0},
      {{{3, 1, 4}, {3, 7, 4}, {3, 33, 4}}, 1},
      {{{2, 3, 1}, {2, 3, 7}, {2, 3, 33}}, -1},
      {{{2, 3, 1}, {2, 3, 7}, {2, 3, 33}}, 2},
      {{{2, 16, 5, 5}, {2, 17, 5, 5}}, 1},
      {{{7}, {1}, {300}, {33}, {2}}, 0},
      {{{4, 257}}, 0},
      {{{1, 1}, {1, 1}}, 1},
      {{{2, 3, 4, 5, 6}, {2, 3, 4, 5, 1}}, 4},
      {{{513, 3}, {1, 3}}, 0},
  };
  for (const Case& c : cases) {
    std::string name = "concat dim " + std::to_string(c.dim) + ":";
    V in;
    for (const Shape& s : c.shapes) {
      in.push_back(req(randn(s, g)));
      name += " " + shp(s);
    }
    compare_op(name, [dim = c.dim](const V& v) { return nn::concat(v, dim); }, in);
  }
  // An input that does not require grad gets none; the others still do.
  compare_op("concat with a constant", [](const V& v) { return nn::concat(v, 1); },
             {req(randn({3, 7}, g)), randn({3, 33}, g), req(randn({3, 1}, g))});
}

TEST(CudaOps, SumAndMean) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(105);
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {
      {{3, 7, 33, 5}, {}},     {{3, 7, 33, 5}, {0}},       {{3, 7, 33, 5}, {1}},    {{3, 7, 33, 5}, {-1}},
      {{3, 7, 33, 5}, {0, 2}}, {{3, 7, 33, 5}, {1, 3}},    {{3, 7, 33, 5}, {0, 1, 2, 3}},
      {{3, 7, 33, 5}, {2, -1}}, {{7}, {}},                 {{7}, {0}},              {{1}, {0}},
      {{1037, 3}, {0}},        {{3, 1037}, {1}},           {{2, 3, 4, 5, 6}, {1, 3}}, {{4000}, {}},
      {{1, 1, 1}, {1}},
  };
  for (const Case& c : cases)
    for (bool keepdim : {false, true})
      for (bool is_mean : {false, true}) {
        std::string dims;
        for (int64_t d : c.dims) dims += std::to_string(d) + ",";
        const std::string name = std::string(is_mean ? "mean " : "sum ") + shp(c.shape) + " dims {" + dims + "}" +
                                 (keepdim ? " keepdim" : "");
        const Comparison r = compare_op(
            name,
            [&c, keepdim, is_mean](const V& v) {
              return is_mean ? nn::mean(v[0], c.dims, keepdim) : nn::sum(v[0], c.dims, keepdim);
            },
            {req(randn(c.shape, g, 1.0, 0.25))});
        if (r.ok) {
          EXPECT_EQ(r.dev_out.shape(), r.cpu_out.shape()) << name;
        }
      }
}

// Long reductions against a CPU reference in double: the CPU's f32 kernels add long rows
// sequentially in float, which is itself off by ~u*sqrt(n) ~ 1e-5 at a million elements,
// while the device must be accurate (tree or double accumulation, see the brief).
// (Real device only: in self-test mode the stand-in is that same CPU kernel.)
TEST(CudaOps, LongReductionsMatchDoubleReference) {
  CXR_REQUIRE_REAL_GPU();
  Tf32Scope tf32(false);
  Generator g(106);
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {{{kBig}, {}},
                                   {{(int64_t{1} << 22) + 1}, {}},
                                   {{3, (int64_t{1} << 18) + 1}, {1}},
                                   {{(int64_t{1} << 16) + 1, 5}, {0}},
                                   {{17, 1031, 61}, {0, 2}}};
  for (const Case& c : cases)
    for (bool is_mean : {false, true}) {
      const std::string name = std::string(is_mean ? "mean " : "sum ") + shp(c.shape);
      const Tensor x = randu(c.shape, g, -0.5, 1.5);
      const Tensor xd = req(to_device(x));
      const Tensor ref = is_mean ? nn::mean(x.to(DType::f64), c.dims) : nn::sum(x.to(DType::f64), c.dims);
      poison_allocator({static_cast<size_t>(ref.numel()) * sizeof(float)});
      const Tensor y = is_mean ? nn::mean(xd, c.dims) : nn::sum(xd, c.dims);
      expect_close(y, ref, kStrictTol, name);
      // Backward spreads R (or R / count) over the input: exact on both sides.
      Generator gr(7);
      const Tensor R = randu(y.shape(), gr, -1.0, 1.0);
      nn::backward(y, to_device(R));
      Tensor xc = req(x.clone());
      nn::backward(is_mean ? nn::mean(xc, c.dims) : nn::sum(xc, c.dims), R);
      expect_close(xd.grad(), xc.grad(), kStrictTol, name + " grad");
    }
}

// ================================================================ activations

struct ActCase {
  cpu::Act act;
  double alpha;
  const char* name;
};
const ActCase kActs[] = {{cpu::Act::relu, 0.0, "relu"},          {cpu::Act::leaky_relu, 0.01, "leaky_relu 0.01"},
                         {cpu::Act::leaky_relu, 0.2, "leaky_relu 0.2"}, {cpu::Act::relu6, 0.0, "relu6"},
                         {cpu::Act::sigmoid, 0.0, "sigmoid"},    {cpu::Act::tanh, 0.0, "tanh"},
                         {cpu::Act::gelu, 0.0, "gelu"},          {cpu::Act::silu, 0.0, "silu"}};

// Normal values (sd 4, so relu6 clips) with the edge cases first: exact kinks (0, -0, 6)
// where the derivative convention must match the CPU, and saturated values.
Tensor act_input(const Shape& s, Generator& g) {
  Tensor t = randn(s, g, 4.0);
  const float special[] = {0.0f, -0.0f, 6.0f, -6.0f, 3.0f, -3.0f, 20.0f, -20.0f, 1e-7f, -1e-7f, 0.5f, 40.0f, -40.0f};
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel() && i < 13; ++i) p[i] = special[i];
  return t;
}

TEST(CudaOps, EveryActivation) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(107);
  for (const ActCase& a : kActs)
    for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 65}, {(int64_t{1} << 16) + 5}}) {
      compare_op(std::string(a.name) + " " + shp(s),
                 [a](const V& v) { return nn::activation(v[0], a.act, a.alpha); }, {req(act_input(s, g))});
    }
  // The inline wrappers reach the same kernels.
  const Tensor x = act_input({33, 7}, g);
  compare_op("relu()", [](const V& v) { return nn::relu(v[0]); }, {req(x)});
  compare_op("gelu()", [](const V& v) { return nn::gelu(v[0]); }, {req(x)});
  compare_op("leaky_relu() default slope", [](const V& v) { return nn::leaky_relu(v[0]); }, {req(x)});
}

// ================================================================ dropout

TEST(CudaOps, DropoutMaskIsTheCpuMaskExactly) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(108);
  CompareOptions exact;
  exact.exact = true;
  for (double p : {0.0, 0.1, 0.5, 0.9})
    for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 257}, {kBig}}) {
      // A fresh Generator with the same seed inside fn: the same stream on both devices.
      compare_op("dropout p=" + std::to_string(p) + " " + shp(s),
                 [p](const V& v) {
                   Generator gen(777);
                   return nn::dropout(v[0], p, true, gen);
                 },
                 {req(randn(s, g))}, exact);
    }
  // Consecutive masks from one generator match too, and the generators advance alike.
  const Tensor x = randn({33, 65}, g);
  const Tensor xd = to_device(x);
  Generator gc(5), gd(5);
  for (int k = 0; k < 3; ++k) {
    const Tensor yc = nn::dropout(x, 0.3, true, gc), yd = nn::dropout(xd, 0.3, true, gd);
    expect_exact(yd, yc, "dropout call " + std::to_string(k));
    EXPECT_EQ(gd.offset(), gc.offset());
  }
  // Evaluation mode is the identity.
  Generator ge(6);
  expect_exact(nn::dropout(xd, 0.5, false, ge), x, "dropout in eval mode");
}

// ================================================================ conv2d / linear / matmul

// The three precision modes of the GEMM-based ops.
enum class Mode { strict, tf32_exact, tf32_random };
const Mode kModes[] = {Mode::strict, Mode::tf32_exact, Mode::tf32_random};
const char* mode_name(Mode m) {
  return m == Mode::strict ? "tf32 off" : m == Mode::tf32_exact ? "tf32 on, exact inputs" : "tf32 on, random inputs";
}
CompareOptions mode_options(Mode m) {
  CompareOptions o;
  const double tol = m == Mode::strict ? kStrictTol : m == Mode::tf32_exact ? kTf32Tol : kTf32RandomTol;
  o.fwd_tol = o.bwd_tol = tol;
  o.tf32_exact_grad = m == Mode::tf32_exact;
  return o;
}
Tensor mode_input(Mode m, const Shape& s, Generator& g) { return m == Mode::tf32_exact ? tf32_exact(s, g) : randn(s, g); }

struct ConvCase {
  int64_t N, C, H, W, K, R, S;
  nn::Conv2dOptions o;
  bool bias;
  const char* name;
};

nn::Conv2dOptions conv_opts(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  nn::Conv2dOptions o;
  o.stride_h = sh, o.stride_w = sw, o.pad_h = ph, o.pad_w = pw, o.dil_h = dh, o.dil_w = dw, o.groups = groups;
  return o;
}

const std::vector<ConvCase>& conv_cases() {
  using O = nn::Conv2dOptions;
  static const std::vector<ConvCase> cases = {
      {1, 1, 1, 1, 1, 1, 1, O::make(1, 0), true, "1x1 on 1x1"},
      {2, 3, 7, 9, 5, 3, 3, O::make(1, 1), true, "3x3 pad 1"},
      {3, 8, 13, 11, 16, 3, 3, O::make(2, 1), false, "3x3 stride 2"},
      {2, 6, 15, 17, 9, 3, 3, O::make(1, 2, 2, 3), true, "groups 3, dilation 2"},
      {2, 4, 11, 13, 6, 3, 3, conv_opts(1, 1, 0, 0, 2, 2, 1), true, "dilation 2, no padding"},
      {2, 16, 8, 8, 32, 3, 3, O::make(1, 1, 1, 2), false, "groups 2"},
      {2, 32, 17, 17, 32, 3, 3, O::make(1, 1, 1, 32), false, "depthwise"},
      {2, 24, 33, 33, 24, 3, 3, O::make(2, 1, 1, 24), true, "depthwise stride 2"},
      {1, 8, 9, 9, 16, 3, 3, O::make(1, 1, 1, 8), true, "depthwise multiplier 2"},
      {4, 33, 7, 7, 65, 1, 1, O::make(1, 0), false, "1x1"},
      {2, 16, 9, 9, 32, 1, 1, O::make(2, 0), false, "1x1 stride 2 (downsample)"},
      {1, 3, 33, 31, 64, 7, 7, O::make(2, 3), false, "7x7 stride 2 pad 3 (stem)"},
      {2, 4, 10, 12, 5, 1, 3, conv_opts(1, 2, 0, 1, 1, 1, 1), true, "1x3 kernel, strides 1x2"},
      {1, 5, 1, 33, 7, 1, 3, conv_opts(1, 1, 0, 1, 1, 1, 1), true, "N=1, H=1"},
      {1, 3, 20, 23, 4, 5, 5, O::make(3, 0), true, "5x5 stride 3"},
      {8, 64, 16, 16, 128, 3, 3, O::make(1, 1), false, "64->128 3x3"},
      {3, 7, 33, 33, 33, 3, 3, O::make(1, 1), true, "odd channels, 33x33"},
  };
  return cases;
}

TEST(CudaOps, Conv2d) {
  CXR_REQUIRE_GPU();
  Generator g(109);
  for (Mode m : kModes) {
    Tf32Scope tf32(m != Mode::strict);
    for (const ConvCase& c : conv_cases()) {
      const Shape xs = {c.N, c.C, c.H, c.W}, ws = {c.K, c.C / c.o.groups, c.R, c.S};
      V in = {req(mode_input(m, xs, g)), req(mode_input(m, ws, g)), c.bias ? req(mode_input(m, {c.K}, g)) : Tensor()};
      const nn::Conv2dOptions o = c.o;
      compare_op(std::string("conv2d ") + c.name + " x" + shp(xs) + " w" + shp(ws) + (c.bias ? " bias" : "") + ", " +
                     mode_name(m),
                 [o](const V& v) { return nn::conv2d(v[0], v[1], v[2], o); }, in, mode_options(m));
    }
  }
}

TEST(CudaOps, Linear) {
  CXR_REQUIRE_GPU();
  Generator g(110);
  struct Case {
    int64_t N, in, out;
    bool bias;
  };
  const Case cases[] = {{1, 1, 1, true},     {7, 33, 65, true},     {33, 257, 10, false},
                        {128, 512, 1000, true}, {3, 1, 7, true},     {5, 2048, 3, true}, {1, 100, 1, false}};
  for (Mode m : kModes) {
    Tf32Scope tf32(m != Mode::strict);
    for (const Case& c : cases) {
      V in = {req(mode_input(m, {c.N, c.in}, g)), req(mode_input(m, {c.out, c.in}, g)),
              c.bias ? req(mode_input(m, {c.out}, g)) : Tensor()};
      compare_op("linear " + std::to_string(c.N) + "x" + std::to_string(c.in) + " -> " + std::to_string(c.out) +
                     (c.bias ? " bias" : "") + ", " + mode_name(m),
                 [](const V& v) { return nn::linear(v[0], v[1], v[2]); }, in, mode_options(m));
    }
  }
}

TEST(CudaOps, Matmul) {
  CXR_REQUIRE_GPU();
  Generator g(111);
  struct Case {
    int64_t M, K, N;
  };
  const Case cases[] = {{1, 1, 1}, {7, 33, 65}, {33, 1, 257}, {257, 129, 63}, {512, 1024, 256}, {2, 2049, 3}, {1, 7, 1}};
  for (Mode m : kModes) {
    Tf32Scope tf32(m != Mode::strict);
    for (const Case& c : cases)
      compare_op("matmul " + std::to_string(c.M) + "x" + std::to_string(c.K) + " @ " + std::to_string(c.K) + "x" +
                     std::to_string(c.N) + ", " + mode_name(m),
                 [](const V& v) { return nn::matmul(v[0], v[1]); },
                 {req(mode_input(m, {c.M, c.K}, g)), req(mode_input(m, {c.K, c.N}, g))}, mode_options(m));
    // One operand constant.
    compare_op(std::string("matmul, constant b, ") + mode_name(m), [](const V& v) { return nn::matmul(v[0], v[1]); },
               {req(mode_input(m, {33, 65}, g)), mode_input(m, {65, 7}, g)}, mode_options(m));
  }
}

// ================================================================ pooling

struct PoolCase {
  Shape x;
  nn::Pool2dOptions o;
  const char* name;
};

nn::Pool2dOptions pool_opts(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  nn::Pool2dOptions o;
  o.kernel_h = kh, o.kernel_w = kw, o.stride_h = sh, o.stride_w = sw, o.pad_h = ph, o.pad_w = pw;
  return o;
}

const std::vector<PoolCase>& pool_cases() {
  using O = nn::Pool2dOptions;
  static const std::vector<PoolCase> cases = {
      {{1, 1, 1, 1}, O::make(1, 1), "1x1 on 1x1"},
      {{2, 3, 7, 9}, O::make(2, 2), "2x2 s2, odd H/W"},
      {{2, 5, 33, 33}, O::make(3, 2, 1), "3x3 s2 p1"},
      {{2, 64, 32, 32}, O::make(3, 2, 1), "3x3 s2 p1, 64 channels (resnet stem)"},
      {{1, 7, 8, 8}, O::make(3, 1, 1), "3x3 s1 p1"},
      {{3, 4, 13, 11}, pool_opts(3, 2, 2, 1, 1, 0), "3x2 kernel, strides 2x1, pad 1x0"},
      {{1, 1, 5, 5}, O::make(5, 1, 2), "5x5 s1 p2"},
      {{2, 3, 9, 9}, O::make(2, 3), "2x2 s3 (gaps)"},
      {{1, 33, 15, 1}, pool_opts(2, 1, 2, 1, 0, 0), "W=1"},
      {{4, 16, 28, 28}, O::make(2, 2), "2x2 s2 28x28"},
  };
  return cases;
}

TEST(CudaOps, MaxPool2d) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(112);
  for (const PoolCase& c : pool_cases()) {
    const nn::Pool2dOptions o = c.o;
    compare_op(std::string("max_pool2d ") + c.name + " " + shp(c.x),
               [o](const V& v) { return nn::max_pool2d(v[0], o); }, {req(randn(c.x, g))});
  }
}

// Windows full of ties: the gradient must go where the CPU's tie rule sends it.
TEST(CudaOps, MaxPool2dTiesFollowTheCpuRule) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(113);
  for (const PoolCase& c : pool_cases()) {
    Tensor x = randu(c.x, g, 0.0, 3.0);
    float* p = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::floor(p[i]);  // values 0, 1, 2
    const nn::Pool2dOptions o = c.o;
    compare_op(std::string("max_pool2d ties ") + c.name, [o](const V& v) { return nn::max_pool2d(v[0], o); },
               {req(x)});
  }
  // A constant input (every window one big tie), and all-negative values next to padding.
  const nn::Pool2dOptions o = nn::Pool2dOptions::make(3, 2, 1);
  compare_op("max_pool2d constant", [o](const V& v) { return nn::max_pool2d(v[0], o); },
             {req(Tensor::full({2, 3, 9, 9}, 0.5))});
  compare_op("max_pool2d negative", [o](const V& v) { return nn::max_pool2d(v[0], o); },
             {req(randu({2, 3, 9, 9}, g, -5.0, -1.0))});
}

TEST(CudaOps, AvgPool2d) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(114);
  for (const PoolCase& c : pool_cases()) {
    const nn::Pool2dOptions o = c.o;
    compare_op(std::string("avg_pool2d ") + c.name + " " + shp(c.x),
               [o](const V& v) { return nn::avg_pool2d(v[0], o); }, {req(randn(c.x, g))});
  }
}

TEST(CudaOps, GlobalAvgPool2d) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(115);
  for (const Shape& s : std::vector<Shape>{{1, 1, 1, 1}, {2, 7, 33, 33}, {3, 65, 7, 9}, {1, 3, 31, 63}, {8, 512, 4, 4},
                                           {2, 1280, 1, 1}})
    compare_op("global_avg_pool2d " + shp(s), [](const V& v) { return nn::global_avg_pool2d(v[0]); },
               {req(randn(s, g, 1.0, 0.3))});
}

// ================================================================ batch norm

TEST(CudaOps, BatchNorm) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(116);
  struct Case {
    Shape x;
    bool affine, training;
    double momentum, eps;
  };
  std::vector<Case> cases;
  for (const Shape& s : std::vector<Shape>{{2, 3, 7, 9}, {1, 33, 5, 5}, {8, 16, 1, 1}, {4, 7, 33, 17}, {1, 5, 1, 1},
                                           {7, 33}, {64, 257}, {1, 5}, {3, 1}, {16, 32, 32, 32}})
    for (bool affine : {true, false})
      for (bool training : {true, false}) {
        // Training needs more than one value per channel (the CPU rejects it; checked below).
        // (Two values per channel are no good either: they normalise to -1 and +1 whatever
        // they are, so the input gradient is zero in exact arithmetic and pure noise here.)
        if (training && shape_numel(s) / s[1] < 2) continue;
        cases.push_back({s, affine, training, 0.1, 1e-5});
      }
  cases.push_back({{4, 7, 9, 9}, true, true, 0.5, 1e-3});
  cases.push_back({{33, 65}, true, true, 1.0, 1e-2});
  for (const Case& c : cases) {
    const int64_t C = c.x[1];
    const std::string name = "batch_norm " + shp(c.x) + (c.affine ? " affine" : " no affine") +
                             (c.training ? " train" : " eval") + " momentum " + std::to_string(c.momentum);
    // Inputs off-centre and scaled, so that the mean and variance matter.
    const V in = {req(randn(c.x, g, 2.0, 0.5)), c.affine ? req(randu({C}, g, 0.5, 1.5)) : Tensor(),
                  c.affine ? req(randn({C}, g)) : Tensor(), randn({C}, g, 0.1), randu({C}, g, 0.5, 1.5)};
    const Comparison r = compare_op(
        name,
        [c](const V& v) {
          Tensor rm = v[3], rv = v[4];  // share storage: updated in place
          return nn::batch_norm(v[0], v[1], v[2], rm, rv, c.training, c.momentum, c.eps);
        },
        in);
    if (!r.ok) continue;
    EXPECT_TRUE(r.dev_in[3].device() == test_device() && r.dev_in[4].device() == test_device());
    expect_close(r.dev_in[3], r.cpu_in[3], kStrictTol, name + " running_mean");
    expect_close(r.dev_in[4], r.cpu_in[4], kStrictTol, name + " running_var");
    if (!c.training) {
      expect_exact(r.dev_in[3], in[3], name + " running_mean unchanged in eval");
      expect_exact(r.dev_in[4], in[4], name + " running_var unchanged in eval");
    }
  }
  // One value per channel in training: rejected on the device as on the CPU.
  for (const Shape& s : std::vector<Shape>{{1, 5, 1, 1}, {1, 5}}) {
    Tensor rm = to_device(Tensor::zeros({5})), rv = to_device(Tensor::ones({5}));
    expect_value_error([&] { nn::batch_norm(to_device(randn(s, g)), Tensor(), Tensor(), rm, rv, true); },
                       {"batch_norm"}, "batch_norm training on " + shp(s));
  }
}

// ================================================================ softmax and losses

TEST(CudaOps, SoftmaxAndLogSoftmax) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(117);
  struct Case {
    Shape x;
    int64_t dim;
    double scale, shift;
  };
  const Case cases[] = {{{7}, 0, 3, 0},        {{33, 65}, 0, 3, 0},   {{33, 65}, 1, 3, 0},   {{33, 65}, -1, 3, 0},
                        {{2, 1000}, -1, 3, 0}, {{1000, 3}, 0, 3, 0},  {{4, 7, 33}, 1, 3, 0}, {{3, 5, 7, 9}, 2, 3, 0},
                        {{1, 1}, -1, 3, 0},    {{3, 4097}, -1, 3, 0}, {{5, 300}, 1, 10, 100}, {{64, 10}, 1, 1, 0},
                        {{2, 3, 4, 5, 6}, 4, 2, 0}};
  // The large-value case (50 .. 150) overflows exp() in f32 without the max subtraction;
  // values stay within a factor 2 of the row maximum so that x - max is exact (larger
  // offsets, e.g. 1000, make f32 rounding of x itself a 3e-5 effect on both devices).
  for (const Case& c : cases)
    for (bool log : {false, true}) {
      const int64_t dim = c.dim;
      compare_op(std::string(log ? "log_softmax " : "softmax ") + shp(c.x) + " dim " + std::to_string(dim) +
                     (c.shift != 0 ? " (large values)" : ""),
                 [dim, log](const V& v) { return log ? nn::log_softmax(v[0], dim) : nn::softmax(v[0], dim); },
                 {req(randn(c.x, g, c.scale, c.shift))});
    }
}

TEST(CudaOps, CrossEntropy) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(118);
  struct Case {
    int64_t N, C;
    bool weighted;
    double smoothing;
  };
  std::vector<Case> cases;
  for (auto [N, C] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 3}, {33, 10}, {64, 1000}, {5, 2}, {256, 7}})
    for (bool w : {false, true})
      for (double s : {0.0, 0.1}) cases.push_back({N, C, w, s});
  for (const Case& c : cases)
    for (bool target_on_device : {true, false}) {
      CompareOptions o;
      o.i64_on_device = target_on_device;
      const bool weighted = c.weighted;
      const double smoothing = c.smoothing;
      compare_op("cross_entropy " + std::to_string(c.N) + "x" + std::to_string(c.C) + (weighted ? " weighted" : "") +
                     " smoothing " + std::to_string(smoothing) + (target_on_device ? ", target on device" : ", target on cpu"),
                 [weighted, smoothing](const V& v) {
                   nn::CrossEntropyOptions co;
                   if (weighted) co.class_weight = v[2];
                   co.label_smoothing = smoothing;
                   return nn::cross_entropy(v[0], v[1], co);
                 },
                 {req(randn({c.N, c.C}, g, 3.0)), rand_labels(c.N, c.C, g), weighted ? randu({c.C}, g, 0.5, 2.0) : Tensor()},
                 o);
    }
}

TEST(CudaOps, CrossEntropyErrors) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(119);
  const Tensor logits_h = randn({4, 5}, g);
  for (bool grad : {false, true})
    for (int64_t bad : {int64_t{5}, int64_t{-1}, int64_t{100}})
      for (bool target_on_device : {false, true}) {
        const Tensor logits = grad ? req(to_device(logits_h)) : to_device(logits_h);
        const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, bad, 2, 1}, {4});
        const Tensor target = target_on_device ? to_device(t) : t;
        expect_value_error([&] { nn::cross_entropy(logits, target); }, {"cross_entropy", "target"},
                           "target " + std::to_string(bad) + (target_on_device ? " on device" : " on cpu"));
      }
  // Class weights whose sum over the batch's targets is zero.
  {
    nn::CrossEntropyOptions co;
    co.class_weight = to_device(Tensor::from_vector(std::vector<float>{0, 0, 1, 1, 1}, {5}));
    const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 1, 1, 0}, {4});
    expect_value_error([&] { nn::cross_entropy(to_device(logits_h), to_device(t), co); }, {"cross_entropy"},
                       "zero weight sum");
  }
  // The device is still usable afterwards and the loss still matches.
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 4, 2, 1}, {4});
  expect_close(nn::cross_entropy(to_device(logits_h), to_device(t)), nn::cross_entropy(logits_h, t), kStrictTol,
               "cross_entropy after errors");
}

TEST(CudaOps, BinaryCrossEntropyWithLogits) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(120);
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 65}, {4, 7, 33}, {kBig}})
    for (int pw : {0, 1, 2}) {  // no pos_weight, one per last-dim entry, a single one
      const int64_t L = s.back();
      const Tensor pos_weight = pw == 0 ? Tensor() : randu({pw == 1 ? L : 1}, g, 0.5, 3.0);
      compare_op("bce_with_logits " + shp(s) + (pw == 0 ? "" : pw == 1 ? " pos_weight (L)" : " pos_weight (1)"),
                 [](const V& v) { return nn::binary_cross_entropy_with_logits(v[0], v[1], v[2]); },
                 {req(randn(s, g, 3.0)), req(randu(s, g, 0.0, 1.0)), pos_weight});
    }
}

TEST(CudaOps, MseLoss) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(121);
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 65}, {2, 3, 7, 9}, {kBig}})
    compare_op("mse_loss " + shp(s), [](const V& v) { return nn::mse_loss(v[0], v[1]); },
               {req(randn(s, g)), req(randn(s, g, 1.0, 0.5))});
}

// A small composite graph: gradients summed over several paths on the device.
TEST(CudaOps, CompositeGraph) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(122);
  const OpFn fn = [](const V& v) {
    const Tensor h = nn::conv2d(v[0], v[1], v[2], nn::Conv2dOptions::make(1, 1));
    Tensor rm = v[5], rv = v[6];
    const Tensor b = nn::relu(nn::batch_norm(h, v[3], v[4], rm, rv, true));
    const Tensor r = nn::add(b, h);  // h used twice
    const Tensor p = nn::flatten(nn::global_avg_pool2d(nn::max_pool2d(r, nn::Pool2dOptions::make(2, 2))));
    return nn::log_softmax(nn::mul(p, p), 1);
  };
  compare_op("conv-bn-relu-residual-pool-log_softmax", fn,
             {req(randn({3, 4, 9, 11}, g)), req(randn({6, 4, 3, 3}, g, 0.3)), req(randn({6}, g)),
              req(randu({6}, g, 0.5, 1.5)), req(randn({6}, g)), Tensor::zeros({6}), Tensor::ones({6})});
}

// ================================================================ errors

TEST(CudaOpsErrors, F64AndMixedDevicesAreRejected) {
  CXR_REQUIRE_REAL_GPU();
  Tf32Scope tf32(false);
  const Device dev = Device::cuda(0);
  const Tensor x64 = Tensor::zeros({3, 4}, DType::f64, dev);
  expect_value_error([&] { nn::relu(x64); }, {"f32"}, "relu f64");
  expect_value_error([&] { nn::add(x64, x64); }, {"f32"}, "add f64");
  expect_value_error([&] { nn::sum(x64); }, {"f32"}, "sum f64");
  expect_value_error([&] { nn::softmax(x64, 1); }, {"f32"}, "softmax f64");
  expect_value_error([&] { nn::matmul(x64, Tensor::zeros({4, 2}, DType::f64, dev)); }, {"f32"}, "matmul f64");
  const Tensor a = Tensor::zeros({3, 4}), b = Tensor::zeros({3, 4}, DType::f32, dev);
  auto mixed = [](auto&& f, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << what << ": mixing devices was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("device"), std::string::npos) << what << ": " << e.what();
    }
  };
  mixed([&] { nn::add(a, b); }, "add cpu + cuda");
  mixed([&] { nn::mul(b, a); }, "mul cuda * cpu");
  mixed([&] { nn::matmul(b, Tensor::zeros({4, 2})); }, "matmul cuda @ cpu");
  mixed([&] { nn::linear(b, Tensor::zeros({2, 4}), Tensor()); }, "linear with a cpu weight");
  mixed([&] { nn::concat({a, b}, 0); }, "concat cpu and cuda");
}

// More than 2^31 elements: 64-bit indexing in elementwise kernels and reductions. Needs
// about 18 GB of device memory.
TEST(CudaOps, MoreThanTwoToThe31Elements) {
  CXR_REQUIRE_REAL_GPU();
  Tf32Scope tf32(false);
  cuda::empty_cache();
  size_t free_b = 0, total_b = 0;
  cuda::device_memory(0, &free_b, &total_b);
  const int64_t n = (int64_t{1} << 31) + 7;
  const size_t bytes = static_cast<size_t>(n) * 4;
  if (free_b < bytes * 3 + (size_t{1} << 30)) GTEST_SKIP() << "needs " << (bytes * 3 >> 30) + 1 << " GiB free";
  {
    Tensor y;
    {
      const Tensor x = Tensor::full({n}, 1.5, DType::f32, Device::cuda(0));
      poison_allocator({bytes}, 1);
      y = nn::mul_scalar(x, 2.0);  // 3.0 everywhere
    }
    EXPECT_NEAR(nn::sum(y).item() / (3.0 * static_cast<double>(n)), 1.0, 1e-5);
    EXPECT_NEAR(nn::mean(y).item(), 3.0, 3e-5);
    // y, the difference and the relu output: three such tensors at once.
    const Tensor z = nn::relu(nn::sub(y, Tensor::full({1}, 4.0, DType::f32, Device::cuda(0))));  // 0 everywhere
    EXPECT_EQ(nn::sum(z).item(), 0.0);
  }
  cuda::empty_cache();
}

// ================================================================ optimizers

struct ParamSet {
  std::vector<Tensor> cpu, dev;
};

// Odd sizes; the last parameter never gets a gradient (step() must skip it).
ParamSet make_params(Generator& g) {
  ParamSet ps;
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {33, 65}, {3, 5, 7, 9}, {(int64_t{1} << 16) + 1}, {5}}) {
    const Tensor t = randn(s, g);
    ps.cpu.push_back(req(t.clone()));
    ps.dev.push_back(req(to_device(t)));
  }
  return ps;
}

std::vector<nn::ParamGroup> two_groups(const std::vector<Tensor>& p) {
  return {nn::ParamGroup{{p[0], p[1], p[2]}, 0.1, 0.01, "a"}, nn::ParamGroup{{p[3], p[4], p[5]}, 0.05, 0.0, "b"}};
}

using MakeOpt = std::function<std::unique_ptr<nn::Optimizer>(std::vector<nn::ParamGroup>)>;

void check_optimizer(const std::string& name, const MakeOpt& make) {
  SCOPED_TRACE(name);
  Generator g(123);
  ParamSet ps = make_params(g);
  const Tensor untouched = ps.cpu.back().clone();
  auto oc = make(two_groups(ps.cpu));
  auto od = make(two_groups(ps.dev));
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i + 1 < ps.cpu.size(); ++i) {
      const Tensor grad = randn(ps.cpu[i].shape(), g);
      ps.cpu[i].set_grad(grad.clone());
      ps.dev[i].set_grad(to_device(grad));
    }
    oc->step();
    od->step();
    for (size_t i = 0; i < ps.cpu.size(); ++i) {
      EXPECT_TRUE(ps.dev[i].device() == test_device());
      expect_close(ps.dev[i], ps.cpu[i], kStrictTol,
                   name + " step " + std::to_string(step + 1) + " param " + std::to_string(i));
    }
    expect_exact(ps.dev.back(), untouched, name + " parameter without a gradient");
  }
  // Optimizer state: 1e-4, not the strict tier: the CPU forms (1 - beta2) in float
  // (1 - 0.999f = 0.00099998713), so a device kernel forming it in double has its
  // second moments 1.3e-5 apart while the parameters still agree to ~1e-7.
  const auto sc = oc->state(), sd = od->state();
  ASSERT_EQ(sc.size(), sd.size());
  for (const auto& [key, t] : sc) {
    auto it = sd.find(key);
    ASSERT_NE(it, sd.end()) << key;
    expect_close(it->second, t, 1e-4, name + " state " + key);
  }
}

TEST(CudaOptim, SgdVariants) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  struct Case {
    const char* name;
    double momentum, dampening;
    bool nesterov;
  };
  const Case cases[] = {{"sgd plain", 0.0, 0.0, false},
                        {"sgd momentum", 0.9, 0.0, false},
                        {"sgd momentum dampening", 0.9, 0.3, false},
                        {"sgd nesterov", 0.9, 0.0, true}};
  for (const Case& c : cases)
    check_optimizer(c.name, [c](std::vector<nn::ParamGroup> groups) -> std::unique_ptr<nn::Optimizer> {
      nn::SgdOptions o;  // lr and weight decay from the groups (0.01 decay in group "a")
      o.momentum = c.momentum;
      o.dampening = c.dampening;
      o.nesterov = c.nesterov;
      return std::make_unique<nn::SGD>(std::move(groups), o);
    });
}

TEST(CudaOptim, AdamAndAdamW) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  check_optimizer("adam", [](std::vector<nn::ParamGroup> groups) -> std::unique_ptr<nn::Optimizer> {
    nn::AdamOptions o;
    return std::make_unique<nn::Adam>(std::move(groups), o);
  });
  check_optimizer("adam betas", [](std::vector<nn::ParamGroup> groups) -> std::unique_ptr<nn::Optimizer> {
    nn::AdamOptions o;
    o.beta1 = 0.5;
    o.beta2 = 0.9;
    o.eps = 1e-6;
    return std::make_unique<nn::Adam>(std::move(groups), o);
  });
  check_optimizer("adamw", [](std::vector<nn::ParamGroup> groups) -> std::unique_ptr<nn::Optimizer> {
    return nn::make_adamw(std::move(groups), nn::AdamOptions{});
  });
}

TEST(CudaOptim, ClipGradNorm) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  Generator g(124);
  for (double max_norm : {0.5, 1e6}) {
    SCOPED_TRACE("max_norm " + std::to_string(max_norm));
    ParamSet ps = make_params(g);
    std::vector<Tensor> grads;
    for (size_t i = 0; i + 1 < ps.cpu.size(); ++i) {
      const Tensor grad = randn(ps.cpu[i].shape(), g);
      grads.push_back(grad);
      ps.cpu[i].set_grad(grad.clone());
      ps.dev[i].set_grad(to_device(grad));
    }
    const double nc = nn::clip_grad_norm(ps.cpu, max_norm), nd = nn::clip_grad_norm(ps.dev, max_norm);
    const double err = std::abs(nd - nc) / nc;
    record_err("clip_grad_norm norm", err, kStrictTol);
    EXPECT_LT(err, kStrictTol) << "norm " << nd << " vs " << nc;
    for (size_t i = 0; i + 1 < ps.cpu.size(); ++i) {
      expect_close(ps.dev[i].grad(), ps.cpu[i].grad(), kStrictTol, "clipped grad " + std::to_string(i));
      if (max_norm > nc) expect_exact(ps.dev[i].grad(), grads[i], "unclipped grad " + std::to_string(i));
    }
  }
  // A non-finite gradient: the norm is reported as is and nothing is scaled.
  ParamSet ps = make_params(g);
  std::vector<Tensor> grads;
  for (size_t i = 0; i + 1 < ps.cpu.size(); ++i) {
    Tensor grad = randn(ps.cpu[i].shape(), g);
    if (i == 2) grad.data<float>()[100] = std::numeric_limits<float>::quiet_NaN();
    grads.push_back(grad);
    ps.dev[i].set_grad(to_device(grad));
  }
  EXPECT_FALSE(std::isfinite(nn::clip_grad_norm(ps.dev, 1.0)));
  for (size_t i = 0; i + 1 < ps.cpu.size(); ++i)
    if (i != 2) expect_exact(ps.dev[i].grad(), grads[i], "grad after a NaN norm " + std::to_string(i));
}

TEST(CudaOptim, Ema) {
  CXR_REQUIRE_GPU();
  Tf32Scope tf32(false);
  auto make = [] {
    Generator g(3);
    auto seq = std::make_shared<nn::Sequential>();
    seq->push_back(std::make_shared<nn::Linear>(33, 7, true, g));
    seq->push_back(std::make_shared<nn::BatchNorm2d>(7));
    return seq;
  };
  auto mc = make(), md = make();
  md->to(test_device());
  for (const auto& [name, t] : md->named_parameters()) EXPECT_TRUE(t.device() == test_device()) << name;
  nn::EMA ec(*mc, 0.9), ed(*md, 0.9);
  Generator g(125);
  for (int step = 0; step < 3; ++step) {
    // New values for every floating-point entry (as if an optimizer had stepped).
    const auto sc = mc->state_dict(), sd = md->state_dict();
    for (const auto& [name, t] : sc) {
      Tensor hc = t, hd = sd.at(name);
      if (t.dtype() == DType::i64) {
        hc.fill_(step + 1);
        hd.fill_(step + 1);
        continue;
      }
      const Tensor v = randn(t.shape(), g);
      hc.copy_(v);
      hd.copy_(v);
    }
    ec.update(*mc);
    ed.update(*md);
    for (const auto& [name, t] : ec.shadow())
      expect_close(ed.shadow().at(name), t, kStrictTol, "ema step " + std::to_string(step + 1) + " " + name);
  }
  ec.copy_to(*mc);
  ed.copy_to(*md);
  const auto sc = mc->state_dict(), sd = md->state_dict();
  for (const auto& [name, t] : sc) {
    EXPECT_TRUE(sd.at(name).device() == test_device() || sd.at(name).dtype() == DType::i64) << name;
    expect_close(sd.at(name), t, kStrictTol, "after copy_to " + name);
  }
}

}  // namespace
}  // namespace cxr
