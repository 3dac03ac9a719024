// Tests of `cxr registry` and `cxr infer registry:NAME@...`, run as child processes
// (CXR_CLI_PATH is the built binary): the register -> promote -> infer workflow with its
// audit and performance records, A/B commands, encryption with key files, tampering, and
// the exit codes and messages of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_test_util.h"
#include "data/image.h"
#include "registry/registry.h"
#include "test_registry_util.h"

namespace {

namespace fs = std::filesystem;
namespace reg = cxr::registry;
using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;
using nlohmann::json;

class CliRegistry : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_registry_cli_");
    m1_ = cxr_test::make_model_file(dir_, 1);
    m2_ = cxr_test::make_model_file(dir_, 2);
    fs::create_directories(dir_ / "patient_imgs");
    for (int i = 0; i < 4; ++i) {
      cxr::data::Image img(1, 32 + i, 32);
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x) img.at(0, y, x) = static_cast<float>(((x * (i + 2) + y * 3) % 13) / 12.0);
      cxr::data::write_png((dir_ / "patient_imgs" / ("doe_john_" + std::to_string(i) + ".png")).string(), img);
    }
  }
  void TearDown() override { cxr_test::remove_test_dir(dir_); }
  std::string q(const fs::path& p) const { return "'" + p.string() + "'"; }
  // `cxr registry --registry DIR ARGS`.
  Result reg_cmd(const std::string& args, bool stdout_only = false) const {
    return run_cxr("registry --registry " + q(dir_ / "reg") + " " + args, stdout_only);
  }
  fs::path dir_;
  std::string m1_, m2_;
};

TEST_F(CliRegistry, RegisterPromoteInferEndToEnd) {
  ASSERT_EQ(reg_cmd("init").code, 0);
  cxr_test::spit((dir_ / "metrics.json").string(), R"({"val_auc": 0.93})");
  cxr_test::spit((dir_ / "manifest.csv").string(), "path,label\na.png,NORMAL\n");
  Result r = reg_cmd("register chest " + q(m1_) + " --metrics " + q(dir_ / "metrics.json") +
                     " --dataset-name synth --dataset-version 2 --data-manifest " + q(dir_ / "manifest.csv") +
                     " --git-rev abc123 --reason 'first model'");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "registered chest@1.0.0")) << r.output;
  // A `cxr train` run folder supplies the metrics and the training settings.
  fs::create_directories(dir_ / "run");
  cxr_test::spit((dir_ / "run" / "metrics.json").string(), R"({"val": {"auc": 0.95}})");
  cxr_test::spit((dir_ / "run" / "config.json").string(), R"({"epochs": 4, "model": "simple_cnn"})");
  r = reg_cmd("register chest " + q(m2_) + " --bump minor --run " + q(dir_ / "run") + " --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(json::parse(r.output)["version"], "1.1.0");
  r = reg_cmd("show chest@1.1.0 --json", true);
  EXPECT_EQ(json::parse(r.output)["metadata"]["metrics"]["val"]["auc"], 0.95);
  EXPECT_EQ(json::parse(r.output)["metadata"]["training_config"]["epochs"], 4);
  r = reg_cmd("promote chest 1.0.0 --to production --reason validated");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "chest@1.0.0 is now production")) << r.output;

  r = reg_cmd("list --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json list = json::parse(r.output);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["production"], "1.0.0");
  EXPECT_EQ(list[0]["versions"].size(), 2u);
  EXPECT_EQ(list[0]["versions"][1]["version"], "1.1.0");
  r = reg_cmd("show chest@production --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json shown = json::parse(r.output);
  EXPECT_EQ(shown["metadata"]["metrics"]["val_auc"], 0.93);
  EXPECT_EQ(shown["metadata"]["dataset"]["manifest_sha256"], reg::sha256_file((dir_ / "manifest.csv").string()));
  EXPECT_EQ(shown["metadata"]["git_revision"], "abc123");
  EXPECT_EQ(shown["sha256"], reg::sha256_file(m1_));

  // Inference through the registry gives the file's predictions and leaves a trail.
  const Result direct =
      run_cxr("infer " + q(m1_) + " " + q(dir_ / "patient_imgs") + " --out " + q(dir_ / "direct.csv"));
  ASSERT_EQ(direct.code, 0) << direct.output;
  const Result viareg = run_cxr("infer registry:chest@production " + q(dir_ / "patient_imgs") + " --registry " +
                                q(dir_ / "reg") + " --out " + q(dir_ / "reg.csv") + " --batch 3");
  ASSERT_EQ(viareg.code, 0) << viareg.output;
  EXPECT_TRUE(has(viareg.output, "chest@1.0.0")) << viareg.output;
  EXPECT_EQ(cxr_test::slurp((dir_ / "reg.csv").string()), cxr_test::slurp((dir_ / "direct.csv").string()));
  EXPECT_EQ(cxr_test::read_lines((dir_ / "reg.csv").string()).size(), 5u);

  r = reg_cmd("log --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  std::vector<json> log;
  for (const auto& l : cxr_test::read_lines((dir_ / "reg" / "audit.log").string())) log.push_back(json::parse(l));
  ASSERT_GE(log.size(), 6u);
  EXPECT_EQ(log[log.size() - 2]["action"], "load");
  const json& infer = log.back();
  EXPECT_EQ(infer["action"], "infer");
  EXPECT_EQ(infer["model"], "chest");
  EXPECT_EQ(infer["version"], "1.0.0");
  EXPECT_EQ(infer["images"], 4);
  EXPECT_EQ(infer["failed"], 0);
  const std::string audit_text = cxr_test::slurp((dir_ / "reg" / "audit.log").string());
  EXPECT_FALSE(has(audit_text, "doe_john")) << "image names must not reach the audit log";
  EXPECT_FALSE(has(audit_text, "patient_imgs"));
  EXPECT_FALSE(has(audit_text, "reg.csv"));

  r = reg_cmd("perf chest@production --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json perf = json::parse(r.output);
  ASSERT_EQ(perf.size(), 1u);
  EXPECT_EQ(perf[0]["images"], 4);
  EXPECT_GT(perf[0]["images_per_s"].get<double>(), 0);
  EXPECT_GT(perf[0]["ms_per_image"].get<double>(), 0);
  EXPECT_EQ(perf[0]["batch"], 3);

  // Rollback path and the table output.
  ASSERT_EQ(reg_cmd("promote chest 1.1.0 --to production").code, 0);
  r = reg_cmd("rollback chest --reason regression");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "chest@1.0.0 is production again")) << r.output;
  r = reg_cmd("list");
  EXPECT_TRUE(has(r.output, "production")) << r.output;
  r = reg_cmd("verify");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "ok: 2 artifacts checked")) << r.output;
  r = reg_cmd("log");
  EXPECT_TRUE(has(r.output, "rollback")) << r.output;
  EXPECT_TRUE(has(r.output, "regression")) << r.output;
}

