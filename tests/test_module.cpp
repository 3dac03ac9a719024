// Module tree behaviour: PyTorch-compatible names and parameter counts, state dicts,
// train/eval, dtype conversion, BatchNorm and Dropout semantics, and initialisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nn/autograd.h"
#include "nn/blocks.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

using nn::Model;

std::shared_ptr<Model> build(const std::string& arch, int64_t ch, int64_t classes, int64_t size, uint64_t seed = 0) {
  return nn::build_model(nn::arch_spec(arch, ch, classes, size, size), seed);
}

// Large models take a second or more to initialise: tests that only read them share one.
std::shared_ptr<Model> shared_model(const std::string& arch, int64_t ch, int64_t classes, int64_t size) {
  static std::map<std::string, std::shared_ptr<Model>> cache;
  const std::string key = arch + "/" + std::to_string(ch) + "/" + std::to_string(classes) + "/" + std::to_string(size);
  auto& m = cache[key];
  if (!m) m = build(arch, ch, classes, size);
  return m;
}

std::shared_ptr<Model> small_cnn(uint64_t seed) {
  return nn::build_model({{"arch", "simple_cnn"},
                          {"in_channels", 2},
                          {"num_classes", 3},
                          {"input_size", 8},
                          {"channels", {4, 6}},
                          {"hidden", 5},
                          {"dropout", 0.0}},
                         seed);
}

std::set<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::set<std::string> s;
  for (const auto& [n, t] : v) s.insert(n);
  return s;
}

// The message of the cxr::Error thrown by f, or a test failure when none is thrown.
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cxr::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected cxr::Error, nothing was thrown";
  return "";
}

