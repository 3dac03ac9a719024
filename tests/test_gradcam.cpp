// Grad-CAM (nn/gradcam): a hand-built model whose answer is known puts the peak on the
// region that drives each class; the map matches a computation through retain_grad();
// target selection and errors; parameter gradients, requires_grad, grad mode and
// training flags are left as they were; a batch gives the same maps as single images;
// default and nested layers of simple_cnn, resnet18 and mobilenet_v2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "expect_error.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/gradcam.h"
#include "nn/zoo.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

using nlohmann::json;

void set_param(nn::Model& m, const std::string& name, const std::vector<float>& v) {
  for (auto& [n, t] : m.named_parameters())
    if (n == name) {
      Tensor d = t;
      d.copy_(Tensor::from_vector(v, t.shape()));
      return;
    }
  FAIL() << "no parameter " << name;
}

// Two detectors on a 16x16 image: channel 0 = ReLU(x - 0.5) fires on bright pixels,
// channel 1 = ReLU(0.5 - x) on dark ones; after a 2x2 max pool, logit 0 = mean of
// channel 1 and logit 1 = mean of channel 0.
std::shared_ptr<nn::Model> detector_model() {
  json spec = {{"in_channels", 1}, {"num_classes", 2}, {"input_size", {16, 16}},
               {"layers",
                {{{"type", "conv"}, {"out", 2}, {"kernel", 1}},
                 {{"type", "relu"}},
                 {{"type", "maxpool"}, {"kernel", 2}},
                 {{"type", "global_avgpool"}},
                 {{"type", "flatten"}},
                 {{"type", "linear"}, {"out", "num_classes"}}}}};
  auto m = nn::build_model(spec, 3);
  set_param(*m, "0.weight", {1.0f, -1.0f});
  set_param(*m, "0.bias", {-0.5f, 0.5f});
  set_param(*m, "5.weight", {0.0f, 1.0f, 1.0f, 0.0f});
  set_param(*m, "5.bias", {0.0f, 0.0f});
  return m;
}

// Background 0.5, a bright 4x4 block at rows 8..11, cols 2..5 and a dark 2x2 block at
// rows 2..3, cols 12..13: class 1 (bright) wins.
Tensor detector_image() {
  std::vector<float> v(256, 0.5f);
  for (int y = 8; y < 12; ++y)
    for (int x = 2; x < 6; ++x) v[y * 16 + x] = 1.0f;
  for (int y = 2; y < 4; ++y)
    for (int x = 12; x < 14; ++x) v[y * 16 + x] = 0.0f;
  return Tensor::from_vector(v, {1, 1, 16, 16});
}

json small_cnn_spec() {
  json spec = nn::arch_spec("simple_cnn", 1, 3, 32, 32);
  spec["channels"] = {4, 8};
  spec["hidden"] = 8;
  return spec;
}

Tensor random_images(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  Generator gen(seed);
  return rand_uniform({n, c, h, w}, gen, -1.0, 1.0);
}

