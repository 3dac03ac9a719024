// Tests of `cxr infer`, run as a child process (CXR_CLI_PATH is the built binary): a tiny
// model saved in the test runs over a folder of PNGs plus one corrupt file; the CSV rows,
// probabilities (against the same model run in-process), batching, --tta, and exit codes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/transforms.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;

using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;

std::vector<std::vector<std::string>> read_csv(const std::string& path) { return cxr_test::read_csv_rows(path); }

struct Pred {
  std::string predicted, error;
  std::vector<double> probs;
};

// path -> row (header checked).
std::map<std::string, Pred> read_preds(const std::string& path) {
  const auto rows = read_csv(path);
  EXPECT_FALSE(rows.empty());
  std::map<std::string, Pred> out;
  if (rows.empty()) return out;
  EXPECT_EQ(rows[0], (std::vector<std::string>{"path", "predicted", "prob_NORMAL", "prob_PNEUMONIA", "error"}));
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r].size(), 5u);
    if (rows[r].size() != 5) continue;
    Pred p;
    p.predicted = rows[r][1];
    p.error = rows[r][4];
    if (p.error.empty())
      for (int c = 2; c < 4; ++c) p.probs.push_back(std::stod(rows[r][c]));
    out[rows[r][0]] = p;
  }
  return out;
}

class CliInfer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_infer_");
    fs::create_directories(dir_ / "imgs" / "sub");
    // Tiny model: simple_cnn, 1 channel, 32x32, 2 classes.
    nlohmann::json spec = cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32);
    spec["channels"] = {4, 8};
    spec["hidden"] = 8;
    auto model = cxr::nn::build_model(spec, 7);
    cxr::nn::ModelInfo info;
    info.class_names = {"NORMAL", "PNEUMONIA"};
    info.mean = {0.4};
    info.stddev = {0.3};
    model_ = (dir_ / "model.safetensors").string();
    cxr::nn::save_model(model_, *model, info);
    // Images of different sizes and contents.
    const int sizes[][2] = {{32, 32}, {40, 36}, {64, 48}, {20, 28}, {33, 33}};
    for (int i = 0; i < 5; ++i) {
      cxr::data::Image img(1, sizes[i][0], sizes[i][1]);
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x)
          img.at(0, y, x) = static_cast<float>(((x * (i + 3) + y * (7 - i)) % 17) / 16.0);
      const fs::path p = dir_ / "imgs" / (i < 3 ? fs::path("") : fs::path("sub")) / ("img" + std::to_string(i) + ".png");
      cxr::data::write_png(p.string(), img);
      good_.push_back(p.string());
    }
    std::ofstream(dir_ / "imgs" / "corrupt.png") << "this is not a png, really";
    std::ofstream(dir_ / "imgs" / ".hidden.png") << "skipped";
    std::ofstream(dir_ / "imgs" / "notes.txt") << "ignored";
  }
  void TearDown() override {
    cxr_test::remove_test_dir(dir_);
  }
  std::string q(const fs::path& s) const { return "'" + s.string() + "'"; }

  // The same model in-process: decode + run_pipeline + forward + softmax.
  std::vector<double> reference(const std::string& path, bool flip = false) const {
    auto lm = cxr::nn::load_model(model_);
    lm.model->eval();
    cxr::data::Pipeline p;
    p.channels = 1;
    p.height = p.width = 32;
    p.mean = {0.4f};
    p.stddev = {0.3f};
    cxr::data::DecodeOptions o;
    o.channels = 1;
    const auto img = cxr::data::decode_image(path, o);
    std::vector<float> buf(32 * 32);
    cxr::data::run_pipeline(img, p, false, cxr::data::SampleRng{}, buf.data());
    cxr::nn::NoGradGuard ng;
    auto probs = cxr::nn::softmax(lm.model->forward(cxr::Tensor::from_vector(buf, {1, 1, 32, 32})), 1).to_vector();
    if (flip) {
      for (int y = 0; y < 32; ++y) std::reverse(buf.begin() + y * 32, buf.begin() + (y + 1) * 32);
      auto p2 = cxr::nn::softmax(lm.model->forward(cxr::Tensor::from_vector(buf, {1, 1, 32, 32})), 1).to_vector();
      for (size_t i = 0; i < probs.size(); ++i) probs[i] = 0.5 * (probs[i] + p2[i]);
    }
    return probs;
  }

  fs::path dir_;
  std::string model_;
  std::vector<std::string> good_;
};

