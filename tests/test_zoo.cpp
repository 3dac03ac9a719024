// Model zoo: every architecture builds and runs for several channel/class counts and
// input sizes, layer-list specs build what they say, every spec error is a cxr::Error
// naming the problem, and end-to-end gradients of each model match finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/zoo.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

using nlohmann::json;
using nn::Model;

void expect_contains(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

// The message of the cxr::Error that building `spec` throws (a test failure otherwise).
std::string build_error(const json& spec) {
  try {
    nn::build_model(spec, 0);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "spec " << spec.dump() << " threw a non-cxr exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "spec " << spec.dump() << " was accepted";
  return "";
}

void expect_spec_error(const json& spec, const std::vector<std::string>& parts) {
  SCOPED_TRACE(spec.dump());
  const std::string msg = build_error(spec);
  if (msg.empty()) return;
  expect_contains(msg, parts);
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

Tensor eval_forward(Model& m, const Tensor& x) {
  nn::NoGradGuard ng;
  return m(x);
}

json layers_spec(int64_t in_ch, int64_t classes, int64_t size, json layers) {
  return {{"in_channels", in_ch}, {"num_classes", classes}, {"input_size", size}, {"layers", std::move(layers)}};
}

// ---------------------------------------------------------------- building and shapes

TEST(ZooBuild, EveryArchitectureForChannelsClassesAndSmallInputs) {
  Generator gen(1);
  for (const std::string& arch : nn::zoo_architectures()) {
    for (const auto& [ch, classes] : std::vector<std::pair<int64_t, int64_t>>{{1, 2}, {3, 7}}) {
      SCOPED_TRACE(arch + " channels " + std::to_string(ch) + " classes " + std::to_string(classes));
      auto m = nn::build_model(nn::arch_spec(arch, ch, classes, 32, 32), 3);
      EXPECT_EQ(m->in_channels(), ch);
      EXPECT_EQ(m->num_classes(), classes);
      EXPECT_EQ(m->input_height(), 32);
      EXPECT_EQ(m->input_width(), 32);
      m->eval();
      // A small-stem model runs on any input that is not too small; the zoo is used at
      // 28 (MNIST-like), 32 (CIFAR-like) and 64 px.
      for (int64_t size : {28, 32, 64}) {
        const Tensor y = eval_forward(*m, rand_normal({2, ch, size, size}, gen));
        EXPECT_EQ(y.shape(), (Shape{2, classes})) << "input " << size;
        EXPECT_TRUE(all_finite(y)) << "input " << size;
      }
      // Training mode runs too (BatchNorm batch statistics, dropout).
      m->train();
      EXPECT_EQ(eval_forward(*m, rand_normal({2, ch, 32, 32}, gen)).shape(), (Shape{2, classes}));
    }
  }
}

TEST(ZooBuild, SpecInputSizesAndClassCounts) {
  Generator gen(2);
  // The spec's input size is validated when building (each layer's window must fit).
  for (const std::string arch : {"simple_cnn", "mobilenet_v2", "resnet18"})
    for (int64_t size : {28, 64}) {
      SCOPED_TRACE(arch + " at " + std::to_string(size));
      auto m = nn::build_model(nn::arch_spec(arch, 1, 3, size, size), 0);
      m->eval();
      EXPECT_EQ(eval_forward(*m, rand_normal({1, 1, size, size}, gen)).shape(), (Shape{1, 3}));
    }
  for (int64_t classes : {1, 2, 10, 1000}) {
    auto m = nn::build_model(nn::arch_spec("simple_cnn", 3, classes, 28, 28), 0);
    m->eval();
    EXPECT_EQ(eval_forward(*m, rand_normal({3, 3, 28, 28}, gen)).shape(), (Shape{3, classes}));
  }
  // Non-square inputs.
  auto m = nn::build_model(nn::arch_spec("mobilenet_v2", 1, 2, 32, 48), 0);
  m->eval();
  EXPECT_EQ(m->input_height(), 32);
  EXPECT_EQ(m->input_width(), 48);
  EXPECT_EQ(eval_forward(*m, rand_normal({2, 1, 32, 48}, gen)).shape(), (Shape{2, 2}));
}

TEST(ZooBuild, ImagenetStemAt224) {
  Generator gen(3);
  for (const std::string arch : {"resnet18", "mobilenet_v2", "simple_cnn"}) {
    SCOPED_TRACE(arch);
    auto m = nn::build_model(nn::arch_spec(arch, 3, 4, 224, 224), 0);
    m->eval();
    const Tensor y = eval_forward(*m, rand_normal({1, 3, 224, 224}, gen));
    EXPECT_EQ(y.shape(), (Shape{1, 4}));
    EXPECT_TRUE(all_finite(y));
  }
}

TEST(ZooBuild, ResnetStemFollowsInputSizeUnlessOverridden) {
  auto stem_kernel = [](const json& spec) { return nn::expand_spec(spec)["layers"][0]["kernel"].get<int64_t>(); };
  auto has_maxpool = [](const json& spec) {
    const json full = nn::expand_spec(spec);
    for (const json& l : full["layers"])
      if (l.value("name", "") == "maxpool") return true;
    return false;
  };
  for (const std::string arch : {"resnet18", "resnet34", "resnet50"}) {
    SCOPED_TRACE(arch);
    EXPECT_EQ(stem_kernel(nn::arch_spec(arch, 1, 2, 64, 64)), 3);
    EXPECT_FALSE(has_maxpool(nn::arch_spec(arch, 1, 2, 64, 64)));
    EXPECT_EQ(stem_kernel(nn::arch_spec(arch, 1, 2, 65, 65)), 7);
    EXPECT_EQ(stem_kernel(nn::arch_spec(arch, 1, 2, 32, 96)), 7);  // the larger side decides
    EXPECT_TRUE(has_maxpool(nn::arch_spec(arch, 1, 2, 224, 224)));
    json s = nn::arch_spec(arch, 1, 2, 32, 32);
    s["stem"] = "imagenet";
    EXPECT_EQ(stem_kernel(s), 7);
    s = nn::arch_spec(arch, 1, 2, 224, 224);
    s["stem"] = "small";
    EXPECT_EQ(stem_kernel(s), 3);
    EXPECT_FALSE(has_maxpool(s));
  }
}

TEST(ZooSpec, DefaultsAreFilledIn) {
  const json s = nn::expand_spec({{"arch", "simple_cnn"}});
  EXPECT_EQ(s["in_channels"], 1);
  EXPECT_EQ(s["num_classes"], 2);
  EXPECT_EQ(s["input_size"], json::array({224, 224}));
  const json& layers = s["layers"];
  ASSERT_TRUE(layers.is_array());
  EXPECT_EQ(layers[0]["type"], "conv");
  EXPECT_EQ(layers[0]["out"], 32);
  EXPECT_EQ(layers[4]["out"], 64);
  EXPECT_EQ(layers[8]["out"], 128);
  bool dropout = false;
  for (const json& l : layers) dropout |= l["type"] == "dropout" && l["p"] == 0.25;
  EXPECT_TRUE(dropout);
  EXPECT_EQ(layers.back()["out"], "num_classes");
  EXPECT_EQ(nn::expand_spec({{"arch", "resnet18"}, {"input_size", 40}})["input_size"], json::array({40, 40}));

  // hidden 0 drops the hidden layer, dropout 0 the dropout layer.
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4}}, {"hidden", 0}, {"dropout", 0.0}}, 0);
  for (const auto& [name, child] : m->children()) EXPECT_NE(child->type_name(), "Dropout");
  EXPECT_EQ(m->named_parameters().back().second.shape(), (Shape{2}));
  EXPECT_EQ(m->state_dict().size(), 1u + 5 + 2);  // conv weight, 5 BN entries, linear weight and bias
}

