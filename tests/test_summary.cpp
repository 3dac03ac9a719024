// Model summaries (nn/summary.h): shapes, parameter counts and FLOPs against hand
// counts, the row structure of blocks, batch scaling, training flags, errors naming the
// layer, and the unit formatting.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nn/blocks.h"
#include "nn/summary.h"
#include "nn/zoo.h"
#include "runtime/error.h"

namespace {

using namespace cxr;
using nn::LayerSummary;
using nn::ModelSummary;

const LayerSummary& row(const ModelSummary& s, const std::string& name) {
  for (const LayerSummary& l : s.layers)
    if (l.name == name) return l;
  throw std::runtime_error("no row " + name);
}

int64_t sum_params(const ModelSummary& s) {
  int64_t n = 0;
  for (const LayerSummary& l : s.layers) n += l.params;
  return n;
}

// Every module but the root, in the order named_modules() lists them.
std::vector<std::string> module_names(nn::Module& m) {
  std::vector<std::string> out;
  for (auto& [name, sub] : m.named_modules())
    if (!name.empty()) out.push_back(name);
  return out;
}

std::vector<std::string> row_names(const ModelSummary& s) {
  std::vector<std::string> out;
  for (const LayerSummary& l : s.layers) out.push_back(l.name);
  return out;
}

// simple_cnn defaults: channels 32, 64, 128, hidden 128, dropout 0.25; 1x28x28, 2 classes.
TEST(Summary, SimpleCnnShapesParamsAndFlopsMatchHandCount) {
  auto model = nn::build_model(nn::arch_spec("simple_cnn", 1, 2, 28, 28), 1);
  const ModelSummary s = nn::summarize(*model, {1, 1, 28, 28});

  struct Expect {
    const char* name;
    const char* type;
    Shape output;
    int64_t params, flops;
  };
  // Conv: 2*K*P*Q*C*R*S (no bias); BN: 4/element; ReLU and pools: 1 per output element;
  // global average pooling: 1 per input element; Linear: 2*in*out + out.
  const std::vector<Expect> expect = {
      {"0", "Conv2d", {1, 32, 28, 28}, 32 * 1 * 9, 2LL * 32 * 28 * 28 * 1 * 9},
      {"1", "BatchNorm2d", {1, 32, 28, 28}, 2 * 32, 4LL * 32 * 28 * 28},
      {"2", "ReLU", {1, 32, 28, 28}, 0, 32 * 28 * 28},
      {"3", "MaxPool2d", {1, 32, 14, 14}, 0, 32 * 14 * 14},
      {"4", "Conv2d", {1, 64, 14, 14}, 64 * 32 * 9, 2LL * 64 * 14 * 14 * 32 * 9},
      {"5", "BatchNorm2d", {1, 64, 14, 14}, 2 * 64, 4LL * 64 * 14 * 14},
      {"6", "ReLU", {1, 64, 14, 14}, 0, 64 * 14 * 14},
      {"7", "MaxPool2d", {1, 64, 7, 7}, 0, 64 * 7 * 7},
      {"8", "Conv2d", {1, 128, 7, 7}, 128 * 64 * 9, 2LL * 128 * 7 * 7 * 64 * 9},
      {"9", "BatchNorm2d", {1, 128, 7, 7}, 2 * 128, 4LL * 128 * 7 * 7},
      {"10", "ReLU", {1, 128, 7, 7}, 0, 128 * 7 * 7},
      {"11", "MaxPool2d", {1, 128, 3, 3}, 0, 128 * 3 * 3},
      {"12", "GlobalAvgPool2d", {1, 128, 1, 1}, 0, 128 * 3 * 3},
      {"13", "Flatten", {1, 128}, 0, 0},
      {"14", "Linear", {1, 128}, 128 * 128 + 128, 2LL * 128 * 128 + 128},
      {"15", "ReLU", {1, 128}, 0, 128},
      {"16", "Dropout", {1, 128}, 0, 0},
      {"17", "Linear", {1, 2}, 128 * 2 + 2, 2LL * 128 * 2 + 2},
  };
  ASSERT_EQ(s.layers.size(), expect.size());
  int64_t params = 0, flops = 0, kept = 0;
  for (size_t i = 0; i < expect.size(); ++i) {
    const LayerSummary& l = s.layers[i];
    SCOPED_TRACE(l.name);
    EXPECT_EQ(l.name, expect[i].name);
    EXPECT_EQ(l.type, expect[i].type);
    EXPECT_EQ(l.output, expect[i].output);
    EXPECT_EQ(l.params, expect[i].params);
    EXPECT_EQ(l.flops, expect[i].flops);
    EXPECT_EQ(l.total_params, l.params);
    EXPECT_EQ(l.total_flops, l.flops);
    EXPECT_EQ(l.depth, 0);
    EXPECT_TRUE(l.leaf);
    EXPECT_EQ(l.activation_bytes, shape_numel(expect[i].output) * 4);
    params += expect[i].params;
    flops += expect[i].flops;
    if (l.type != "Flatten") kept += l.activation_bytes;  // a view of its input
  }
  EXPECT_EQ(s.layers[0].describe, "1->32, k=3, s=1, p=1, no bias");
  EXPECT_EQ(params, 109666);
  EXPECT_EQ(s.total_params, 109666);
  EXPECT_EQ(s.total_params, model->num_parameters());
  EXPECT_EQ(s.trainable_params, s.total_params);
  EXPECT_EQ(s.param_bytes, 109666 * 4);
  EXPECT_EQ(flops, 15167042);
  EXPECT_EQ(s.total_flops, 15167042);
  EXPECT_EQ(s.flops_per_sample(), 15167042);
  EXPECT_EQ(s.activation_bytes, kept);
  EXPECT_EQ(s.activation_bytes, 142786 * 4);
  EXPECT_EQ(s.input, (Shape{1, 1, 28, 28}));
  EXPECT_EQ(s.output, (Shape{1, 2}));
  EXPECT_TRUE(s.notes.empty());
}

TEST(Summary, BatchScalesEverythingAndOneSampleTraceAgrees) {
  auto model = nn::build_model(nn::arch_spec("simple_cnn", 3, 5, 32, 32), 2);
  const ModelSummary one = nn::summarize(*model, {1, 3, 32, 32});
  const ModelSummary full = nn::summarize(*model, {4, 3, 32, 32});
  const ModelSummary scaled = nn::summarize(*model, {4, 3, 32, 32}, {.one_sample = true});
  EXPECT_EQ(full.total_flops, 4 * one.total_flops);
  EXPECT_EQ(full.flops_per_sample(), one.total_flops);
  EXPECT_EQ(full.activation_bytes, 4 * one.activation_bytes);
  EXPECT_EQ(full.total_params, one.total_params);
  EXPECT_EQ(nn::summary_to_json(full), nn::summary_to_json(scaled));
  for (const LayerSummary& l : full.layers) EXPECT_EQ(l.output[0], 4) << l.name;
}

TEST(Summary, Resnet18RowsFollowTheModuleTree) {
  auto model = nn::build_model(nn::arch_spec("resnet18", 1, 2, 224, 224), 3);
  const ModelSummary s = nn::summarize(*model, {1, 1, 224, 224});
  EXPECT_EQ(s.total_params, 11171266);  // torchvision's 11,689,512 with a 1-channel stem and 2 classes
  EXPECT_EQ(s.total_params, model->num_parameters());
  EXPECT_EQ(sum_params(s), model->num_parameters());
  EXPECT_EQ(row_names(s), module_names(*model));

  EXPECT_EQ(row(s, "conv1").output, (Shape{1, 64, 112, 112}));
  EXPECT_EQ(row(s, "maxpool").output, (Shape{1, 64, 56, 56}));
  EXPECT_EQ(row(s, "layer1").output, (Shape{1, 64, 56, 56}));
  const LayerSummary& stage = row(s, "layer2");
  EXPECT_EQ(stage.type, "Sequential");
  EXPECT_FALSE(stage.leaf);
  EXPECT_EQ(stage.depth, 0);
  EXPECT_EQ(stage.output, (Shape{1, 128, 28, 28}));
  EXPECT_EQ(stage.total_params, model->find("layer2")->num_parameters());
  const LayerSummary& block = row(s, "layer2.0");
  EXPECT_EQ(block.type, "BasicBlock");
  EXPECT_EQ(block.depth, 1);
  EXPECT_EQ(block.params, 0);
  EXPECT_EQ(block.total_params, model->find("layer2.0")->num_parameters());
  // The block itself: ReLU after bn1, the residual sum and the final ReLU.
  EXPECT_EQ(block.flops, 3LL * 128 * 28 * 28);
  EXPECT_EQ(row(s, "layer2.0.conv1").depth, 2);
  EXPECT_EQ(row(s, "layer2.0.conv1").output, (Shape{1, 128, 28, 28}));
  EXPECT_EQ(row(s, "layer2.0.conv1").flops, 2LL * 128 * 28 * 28 * 64 * 9);
  EXPECT_EQ(row(s, "layer2.0.downsample").output, (Shape{1, 128, 28, 28}));
  EXPECT_EQ(row(s, "layer2.0.downsample.0").flops, 2LL * 128 * 28 * 28 * 64);
  EXPECT_EQ(row(s, "layer4.1.bn2").output, (Shape{1, 512, 7, 7}));
  EXPECT_EQ(row(s, "avgpool").output, (Shape{1, 512, 1, 1}));
  EXPECT_EQ(row(s, "fc").output, (Shape{1, 2}));
  EXPECT_EQ(s.output, (Shape{1, 2}));
  EXPECT_TRUE(s.notes.empty());
}

TEST(Summary, Resnet18ConvFlopsMatchThePublishedCount) {
  // torchvision's resnet18 (3 channels, 1000 classes, 224x224): 1.82 G multiply-adds.
  auto model = nn::build_model(nn::arch_spec("resnet18", 3, 1000, 224, 224), 4);
  const ModelSummary s = nn::summarize(*model, {1, 3, 224, 224});
  EXPECT_EQ(s.total_params, 11689512);
  int64_t dense = 0;
  for (const LayerSummary& l : s.layers)
    if (l.type == "Conv2d" || l.type == "Linear") dense += l.flops;
  EXPECT_GT(dense, 2 * 1810000000LL);
  EXPECT_LT(dense, 2 * 1825000000LL);
  EXPECT_GT(s.total_flops, dense);  // plus BN, ReLU, pools, residual sums
}

TEST(Summary, BottleneckAndMobileNetBlocks) {
  auto resnet = nn::build_model(nn::arch_spec("resnet50", 1, 2, 64, 64), 5);
  const ModelSummary r = nn::summarize(*resnet, {2, 1, 64, 64});
  EXPECT_EQ(row_names(r), module_names(*resnet));
  EXPECT_EQ(sum_params(r), resnet->num_parameters());
  EXPECT_EQ(row(r, "layer1.0").type, "Bottleneck");
  EXPECT_EQ(row(r, "layer1.0.conv3").output, (Shape{2, 256, 64, 64}));  // small stem: no downsampling
  EXPECT_EQ(row(r, "layer4.2.conv3").output, (Shape{2, 2048, 8, 8}));
  EXPECT_EQ(row(r, "layer1.0").flops, 4LL * 64 * 64 * 64 + 4LL * 256 * 64 * 64);  // 2 ReLUs, sum, ReLU

  auto mobile = nn::build_model(nn::arch_spec("mobilenet_v2", 3, 4, 96, 96), 6);
  const ModelSummary m = nn::summarize(*mobile, {1, 3, 96, 96});
  EXPECT_EQ(row_names(m), module_names(*mobile));
  EXPECT_EQ(sum_params(m), mobile->num_parameters());
  EXPECT_EQ(m.total_params, mobile->num_parameters());
  const LayerSummary& first = row(m, "features.1");
  EXPECT_EQ(first.type, "InvertedResidual");
  EXPECT_EQ(first.flops, 0);  // 32 -> 16 channels: no residual
  const LayerSummary& res = row(m, "features.3");  // 24 -> 24, stride 1: residual
  EXPECT_EQ(res.flops, shape_numel(res.output));
  EXPECT_EQ(row(m, "features.3.conv.1.0").describe, "144->144, k=3, s=1, p=1, groups=144, no bias");
  EXPECT_EQ(row(m, "features.3.conv.1.0").flops, 2LL * 144 * 24 * 24 * 9);  // depthwise: one input channel each
  EXPECT_EQ(row(m, "features.18").output, (Shape{1, 1280, 3, 3}));
  EXPECT_EQ(m.output, (Shape{1, 4}));
  EXPECT_TRUE(m.notes.empty());
}

TEST(Summary, RestoresTrainingFlagsAndLeavesStatisticsAlone) {
  auto model = nn::build_model(nn::arch_spec("resnet18", 1, 2, 32, 32), 7);
  model->train();
  model->find("layer1.0.bn1")->eval();
  std::vector<std::pair<std::string, bool>> before;
  for (auto& [name, m] : model->named_modules()) before.emplace_back(name, m->is_training());
  const auto state = model->state_dict();
  const double mean0 = state.at("bn1.running_mean").to_vector()[0];
  nn::summarize(*model, {2, 1, 32, 32});
  std::vector<std::pair<std::string, bool>> after;
  for (auto& [name, m] : model->named_modules()) after.emplace_back(name, m->is_training());
  EXPECT_EQ(before, after);
  EXPECT_FALSE(model->find("layer1.0.bn1")->is_training());
  EXPECT_TRUE(model->find("layer1.0.bn2")->is_training());
  // Eval mode: BatchNorm statistics were not updated.
  EXPECT_EQ(model->state_dict().at("bn1.num_batches_tracked").item(), 0.0);
  EXPECT_EQ(model->state_dict().at("bn1.running_mean").to_vector()[0], mean0);

  // Also restored when the forward pass fails.
  EXPECT_THROW(nn::summarize(*model, {1, 3, 32, 32}), ValueError);
  after.clear();
  for (auto& [name, m] : model->named_modules()) after.emplace_back(name, m->is_training());
  EXPECT_EQ(before, after);
}

TEST(Summary, ErrorsNameTheLayer) {
  auto model = nn::build_model(nn::arch_spec("resnet18", 1, 2, 32, 32), 8);
  try {
    nn::summarize(*model, {1, 3, 32, 32});
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("conv1 (Conv2d) on input [1, 3, 32, 32]"), std::string::npos) << e.what();
  }
  auto cnn = nn::build_model(nn::arch_spec("simple_cnn", 1, 2, 28, 28), 9);
  try {
    nn::summarize(*cnn, {1, 1, 2, 2});  // the second max pool gets a 1x1 map
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("7 (MaxPool2d)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nn::summarize(*cnn, {}), ValueError);
  EXPECT_THROW(nn::summarize(*cnn, {0, 1, 28, 28}), ValueError);
}

// A composite whose wiring the summary does not know: one opaque row.
class TwoPaths : public nn::Module {
 public:
  explicit TwoPaths(Generator& gen) {
    a_ = register_module("a", std::make_shared<nn::Conv2d>(nn::Conv2dConfig{2, 4, 3, 1, 1, 1, 1, true}, gen));
    b_ = register_module("b", std::make_shared<nn::Conv2d>(nn::Conv2dConfig{2, 4, 1, 1, 0, 1, 1, false}, gen));
  }
  Tensor forward(const Tensor& x) override { return nn::add(a_->forward(x), b_->forward(x)); }
  std::string type_name() const override { return "TwoPaths"; }

 private:
  std::shared_ptr<nn::Conv2d> a_, b_;
};

TEST(Summary, UnknownCompositeIsOneOpaqueRow) {
  Generator gen(1);
  nn::Sequential model;
  model.push_back(std::make_shared<TwoPaths>(gen));
  model.push_back(std::make_shared<nn::Activation>(cpu::Act::relu));
  const ModelSummary s = nn::summarize(model, {1, 2, 8, 8});
  ASSERT_EQ(s.layers.size(), 2u);
  EXPECT_EQ(s.layers[0].type, "TwoPaths");
  EXPECT_TRUE(s.layers[0].leaf);
  EXPECT_EQ(s.layers[0].params, model.num_parameters());
  EXPECT_EQ(s.layers[0].output, (Shape{1, 4, 8, 8}));
  EXPECT_EQ(s.total_params, 4 * 2 * 9 + 4 + 4 * 2);
  ASSERT_EQ(s.notes.size(), 1u);
  EXPECT_NE(s.notes[0].find("0 (TwoPaths)"), std::string::npos) << s.notes[0];
  EXPECT_EQ(s.total_flops, 4 * 8 * 8);  // the ReLU only
}

TEST(Summary, SingleLayerAndDoublePrecision) {
  Generator gen(2);
  nn::Conv2d conv(nn::Conv2dConfig{3, 8, 3, 2, 1, 1, 1, true}, gen);
  conv.to(DType::f64);
  const ModelSummary s = nn::summarize(conv, {2, 3, 16, 16});
  ASSERT_EQ(s.layers.size(), 1u);
  EXPECT_EQ(s.layers[0].name, "");
  EXPECT_EQ(s.layers[0].output, (Shape{2, 8, 8, 8}));
  EXPECT_EQ(s.layers[0].flops, 2LL * 2 * 8 * 8 * 8 * 3 * 9 + 2 * 8 * 8 * 8);
  EXPECT_EQ(s.layers[0].activation_bytes, 2 * 8 * 8 * 8 * 8);  // f64
  EXPECT_EQ(s.param_bytes, (8 * 3 * 9 + 8) * 8);
}

TEST(Summary, JsonAndTextFormats) {
  auto model = nn::build_model(nn::arch_spec("resnet18", 1, 2, 32, 32), 10);
  const ModelSummary s = nn::summarize(*model, {2, 1, 32, 32});
  const nlohmann::json j = nn::summary_to_json(s);
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["input"], nlohmann::json({2, 1, 32, 32}));
  EXPECT_EQ(j["totals"]["params"], model->num_parameters());
  EXPECT_EQ(j["totals"]["flops"], s.total_flops);
  EXPECT_EQ(j["totals"]["flops_per_sample"], s.total_flops / 2);
  ASSERT_EQ(j["layers"].size(), s.layers.size());
  for (const char* key : {"name", "type", "describe", "depth", "leaf", "output", "params", "flops",
                          "activation_bytes", "total_params", "total_flops"})
    EXPECT_TRUE(j["layers"][0].contains(key)) << key;
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);