TEST(GradCam, PeakLandsOnTheRegionDrivingEachClass) {
  auto m = detector_model();
  EXPECT_EQ(nn::default_gradcam_layer(*m), "2");
  const Tensor x = detector_image();
  const auto pred = nn::grad_cam(*m, x);
  ASSERT_EQ(pred.size(), 1u);
  const auto& r = pred[0];
  EXPECT_EQ(r.target, 1);  // 16 bright pixels outweigh 4 dark ones
  ASSERT_EQ(r.probabilities.size(), 2u);
  EXPECT_GT(r.probabilities[1], r.probabilities[0]);
  EXPECT_NEAR(r.probabilities[0] + r.probabilities[1], 1.0, 1e-6);
  EXPECT_EQ(r.map_height, 8);
  EXPECT_EQ(r.map_width, 8);
  EXPECT_EQ(r.height, 16);
  EXPECT_EQ(r.width, 16);
  ASSERT_EQ(r.map.size(), 64u);
  ASSERT_EQ(r.upsampled.size(), 256u);
  // The map is channel 0 after pooling, normalised: 1 on the bright block's cells, 0 elsewhere.
  for (int y = 0; y < 8; ++y)
    for (int xx = 0; xx < 8; ++xx)
      EXPECT_FLOAT_EQ(r.map[y * 8 + xx], (y >= 4 && y < 6 && xx >= 1 && xx < 3) ? 1.0f : 0.0f) << y << "," << xx;
  EXPECT_GE(r.peak_y, 8);
  EXPECT_LT(r.peak_y, 12);
  EXPECT_GE(r.peak_x, 2);
  EXPECT_LT(r.peak_x, 6);
  EXPECT_FLOAT_EQ(*std::max_element(r.upsampled.begin(), r.upsampled.end()), r.upsampled[r.peak_y * 16 + r.peak_x]);
  for (float v : r.upsampled) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }

  // Asking for class 0 moves the peak to the dark block.
  const auto dark = nn::grad_cam(*m, x, {0});
  EXPECT_EQ(dark[0].target, 0);
  EXPECT_EQ(dark[0].probabilities, r.probabilities);
  EXPECT_GE(dark[0].peak_y, 2);
  EXPECT_LT(dark[0].peak_y, 4);
  EXPECT_GE(dark[0].peak_x, 12);
  EXPECT_LT(dark[0].peak_x, 14);
}

TEST(GradCam, MapWithNoPositiveEvidenceIsZero) {
  auto m = detector_model();
  set_param(*m, "5.weight", {0.0f, -1.0f, 1.0f, 0.0f});  // class 0 now counts against bright pixels
  std::vector<float> v(256, 0.5f);
  for (int i = 0; i < 16; ++i) v[i] = 1.0f;
  const auto r = nn::grad_cam(*m, Tensor::from_vector(v, {1, 1, 16, 16}), {0});
  for (float f : r[0].map) EXPECT_EQ(f, 0.0f);
  for (float f : r[0].upsampled) EXPECT_EQ(f, 0.0f);
  EXPECT_EQ(r[0].peak_x, 0);
  EXPECT_EQ(r[0].peak_y, 0);
}

TEST(GradCam, MatchesRetainGradComputation) {
  auto m = nn::build_model(small_cnn_spec(), 5);
  m->eval();
  const Tensor x = random_images(1, 1, 32, 32, 11);
  const auto r = nn::grad_cam(*m, x, {2}, "6");  // the second stage's ReLU, 16x16
  ASSERT_EQ(r[0].map_height, 16);

  // Reference: the same model, the feature map kept with retain_grad().
  auto ref = nn::build_model(small_cnn_spec(), 5);
  ref->eval();
  Tensor feat;
  Tensor h = x;
  for (auto& [name, child] : ref->children()) {
    h = child->forward(h);
    if (name == "6") {
      h.retain_grad();
      feat = h;
    }
  }
  nn::backward(nn::sum(nn::mul(h, Tensor::from_vector(std::vector<float>{0, 0, 1}, {1, 3}))));
  const auto a = feat.to_vector(), g = feat.grad().to_vector();
  const int64_t k = feat.size(1), hw = 16 * 16;
  std::vector<double> cam(hw, 0.0);
  for (int64_t c = 0; c < k; ++c) {
    double alpha = 0;
    for (int64_t p = 0; p < hw; ++p) alpha += g[c * hw + p] / hw;
    for (int64_t p = 0; p < hw; ++p) cam[p] += alpha * a[c * hw + p];
  }
  double mx = 0;
  for (double& v : cam) mx = std::max(mx, v = std::max(v, 0.0));
  ASSERT_GT(mx, 0);
  for (int64_t p = 0; p < hw; ++p) EXPECT_NEAR(r[0].map[p], cam[p] / mx, 1e-5) << p;
}

