// The public C++ API (cxr/cxr.hpp) and the C API (cxr/cxr.h): loading, prediction
// equal to the network's own forward pass, batches, 8 threads against 1, Grad-CAM, and
// every C function with its error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cxr/cxr.h"
#include "cxr/cxr.hpp"
#include "data/image.h"
#include "data/synth.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "registry/registry.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using cxr_test::TempDir;

namespace {

// A saved simple_cnn (1x32x32, NORMAL/PNEUMONIA) and PNGs of 40 and 48 px.
struct Fixture {
  explicit Fixture(int n_images = 6);
  TempDir dir;
  std::string model_path;
  std::vector<std::string> images;
};

Fixture::Fixture(int n_images) {
  Fixture& f = *this;
  auto net = cxr::nn::build_model(cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32), 3);
  cxr::nn::ModelInfo info;
  info.class_names = {"NORMAL", "PNEUMONIA"};
  info.mean = {0.5};
  info.stddev = {0.25};
  f.model_path = (f.dir.path() / "m.safetensors").string();
  cxr::nn::save_model(f.model_path, *net, info);
  for (int i = 0; i < n_images; ++i) {
    const auto s = cxr::data::synth_xray(i % 2 ? 48 : 40, 5, i, i % 2 == 1);
    const std::string p = (f.dir.path() / ("img" + std::to_string(i) + ".png")).string();
    cxr::data::write_png(p, s.image);
    f.images.push_back(p);
  }
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(CppApi, PredictEqualsTheNetworksForwardPass) {
  Fixture f;
  const cxr::Model m = cxr::Model::load(f.model_path, {.device = "cpu"});
  EXPECT_EQ(m.class_names(), (std::vector<std::string>{"NORMAL", "PNEUMONIA"}));
  EXPECT_EQ(m.channels(), 1);
  EXPECT_EQ(m.height(), 32);
  EXPECT_EQ(m.width(), 32);
  for (const auto& path : f.images) {
    const cxr::Prediction p = m.predict(path);
    ASSERT_EQ(p.probabilities.size(), 2u);
    EXPECT_NEAR(p.probabilities[0] + p.probabilities[1], 1.0, 1e-6);
    EXPECT_EQ(p.class_name, m.class_names()[p.label]);
    // The same numbers by hand: decode, preprocess, forward, softmax.
    const auto img = cxr::data::decode_image(path, {.channels = 1});
    const auto x = cxr::preprocess(img, 1, 32, 32, {0.5}, {0.25});
    cxr::nn::NoGradGuard ng;
    const auto want = cxr::nn::softmax(m.network().forward(cxr::Tensor::from_vector(x, {1, 1, 32, 32})), 1)
                          .to(cxr::DType::f64)
                          .to_vector();
    EXPECT_NEAR(p.probabilities[0], want[0], 1e-6);
    EXPECT_NEAR(p.probabilities[1], want[1], 1e-6);
  }
}

TEST(CppApi, BatchEqualsOneAtATime) {
  Fixture f;
  const cxr::Model m = cxr::Model::load(f.model_path);
  std::vector<cxr::data::Image> imgs;
  for (const auto& p : f.images) imgs.push_back(cxr::data::decode_image(p));
  const auto batch = m.predict(imgs);
  ASSERT_EQ(batch.size(), imgs.size());
  for (size_t i = 0; i < imgs.size(); ++i) {
    const auto one = m.predict(imgs[i]);
    EXPECT_EQ(one.label, batch[i].label);
    for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(one.probabilities[k], batch[i].probabilities[k], 1e-6);
  }
  EXPECT_TRUE(m.predict(std::vector<cxr::data::Image>{}).empty());
}

// One model, 8 threads predicting (and one explaining) at once: the same bits as one thread.
TEST(CppApi, EightThreadsGiveTheSameResultsAsOne) {
  Fixture f(8);
  const cxr::Model m = cxr::Model::load(f.model_path);
  std::vector<std::vector<double>> want;
  for (const auto& p : f.images) want.push_back(m.predict(p).probabilities);
  const cxr::Explanation e0 = m.explain(f.images[1]);

  std::vector<std::vector<std::vector<double>>> got(8);
  std::vector<std::string> errors(9);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      try {
        for (int round = 0; round < 3; ++round)
          for (size_t i = 0; i < f.images.size(); ++i) {
            const size_t j = (i + t) % f.images.size();
            const auto p = m.predict(f.images[j]).probabilities;
            if (p != want[j]) errors[t] = "thread " + std::to_string(t) + " image " + std::to_string(j) + " differs";
          }
      } catch (const std::exception& ex) {
        errors[t] = ex.what();
      }
    });
  threads.emplace_back([&] {
    try {
      for (int round = 0; round < 3; ++round)
        if (m.explain(f.images[1]).map != e0.map) errors[8] = "explain differs";
    } catch (const std::exception& ex) {
      errors[8] = ex.what();
    }
  });
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(CppApi, ExplainGivesAMapAndAnOverlay) {
  Fixture f;
  const cxr::Model m = cxr::Model::load(f.model_path);
  const cxr::Explanation e = m.explain(f.images[1], 1);
  EXPECT_EQ(e.target, 1);
  EXPECT_EQ(e.map_height, 32);
  EXPECT_EQ(e.map_width, 32);
  ASSERT_EQ(e.map.size(), 32u * 32u);
  for (float v : e.map) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
  EXPECT_EQ(e.overlay.channels, 3);
  EXPECT_EQ(e.overlay.height, 48);  // the image's own size
  EXPECT_EQ(e.overlay.width, 48);
  EXPECT_LT(e.peak_x, 48);
  EXPECT_LT(e.peak_y, 48);
  EXPECT_THROW(m.explain(f.images[1], 5), cxr::ValueError);
  EXPECT_THROW(m.explain(f.images[1], -1, "no.such.layer"), cxr::ValueError);
}