  const std::string text = nn::format_summary(s);
  EXPECT_NE(text.find("layer1.0.conv1"), std::string::npos);
  EXPECT_NE(text.find("2x512x4x4"), std::string::npos);
  EXPECT_NE(text.find("11,168,706"), std::string::npos) << text;
  const std::string top = nn::format_summary(s, {.max_depth = 0});
  EXPECT_EQ(top.find("layer1.0"), std::string::npos);
  EXPECT_NE(top.find("layer1 "), std::string::npos);
}

TEST(Summary, HumanUnits) {
  EXPECT_EQ(nn::format_count(0), "0");
  EXPECT_EQ(nn::format_count(999), "999");
  EXPECT_EQ(nn::format_count(1000), "1.00K");
  EXPECT_EQ(nn::format_count(109666), "110K");
  EXPECT_EQ(nn::format_count(999600), "1.00M");
  EXPECT_EQ(nn::format_count(11689512), "11.7M");
  EXPECT_EQ(nn::format_count(3640000000LL), "3.64G");
  EXPECT_EQ(nn::format_bytes(1023), "1023 B");
  EXPECT_EQ(nn::format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(nn::format_bytes(3211264), "3.06 MiB");
  EXPECT_EQ(nn::format_bytes(int64_t(5) << 30), "5.00 GiB");
}

}  // namespace