TEST(ZooSpec, ModelKeepsItsExpandedSpecAndRebuildsIdentically) {
  for (const std::string arch : {"simple_cnn", "mobilenet_v2"}) {
    const json spec = nn::arch_spec(arch, 3, 5, 32, 32);
    auto a = nn::build_model(spec, 11);
    EXPECT_EQ(a->spec(), nn::expand_spec(spec));
    EXPECT_TRUE(a->spec().contains("layers"));
    // The expanded spec alone (as stored in model files) gives the same weights.
    auto b = nn::build_model(a->spec(), 11);
    auto c = nn::build_model(spec, 12);
    const auto sa = a->state_dict(), sb = b->state_dict(), sc = c->state_dict();
    ASSERT_EQ(sa.size(), sb.size());
    bool any_differs = false;
    for (const auto& [n, t] : sa) {
      EXPECT_EQ(std::memcmp(t.raw_data(), sb.at(n).raw_data(), t.nbytes()), 0) << arch << " " << n;
      any_differs |= std::memcmp(t.raw_data(), sc.at(n).raw_data(), t.nbytes()) != 0;
    }
    EXPECT_TRUE(any_differs) << arch << ": another seed should give other weights";
  }
}

json all_layer_types() {
  return json::array({
      {{"type", "conv"}, {"out", 8}, {"kernel", 3}, {"padding", 1}, {"name", "stem"}},  // 3x20x20 -> 8x20x20
      {{"type", "batchnorm"}, {"name", "stem_bn"}},
      {{"type", "leaky_relu"}, {"slope", 0.1}},
      {{"type", "conv"}, {"out", 8}, {"kernel", 3}, {"padding", 2}, {"dilation", 2}, {"groups", 4}, {"bias", false}},
      {{"type", "gelu"}},
      {{"type", "silu"}},
      {{"type", "tanh"}},
      {{"type", "sigmoid"}},
      {{"type", "relu6"}},
      {{"type", "relu"}},
      {{"type", "maxpool"}, {"kernel", 2}},                                 // -> 10x10
      {{"type", "avgpool"}, {"kernel", 3}, {"stride", 1}, {"padding", 1}},  // -> 10x10
      {{"type", "basic_block"}, {"out", 8}},
      {{"type", "basic_block"}, {"out", 16}, {"stride", 2}},  // -> 16x5x5
      {{"type", "bottleneck"}, {"out", 4}},                   // 16 -> 16, identity shortcut
      {{"type", "inverted_residual"}, {"out", 16}, {"expand", 2}},
      {{"type", "inverted_residual"}, {"out", 24}, {"stride", 2}, {"expand", 1}},  // -> 24x3x3
      {{"type", "sequential"},
       {"name", "head"},
       {"layers", {{{"type", "conv"}, {"out", 12}, {"kernel", 1}}, {{"type", "relu"}}}}},
      {{"type", "global_avgpool"}},
      {{"type", "flatten"}},
      {{"type", "linear"}, {"out", 10}},
      {{"type", "dropout"}, {"p", 0.1}},
      {{"type", "linear"}, {"out", "num_classes"}, {"bias", false}},
  });
}