void expect_contains(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

double sample_std(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

// ---------------------------------------------------------------- names and counts

TEST(ModuleNames, Resnet18MatchesTorchvision) {
  auto m = shared_model("resnet18", 3, 1000, 224);
  const auto params = m->named_parameters();
  const auto buffers = m->named_buffers();
  // torchvision resnet18: 20 convs, 20 BNs, fc -> 62 parameters, 60 buffers, 122 state entries.
  EXPECT_EQ(params.size(), 62u);
  EXPECT_EQ(buffers.size(), 60u);
  EXPECT_EQ(m->state_dict().size(), 122u);
  ASSERT_FALSE(params.empty());
  // Registration order is PyTorch's: a module's own tensors, then its children in order.
  EXPECT_EQ(params.front().first, "conv1.weight");
  EXPECT_EQ(params[1].first, "bn1.weight");
  EXPECT_EQ(params[2].first, "bn1.bias");
  EXPECT_EQ(params[3].first, "layer1.0.conv1.weight");
  EXPECT_EQ(params[params.size() - 2].first, "fc.weight");
  EXPECT_EQ(params.back().first, "fc.bias");
  EXPECT_EQ(buffers.front().first, "bn1.running_mean");
  EXPECT_EQ(buffers[1].first, "bn1.running_var");
  EXPECT_EQ(buffers[2].first, "bn1.num_batches_tracked");

  const auto sd = m->state_dict();
  for (const char* n :
       {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
        "layer1.0.conv1.weight", "layer1.0.bn2.bias", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight", "layer2.0.downsample.1.running_var",
        "layer2.0.downsample.1.num_batches_tracked", "layer3.1.bn1.running_mean", "layer4.0.downsample.0.weight",
        "layer4.1.bn2.weight", "fc.weight", "fc.bias"})
    EXPECT_TRUE(sd.count(n)) << n;
  // Stage 1 keeps 64 channels at stride 1: no projection, and convs carry no bias.
  EXPECT_FALSE(sd.count("layer1.0.downsample.0.weight"));
  EXPECT_FALSE(sd.count("conv1.bias"));
  EXPECT_FALSE(sd.count("layer1.0.conv1.bias"));

  EXPECT_EQ(sd.at("conv1.weight").shape(), (Shape{64, 3, 7, 7}));
  EXPECT_EQ(sd.at("layer2.0.conv1.weight").shape(), (Shape{128, 64, 3, 3}));
  EXPECT_EQ(sd.at("layer2.0.downsample.0.weight").shape(), (Shape{128, 64, 1, 1}));
  EXPECT_EQ(sd.at("fc.weight").shape(), (Shape{1000, 512}));
  EXPECT_EQ(sd.at("fc.bias").shape(), (Shape{1000}));
  EXPECT_EQ(sd.at("bn1.num_batches_tracked").dtype(), DType::i64);
  EXPECT_EQ(sd.at("bn1.num_batches_tracked").dim(), 0);
  for (const auto& [n, t] : params) EXPECT_TRUE(t.requires_grad() && t.is_leaf()) << n;
  for (const auto& [n, t] : buffers) EXPECT_FALSE(t.requires_grad()) << n;
}

TEST(ModuleNames, Resnet50AndMobilenetV2MatchTorchvision) {
  auto r50 = shared_model("resnet50", 3, 1000, 224);
  auto sd = r50->state_dict();
  EXPECT_EQ(r50->named_parameters().size(), 161u);
  EXPECT_EQ(sd.size(), 320u);
  EXPECT_EQ(sd.at("layer1.0.conv1.weight").shape(), (Shape{64, 64, 1, 1}));
  EXPECT_EQ(sd.at("layer1.0.conv2.weight").shape(), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(sd.at("layer1.0.conv3.weight").shape(), (Shape{256, 64, 1, 1}));
  EXPECT_EQ(sd.at("layer1.0.downsample.0.weight").shape(), (Shape{256, 64, 1, 1}));
  // torchvision v1.5: the stride sits on the 3x3 conv of the first bottleneck.
  EXPECT_EQ(sd.at("layer2.0.conv2.weight").shape(), (Shape{128, 128, 3, 3}));
  EXPECT_EQ(sd.at("layer4.2.bn3.running_var").shape(), (Shape{2048}));
  EXPECT_EQ(sd.at("fc.weight").shape(), (Shape{1000, 2048}));

  auto mb = shared_model("mobilenet_v2", 3, 1000, 224);
  sd = mb->state_dict();
  EXPECT_EQ(mb->named_parameters().size(), 158u);
  EXPECT_EQ(sd.size(), 314u);
  const std::vector<std::pair<std::string, Shape>> expected = {
      {"features.0.0.weight", {32, 3, 3, 3}},
      {"features.0.1.weight", {32}},
      {"features.0.1.running_mean", {32}},
      {"features.1.conv.0.0.weight", {32, 1, 3, 3}},  // t = 1: depthwise first
      {"features.1.conv.0.1.bias", {32}},
      {"features.1.conv.1.weight", {16, 32, 1, 1}},
      {"features.1.conv.2.running_var", {16}},
      {"features.2.conv.0.0.weight", {96, 16, 1, 1}},
      {"features.2.conv.1.0.weight", {96, 1, 3, 3}},
      {"features.2.conv.2.weight", {24, 96, 1, 1}},
      {"features.2.conv.3.weight", {24}},
      {"features.17.conv.2.weight", {320, 960, 1, 1}},
      {"features.18.0.weight", {1280, 320, 1, 1}},
      {"features.18.1.num_batches_tracked", {}},
      {"classifier.1.weight", {1000, 1280}},
      {"classifier.1.bias", {1000}},
  };
  for (const auto& [n, s] : expected) {
    ASSERT_TRUE(sd.count(n)) << n;
    EXPECT_EQ(sd.at(n).shape(), s) << n;
  }
  EXPECT_FALSE(sd.count("features.19.0.weight"));
}

TEST(ModuleNames, ParameterCountsEqualTorchvision) {
  EXPECT_EQ(shared_model("resnet18", 3, 1000, 224)->num_parameters(), 11689512);
  EXPECT_EQ(shared_model("resnet34", 3, 1000, 224)->num_parameters(), 21797672);
  EXPECT_EQ(shared_model("resnet50", 3, 1000, 224)->num_parameters(), 25557032);
  EXPECT_EQ(shared_model("mobilenet_v2", 3, 1000, 224)->num_parameters(), 3504872);
  // One input channel and the small stem (3x3 conv) change conv1 only; 2 classes remove
  // 998 rows of 512 weights + 1 bias from fc.
  EXPECT_EQ(shared_model("resnet18", 1, 2, 32)->num_parameters(), 11689512 - 64 * (3 * 49 - 9) - 998 * 513);
  EXPECT_EQ(shared_model("resnet18", 1, 2, 32)->state_dict().at("conv1.weight").shape(), (Shape{64, 1, 3, 3}));
  // num_parameters is the sum over named_parameters.
  auto m = small_cnn(0);
  int64_t n = 0;
  for (const auto& t : m->parameters()) n += t.numel();
  EXPECT_EQ(m->num_parameters(), n);
}

TEST(ModuleNames, SequentialNumbersChildrenAndFindWalksPaths) {
  auto m = small_cnn(0);
  const auto names = names_of(m->named_parameters());
  for (const char* n :
       {"0.weight", "1.weight", "1.bias", "4.weight", "5.bias", "10.weight", "10.bias", "12.weight", "12.bias"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_TRUE(names_of(m->named_buffers()).count("1.running_mean"));

  auto r = shared_model("resnet18", 1, 2, 32);
  ASSERT_NE(r->find("layer1.0.conv1"), nullptr);
  EXPECT_EQ(r->find("layer1.0.conv1")->type_name(), "Conv2d");
  EXPECT_EQ(r->find("layer2.0.downsample.1")->type_name(), "BatchNorm2d");
  EXPECT_EQ(r->find("layer2.0")->type_name(), "BasicBlock");
  EXPECT_EQ(r->find("fc")->type_name(), "Linear");
  EXPECT_EQ(r->find(""), r.get());
  EXPECT_EQ(r->find("layer9"), nullptr);
  EXPECT_EQ(r->find("layer1.0.conv9"), nullptr);
  // named_modules lists every module once, the root first.
  const auto mods = r->named_modules();
  EXPECT_EQ(mods.front().first, "");
  std::set<std::string> paths;
  for (const auto& [p, mod] : mods) EXPECT_TRUE(paths.insert(p).second) << "duplicate path " << p;
  EXPECT_TRUE(paths.count("layer4.1.bn2"));
}

// A module that registers members as its constructor is told to.
class Probe : public nn::Module {
 public:
  Probe(const std::string& param, const std::string& child1, const std::string& child2) {
    if (!param.empty()) register_parameter(param, Tensor::zeros({2}));
    if (!child1.empty()) register_module(child1, std::make_shared<nn::Identity>());
    if (!child2.empty()) register_module(child2, std::make_shared<nn::Identity>());
  }
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Probe"; }
};

TEST(ModuleNames, InvalidMemberNamesAreRejected) {
  expect_contains(error_message([] { Probe("a.b", "", ""); }), {"a.b"});
  EXPECT_NO_THROW(Probe("w", "c", "d"));
  expect_contains(error_message([] { Probe("", "c", "c"); }), {"'c'", "twice"});
  expect_contains(error_message([] { Probe("", "x.y", ""); }), {"x.y"});
  expect_contains(error_message([] {
                    nn::Sequential s;
                    s.add("", std::make_shared<nn::Identity>());
                  }),
                  {"invalid member name"});
  expect_contains(error_message([] {
                    nn::Sequential s;
                    s.push_back(nullptr);
                  }),
                  {"null"});
}

// ---------------------------------------------------------------- state dicts

TEST(StateDict, SharesStorageWithTheModule) {
  auto m = small_cnn(1);
  auto* conv = dynamic_cast<nn::Conv2d*>(m->find("0"));
  ASSERT_NE(conv, nullptr);
  auto sd = m->state_dict();
  EXPECT_TRUE(sd.at("0.weight").same_storage(conv->weight));
  sd.at("0.weight").fill_(0.25);
  EXPECT_EQ(conv->weight.to_vector()[0], 0.25);
}

TEST(StateDict, RoundTripCopiesEveryEntry) {
  auto a = small_cnn(1), b = small_cnn(2);
  Generator gen(5);
  a->train();
  for (int i = 0; i < 3; ++i) (*a)(rand_normal({4, 2, 8, 8}, gen));  // moves running stats and counters
  EXPECT_FALSE(bitwise_equal(a->state_dict().at("0.weight"), b->state_dict().at("0.weight")));
  b->load_state_dict(a->state_dict());
  const auto sa = a->state_dict(), sb = b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [n, t] : sa) EXPECT_TRUE(bitwise_equal(t, sb.at(n))) << n;
  EXPECT_EQ(sb.at("1.num_batches_tracked").item(), 3.0);
  // Values are copied, not aliased.
  EXPECT_FALSE(sa.at("0.weight").same_storage(sb.at("0.weight")));
  a->eval();
  b->eval();
  const Tensor x = rand_normal({3, 2, 8, 8}, gen);
  EXPECT_TRUE(bitwise_equal((*a)(x), (*b)(x)));
  Tensor(sa.at("0.weight")).fill_(7.0);
  EXPECT_NE(sb.at("0.weight").to_vector()[0], 7.0);
}

TEST(StateDict, ConvertsDtypeOnLoad) {
  auto a = small_cnn(1), b = small_cnn(2);
  std::map<std::string, Tensor> sd64;
  for (const auto& [n, t] : a->state_dict()) sd64[n] = t.dtype() == DType::f32 ? t.to(DType::f64) : t;
  b->load_state_dict(sd64);
  for (const auto& [n, t] : b->state_dict()) {
    EXPECT_NE(t.dtype(), DType::f64) << n;
    EXPECT_TRUE(bitwise_equal(t, a->state_dict().at(n))) << n;
  }
}

TEST(StateDict, StrictModeNamesTheOffendingEntry) {
  auto a = small_cnn(1), b = small_cnn(2);
  const auto before = b->state_dict().at("0.weight").clone();

  auto missing = a->state_dict();
  missing.erase("1.running_var");
  std::string msg = error_message([&] { b->load_state_dict(missing); });
  expect_contains(msg, {"missing", "'1.running_var'"});

  auto extra = a->state_dict();
  extra["head.weight"] = Tensor::zeros({2, 2});
  msg = error_message([&] { b->load_state_dict(extra); });
  expect_contains(msg, {"unexpected", "'head.weight'"});

  auto wrong = a->state_dict();
  wrong["4.weight"] = Tensor::zeros({6, 4, 5, 5});
  msg = error_message([&] { b->load_state_dict(wrong); });
  expect_contains(msg, {"'4.weight'", "[6, 4, 5, 5]", "[6, 4, 3, 3]"});

  auto undefined = a->state_dict();
  undefined["0.weight"] = Tensor();
  msg = error_message([&] { b->load_state_dict(undefined); });
  expect_contains(msg, {"'0.weight'"});

  // A rejected load leaves the module as it was, whichever entry was wrong.
  EXPECT_TRUE(bitwise_equal(b->state_dict().at("0.weight"), before));
}

TEST(StateDict, NonStrictIgnoresMissingAndUnexpectedButNotShapes) {
  auto a = small_cnn(1), b = small_cnn(2);
  const Tensor kept = b->state_dict().at("0.weight").clone();
  auto partial = a->state_dict();
  partial.erase("0.weight");
  partial["head.weight"] = Tensor::zeros({2});
  EXPECT_NO_THROW(b->load_state_dict(partial, /*strict=*/false));
  EXPECT_TRUE(bitwise_equal(b->state_dict().at("0.weight"), kept));
  EXPECT_TRUE(bitwise_equal(b->state_dict().at("4.weight"), a->state_dict().at("4.weight")));

  partial["4.weight"] = Tensor::zeros({1});
  expect_contains(error_message([&] { b->load_state_dict(partial, false); }), {"'4.weight'", "[1]"});
}

// ---------------------------------------------------------------- modes, grads, dtype

TEST(ModuleState, TrainAndEvalRecurse) {
  auto m = shared_model("resnet18", 1, 2, 32);
  for (auto& [p, mod] : m->named_modules()) EXPECT_TRUE(mod->is_training()) << p;
  m->eval();
  for (auto& [p, mod] : m->named_modules()) EXPECT_FALSE(mod->is_training()) << p;
  m->train();
  for (auto& [p, mod] : m->named_modules()) EXPECT_TRUE(mod->is_training()) << p;
  m->train(false);
  for (auto& [p, mod] : m->named_modules()) EXPECT_FALSE(mod->is_training()) << p;
  // eval() on a subtree does not touch the rest.
  m->train();
  m->find("layer2")->eval();
  EXPECT_FALSE(m->find("layer2.1.bn1")->is_training());
  EXPECT_TRUE(m->find("layer1.1.bn1")->is_training());
  EXPECT_TRUE(m->is_training());
}

TEST(ModuleState, BackwardAccumulatesAndZeroGradClears) {
  auto m = small_cnn(3);
  m->eval();
  Generator gen(9);
  const Tensor x = rand_normal({4, 2, 8, 8}, gen);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 1}, {4});
  nn::backward(nn::cross_entropy((*m)(x), y));
  std::vector<std::vector<double>> first;
  for (const auto& [n, p] : m->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    first.push_back(p.grad().to_vector());
  }
  nn::backward(nn::cross_entropy((*m)(x), y));
  size_t i = 0;
  for (const auto& [n, p] : m->named_parameters()) {
    const auto g = p.grad().to_vector();
    for (size_t k = 0; k < g.size(); ++k) ASSERT_NEAR(g[k], 2 * first[i][k], 1e-5 + 1e-5 * std::abs(g[k])) << n;
    ++i;
  }
  m->zero_grad();
  for (const auto& [n, p] : m->named_parameters()) EXPECT_FALSE(p.grad().defined()) << n;
}

TEST(ModuleState, ToF64ConvertsInPlaceAndBack) {
  auto m = small_cnn(4);
  m->eval();
  Generator gen(2);
  const Tensor x = rand_normal({2, 2, 8, 8}, gen);
  const Tensor y32 = (*m)(x);
  std::map<std::string, Tensor> original;
  for (const auto& [n, t] : m->state_dict()) original[n] = t.clone();
  auto* conv = dynamic_cast<nn::Conv2d*>(m->find("0"));
  auto* bn = dynamic_cast<nn::BatchNorm2d*>(m->find("1"));
  ASSERT_TRUE(conv && bn);

  // A stale gradient must not survive the conversion (its dtype would no longer match).
  nn::backward(nn::sum((*m)(x)));
  m->to(DType::f64);
  for (const auto& [n, t] : m->state_dict())
    EXPECT_EQ(t.dtype(), n.find("num_batches_tracked") != std::string::npos ? DType::i64 : DType::f64) << n;
  for (const auto& [n, p] : m->named_parameters()) {
    EXPECT_TRUE(p.requires_grad() && p.is_leaf()) << n;
    EXPECT_FALSE(p.grad().defined()) << n;
  }
  // Handles held by the layers see the conversion.
  EXPECT_EQ(conv->weight.dtype(), DType::f64);
  EXPECT_EQ(bn->running_var.dtype(), DType::f64);

  const Tensor y64 = (*m)(x.to(DType::f64));
  ASSERT_EQ(y64.dtype(), DType::f64);
  const auto a = y32.to_vector(), b = y64.to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * (1 + std::abs(b[i])));
  nn::backward(nn::sum((*m)(x.to(DType::f64))));
  EXPECT_EQ(conv->weight.grad().dtype(), DType::f64);

  m->to(DType::f32);
  for (const auto& [n, t] : m->state_dict()) EXPECT_TRUE(bitwise_equal(t, original.at(n))) << n;
  EXPECT_TRUE(bitwise_equal((*m)(x), y32));
  EXPECT_THROW(m->to(DType::i64), Error);
}

TEST(Sequential, ForwardCaptureReturnsTheNamedChildOutput) {
  auto m = shared_model("resnet18", 1, 2, 32);
  m->eval();
  Generator gen(1);
  const Tensor x = rand_normal({2, 1, 16, 16}, gen);
  Tensor feat, pooled;
  const Tensor y = m->forward_capture(x, "layer4", &feat);
  ASSERT_TRUE(feat.defined());
  EXPECT_EQ(feat.shape(), (Shape{2, 512, 2, 2}));  // small stem: 16 / 8
  EXPECT_TRUE(bitwise_equal(y, (*m)(x)));
  m->forward_capture(x, "avgpool", &pooled);
  EXPECT_EQ(pooled.shape(), (Shape{2, 512, 1, 1}));
  EXPECT_NO_THROW(m->forward_capture(x, "fc", nullptr));
  expect_contains(error_message([&] { m->forward_capture(x, "layer7", &feat); }), {"'layer7'"});
  // Only direct children can be captured.
  expect_contains(error_message([&] { m->forward_capture(x, "layer1.0", &feat); }), {"'layer1.0'"});
}

// ---------------------------------------------------------------- BatchNorm, Dropout

TEST(BatchNorm2d, TrainUsesBatchStatisticsAndUpdatesRunningOnes) {
  nn::BatchNorm2d bn(3, 1e-5, 0.3);
  bn.weight.copy_(Tensor::from_vector(std::vector<float>{2.0f, 1.0f, 0.5f}, {3}));
  bn.bias.copy_(Tensor::from_vector(std::vector<float>{0.5f, -1.0f, 0.0f}, {3}));
  Generator gen(3);
  const Tensor x = rand_normal({4, 3, 5, 5}, gen, 2.0, 3.0);
  const Tensor y = bn(x);
  const auto xv = x.to_vector(), yv = y.to_vector();
  const auto w = bn.weight.to_vector(), b = bn.bias.to_vector();
  const int64_t N = 4, C = 3, HW = 25;
  for (int64_t c = 0; c < C; ++c) {
    double mx = 0, vx = 0, my = 0, vy = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        mx += xv[(n * C + c) * HW + i];
        my += yv[(n * C + c) * HW + i];
      }
    mx /= N * HW;
    my /= N * HW;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        vx += std::pow(xv[(n * C + c) * HW + i] - mx, 2);
        vy += std::pow(yv[(n * C + c) * HW + i] - my, 2);
      }
    const double biased = vx / (N * HW), unbiased = vx / (N * HW - 1);
    EXPECT_NEAR(my, b[c], 1e-4);
    EXPECT_NEAR(std::sqrt(vy / (N * HW)), w[c] * std::sqrt(biased / (biased + 1e-5)), 1e-4);
    EXPECT_NEAR(bn.running_mean.to_vector()[c], 0.3 * mx, 1e-4);
    EXPECT_NEAR(bn.running_var.to_vector()[c], 0.7 + 0.3 * unbiased, 1e-3);
  }
  EXPECT_EQ(bn.num_batches_tracked.item(), 1.0);
  bn(x);
  EXPECT_EQ(bn.num_batches_tracked.item(), 2.0);
}