TEST_F(CliInfer, FolderWithCorruptImage) {
  const fs::path out = dir_ / "pred.csv";
  const Result r2 = run_cxr("infer " + q(model_) + " " + q(dir_ / "imgs") + " --out " + q(out) + " --threads 2");
  EXPECT_EQ(r2.code, 1) << r2.output;
  EXPECT_TRUE(has(r2.output, "6 images, 1 failed")) << r2.output;
  ASSERT_TRUE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
  const auto preds = read_preds(out.string());
  EXPECT_EQ(preds.size(), 6u);
  const std::string corrupt = (dir_ / "imgs" / "corrupt.png").string();
  ASSERT_TRUE(preds.count(corrupt));
  EXPECT_FALSE(preds.at(corrupt).error.empty());
  EXPECT_TRUE(preds.at(corrupt).predicted.empty());
  for (const auto& g : good_) {
    ASSERT_TRUE(preds.count(g)) << g;
    const Pred& p = preds.at(g);
    EXPECT_TRUE(p.error.empty()) << p.error;
    ASSERT_EQ(p.probs.size(), 2u);
    EXPECT_NEAR(p.probs[0] + p.probs[1], 1.0, 1e-5);
    const auto ref = reference(g);
    EXPECT_NEAR(p.probs[0], ref[0], 1e-5) << g;
    EXPECT_NEAR(p.probs[1], ref[1], 1e-5) << g;
    EXPECT_EQ(p.predicted, p.probs[1] > p.probs[0] ? "PNEUMONIA" : "NORMAL");
  }
}

TEST_F(CliInfer, BatchSizeDoesNotChangeResults) {
  const fs::path a = dir_ / "a.csv", b = dir_ / "b.csv";
  std::string files;
  for (const auto& g : good_) files += " " + q(g);
  const Result ra = run_cxr("infer " + q(model_) + files + " --out " + q(a) + " --batch 2");
  const Result rb = run_cxr("infer " + q(model_) + files + " --out " + q(b) + " --batch 32");
  EXPECT_EQ(ra.code, 0) << ra.output;
  EXPECT_EQ(rb.code, 0) << rb.output;
  EXPECT_TRUE(has(ra.output, "5 images, 0 failed")) << ra.output;
  const auto pa = read_preds(a.string()), pb = read_preds(b.string());
  ASSERT_EQ(pa.size(), 5u);
  ASSERT_EQ(pb.size(), 5u);
  for (const auto& g : good_) {
    ASSERT_EQ(pa.at(g).probs.size(), 2u);
    for (int c = 0; c < 2; ++c) EXPECT_NEAR(pa.at(g).probs[c], pb.at(g).probs[c], 1e-6);
  }
}

TEST_F(CliInfer, ListTtaAndThreshold) {
  const fs::path list = dir_ / "list.txt", out = dir_ / "tta.csv", th = dir_ / "th.csv";
  {
    std::ofstream l(list);
    for (const auto& g : good_) l << g << "\n";
  }
  const Result r = run_cxr("infer " + q(model_) + " --list " + q(list) + " --out " + q(out) + " --tta flip");
  EXPECT_EQ(r.code, 0) << r.output;
  const auto preds = read_preds(out.string());
  ASSERT_EQ(preds.size(), 5u);
  for (const auto& g : good_) {
    const auto ref = reference(g, true);
    ASSERT_EQ(preds.at(g).probs.size(), 2u);
    EXPECT_NEAR(preds.at(g).probs[0] + preds.at(g).probs[1], 1.0, 1e-5);
    EXPECT_NEAR(preds.at(g).probs[1], ref[1], 1e-5);
  }
  // Threshold 0: everything is PNEUMONIA.
  const Result r2 = run_cxr("infer " + q(model_) + " --list " + q(list) + " --out " + q(th) + " --threshold 0");
  EXPECT_EQ(r2.code, 0) << r2.output;
  for (const auto& [path, p] : read_preds(th.string())) EXPECT_EQ(p.predicted, "PNEUMONIA") << path;
}

TEST_F(CliInfer, Errors) {
  const std::string out = q(dir_ / "e.csv");
  const Result missing = run_cxr("infer " + q(dir_ / "nope.safetensors") + " " + q(good_[0]) + " --out " + out);
  EXPECT_EQ(missing.code, 1) << missing.output;
  EXPECT_TRUE(has(missing.output, "nope.safetensors")) << missing.output;
  std::ofstream(dir_ / "bad.safetensors") << "garbage";
  const Result bad = run_cxr("infer " + q(dir_ / "bad.safetensors") + " " + q(good_[0]) + " --out " + out);
  EXPECT_EQ(bad.code, 1) << bad.output;
  const Result reg = run_cxr("infer registry:chest/v1 " + q(good_[0]) + " --out " + out);
  EXPECT_EQ(reg.code, 2) << reg.output;
  EXPECT_TRUE(has(reg.output, "invalid model name 'chest/v1'")) << reg.output;
  const Result noreg = run_cxr("infer registry:chest@production " + q(good_[0]) + " --registry " +
                               q(dir_ / "no_registry") + " --out " + out);
  EXPECT_EQ(noreg.code, 1) << noreg.output;
  EXPECT_TRUE(has(noreg.output, "no model registry at")) << noreg.output;
  const Result none = run_cxr("infer " + q(model_) + " --out " + out);
  EXPECT_EQ(none.code, 2) << none.output;
  const Result noout = run_cxr("infer " + q(model_) + " " + q(good_[0]));
  EXPECT_EQ(noout.code, 2) << noout.output;
  const Result tta = run_cxr("infer " + q(model_) + " " + q(good_[0]) + " --out " + out + " --tta rotate");
  EXPECT_EQ(tta.code, 2) << tta.output;
}

}  // namespace
