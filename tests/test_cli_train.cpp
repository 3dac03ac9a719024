// `cxr train` driven as a child process: settings resolution (file < environment < flags),
// the run directory, exact resume after SIGKILL and after a stop mid-epoch, and bad input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "data/synth.h"
#include "nn/serialize.h"

namespace fs = std::filesystem;
using cxr_test::has;
using cxr_test::slurp;
using cxr_test::run_cxr;
using nlohmann::json;

namespace {

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

int count_lines(const fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  std::string line;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

// A small synthetic set (train/val/test of NORMAL and PNEUMONIA, 32 x 32).
fs::path small_set(const fs::path& dir, int count = 96) {
  cxr::data::SynthOptions o;
  o.size = 32;
  o.count = count;
  o.val_fraction = 0.25;
  o.test_fraction = 0.25;
  o.masks = false;
  const fs::path root = dir / "data";
  cxr::data::write_synthetic_dataset(root.string(), o);
  return root;
}

// Settings for quick, deterministic runs on the small set.
std::string quick(const fs::path& data, const fs::path& out, int epochs) {
  return "'" + data.string() + "' --out '" + out.string() + "' --epochs " + std::to_string(epochs) +
         " --image-size 32 --batch-size 16 --threads 2 --workers 2 --progress none";
}

std::map<std::string, cxr::Tensor> final_weights(const fs::path& run) {
  std::map<std::string, cxr::Tensor> out;
  for (auto& [k, t] : cxr::nn::load_safetensors((run / "checkpoints" / "last.ckpt").string()).tensors)
    if (k.rfind("model.", 0) == 0 || k.rfind("optim.", 0) == 0) out[k] = t;
  return out;
}

void expect_identical(const std::map<std::string, cxr::Tensor>& a, const std::map<std::string, cxr::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 0u);
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    const cxr::Tensor& u = b.at(k);
    ASSERT_EQ(t.shape(), u.shape()) << k;
    ASSERT_EQ(t.dtype(), u.dtype()) << k;
    EXPECT_EQ(std::memcmp(t.raw_data(), u.raw_data(), t.nbytes()), 0) << k << " differs";
  }
}

// The history without the timing columns.
std::string history_values(const fs::path& run) {
  std::ifstream in(run / "history.csv");
  std::string line, out;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string x;
    while (std::getline(ss, x, ',')) f.push_back(x);
    if (f.size() < 7) continue;
    for (int i = 0; i < 7; ++i) out += f[i] + ",";
    out += "\n";
  }
  return out;
}

pid_t spawn_cxr(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("cxr"));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(CXR_CLI_PATH, argv.data());
    ::_exit(127);
  }
  return pid;
}

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = cxr_test::fresh_test_dir("cxr_train_"); }
  void TearDown() override {
    if (!HasFailure()) cxr_test::remove_test_dir(dir_);
  }
  fs::path dir_;
};

}  // namespace

TEST_F(TrainCli, HelpListsTheSettings) {
  const auto r = run_cxr("train --help");
  EXPECT_EQ(r.code, 0);
  for (const char* f : {"--epochs", "--batch-size", "--lr", "--schedule", "--class-weights", "--label-smoothing",
                        "--monitor", "--patience", "--resume", "--config", "--device", "--rotation", "--no-augment"})
    EXPECT_TRUE(has(r.output, f)) << f;
}

TEST_F(TrainCli, SettingsResolveFileThenEnvironmentThenFlags) {
  write(dir_ / "c.toml", "epochs = 3\nbatch_size = 8\n[optimizer]\nlr = 0.01\noptimizer = \"sgd\"\n");
  auto r = run_cxr("train --print-config --data x --config '" + (dir_ / "c.toml").string() + "'", true);
  ASSERT_EQ(r.code, 0) << r.output;
  json c = json::parse(r.output);
  EXPECT_EQ(c["epochs"], 3);
  EXPECT_EQ(c["batch_size"], 8);
  EXPECT_EQ(c["lr"], 0.01);
  EXPECT_EQ(c["optimizer"], "sgd");
  EXPECT_EQ(c["image_size"], 224);  // default

  r = run_cxr("train --print-config --data x --config '" + (dir_ / "c.toml").string() + "' --lr 0.02 --no-augment", true);
  ASSERT_EQ(r.code, 0) << r.output;
  c = json::parse(r.output);
  EXPECT_EQ(c["lr"], 0.02);
  EXPECT_EQ(c["augment"], false);

  // The environment beats the file; a flag beats the environment.
  r = run_cxr("train --print-config --data x --config '" + (dir_ / "c.toml").string() + "'", true);
  ::setenv("CXR_EPOCHS", "5", 1);
  ::setenv("CXR_BATCH_SIZE", "12", 1);
  r = run_cxr("train --print-config --data x --config '" + (dir_ / "c.toml").string() + "' --batch-size 4", true);
  ::unsetenv("CXR_EPOCHS");
  ::unsetenv("CXR_BATCH_SIZE");
  ASSERT_EQ(r.code, 0) << r.output;
  c = json::parse(r.output);
  EXPECT_EQ(c["epochs"], 5);
  EXPECT_EQ(c["batch_size"], 4);

  write(dir_ / "c.json", R"({"epochs": 7, "hflip": true})");
  r = run_cxr("train --print-config --data x --config '" + (dir_ / "c.json").string() + "'", true);
  ASSERT_EQ(r.code, 0) << r.output;
  c = json::parse(r.output);
  EXPECT_EQ(c["epochs"], 7);
  EXPECT_EQ(c["hflip"], true);
}