TEST(ZooSpec, LayerListWithEveryLayerType) {
  auto m = nn::build_model(layers_spec(3, 4, 20, all_layer_types()), 0);
  const std::vector<std::string> types = {"Conv2d",
                                          "BatchNorm2d",
                                          "LeakyReLU",
                                          "Conv2d",
                                          "GELU",
                                          "SiLU",
                                          "Tanh",
                                          "Sigmoid",
                                          "ReLU6",
                                          "ReLU",
                                          "MaxPool2d",
                                          "AvgPool2d",
                                          "BasicBlock",
                                          "BasicBlock",
                                          "Bottleneck",
                                          "InvertedResidual",
                                          "InvertedResidual",
                                          "Sequential",
                                          "GlobalAvgPool2d",
                                          "Flatten",
                                          "Linear",
                                          "Dropout",
                                          "Linear"};
  ASSERT_EQ(m->children().size(), types.size());
  for (size_t i = 0; i < types.size(); ++i) EXPECT_EQ(m->children()[i].second->type_name(), types[i]) << i;
  // Unnamed children are numbered by position; named ones keep their names.
  EXPECT_EQ(m->children()[0].first, "stem");
  EXPECT_EQ(m->children()[3].first, "3");
  EXPECT_EQ(m->children()[17].first, "head");
  const auto sd = m->state_dict();
  EXPECT_EQ(sd.at("stem.weight").shape(), (Shape{8, 3, 3, 3}));
  EXPECT_TRUE(sd.count("stem.bias"));  // conv bias defaults to true
  EXPECT_TRUE(sd.count("stem_bn.running_mean"));
  EXPECT_EQ(sd.at("3.weight").shape(), (Shape{8, 2, 3, 3}));  // groups 4: 8/4 input channels per group
  EXPECT_FALSE(sd.count("3.bias"));
  EXPECT_TRUE(sd.count("13.downsample.0.weight"));
  EXPECT_FALSE(sd.count("14.downsample.0.weight"));
  EXPECT_EQ(sd.at("head.0.weight").shape(), (Shape{12, 24, 1, 1}));
  EXPECT_EQ(sd.at("20.weight").shape(), (Shape{10, 12}));
  EXPECT_EQ(sd.at("22.weight").shape(), (Shape{4, 10}));
  EXPECT_FALSE(sd.count("22.bias"));
  EXPECT_EQ(m->children()[3].second->describe(), "8->8, k=3, s=1, p=2, d=2, groups=4, no bias");

  Generator gen(4);
  m->eval();
  EXPECT_EQ(eval_forward(*m, rand_normal({2, 3, 20, 20}, gen)).shape(), (Shape{2, 4}));
  m->train();
  EXPECT_EQ(eval_forward(*m, rand_normal({2, 3, 20, 20}, gen)).shape(), (Shape{2, 4}));
}