TEST(BatchNorm2d, EvalUsesRunningStatisticsAndLeavesThemAlone) {
  nn::BatchNorm2d bn(2);
  bn.running_mean.copy_(Tensor::from_vector(std::vector<float>{1.0f, -2.0f}, {2}));
  bn.running_var.copy_(Tensor::from_vector(std::vector<float>{4.0f, 0.25f}, {2}));
  bn.weight.copy_(Tensor::from_vector(std::vector<float>{3.0f, -1.0f}, {2}));
  bn.bias.copy_(Tensor::from_vector(std::vector<float>{0.1f, 0.2f}, {2}));
  bn.eval();
  Generator gen(4);
  for (const Shape& s : {Shape{3, 2, 4, 5}, Shape{5, 2}}) {
    const Tensor x = rand_normal(s, gen);
    const auto xv = x.to_vector(), yv = bn(x).to_vector();
    const int64_t hw = s.size() == 4 ? 20 : 1;
    const double rm[2] = {1.0, -2.0}, rv[2] = {4.0, 0.25}, w[2] = {3.0, -1.0}, b[2] = {0.1, 0.2};
    for (size_t i = 0; i < xv.size(); ++i) {
      const int64_t c = (static_cast<int64_t>(i) / hw) % 2;
      EXPECT_NEAR(yv[i], (xv[i] - rm[c]) / std::sqrt(rv[c] + 1e-5) * w[c] + b[c], 1e-5);
    }
  }
  EXPECT_EQ(bn.running_mean.to_vector(), (std::vector<double>{1.0, -2.0}));
  EXPECT_EQ(bn.running_var.to_vector(), (std::vector<double>{4.0, 0.25}));
  EXPECT_EQ(bn.num_batches_tracked.item(), 0.0);
  EXPECT_THROW(bn(Tensor::zeros({2, 3, 4, 4})), Error);
  EXPECT_THROW(nn::BatchNorm2d(0), Error);
  EXPECT_THROW(nn::BatchNorm2d(4, 1e-5, 1.5), Error);
}