TEST(GradCam, LeavesParameterGradientsAndModesAlone) {
  auto m = nn::build_model(small_cnn_spec(), 5);
  const auto params = m->named_parameters();
  // Half the parameters carry a gradient already, the others none.
  for (size_t i = 0; i < params.size(); i += 2) {
    Tensor p = params[i].second;
    p.set_grad(Tensor::full(p.shape(), 0.25 + static_cast<double>(i)));
  }
  m->train();
  nn::set_grad_enabled(false);
  const auto r = nn::grad_cam(*m, random_images(2, 1, 32, 32, 3));
  EXPECT_FALSE(nn::grad_enabled());
  nn::set_grad_enabled(true);
  EXPECT_EQ(r.size(), 2u);
  EXPECT_FALSE(m->is_training());  // grad_cam runs the model in eval mode
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i].second;
    EXPECT_TRUE(p.requires_grad()) << params[i].first;
    if (i % 2 == 0) {
      ASSERT_TRUE(p.grad().defined()) << params[i].first;
      for (double v : p.grad().to_vector()) ASSERT_EQ(v, 0.25 + static_cast<double>(i)) << params[i].first;
    } else {
      EXPECT_FALSE(p.grad().defined()) << params[i].first;
    }
  }
  // Listing layers restores each module's own training flag.
  m->train();
  m->children()[1].second->train(false);
  EXPECT_EQ(nn::default_gradcam_layer(*m), "7");
  EXPECT_TRUE(m->is_training());
  EXPECT_FALSE(m->children()[1].second->is_training());
  EXPECT_TRUE(m->children()[0].second->is_training());
}

TEST(GradCam, ParametersRestoredAfterAnError) {
  auto m = nn::build_model(small_cnn_spec(), 5);
  expect_error([&] { nn::grad_cam(*m, random_images(1, 1, 32, 32, 1), {}, "10"); }, {"'10'", "not a 4-D"});
  for (const auto& [n, p] : m->named_parameters()) EXPECT_TRUE(p.requires_grad()) << n;
  EXPECT_TRUE(nn::grad_enabled());
}

TEST(GradCam, TargetsAndErrors) {
  auto m = nn::build_model(small_cnn_spec(), 5);
  const Tensor x = random_images(3, 1, 32, 32, 2);
  const auto pred = nn::grad_cam(*m, x);
  const auto mixed = nn::grad_cam(*m, x, {0, -1, 2});
  ASSERT_EQ(mixed.size(), 3u);
  EXPECT_EQ(mixed[0].target, 0);
  EXPECT_EQ(mixed[1].target, pred[1].target);
  EXPECT_EQ(mixed[2].target, 2);
  for (const auto& r : pred) {
    const auto best = std::max_element(r.probabilities.begin(), r.probabilities.end()) - r.probabilities.begin();
    EXPECT_EQ(r.target, best);
  }
  expect_error([&] { nn::grad_cam(*m, x, {0, 3, 1}); }, {"target class 3", "3 classes"});
  expect_error([&] { nn::grad_cam(*m, x, {0, -2, 1}); }, {"target class -2"});
  expect_error([&] { nn::grad_cam(*m, x, {0, 1}); }, {"2 targets", "batch of 3"});
  expect_error([&] { nn::grad_cam(*m, x, {}, "nope"); }, {"unknown layer 'nope'", "0, 1, 2, 3, 4, 5, 6, 7, 8"});
  expect_error([&] { nn::grad_cam(*m, x, {}, "11"); }, {"'11'", "not a 4-D"});
  expect_error([&] { nn::grad_cam(*m, random_images(1, 3, 32, 32, 1)); }, {"3 channels", "expects 1"});
  expect_error([&] { nn::grad_cam(*m, Tensor::zeros({32, 32})); }, {"(N, C, H, W)"});
}

TEST(GradCam, BatchMatchesSingleImages) {
  auto m = nn::build_model(small_cnn_spec(), 9);
  const int64_t n = 4;
  const Tensor x = random_images(n, 1, 32, 32, 4);
  const auto batch = nn::grad_cam(*m, x, {1, -1, 0, -1});
  const std::vector<int64_t> targets = {1, -1, 0, -1};
  const auto xs = x.to_vector();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> one(xs.begin() + i * 1024, xs.begin() + (i + 1) * 1024);
    const auto single = nn::grad_cam(*m, Tensor::from_vector(one, {1, 1, 32, 32}).to(DType::f32), {targets[i]});
    EXPECT_EQ(single[0].target, batch[i].target);
    ASSERT_EQ(single[0].map.size(), batch[i].map.size());
    for (size_t p = 0; p < single[0].map.size(); ++p) EXPECT_NEAR(single[0].map[p], batch[i].map[p], 1e-5);
    for (size_t c = 0; c < single[0].probabilities.size(); ++c)
      EXPECT_NEAR(single[0].probabilities[c], batch[i].probabilities[c], 1e-6);
    EXPECT_EQ(single[0].peak_x, batch[i].peak_x);
    EXPECT_EQ(single[0].peak_y, batch[i].peak_y);
  }
}