TEST(ZooSpec, FlattenWithoutPoolingSizesTheLinearLayer) {
  auto m = nn::build_model(layers_spec(2, 3, 6,
                                       {{{"type", "conv"}, {"out", 5}, {"kernel", 3}},
                                        {{"type", "flatten"}},
                                        {{"type", "linear"}, {"out", "num_classes"}}}),
                           0);
  EXPECT_EQ(m->state_dict().at("2.weight").shape(), (Shape{3, 5 * 4 * 4}));
  Generator gen(5);
  EXPECT_EQ(eval_forward(*m, rand_normal({4, 2, 6, 6}, gen)).shape(), (Shape{4, 3}));
  // A network whose last feature count equals num_classes needs no linear layer.
  EXPECT_NO_THROW(nn::build_model(
      layers_spec(1, 3, 8, {{{"type", "conv"}, {"out", 3}}, {{"type", "global_avgpool"}}, {{"type", "flatten"}}}), 0));
  // A second flatten is harmless.
  EXPECT_NO_THROW(nn::build_model(
      layers_spec(1, 2, 4, {{{"type", "flatten"}}, {{"type", "flatten"}}, {{"type", "linear"}, {"out", 2}}}), 0));
}

// ---------------------------------------------------------------- spec errors

json conv(int64_t out, int64_t k = 3) { return {{"type", "conv"}, {"out", out}, {"kernel", k}}; }
json head() {
  return json::array({{{"type", "global_avgpool"}}, {{"type", "flatten"}}, {{"type", "linear"}, {"out", 2}}});
}
json with_head(json layers) {
  for (const json& l : head()) layers.push_back(l);
  return layers;
}
json one_layer(json l, int64_t size = 8, int64_t in_ch = 4) {
  return layers_spec(in_ch, 2, size, with_head(json::array({std::move(l)})));
}

TEST(ZooErrors, UnknownTypeAndArch) {
  expect_spec_error(layers_spec(1, 2, 8, with_head({conv(4), {{"type", "softmaxx"}}})),
                    {"model spec", "unknown layer type 'softmaxx'", "layers[1]"});
  expect_spec_error({{"arch", "resnet1000"}}, {"unknown arch 'resnet1000'", "resnet18", "mobilenet_v2", "simple_cnn"});
  expect_spec_error({{"arch", 18}}, {"'arch' must be a string"});
  expect_spec_error({{"num_classes", 2}}, {"needs either 'arch' or a non-empty 'layers'"});
  expect_spec_error(layers_spec(1, 2, 8, json::array()), {"non-empty 'layers'"});
  expect_spec_error(json::array({1, 2}), {"must be a JSON object"});
  expect_spec_error(layers_spec(1, 2, 8, "conv"), {"'layers'"});
}

