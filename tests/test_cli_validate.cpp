// Tests of `cxr validate`, run as a child process (CXR_CLI_PATH is the built binary):
// zoo names, spec files, model files, --json, and the exit codes of its errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "nn/serialize.h"
#include "nn/zoo.h"

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;

class CliValidate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_validate_");
  }
  void TearDown() override {
    cxr_test::remove_test_dir(dir_);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(CliValidate, ListedInHelp) {
  const Result r = run_cxr("--help");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "validate")) << r.output;
  const Result h = run_cxr("validate --help");
  EXPECT_EQ(h.code, 0) << h.output;
  EXPECT_TRUE(has(h.output, "--input")) << h.output;
}

TEST_F(CliValidate, ZooNameWithInput) {
  const Result r = run_cxr("validate simple_cnn --input 1x28x28");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "simple_cnn (zoo architecture)")) << r.output;
  EXPECT_TRUE(has(r.output, "Conv2d")) << r.output;
  EXPECT_TRUE(has(r.output, "1x32x28x28")) << r.output;
  EXPECT_TRUE(has(r.output, "109,666")) << r.output;
  EXPECT_TRUE(has(r.output, "15.2M per sample")) << r.output;
}

TEST_F(CliValidate, ZooNameDefaultsTo224) {
  const Result r = run_cxr("validate resnet18");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "input 1x224x224, batch 1")) << r.output;
  EXPECT_TRUE(has(r.output, "11,171,266")) << r.output;
  EXPECT_TRUE(has(r.output, "layer4.1.conv2")) << r.output;
  EXPECT_TRUE(has(r.output, "1x512x7x7")) << r.output;
  const Result top = run_cxr("validate resnet18 --depth 0 --classes 10");
  ASSERT_EQ(top.code, 0) << top.output;
  EXPECT_FALSE(has(top.output, "layer4.1.conv2")) << top.output;
  EXPECT_TRUE(has(top.output, "1x10")) << top.output;
}

TEST_F(CliValidate, SpecFile) {
  const std::string spec = write("net.json", R"({"in_channels": 1, "num_classes": 2, "input_size": [64, 64], "layers": [
    {"type": "conv", "out": 32, "kernel": 3, "padding": 1, "bias": false},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool", "kernel": 2},
    {"type": "basic_block", "out": 64, "stride": 2},
    {"type": "global_avgpool"}, {"type": "flatten"},
    {"type": "dropout", "p": 0.2},
    {"type": "linear", "out": "num_classes"}]})");
  const Result r = run_cxr("validate '" + spec + "'");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "custom (spec file ")) << r.output;
  EXPECT_TRUE(has(r.output, "input 1x64x64")) << r.output;
  EXPECT_TRUE(has(r.output, "BasicBlock")) << r.output;
  EXPECT_TRUE(has(r.output, "4.downsample.0")) << r.output;
  EXPECT_TRUE(has(r.output, "1x64x16x16")) << r.output;

  // --input overrides the spec's size and channels.
  const Result big = run_cxr("validate '" + spec + "' --input 3x128x96 --batch 2");
  ASSERT_EQ(big.code, 0) << big.output;
  EXPECT_TRUE(has(big.output, "input 3x128x96, batch 2")) << big.output;
  EXPECT_TRUE(has(big.output, "2x64x32x24")) << big.output;
}