TEST(Dropout, ZeroesAndRescalesInTrainingOnly) {
  const double p = 0.3;
  nn::Dropout d(p, 42);
  const Tensor x = Tensor::full({20, 100}, 2.0);
  const auto y = d(x).to_vector();
  int64_t zeros = 0;
  for (double v : y) {
    if (v == 0.0)
      ++zeros;
    else
      EXPECT_NEAR(v, 2.0 / (1 - p), 1e-6);
  }
  EXPECT_NEAR(static_cast<double>(zeros) / 2000.0, p, 0.05);
  // The generator advances: the next mask differs, a fresh one with the same seed repeats.
  EXPECT_NE(d(x).to_vector(), y);
  nn::Dropout d2(p, 42);
  EXPECT_EQ(d2(x).to_vector(), y);

  d.eval();
  EXPECT_EQ(d(x).to_vector(), x.to_vector());
  nn::Dropout none(0.0, 1);
  EXPECT_EQ(none(x).to_vector(), x.to_vector());
  EXPECT_THROW(nn::Dropout(1.0, 1), Error);
  EXPECT_THROW(nn::Dropout(-0.1, 1), Error);
}

TEST(Dropout, BackwardUsesTheSameMask) {
  nn::Dropout d(0.5, 7);
  Tensor x = Tensor::ones({4, 50});
  x.set_requires_grad(true);
  const Tensor y = d(x);
  nn::backward(nn::sum(y));
  const auto yv = y.to_vector(), gv = x.grad().to_vector();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_FLOAT_EQ(gv[i], yv[i]);  // y = mask * 1
}