TEST(ZooErrors, LayerOrderAndShapes) {
  expect_spec_error(layers_spec(1, 2, 8, {conv(4), {{"type", "linear"}, {"out", 2}}}),
                    {"layers[1] (linear)", "flatten"});
  expect_spec_error(layers_spec(1, 2, 8, {{{"type", "flatten"}}, conv(4), {{"type", "flatten"}}}),
                    {"layers[1] (conv)", "follows a flatten"});
  expect_spec_error(layers_spec(1, 2, 8, {{{"type", "flatten"}}, {{"type", "maxpool"}}}), {"follows a flatten"});
  expect_spec_error(layers_spec(1, 2, 8, {{{"type", "flatten"}}, {{"type", "global_avgpool"}}}), {"follows a flatten"});
  expect_spec_error(layers_spec(1, 2, 8, {{{"type", "flatten"}}, {{"type", "basic_block"}, {"out", 2}}}),
                    {"follows a flatten"});
  // Windows larger than the activation they slide over.
  expect_spec_error(layers_spec(1, 2, 4, with_head({conv(4, 7)})), {"layers[0] (conv)", "4x4", "7x7 window"});
  expect_spec_error(layers_spec(1, 2, 8, with_head({conv(4, 3), {{"type", "maxpool"}, {"kernel", 8}}})),
                    {"layers[1] (maxpool)", "6x6", "8x8"});
  expect_spec_error({{"arch", "simple_cnn"}, {"channels", {4, 4, 4, 4}}, {"input_size", 8}},
                    {"maxpool", "1x1", "2x2 window"});
  expect_spec_error({{"arch", "simple_cnn"}, {"input_size", {8, 2}}}, {"window"});
  // Groups must divide both channel counts.
  expect_spec_error(layers_spec(3, 2, 8, with_head({{{"type", "conv"}, {"out", 4}, {"groups", 2}}})),
                    {"3->4", "not divisible by groups 2"});
  expect_spec_error(layers_spec(4, 2, 8, with_head({{{"type", "conv"}, {"out", 6}, {"groups", 4}}})),
                    {"not divisible by groups 4"});
  // The last layer must give num_classes features.
  expect_spec_error(
      layers_spec(1, 2, 8,
                  {conv(4), {{"type", "global_avgpool"}}, {{"type", "flatten"}}, {{"type", "linear"}, {"out", 3}}}),
      {"num_classes = 2", "3 features"});
  expect_spec_error(layers_spec(1, 2, 8, {conv(2)}), {"num_classes = 2", "feature map"});
}

TEST(ZooErrors, LayersOverrideArch) {
  // With both keys the explicit layer list is built and "arch" is only a label, so a
  // saved model rebuilds exactly as it was trained.
  const json layers = {conv(2), {{"type", "global_avgpool"}}, {{"type", "flatten"}}, {{"type", "linear"}, {"out", 3}}};
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"num_classes", 3}, {"input_size", 16}, {"layers", layers}}, 0);
  EXPECT_EQ(m->num_classes(), 3);
  EXPECT_EQ(m->size(), 4u);
  EXPECT_EQ(m->spec()["arch"], "simple_cnn");
  // A layer list that does not fit the class count is an error even with a valid arch.
  expect_spec_error({{"arch", "simple_cnn"}, {"num_classes", 3}, {"input_size", 16}, {"layers", {conv(2)}}},
                    {"num_classes = 3"});
}

TEST(ZooErrors, BadInputSize) {
  for (const json& s : {json::array({0, 28}), json(-5), json::array({28}), json("28"), json::array({28, 28.5}),
                        json::array({28, 28, 3}), json::array(), json(28.0), json::array({28, -1})}) {
    json spec = {{"arch", "simple_cnn"}, {"input_size", s}};
    expect_spec_error(spec, {"'input_size'"});
  }
}