TEST_F(CliValidate, JsonOutput) {
  const Result r = run_cxr("validate simple_cnn --input 1x28x28 --batch 4 --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["model"]["kind"], "zoo");
  EXPECT_EQ(j["model"]["arch"], "simple_cnn");
  EXPECT_EQ(j["input"], json({4, 1, 28, 28}));
  EXPECT_EQ(j["output"], json({4, 2}));
  EXPECT_EQ(j["batch"], 4);
  ASSERT_TRUE(j["layers"].is_array());
  ASSERT_EQ(j["layers"].size(), 18u);
  EXPECT_EQ(j["layers"][0]["name"], "0");
  EXPECT_EQ(j["layers"][0]["type"], "Conv2d");
  EXPECT_EQ(j["layers"][0]["output"], json({4, 32, 28, 28}));
  EXPECT_EQ(j["layers"][0]["params"], 288);
  EXPECT_EQ(j["totals"]["params"], 109666);
  EXPECT_EQ(j["totals"]["trainable_params"], 109666);
  EXPECT_EQ(j["totals"]["flops_per_sample"], 15167042);
  EXPECT_EQ(j["totals"]["flops"], 4 * 15167042);
  EXPECT_EQ(j["totals"]["activation_bytes"], 4 * 142786 * 4);
  EXPECT_EQ(j["totals"]["param_bytes"], 109666 * 4);
}

TEST_F(CliValidate, ModelFile) {
  auto model = cxr::nn::build_model(cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32), 1);
  const std::string path = (dir_ / "m.safetensors").string();
  cxr::nn::save_model(path, *model, {.class_names = {"NORMAL", "PNEUMONIA"}});
  const Result r = run_cxr("validate '" + path + "'");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "model file")) << r.output;
  EXPECT_TRUE(has(r.output, "NORMAL, PNEUMONIA")) << r.output;
  EXPECT_TRUE(has(r.output, "input 1x32x32")) << r.output;
  EXPECT_TRUE(has(r.output, "1x32x32x32")) << r.output;

  const Result j = run_cxr("validate '" + path + "' --json --input 64x64", true);
  ASSERT_EQ(j.code, 0) << j.output;
  const json doc = json::parse(j.output);
  EXPECT_EQ(doc["model"]["kind"], "file");
  EXPECT_EQ(doc["input"], json({1, 1, 64, 64}));
  EXPECT_EQ(doc["totals"]["params"], model->num_parameters());

  // The file fixes the channels, and the class count.
  const Result ch = run_cxr("validate '" + path + "' --input 3x32x32");
  EXPECT_EQ(ch.code, 2) << ch.output;
  EXPECT_TRUE(has(ch.output, "takes 1")) << ch.output;
  EXPECT_EQ(run_cxr("validate '" + path + "' --classes 3").code, 2);
  // Too small for the architecture: the zoo names the layer.
  const Result small = run_cxr("validate '" + path + "' --input 1x2x2");
  EXPECT_EQ(small.code, 1) << small.output;
  EXPECT_TRUE(has(small.output, "model.layers[7] (maxpool)")) << small.output;
}

TEST_F(CliValidate, InconsistentSpecNamesTheLayer) {
  const std::string spec = write("bad.json", R"({"in_channels": 1, "num_classes": 2, "input_size": [28, 28], "layers": [
    {"type": "conv", "out": 8, "kernel": 3},
    {"type": "linear", "out": "num_classes"}]})");
  const Result r = run_cxr("validate '" + spec + "'");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "cxr validate: error:")) << r.output;
  EXPECT_TRUE(has(r.output, "model.layers[1] (linear)")) << r.output;
  EXPECT_TRUE(has(r.output, "flatten")) << r.output;

  const std::string groups = write("groups.json", R"({"in_channels": 3, "input_size": 32, "layers": [
    {"type": "conv", "out": 8, "groups": 2}, {"type": "global_avgpool"}, {"type": "flatten"},
    {"type": "linear", "out": 2}]})");
  const Result g = run_cxr("validate '" + groups + "'");
  EXPECT_EQ(g.code, 1) << g.output;
  EXPECT_TRUE(has(g.output, "model.layers[0] (conv)")) << g.output;

  const Result small = run_cxr("validate resnet18 --input 1x8x8");
  EXPECT_EQ(small.code, 0) << small.output;  // small stem, 1x1 at the end
  const Result tiny = run_cxr("validate simple_cnn --input 1x2x2");
  EXPECT_EQ(tiny.code, 1) << tiny.output;
  EXPECT_TRUE(has(tiny.output, "model.layers[7] (maxpool)")) << tiny.output;
}

TEST_F(CliValidate, BadInputIsUsageError) {
  for (const char* bad : {"28", "axbxc", "1x0x28", "1x28x", "x28x28", "1x2x3x4", "1x-28x28", "1 x28"}) {
    const Result r = run_cxr(std::string("validate simple_cnn --input '") + bad + "'");
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.output;
    EXPECT_TRUE(has(r.output, "--input")) << r.output;
  }
  EXPECT_EQ(run_cxr("validate simple_cnn --batch 0").code, 2);
  EXPECT_EQ(run_cxr("validate").code, 2);
  EXPECT_EQ(run_cxr("validate simple_cnn --no-such-option").code, 2);
}

TEST_F(CliValidate, MissingOrBrokenFile) {
  const Result r = run_cxr("validate '" + (dir_ / "nope.json").string() + "'");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "no such file")) << r.output;
  EXPECT_TRUE(has(r.output, "resnet18")) << r.output;  // lists the zoo names

  const std::string junk = write("junk.json", "{\"arch\": ");
  const Result j = run_cxr("validate '" + junk + "'");
  EXPECT_EQ(j.code, 1) << j.output;
  EXPECT_TRUE(has(j.output, "not valid JSON")) << j.output;

  const std::string fake = write("fake.safetensors", "not a model");
  const Result f = run_cxr("validate '" + fake + "'");
  EXPECT_EQ(f.code, 1) << f.output;
  EXPECT_TRUE(has(f.output, "fake.safetensors")) << f.output;

  const Result d = run_cxr("validate '" + dir_.string() + "'");
  EXPECT_EQ(d.code, 1) << d.output;
  EXPECT_TRUE(has(d.output, "directory")) << d.output;
}

}  // namespace