TEST(CppApi, ErrorsAreTyped) {
  Fixture f(1);
  EXPECT_THROW(cxr::Model::load((f.dir.path() / "missing.safetensors").string()), cxr::FileError);
  const std::string bad = (f.dir.path() / "bad.safetensors").string();
  std::ofstream(bad) << "not a model";
  EXPECT_THROW(cxr::Model::load(bad), cxr::FileError);
  EXPECT_THROW(cxr::Model::load(f.model_path, {.device = "cuda:7"}), cxr::ValueError);
  const cxr::Model m = cxr::Model::load(f.model_path);
  EXPECT_THROW(m.predict((f.dir.path() / "none.png").string()), cxr::FileError);
  EXPECT_THROW(m.predict(cxr::data::Image{}), cxr::ValueError);
}

// A registry reference loads the registered version (hash checked) with the same results.
TEST(CppApi, LoadsRegistryReferences) {
  Fixture f(1);
  const std::string reg = (f.dir.path() / "registry").string();
  const auto v = cxr::registry::register_model_file(reg, "chest", f.model_path);
  const cxr::Model direct = cxr::Model::load(f.model_path);
  const cxr::Model a = cxr::Model::load("registry:chest@" + v.version, {.registry = reg});
  const cxr::Model b = cxr::Model::load("registry:chest", {.registry = reg});  // latest
  EXPECT_EQ(a.predict(f.images[0]).probabilities, direct.predict(f.images[0]).probabilities);
  EXPECT_EQ(b.predict(f.images[0]).probabilities, direct.predict(f.images[0]).probabilities);
  EXPECT_THROW(cxr::Model::load("registry:chest@9.9.9", {.registry = reg}), cxr::Error);
  EXPECT_THROW(cxr::Model::load("registry:chest@production", {.registry = reg}), cxr::Error);  // none promoted
  EXPECT_THROW(cxr::Model::load("registry:chest", {.registry = (f.dir.path() / "none").string()}), cxr::FileError);
  cxr_model* m = nullptr;
  ::setenv("CXR_REGISTRY", reg.c_str(), 1);
  EXPECT_EQ(cxr_model_load("registry:chest", "cpu", &m), CXR_OK) << cxr_last_error();
  ::unsetenv("CXR_REGISTRY");
  EXPECT_EQ(cxr_model_num_classes(m), 2);
  cxr_model_free(m);
}

