// The README's workflow end to end with the real binary, on CPU: synth -> train (the
// shipped configs/synthetic.toml) -> infer -> eval -> gradcam -> validate -> bench.
// Checks what a user is promised: ROC-AUC >= 0.95 on the synthetic test split, and
// Grad-CAM peaks inside the lesion masks for most PNEUMONIA test images (the hit rate is
// printed and recorded as a test property).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace fs = std::filesystem;
using cxr_test::has;
using cxr_test::slurp;
using cxr_test::run_cxr;
using nlohmann::json;

namespace {
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
}  // namespace

TEST(Workflow, SynthTrainInferEvalGradcamValidateBench) {
  const fs::path dir = cxr_test::fresh_test_dir("cxr_workflow_");
  const fs::path data = dir / "data", run = dir / "run";

  auto r = run_cxr("synth --out " + q(data) + " --count 2000 --size 128 --seed 1");
  ASSERT_EQ(r.code, 0) << r.output;

  r = run_cxr("train " + q(data) + " --config " + q(fs::path(CXR_SOURCE_DIR) / "configs" / "synthetic.toml") +
              " --out " + q(run) + " --threads 2 --progress none");
  ASSERT_EQ(r.code, 0) << r.output;
  std::cout << r.output;
  ASSERT_TRUE(fs::exists(run / "report.html"));

  r = run_cxr("infer " + q(run / "model.safetensors") + " " + q(data / "test") + " --out " + q(dir / "pred.csv"));
  ASSERT_EQ(r.code, 0) << r.output;

  r = run_cxr("eval --predictions " + q(dir / "pred.csv") + " --truth-folder " + q(data / "test") + " --json --out " +
                  q(dir / "eval"),
              true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json ev = json::parse(r.output);
  const double auc = ev["metrics"]["roc_auc"]["value"].get<double>();
  std::cout << "test ROC-AUC " << auc << ", accuracy " << ev["metrics"]["accuracy"]["value"] << "\n";
  RecordProperty("test_roc_auc", std::to_string(auc));
  EXPECT_GE(auc, 0.95);
  EXPECT_TRUE(fs::exists(dir / "eval" / "report.html"));

  r = run_cxr("gradcam " + q(run / "model.safetensors") + " " + q(data / "test" / "PNEUMONIA") + " --out " +
              q(dir / "cam") + " --masks " + q(data / "masks"));
  ASSERT_EQ(r.code, 0) << r.output;
  const json cam = json::parse(slurp(dir / "cam" / "summary.json"));
  ASSERT_TRUE(cam["hit_rate"].is_number()) << cam.dump();
  const double hit = cam["hit_rate"].get<double>();
  std::cout << "Grad-CAM hit rate on test PNEUMONIA images: " << hit << " (" << cam.dump() << ")\n";
  RecordProperty("gradcam_hit_rate", std::to_string(hit));
  EXPECT_GT(hit, 0.5);

  r = run_cxr("validate " + q(run / "model.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "Conv2d")) << r.output;

  r = run_cxr("bench --model " + q(run / "model.safetensors") + " --batch 16 --warmup 1 --iters 3 --loader-images 64 --json",
              true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json b = json::parse(r.output);
  EXPECT_GT(b["train"]["images_per_s"].get<double>(), 0);
  EXPECT_GT(b["infer"]["images_per_s"].get<double>(), 0);
  EXPECT_GT(b["infer_batch1"]["ms_p50"].get<double>(), 0);
  EXPECT_EQ(b["loader"]["images"].get<int>(), 64);
  EXPECT_GT(b["memory"]["peak_host_mib"].get<double>(), 0);
  EXPECT_EQ(b["versions"]["cxr"], CXR_VERSION_STRING);

  if (!HasFailure()) cxr_test::remove_test_dir(dir);
}