TEST_F(TrainCli, BadSettingsAreUsageErrors) {
  write(dir_ / "typo.toml", "epocs = 3\n");
  auto r = run_cxr("train --data x --config '" + (dir_ / "typo.toml").string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "unknown setting 'epocs'")) << r.output;

  write(dir_ / "type.json", R"({"epochs": "many"})");
  r = run_cxr("train --data x --config '" + (dir_ / "type.json").string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "'epochs' must be an integer")) << r.output;

  write(dir_ / "broken.toml", "epochs = = 3\n");
  r = run_cxr("train --data x --config '" + (dir_ / "broken.toml").string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "broken.toml:1")) << r.output;

  ::setenv("CXR_LR", "fast", 1);
  r = run_cxr("train --data x");
  ::unsetenv("CXR_LR");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "CXR_LR")) << r.output;

  r = run_cxr("train --data x --optimizer lbfgs");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "--optimizer must be one of sgd, adam, adamw")) << r.output;
  r = run_cxr("train --data x --epochs 0");
  EXPECT_EQ(r.code, 2);
  r = run_cxr("train");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.output, "no training data")) << r.output;
}

TEST_F(TrainCli, BadDataAndModelsAreClearErrors) {
  const fs::path data = small_set(dir_);
  auto r = run_cxr("train " + quick(dir_ / "missing", dir_ / "r0", 1));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "no such data directory")) << r.output;

  r = run_cxr("train " + quick(data, dir_ / "r1", 1) + " --model vgg99");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "unknown model 'vgg99'")) << r.output;

  write(dir_ / "spec.json", R"({"layers": [{"type": "conv", "out": 4, "kernel": 3}, {"type": "linear", "out": "num_classes"}]})");
  r = run_cxr("train " + quick(data, dir_ / "r2", 1) + " --model '" + (dir_ / "spec.json").string() + "'");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "error")) << r.output;

  r = run_cxr("train " + quick(data, dir_ / "r3", 1) + " --class-weights 1,2,3");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "--class-weights has 3 values but the data has 2 classes")) << r.output;

  // An empty class folder names the folder.
  const fs::path empty = dir_ / "empty";
  fs::create_directories(empty / "train" / "NORMAL");
  fs::create_directories(empty / "train" / "PNEUMONIA");
  fs::copy(data / "train" / "NORMAL", empty / "train" / "NORMAL", fs::copy_options::recursive);
  r = run_cxr("train " + quick(empty, dir_ / "r4", 1));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "PNEUMONIA")) << r.output;

  // A run directory is never overwritten.
  ASSERT_EQ(run_cxr("train " + quick(data, dir_ / "r5", 1)).code, 0);
  const std::string before = slurp(dir_ / "r5" / "history.csv");
  r = run_cxr("train " + quick(data, dir_ / "r5", 1));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "already holds a training run")) << r.output;
  EXPECT_EQ(slurp(dir_ / "r5" / "history.csv"), before);

  // Resume refuses a changed setting and a corrupt checkpoint.
  r = run_cxr("train --resume '" + (dir_ / "r5").string() + "' --lr 0.5 --progress none");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "--lr cannot change when resuming")) << r.output;
  write(dir_ / "bad.ckpt", "this is not a checkpoint");
  r = run_cxr("train --resume '" + (dir_ / "bad.ckpt").string() + "'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.output, "bad.ckpt")) << r.output;
}