// ------------------------------------------------------------------ C API
TEST(CApi, EveryFunctionAndItsErrors) {
  Fixture f(2);
  EXPECT_STREQ(cxr_version(), CXR_VERSION_STRING);
  EXPECT_EQ(cxr_set_num_threads(0), CXR_OK);

  cxr_model* m = reinterpret_cast<cxr_model*>(0x1);
  EXPECT_EQ(cxr_model_load(nullptr, nullptr, &m), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(cxr_last_error()), "");
  const std::string missing = (f.dir.path() / "missing.safetensors").string();
  EXPECT_EQ(cxr_model_load(missing.c_str(), "cpu", &m), CXR_ERROR_FILE);
  EXPECT_NE(std::string(cxr_last_error()).find("missing.safetensors"), std::string::npos) << cxr_last_error();
  const std::string corrupt = (f.dir.path() / "corrupt.safetensors").string();
  {
    std::string bytes = slurp(f.model_path);
    bytes.resize(bytes.size() / 2);  // truncated
    std::ofstream(corrupt, std::ios::binary) << bytes;
  }
  EXPECT_EQ(cxr_model_load(corrupt.c_str(), "cpu", &m), CXR_ERROR_FILE);
  EXPECT_EQ(cxr_model_load(f.model_path.c_str(), "cuda:9", &m), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_model_load(f.model_path.c_str(), "tpu", &m), CXR_ERROR_INVALID_ARGUMENT);

  ASSERT_EQ(cxr_model_load(f.model_path.c_str(), nullptr, &m), CXR_OK) << cxr_last_error();
  EXPECT_STREQ(cxr_last_error(), "");
  EXPECT_EQ(cxr_model_num_classes(m), 2);
  EXPECT_EQ(cxr_model_num_classes(nullptr), 0);
  EXPECT_STREQ(cxr_model_class_name(m, 1), "PNEUMONIA");
  EXPECT_EQ(cxr_model_class_name(m, 2), nullptr);
  EXPECT_EQ(cxr_model_class_name(m, -1), nullptr);
  int c = 0, h = 0, w = 0;
  ASSERT_EQ(cxr_model_input_shape(m, &c, &h, &w), CXR_OK);
  EXPECT_EQ(c, 1);
  EXPECT_EQ(h, 32);
  EXPECT_EQ(w, 32);
  EXPECT_EQ(cxr_model_input_shape(nullptr, &c, &h, &w), CXR_ERROR_INVALID_ARGUMENT);

  // Predictions agree across the four input forms.
  const cxr::Prediction want = cxr::Model::load(f.model_path).predict(f.images[0]);
  double probs[2] = {0, 0};
  int label = -1;
  ASSERT_EQ(cxr_predict_file(m, f.images[0].c_str(), probs, 2, &label), CXR_OK) << cxr_last_error();
  EXPECT_EQ(label, want.label);
  EXPECT_NEAR(probs[0], want.probabilities[0], 1e-9);
  const std::string png = slurp(f.images[0]);
  double p2[3] = {0, 0, 0};
  ASSERT_EQ(cxr_predict_encoded(m, png.data(), png.size(), p2, 3, nullptr), CXR_OK) << cxr_last_error();
  EXPECT_NEAR(p2[0], probs[0], 1e-9);
  const auto img = cxr::data::decode_image(f.images[0]);
  ASSERT_EQ(cxr_predict_pixels(m, img.data.data(), 1, img.height, img.width, p2, 2, &label), CXR_OK);
  EXPECT_NEAR(p2[0], probs[0], 1e-9);
  std::vector<uint8_t> rgba(static_cast<size_t>(img.height) * (img.width * 4 + 3));
  const size_t stride = static_cast<size_t>(img.width) * 4 + 3;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int k = 0; k < 4; ++k)
        rgba[y * stride + x * 4 + k] =
            k == 3 ? 255 : static_cast<uint8_t>(std::lround(img.data[static_cast<size_t>(y) * img.width + x] * 255));
  ASSERT_EQ(cxr_predict_u8(m, rgba.data(), 4, img.height, img.width, stride, p2, 2, &label), CXR_OK) << cxr_last_error();
  EXPECT_NEAR(p2[0], probs[0], 1e-3);  // 8-bit and RGB->gray conversion round the input

  // Error paths.
  EXPECT_EQ(cxr_predict_file(m, f.images[0].c_str(), probs, 1, &label), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cxr_last_error()).find("2 classes"), std::string::npos) << cxr_last_error();
  EXPECT_EQ(cxr_predict_file(m, (f.dir.path() / "nope.png").string().c_str(), probs, 2, &label), CXR_ERROR_FILE);
  EXPECT_EQ(cxr_predict_file(nullptr, f.images[0].c_str(), probs, 2, &label), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_predict_file(m, nullptr, probs, 2, &label), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_predict_encoded(m, "junk", 4, probs, 2, &label), CXR_ERROR_FILE);
  EXPECT_EQ(cxr_predict_encoded(m, nullptr, 0, probs, 2, &label), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_predict_pixels(m, img.data.data(), 2, img.height, img.width, probs, 2, &label),
            CXR_ERROR_INVALID_ARGUMENT);  // wrong channel count
  EXPECT_EQ(cxr_predict_pixels(m, img.data.data(), 1, 0, img.width, probs, 2, &label), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_predict_u8(m, rgba.data(), 4, img.height, img.width, 8, probs, 2, &label), CXR_ERROR_INVALID_ARGUMENT);

  // Grad-CAM.
  const std::string overlay = (f.dir.path() / "cam.png").string();
  std::vector<float> map(32 * 32, -1.0f);
  int target = -1;
  ASSERT_EQ(cxr_gradcam_file(m, f.images[1].c_str(), -1, overlay.c_str(), map.data(), map.size(), &target), CXR_OK)
      << cxr_last_error();
  EXPECT_TRUE(target == 0 || target == 1);
  for (float v : map) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
  const auto ov = cxr::data::decode_image(overlay);
  EXPECT_EQ(ov.channels, 3);
  EXPECT_EQ(ov.height, 48);
  EXPECT_EQ(cxr_gradcam_file(m, f.images[1].c_str(), 2, nullptr, nullptr, 0, nullptr), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_gradcam_file(m, f.images[1].c_str(), 0, nullptr, map.data(), 10, nullptr), CXR_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cxr_gradcam_file(m, (f.dir.path() / "nope.png").string().c_str(), 0, nullptr, nullptr, 0, nullptr),
            CXR_ERROR_FILE);

  cxr_model_free(m);
  cxr_model_free(nullptr);
}

// Error messages are per thread.
TEST(CApi, LastErrorIsPerThread) {
  cxr_model* m = nullptr;
  EXPECT_EQ(cxr_model_load("/nonexistent/a.safetensors", "cpu", &m), CXR_ERROR_FILE);
  std::string other = "unset";
  std::thread([&] { other = cxr_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(cxr_last_error()), "");
}