TEST_F(CliRegistry, AbCommands) {
  ASSERT_EQ(reg_cmd("init").code, 0);
  ASSERT_EQ(reg_cmd("register chest " + q(m1_)).code, 0);
  ASSERT_EQ(reg_cmd("register chest " + q(m2_)).code, 0);
  Result r = reg_cmd("ab set chest --control 1.0.0 --treatment 1.0.1 --split 0.1");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* id : {"req-1", "req-2", "patient-visit-77"}) {
    r = reg_cmd(std::string("ab route chest ") + id, true);
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.output, reg::ab_choose({"1.0.0", "1.0.1", 0.1}, "chest", id) + "\n");
  }
  r = reg_cmd("ab show chest --json", true);
  EXPECT_EQ(json::parse(r.output)["split"], 0.1);
  EXPECT_EQ(reg_cmd("ab set chest --control 1.0.0 --treatment 1.0.1 --split 2").code, 2);
  EXPECT_EQ(reg_cmd("ab clear chest").code, 0);
  r = reg_cmd("ab route chest req-1");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "no A/B test")) << r.output;
}

TEST_F(CliRegistry, EncryptedRegistryWithKeyFiles) {
  Result r = run_cxr("registry keygen --out " + q(dir_ / "key"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(fs::status(dir_ / "key").permissions() & fs::perms::group_read, fs::perms::none);
  EXPECT_EQ(run_cxr("registry keygen --out " + q(dir_ / "key")).code, 1);  // never overwritten
  ASSERT_EQ(run_cxr("registry keygen --out " + q(dir_ / "other")).code, 0);
  r = reg_cmd("init --encrypt");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "needs a key")) << r.output;
  fs::remove_all(dir_ / "reg");
  const std::string key = " --key-file " + q(dir_ / "key");
  ASSERT_EQ(reg_cmd("init --encrypt" + key).code, 0);
  ASSERT_EQ(reg_cmd("register chest " + q(m1_) + key).code, 0);
  ASSERT_EQ(reg_cmd("promote chest 1.0.0 --to production").code, 0);  // no key needed to promote
  const std::string infer = "infer registry:chest@production " + q(dir_ / "patient_imgs") + " --registry " +
                            q(dir_ / "reg") + " --out " + q(dir_ / "p.csv");
  r = run_cxr(infer + key);
  EXPECT_EQ(r.code, 0) << r.output;
  r = run_cxr(infer + " --key-file " + q(dir_ / "other"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "wrong key")) << r.output;
  r = run_cxr(infer);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "encrypted at rest")) << r.output;
}