TEST_F(TrainCli, RunDirectoryHasEverything) {
  const fs::path data = small_set(dir_);
  const fs::path run = dir_ / "run";
  const auto r = run_cxr("train " + quick(data, run, 3) + " --model simple_cnn");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                        "history.csv", "metrics.json", "report.html"})
    EXPECT_TRUE(fs::exists(run / f)) << f;
  EXPECT_EQ(count_lines(run / "history.csv"), 4);
  const json m = json::parse(slurp(run / "metrics.json"));
  EXPECT_EQ(m["monitor"], "val_auc");
  EXPECT_GE(m["best_epoch"].get<int>(), 1);
  EXPECT_TRUE(m["val"]["metrics"].contains("roc_auc"));
  EXPECT_TRUE(m.contains("test"));
  const json c = json::parse(slurp(run / "config.json"));
  EXPECT_EQ(c["epochs"], 3);
  const std::string html = slurp(run / "report.html");
  EXPECT_TRUE(has(html, "<svg"));
  EXPECT_TRUE(has(html, "PNEUMONIA"));
  EXPECT_TRUE(has(r.output, "report: ")) << r.output;
  // The model file works with `cxr infer` and carries the class names.
  const auto inf = run_cxr("infer '" + (run / "model.safetensors").string() + "' '" + (data / "test").string() +
                           "' --out '" + (dir_ / "pred.csv").string() + "'");
  EXPECT_EQ(inf.code, 0) << inf.output;
  EXPECT_TRUE(has(slurp(dir_ / "pred.csv"), "prob_PNEUMONIA"));
}

// 4 epochs straight == 2 epochs, SIGKILL, resume: identical weights and optimizer state.
TEST_F(TrainCli, ResumeAfterKillGivesIdenticalWeights) {
  const fs::path data = small_set(dir_, 240);
  const fs::path a = dir_ / "straight", b = dir_ / "killed";
  ASSERT_EQ(run_cxr("train " + quick(data, a, 4)).code, 0);

  const std::vector<std::string> args = {"train", data.string(), "--out", b.string(), "--epochs", "4",
                                         "--image-size", "32", "--batch-size", "16", "--threads", "2",
                                         "--workers", "2", "--progress", "none"};
  const pid_t pid = spawn_cxr(args);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (count_lines(b / "history.csv") < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  EXPECT_LT(count_lines(b / "history.csv"), 5);
  ASSERT_TRUE(fs::exists(b / "checkpoints" / "last.ckpt"));
  const auto r = run_cxr("train --resume '" + b.string() + "' --progress none");
  ASSERT_EQ(r.code, 0) << r.output;
  expect_identical(final_weights(a), final_weights(b));
  EXPECT_EQ(history_values(a), history_values(b));
  // The best model files hold the same weights (their metadata names different run folders).
  expect_identical(cxr::nn::load_safetensors((a / "model.safetensors").string()).tensors,
                   cxr::nn::load_safetensors((b / "model.safetensors").string()).tensors);
}

// A stop part-way through an epoch (as on Ctrl-C) resumes at the same batch.
TEST_F(TrainCli, ResumeMidEpochGivesIdenticalWeights) {
  const fs::path data = small_set(dir_);
  const fs::path a = dir_ / "straight", b = dir_ / "stopped";
  ASSERT_EQ(run_cxr("train " + quick(data, a, 2)).code, 0);
  auto r = run_cxr("train " + quick(data, b, 2) + " --max-steps 2");
  ASSERT_EQ(r.code, 130) << r.output;
  EXPECT_FALSE(fs::exists(b / "history.csv"));  // stopped inside epoch 1
  r = run_cxr("train --resume '" + (b / "checkpoints" / "last.ckpt").string() + "' --progress none --max-steps 2");
  ASSERT_EQ(r.code, 130) << r.output;  // finishes epoch 1, stops inside epoch 2
  EXPECT_EQ(count_lines(b / "history.csv"), 2);
  r = run_cxr("train --resume '" + b.string() + "' --progress none");
  ASSERT_EQ(r.code, 0) << r.output;
  expect_identical(final_weights(a), final_weights(b));
  EXPECT_EQ(history_values(a), history_values(b));
}

// --epochs may grow on resume: training continues from the finished run.
TEST_F(TrainCli, ResumeCanExtendTheEpochs) {
  const fs::path data = small_set(dir_);
  const fs::path run = dir_ / "run";
  ASSERT_EQ(run_cxr("train " + quick(data, run, 1) + " --schedule constant").code, 0);
  const auto r = run_cxr("train --resume '" + run.string() + "' --epochs 2 --progress none");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count_lines(run / "history.csv"), 3);
}

// --register puts the best model into the registry with the run's metrics and settings.
TEST_F(TrainCli, RegisterAddsTheModelToTheRegistry) {
  const fs::path data = small_set(dir_);
  const fs::path run = dir_ / "run", reg = dir_ / "registry";
  auto r = run_cxr("train " + quick(data, run, 1) + " --register 'bad/name'");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_FALSE(fs::exists(run));  // refused before training
  r = run_cxr("train " + quick(data, run, 1) + " --register chest --registry '" + reg.string() + "'");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "registered chest@")) << r.output;
  r = run_cxr("registry show chest --registry '" + reg.string() + "' --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json show = json::parse(r.output);
  EXPECT_TRUE(has(show.dump(), "val_auc")) << show.dump();
  EXPECT_TRUE(has(show.dump(), "training_config")) << show.dump();
  r = run_cxr("registry verify --registry '" + reg.string() + "'");
  EXPECT_EQ(r.code, 0) << r.output;
}