// ---------------------------------------------------------------- initialisation

TEST(Init, ConvIsKaimingNormalFanOut) {
  Generator gen(11);
  nn::Conv2d conv(nn::Conv2dConfig{64, 256, 3, 1, 1, 1, 1, true}, gen);
  const auto w = conv.weight.to_vector();
  const double expected = std::sqrt(2.0 / (256 * 9));
  double mean = 0;
  for (double v : w) mean += v;
  mean /= static_cast<double>(w.size());
  EXPECT_NEAR(sample_std(w), expected, 0.02 * expected);
  EXPECT_NEAR(mean, 0.0, 5 * expected / std::sqrt(static_cast<double>(w.size())));
  for (double b : conv.bias.to_vector()) EXPECT_EQ(b, 0.0);

  // In models too, including grouped (depthwise) convs: fan_out = out_channels * k * k.
  auto r = shared_model("resnet18", 3, 1000, 224);
  const auto sd = r->state_dict();
  const double s3 = std::sqrt(2.0 / (256 * 9));
  EXPECT_NEAR(sample_std(sd.at("layer3.0.conv1.weight").to_vector()), s3, 0.02 * s3);
  const double s7 = std::sqrt(2.0 / (64 * 49));
  EXPECT_NEAR(sample_std(sd.at("conv1.weight").to_vector()), s7, 0.05 * s7);
  auto mb = shared_model("mobilenet_v2", 3, 1000, 224);
  const double sdw = std::sqrt(2.0 / (960 * 9));
  EXPECT_NEAR(sample_std(mb->state_dict().at("features.15.conv.1.0.weight").to_vector()), sdw, 0.06 * sdw);
}