TEST_F(CliRegistry, TamperingIsReported) {
  ASSERT_EQ(reg_cmd("init").code, 0);
  ASSERT_EQ(reg_cmd("register chest " + q(m1_)).code, 0);
  ASSERT_EQ(reg_cmd("register chest " + q(m2_)).code, 0);
  ASSERT_EQ(reg_cmd("promote chest 1.0.0 --to production").code, 0);
  const std::string art = (dir_ / "reg" / "models" / "chest" / "1.0.0" / "model.safetensors").string();
  std::string bytes = cxr_test::slurp(art);
  bytes[100] ^= 0x10;
  cxr_test::spit(art, bytes);
  Result r = run_cxr("infer registry:chest@production " + q(dir_ / "patient_imgs") + " --registry " + q(dir_ / "reg") +
                     " --out " + q(dir_ / "p.csv"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "integrity check failed")) << r.output;
  EXPECT_TRUE(has(r.output, art)) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "p.csv"));
  r = reg_cmd("verify");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, art)) << r.output;
  bytes[100] ^= 0x10;
  cxr_test::spit(art, bytes);
  // An audit line edited: verify names it.
  const std::string audit = (dir_ / "reg" / "audit.log").string();
  auto lines = cxr_test::read_lines(audit);
  const size_t p = lines[1].find("\"register\"");
  ASSERT_NE(p, std::string::npos);
  lines[1].replace(p, 10, "\"regist3r\"");
  cxr_test::write_lines(audit, lines);
  r = reg_cmd("verify --json", true);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(json::parse(r.output)["first_bad_audit_line"], 2);
  r = reg_cmd("verify");
  EXPECT_TRUE(has(r.output, "audit.log line 2:")) << r.output;
}

TEST_F(CliRegistry, BadInputAndExitCodes) {
  Result r = reg_cmd("list");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "no model registry at")) << r.output;
  fs::create_directories(dir_ / "notreg");
  r = run_cxr("registry --registry " + q(dir_ / "notreg") + " list");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "is not a model registry")) << r.output;
  ASSERT_EQ(reg_cmd("init").code, 0);
  EXPECT_EQ(reg_cmd("init").code, 1);
  r = reg_cmd("register ../x " + q(m1_));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "invalid model name '../x'")) << r.output;
  r = reg_cmd("register chest " + q(m1_) + " --version 1.2");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "invalid version '1.2'")) << r.output;
  r = reg_cmd("register chest " + q(dir_ / "nope.safetensors"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "nope.safetensors")) << r.output;
  ASSERT_EQ(reg_cmd("register chest " + q(m1_)).code, 0);
  r = reg_cmd("promote chest 3.0.0 --to production");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "unknown version chest@3.0.0")) << r.output;
  EXPECT_EQ(reg_cmd("promote chest 1.0.0 --to heaven").code, 2);
  ASSERT_EQ(reg_cmd("promote chest 1.0.0 --to production").code, 0);
  r = reg_cmd("delete chest 1.0.0");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "production version")) << r.output;
  EXPECT_EQ(reg_cmd("").code, 2);  // a subcommand is required
  EXPECT_EQ(reg_cmd("frobnicate").code, 2);
  r = run_cxr("infer registry:chest@9.9.9 " + q(dir_ / "patient_imgs") + " --registry " + q(dir_ / "reg") + " --out " +
              q(dir_ / "p.csv"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "unknown version chest@9.9.9")) << r.output;
  r = run_cxr("infer registry:../chest " + q(dir_ / "patient_imgs") + " --registry " + q(dir_ / "reg") + " --out " +
              q(dir_ / "p.csv"));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "invalid model name")) << r.output;
  r = run_cxr("infer " + q(m1_) + " " + q(dir_ / "patient_imgs") + " --registry " + q(dir_ / "reg") + " --out " +
              q(dir_ / "p.csv"));
  EXPECT_EQ(r.code, 2);  // --registry without a registry: model
  // The registry from the environment.
  ::setenv("CXR_REGISTRY", (dir_ / "reg").c_str(), 1);
  r = run_cxr("infer registry:chest " + q(dir_ / "patient_imgs") + " --out " + q(dir_ / "p.csv"));
  EXPECT_EQ(r.code, 0) << r.output;
  ::setenv("CXR_REGISTRY", (dir_ / "elsewhere").c_str(), 1);
  r = run_cxr("registry verify");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "no model registry at")) << r.output;
  ::unsetenv("CXR_REGISTRY");
}

}  // namespace