TEST(ZooErrors, NonIntegerAndOutOfRangeFields) {
  struct Case {
    json spec;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {one_layer({{"type", "conv"}, {"out", 4}, {"kernel", 3.5}}), {"'kernel' must be an integer", "3.5"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"stride", "2"}}), {"'stride' must be an integer"}},
      {one_layer({{"type", "conv"}, {"out", 2.5}}), {"'out' must be an integer"}},
      {one_layer({{"type", "conv"}, {"out", "classes"}}), {"'out' must be an integer"}},
      {one_layer({{"type", "conv"}}), {"missing 'out'"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"padding", -1}}), {"'padding' = -1 must be >= 0"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"kernel", 0}}), {"'kernel' = 0 must be >= 1"}},
      {one_layer({{"type", "conv"}, {"out", 0}}), {"'out' = 0"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"groups", 0}}), {"'groups' = 0"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"dilation", true}}), {"'dilation' must be an integer"}},
      {one_layer({{"type", "conv"}, {"out", 4}, {"bias", "yes"}}), {"'bias' must be true or false"}},
      {one_layer({{"type", "batchnorm"}, {"eps", "small"}}), {"'eps' must be a number"}},
      {one_layer({{"type", "batchnorm"}, {"momentum", 2.0}}), {"momentum"}},
      {one_layer({{"type", "leaky_relu"}, {"slope", "x"}}), {"'slope' must be a number"}},
      {one_layer({{"type", "maxpool"}, {"kernel", 3}, {"padding", 2}}), {"padding must be at most half the kernel"}},
      {one_layer({{"type", "avgpool"}, {"kernel", 2.0}}), {"'kernel' must be an integer"}},
      {one_layer({{"type", "inverted_residual"}, {"out", 4}, {"stride", 3}}), {"'stride' must be 1 or 2"}},
      {one_layer({{"type", "inverted_residual"}, {"out", 4}, {"expand", 0}}), {"'expand' = 0 must be >= 1"}},
      {one_layer({{"type", "basic_block"}, {"out", 4}, {"stride", 0}}), {"'stride' = 0"}},
      {one_layer({{"type", "sequential"}}), {"needs a 'layers' array"}},
      {one_layer({{"type", "sequential"}, {"layers", 3}}), {"needs a 'layers' array"}},
      {one_layer({{"type", 5}}), {"string 'type'"}},
      {one_layer(json(5)), {"must be an object"}},
      {one_layer({{"type", "relu"}, {"name", 5}}), {"'name' must be a string"}},
      {one_layer({{"type", "relu"}, {"name", "a.b"}}), {"a.b"}},
      {one_layer({{"type", "relu"}, {"name", ""}}), {"invalid member name"}},
      {layers_spec(1, 2, 8,
                   {{{"type", "relu"}, {"name", "x"}},
                    {{"type", "relu"}, {"name", "x"}},
                    {{"type", "flatten"}},
                    {{"type", "linear"}, {"out", 2}}}),
       {"'x'", "twice"}},
      {layers_spec(1, 2, 8,
                   {{{"type", "flatten"}}, {{"type", "dropout"}, {"p", 1.0}}, {{"type", "linear"}, {"out", 2}}}),
       {"'p' must be in [0, 1)"}},
      {layers_spec(1, 2, 8,
                   {{{"type", "flatten"}}, {{"type", "dropout"}, {"p", "0.5"}}, {{"type", "linear"}, {"out", 2}}}),
       {"'p' must be a number"}},
      {layers_spec(1, 2, 8, {{{"type", "flatten"}}, {{"type", "linear"}, {"out", 2}, {"bias", 0}}}),
       {"'bias' must be true or false"}},
      {{{"arch", "simple_cnn"}, {"in_channels", 1.5}}, {"'in_channels' must be an integer"}},
      {{{"arch", "simple_cnn"}, {"in_channels", 0}}, {"'in_channels' = 0"}},
      {{{"arch", "simple_cnn"}, {"num_classes", "2"}}, {"'num_classes' must be an integer"}},
      {{{"arch", "simple_cnn"}, {"num_classes", 0}}, {"'num_classes' = 0"}},
      {{{"arch", "simple_cnn"}, {"channels", {32, 1.5}}}, {"'channels'"}},
      {{{"arch", "simple_cnn"}, {"channels", {32, 0}}}, {"'channels'"}},
      {{{"arch", "simple_cnn"}, {"channels", json::array()}}, {"'channels'"}},
      {{{"arch", "simple_cnn"}, {"channels", "wide"}}, {"'channels'"}},
      {{{"arch", "simple_cnn"}, {"hidden", 1.5}}, {"'hidden' must be an integer"}},
      {{{"arch", "simple_cnn"}, {"hidden", -1}}, {"'hidden' = -1"}},
      {{{"arch", "simple_cnn"}, {"dropout", "0.5"}}, {"'dropout' must be a number"}},
      {{{"arch", "simple_cnn"}, {"dropout", 1.0}}, {"'dropout'", "[0, 1)"}},
      {{{"arch", "simple_cnn"}, {"dropout", -0.1}}, {"'dropout'", "[0, 1)"}},
      {{{"arch", "mobilenet_v2"}, {"width_mult", "wide"}}, {"'width_mult' must be a number"}},
      {{{"arch", "mobilenet_v2"}, {"width_mult", 0.0}}, {"'width_mult' must be > 0"}},
      {{{"arch", "mobilenet_v2"}, {"dropout", -0.5}}, {"'dropout'", "[0, 1)"}},
      {{{"arch", "mobilenet_v2"}, {"dropout", 1.5}}, {"'dropout'", "[0, 1)"}},
      {{{"arch", "resnet18"}, {"stem", "tiny"}}, {"'stem' must be auto, imagenet or small", "tiny"}},
      {{{"arch", "resnet18"}, {"stem", 5}}, {"'stem'"}},
  };
  for (const Case& c : cases) expect_spec_error(c.spec, c.parts);
}