TEST(Init, LinearIsUniformInInverseSqrtFanIn) {
  auto r = shared_model("resnet18", 3, 1000, 224);
  const double bound = 1.0 / std::sqrt(512.0);
  for (const char* n : {"fc.weight", "fc.bias"}) {
    const auto v = r->state_dict().at(n).to_vector();
    for (double x : v) ASSERT_LE(std::abs(x), bound) << n;
  }
  EXPECT_NEAR(sample_std(r->state_dict().at("fc.weight").to_vector()), bound / std::sqrt(3.0), 0.03 * bound);
}

TEST(Init, SameSeedSameWeightsDifferentSeedDifferent) {
  auto a = build("mobilenet_v2", 1, 2, 32, 5), b = build("mobilenet_v2", 1, 2, 32, 5);
  auto c = build("mobilenet_v2", 1, 2, 32, 6);
  for (const auto& [n, t] : a->state_dict()) EXPECT_TRUE(bitwise_equal(t, b->state_dict().at(n))) << n;
  for (const char* n :
       {"features.0.0.weight", "features.9.conv.1.0.weight", "classifier.1.weight", "classifier.1.bias"})
    EXPECT_FALSE(bitwise_equal(a->state_dict().at(n), c->state_dict().at(n))) << n;
}

TEST(Init, LastBatchNormOfResidualBlocksStartsAtZero) {
  auto r18 = shared_model("resnet18", 3, 1000, 224);
  for (const auto& [n, t] : r18->named_parameters()) {
    if (n.rfind("layer", 0) != 0) continue;
    const bool last_bn = n.find(".bn2.weight") != std::string::npos;
    const bool gamma = n.find("bn1.weight") != std::string::npos || n.find("downsample.1.weight") != std::string::npos;
    for (double v : t.to_vector()) {
      if (last_bn) {
        ASSERT_EQ(v, 0.0) << n;
      } else if (gamma) {
        ASSERT_EQ(v, 1.0) << n;
      }
    }
  }
  auto r50 = shared_model("resnet50", 3, 1000, 224);
  const auto sd = r50->state_dict();
  for (const char* n : {"layer1.0.bn3.weight", "layer2.3.bn3.weight", "layer4.2.bn3.weight"})
    for (double v : sd.at(n).to_vector()) ASSERT_EQ(v, 0.0) << n;
  for (const char* n : {"layer1.0.bn2.weight", "layer1.0.downsample.1.weight", "bn1.weight"})
    for (double v : sd.at(n).to_vector()) ASSERT_EQ(v, 1.0) << n;
  // MobileNetV2: only blocks with a residual connection start as the identity.
  auto mb = shared_model("mobilenet_v2", 3, 1000, 224);
  const auto ms = mb->state_dict();
  for (double v : ms.at("features.3.conv.3.weight").to_vector()) ASSERT_EQ(v, 0.0);
  for (double v : ms.at("features.2.conv.3.weight").to_vector()) ASSERT_EQ(v, 1.0);
}

