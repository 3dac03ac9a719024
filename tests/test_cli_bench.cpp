// `cxr bench` driven as a child process: JSON results and bad options.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

using cxr_test::has;
using cxr_test::run_cxr;
using nlohmann::json;

TEST(BenchCli, JsonHasThroughputLatencyLoaderAndVersions) {
  const auto r = run_cxr("bench --model simple_cnn --image-size 32 --batch 8 --warmup 1 --iters 3 --loader-images 32 --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  for (const char* part : {"train", "infer", "infer_batch1"}) {
    ASSERT_TRUE(j.contains(part)) << part;
    EXPECT_EQ(j[part]["iterations"].get<int>(), std::string(part) == "infer_batch1" ? 20 : 3) << part;
    EXPECT_GT(j[part]["images_per_s"].get<double>(), 0) << part;
    EXPECT_LE(j[part]["ms_p50"].get<double>(), j[part]["ms_p99"].get<double>()) << part;
  }
  EXPECT_EQ(j["loader"]["images"].get<int>(), 32);
  EXPECT_EQ(j["batch"].get<int>(), 8);
  EXPECT_EQ(j["input"], json({1, 32, 32}));
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_TRUE(j["versions"].contains("cudnn"));
  EXPECT_TRUE(j["build"].contains("native"));
}

TEST(BenchCli, OnlyOnePart) {
  const auto r = run_cxr("bench --image-size 32 --batch 4 --iters 2 --warmup 0 --only infer --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_TRUE(j.contains("infer"));
  EXPECT_FALSE(j.contains("train"));
  EXPECT_FALSE(j.contains("loader"));
}

TEST(BenchCli, BadOptions) {
  auto r = run_cxr("bench --model vgg99");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "unknown model 'vgg99'")) << r.output;
  EXPECT_EQ(run_cxr("bench --batch 0").code, 2);
  EXPECT_EQ(run_cxr("bench --only everything").code, 2);
  r = run_cxr("bench --model /nonexistent/m.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "no such model file")) << r.output;
}