// ---------------------------------------------------------------- end-to-end gradient checks

struct GradSetup {
  std::shared_ptr<Model> model;
  Tensor x, labels;
  std::vector<std::pair<nn::Dropout*, uint64_t>> dropouts;  // reset before every forward
};

// Builds `spec` in f64 with randomised BatchNorm affine parameters (the zero-initialised
// last BN of residual blocks would otherwise cut the gradient of everything before it)
// and random running statistics (used in eval mode).
GradSetup grad_setup(const json& spec, int64_t batch, bool training, uint64_t seed) {
  GradSetup s;
  s.model = nn::build_model(spec, seed);
  s.model->to(DType::f64);
  Generator gen(seed + 100);
  for (auto& [path, mod] : s.model->named_modules()) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(mod)) {
      gen.fill_uniform(bn->weight, 0.5, 1.5);
      gen.fill_uniform(bn->bias, -0.3, 0.3);
      gen.fill_uniform(bn->running_mean, -0.2, 0.2);
      gen.fill_uniform(bn->running_var, 0.5, 1.5);
    }
    if (auto* d = dynamic_cast<nn::Dropout*>(mod)) s.dropouts.emplace_back(d, d->generator().seed());
  }
  s.model->train(training);
  const int64_t c = s.model->in_channels(), h = s.model->input_height(), w = s.model->input_width();
  s.x = rand_normal({batch, c, h, w}, gen, 0.0, 1.0, DType::f64);
  std::vector<int64_t> y;
  for (int64_t i = 0; i < batch; ++i) y.push_back(static_cast<int64_t>(gen.next_below(s.model->num_classes())));
  s.labels = Tensor::from_vector(y, {batch});
  return s;
}

// loss(x) with the same dropout masks on every call.
testing::GradFn loss_fn(GradSetup& s) {
  return [&s](const std::vector<Tensor>& v) {
    for (auto& [d, seed] : s.dropouts) d->generator().set_state(seed, 0);
    return nn::cross_entropy((*s.model)(v[0]), s.labels);
  };
}

testing::GradcheckOptions grad_opts(int64_t max_checks, double h) {
  testing::GradcheckOptions o;
  o.h = h;
  o.atol = 1e-6;
  o.rtol = 1e-4;
  o.max_checks = max_checks;
  return o;
}