TEST(Blocks, ZeroInitialisedBlocksAreTheIdentityPlusRelu) {
  Generator gen(21);
  const Tensor x = rand_normal({2, 16, 6, 6}, gen);
  std::vector<double> relu_x = x.to_vector();
  for (double& v : relu_x) v = std::max(v, 0.0);

  nn::BasicBlock basic(16, 16, 1, gen);
  EXPECT_EQ(basic(x).to_vector(), relu_x);
  nn::Bottleneck bottleneck(16, 4, 1, gen);
  EXPECT_EQ(bottleneck(x).to_vector(), relu_x);
  nn::InvertedResidual inv(16, 16, 1, 6, gen);
  EXPECT_EQ(inv(x).to_vector(), x.to_vector());

  nn::BasicBlock plain(16, 16, 1, gen, /*zero_init_last_bn=*/false);
  EXPECT_NE(plain(x).to_vector(), relu_x);
  nn::BasicBlock down(16, 32, 2, gen);
  EXPECT_EQ(down(x).shape(), (Shape{2, 32, 3, 3}));
  nn::Bottleneck bdown(16, 8, 2, gen);
  EXPECT_EQ(bdown(x).shape(), (Shape{2, 32, 3, 3}));
  nn::InvertedResidual idown(16, 24, 2, 6, gen);
  EXPECT_EQ(idown(x).shape(), (Shape{2, 24, 3, 3}));
  EXPECT_THROW(nn::InvertedResidual(16, 16, 3, 6, gen), Error);
  EXPECT_THROW(nn::InvertedResidual(16, 16, 1, 0, gen), Error);
}