TEST(GradCam, DefaultLayersOfTheZoo) {
  {
    auto m = nn::build_model(nn::arch_spec("simple_cnn", 1, 2, 64, 64), 1);
    EXPECT_EQ(nn::default_gradcam_layer(*m), "11");  // the last stage's max pool, 8x8
    const auto r = nn::grad_cam(*m, random_images(1, 1, 64, 64, 1));
    EXPECT_EQ(r[0].map_height, 8);
    EXPECT_EQ(r[0].upsampled.size(), 64u * 64u);
  }
  {
    auto m = nn::build_model(nn::arch_spec("resnet18", 1, 2, 32, 32), 1);
    EXPECT_EQ(nn::default_gradcam_layer(*m), "layer4");
    const auto layers = nn::gradcam_layers(*m);
    EXPECT_NE(std::find(layers.begin(), layers.end(), "layer3.1"), layers.end());
    EXPECT_EQ(std::find(layers.begin(), layers.end(), "layer3.1.conv1"), layers.end());
    EXPECT_EQ(std::find(layers.begin(), layers.end(), "fc"), layers.end());
    const Tensor x = random_images(2, 1, 32, 32, 5);
    const auto r = nn::grad_cam(*m, x);
    EXPECT_EQ(r[0].map_height, 4);  // small stem: 32 / 8
    const auto nested = nn::grad_cam(*m, x, {}, "layer3.1");
    EXPECT_EQ(nested[1].map_height, 8);
    EXPECT_EQ(nested[1].target, r[1].target);
    expect_error([&] { nn::grad_cam(*m, x, {}, "layer3.1.conv1"); }, {"inside the BasicBlock 'layer3.1'"});
  }
  {
    auto m = nn::build_model(nn::arch_spec("mobilenet_v2", 3, 4, 64, 64), 1);
    EXPECT_EQ(nn::default_gradcam_layer(*m), "features");
    const auto r = nn::grad_cam(*m, random_images(1, 3, 64, 64, 6), {3});
    EXPECT_EQ(r[0].target, 3);
    EXPECT_EQ(r[0].map_height, 2);
    EXPECT_EQ(nn::grad_cam(*m, random_images(1, 3, 64, 64, 6), {}, "features.3")[0].map_height, 16);
  }
  {
    // A layer list whose pooling sits inside a nested sequential.
    json spec = {{"in_channels", 1}, {"num_classes", 2}, {"input_size", {8, 8}},
                 {"layers",
                  {{{"name", "body"},
                    {"type", "sequential"},
                    {"layers", {{{"type", "conv"}, {"out", 2}}, {{"type", "relu"}}, {{"type", "global_avgpool"}}}}},
                   {{"type", "flatten"}},
                   {{"type", "linear"}, {"out", "num_classes"}}}}};
    auto m = nn::build_model(spec, 1);
    EXPECT_EQ(nn::default_gradcam_layer(*m), "body.1");
    json flat = {{"in_channels", 1}, {"num_classes", 4}, {"input_size", {2, 2}},
                 {"layers", {{{"type", "flatten"}}}}};
    auto f = nn::build_model(flat, 1);
    expect_error([&] { nn::default_gradcam_layer(*f); }, {"no layer with a 4-D output"});
  }
}

TEST(GradCam, DoublePrecisionModel) {
  auto m = detector_model();
  m->to(DType::f64);
  const auto r = nn::grad_cam(*m, detector_image().to(DType::f64));
  EXPECT_EQ(r[0].target, 1);
  EXPECT_GE(r[0].peak_y, 8);
  EXPECT_LT(r[0].peak_y, 12);
}

}  // namespace
}  // namespace cxr