// Checks the input gradient on `input_checks` elements and, for every `stride`-th
// parameter tensor, `per_param` elements (0: all of them).
void check_model_gradients(GradSetup& s, int64_t input_checks, size_t stride, int64_t per_param, double h = 1e-6) {
  const auto fn = loss_fn(s);
  {
    SCOPED_TRACE("input gradient");
    Tensor x = s.x;
    x.set_requires_grad(true);
    testing::expect_gradcheck(fn, {x}, grad_opts(input_checks, h));
    x.set_requires_grad(false);
  }
  {
    SCOPED_TRACE("parameter gradients");
    std::vector<Tensor> inputs = {s.x};  // not requiring grad: a constant
    const auto params = s.model->named_parameters();
    for (size_t i = 0; i < params.size(); i += stride) inputs.push_back(params[i].second);
    // Always include the last layer.
    if ((params.size() - 1) % stride != 0) inputs.push_back(params.back().second);
    const auto res = testing::gradcheck(fn, inputs, grad_opts(per_param, h));
    EXPECT_TRUE(res.ok) << res.message;
    EXPECT_GE(res.checked, static_cast<int64_t>(inputs.size() - 1));
  }
  s.model->zero_grad();
}

TEST(ZooGradcheck, SimpleCnnTrainModeWithDropout) {
  json spec = {{"arch", "simple_cnn"}, {"in_channels", 2}, {"num_classes", 3}, {"input_size", 8},
               {"channels", {2, 3}},   {"hidden", 4},      {"dropout", 0.5}};
  GradSetup s = grad_setup(spec, 3, /*training=*/true, 1);
  ASSERT_EQ(s.dropouts.size(), 1u);
  check_model_gradients(s, 0, 1, 0);  // every element of every tensor
}

TEST(ZooGradcheck, SimpleCnnEvalMode) {
  json spec = {{"arch", "simple_cnn"}, {"in_channels", 1}, {"num_classes", 4}, {"input_size", 8},
               {"channels", {3, 2}},   {"hidden", 5},      {"dropout", 0.25}};
  GradSetup s = grad_setup(spec, 2, /*training=*/false, 2);
  check_model_gradients(s, 0, 1, 0);
}

TEST(ZooGradcheck, Resnet18EvalMode) {
  GradSetup s = grad_setup(nn::arch_spec("resnet18", 3, 3, 8, 8), 2, /*training=*/false, 3);
  check_model_gradients(s, 24, 2, 1);  // 31 parameter tensors, one element each
}

TEST(ZooGradcheck, Resnet18TrainMode) {
  // Batch 4 so that the 1x1 maps of layer4 still give BatchNorm 4 values per channel.
  GradSetup s = grad_setup(nn::arch_spec("resnet18", 1, 2, 8, 8), 4, /*training=*/true, 4);
  check_model_gradients(s, 16, 3, 1);
}

TEST(ZooGradcheck, MobilenetV2TrainModeWithDropout) {
  json spec = nn::arch_spec("mobilenet_v2", 3, 3, 16, 16);
  spec["width_mult"] = 0.25;
  spec["dropout"] = 0.2;
  // From stage 5 on the maps are 1x1, so train-mode BatchNorm sees `batch` values per
  // channel. With 4, a channel whose relu6 zeroes nearly every sample makes the loss so
  // curved that no step h gives a stable difference; with 8 the differences still carry
  // a curvature error of ~1e-2 at h = 1e-6 but converge to the analytic gradient (every
  // depthwise weight agrees to 1e-7 at h = 1e-7, where rounding is still ~1e-9).
  GradSetup s = grad_setup(spec, 8, /*training=*/true, 5);
  ASSERT_EQ(s.dropouts.size(), 1u);
  check_model_gradients(s, 24, 3, 1, 1e-7);
}

TEST(ZooGradcheck, MobilenetV2EvalMode) {
  json spec = nn::arch_spec("mobilenet_v2", 1, 2, 16, 16);
  spec["width_mult"] = 0.25;
  GradSetup s = grad_setup(spec, 2, /*training=*/false, 6);
  check_model_gradients(s, 16, 3, 1);
}

TEST(ZooGradcheck, Resnet50EvalMode) {
  GradSetup s = grad_setup(nn::arch_spec("resnet50", 1, 2, 8, 8), 2, /*training=*/false, 7);
  check_model_gradients(s, 8, 5, 1);
}

TEST(ZooGradcheck, EveryLayerTypeTrainMode) {
  json layers = all_layer_types();
  layers[21]["p"] = 0.3;
  GradSetup s = grad_setup(layers_spec(3, 4, 20, layers), 2, /*training=*/true, 8);
  check_model_gradients(s, 24, 1, 3);
}

}  // namespace
}  // namespace cxr