TEST(Layers, ConfigurationErrors) {
  Generator gen(0);
  expect_contains(error_message([&] { nn::Conv2d(nn::Conv2dConfig{6, 4, 3, 1, 1, 1, 4, false}, gen); }), {"groups 4"});
  EXPECT_THROW(nn::Conv2d(nn::Conv2dConfig{0, 4, 3, 1, 1, 1, 1, false}, gen), Error);
  EXPECT_THROW(nn::Conv2d(nn::Conv2dConfig{3, 4, 3, 0, 1, 1, 1, false}, gen), Error);
  EXPECT_THROW(nn::Conv2d(nn::Conv2dConfig{3, 4, 3, 1, -1, 1, 1, false}, gen), Error);
  EXPECT_THROW(nn::Linear(0, 3, true, gen), Error);
  nn::Linear lin(4, 3, false, gen);
  EXPECT_FALSE(lin.bias.defined());
  EXPECT_EQ(lin.named_parameters().size(), 1u);
  EXPECT_EQ(lin(Tensor::zeros({2, 4})).shape(), (Shape{2, 3}));
}

// Forwards that record no gradient reuse the conv weights packed for the GEMM; every
// way the engine changes the weights must be seen by the next such forward.
// A 3x3, padding-1 convolution with bias.
nn::Conv2dConfig conv3x3(int64_t in, int64_t out) {
  nn::Conv2dConfig cfg;
  cfg.in_channels = in;
  cfg.out_channels = out;
  cfg.kernel = 3;
  cfg.padding = 1;
  return cfg;
}

TEST(Conv2d, InferencePackingFollowsWeightChanges) {
  Generator gen(3);
  const nn::Conv2dConfig cfg = conv3x3(16, 32);
  auto conv = std::make_shared<nn::Conv2d>(cfg, gen);
  Generator g(4);
  const Tensor x = rand_normal({2, 16, 9, 9}, g, 0.0, 1.0, DType::f32);
  const auto o = nn::Conv2dOptions::make(1, 1);
  auto cached = [&] {
    nn::NoGradGuard ng;
    return conv->forward(x).to_vector();
  };
  auto fresh = [&] {  // the functional form keeps nothing between calls
    nn::NoGradGuard ng;
    return nn::conv2d(x, conv->weight, conv->bias, o).to_vector();
  };
  const auto y0 = cached();
  EXPECT_EQ(y0, fresh());
  EXPECT_EQ(cached(), y0);  // the kept packing gives the same values

  // copy_ (what load_state_dict does)
  conv->weight.copy_(rand_normal(conv->weight.shape(), g, 0.0, 0.1, DType::f32));
  const auto y1 = cached();
  EXPECT_NE(y1, y0);
  EXPECT_EQ(y1, fresh());

  // fill_
  conv->weight.fill_(0.01);
  EXPECT_EQ(cached(), fresh());

  // an optimizer step after a recording forward and backward
  conv->weight.copy_(rand_normal(conv->weight.shape(), g, 0.0, 0.1, DType::f32));
  const auto before = cached();
  nn::SgdOptions so;
  so.lr = 0.1;
  nn::SGD sgd(*conv, so);
  nn::backward(nn::sum(conv->forward(x)));
  sgd.step();
  const auto after = cached();
  EXPECT_NE(after, before);
  EXPECT_EQ(after, fresh());

  // load_state_dict from another layer, and a random re-initialisation
  Generator gen2(9);
  nn::Conv2d other(cfg, gen2);
  conv->load_state_dict(other.state_dict());
  EXPECT_EQ(cached(), fresh());
  gen2.fill_normal(conv->weight, 0.0, 0.2);
  EXPECT_EQ(cached(), fresh());

  // a round trip through f64 replaces the storage
  conv->to(DType::f64);
  conv->to(DType::f32);
  EXPECT_EQ(cached(), fresh());

  // a write through the raw pointer is seen once announced with bump_version()
  conv->weight.data<float>()[0] += 1.0f;
  conv->weight.bump_version();
  EXPECT_EQ(cached(), fresh());
}

TEST(Conv2d, ConcurrentInferenceForwardsAgree) {
  Generator gen(5);
  auto conv = std::make_shared<nn::Conv2d>(conv3x3(24, 40), gen);
  Generator g(6);
  const Tensor x = rand_normal({1, 24, 12, 12}, g, 0.0, 1.0, DType::f32);
  std::vector<double> want;
  {
    nn::NoGradGuard ng;
    want = nn::conv2d(x, conv->weight, conv->bias, nn::Conv2dOptions::make(1, 1)).to_vector();
  }
  // The packing is made by whichever thread comes first, while others wait for it.
  std::vector<std::vector<double>> got(8);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] {
      nn::NoGradGuard ng;
      for (int i = 0; i < 5; ++i) got[t] = conv->forward(x).to_vector();
    });
  for (auto& th : threads) th.join();
  for (const auto& y : got) EXPECT_EQ(y, want);
}

}  // namespace
}  // namespace cxr
