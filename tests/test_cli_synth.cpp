// Tests of the `cxr` binary's dispatcher and `cxr synth`, run as a child process
// (CXR_CLI_PATH is the built binary): exit codes, help and command listing, errors,
// and the files a run writes.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/image.h"

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;

using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;

class CliSynth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_cli_");
  }
  void TearDown() override {
    cxr_test::remove_test_dir(dir_);
  }
  std::string out(const std::string& sub = "ds") const { return (dir_ / sub).string(); }
  fs::path dir_;
};

TEST_F(CliSynth, WritesADataSet) {
  const Result r = run_cxr("synth --out '" + out() + "' --count 40 --size 64 --seed 3");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote 40 images"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train"), std::string::npos) << r.output;
  const fs::path root = out();
  ASSERT_TRUE(fs::exists(root / "manifest.csv"));
  ASSERT_TRUE(fs::exists(root / "synth.json"));
  std::ifstream in(root / "manifest.csv");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "path,label,split,mask");
  int rows = 0, masks = 0;
  while (std::getline(in, line)) {
    ++rows;
    const std::string path = line.substr(0, line.find(','));
    ASSERT_TRUE(fs::exists(root / path)) << path;
    const std::string mask = line.substr(line.rfind(',') + 1);
    if (!mask.empty()) {
      ++masks;
      EXPECT_TRUE(fs::exists(root / mask)) << mask;
    }
  }
  EXPECT_EQ(rows, 40);
  EXPECT_EQ(masks, 20);
  const cxr::data::ImageInfo info = cxr::data::probe_image((root / "train/NORMAL").string() + "/" +
                                                           fs::directory_iterator(root / "train/NORMAL")->path().filename().string());
  EXPECT_EQ(info.width, 64);

  // The same data set again is refused; --overwrite replaces it.
  const Result again = run_cxr("synth --out '" + out() + "' --count 10 --size 32");
  EXPECT_EQ(again.code, 1) << again.output;
  EXPECT_NE(again.output.find("cxr synth: error:"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("--overwrite"), std::string::npos) << again.output;
  const Result over = run_cxr("synth --out '" + out() + "' --count 10 --size 32 --overwrite --no-masks --bit-depth 16 -j 1");
  EXPECT_EQ(over.code, 0) << over.output;
  EXPECT_FALSE(fs::exists(root / "masks"));
}

TEST_F(CliSynth, HelpListsCommands) {
  for (const char* args : {"--help", "help", "-h", ""}) {
    const Result r = run_cxr(args);
    EXPECT_EQ(r.code, 0) << args << ": " << r.output;
    EXPECT_NE(r.output.find("synth"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("version"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("usage: cxr <command>"), std::string::npos) << r.output;
  }
}

TEST_F(CliSynth, CommandHelpShowsOptions) {
  for (const char* args : {"synth --help", "help synth"}) {
    const Result r = run_cxr(args);
    EXPECT_EQ(r.code, 0) << r.output;
    for (const char* opt : {"--out", "--count", "--size", "--seed", "--pneumonia-fraction", "--val", "--test",
                            "--no-masks", "--bit-depth", "--threads", "--overwrite"})
      EXPECT_NE(r.output.find(opt), std::string::npos) << opt << " missing from: " << r.output;
  }
}

TEST_F(CliSynth, UsageErrorsExitTwo) {
  const std::string o = " --out '" + out() + "'";
  for (const std::string& args : {std::string("synth") + o + " --bogus", std::string("synth"),  // --out is required
                                  std::string("synth") + o + " --count", std::string("synth") + o + " --count abc",
                                  std::string("synth") + o + " --bit-depth 12", std::string("synth") + o + " --size 8",
                                  std::string("synth") + o + " --val 0.6 --test 0.5",
                                  std::string("synth") + o + " --pneumonia-fraction 1.5"}) {
    const Result r = run_cxr(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_FALSE(r.output.empty()) << args;
  }
  EXPECT_FALSE(fs::exists(out()));
}

TEST_F(CliSynth, NegativeCountIsRejectedWithAMessage) {
  const Result r = run_cxr("synth --out '" + out() + "' --count -5");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("count"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out()));
}

TEST_F(CliSynth, UnknownCommandListsCommands) {
  const Result r = run_cxr("nosuch");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown command 'nosuch'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("synth"), std::string::npos) << r.output;
  EXPECT_EQ(run_cxr("help nosuch").code, 2);
}

TEST_F(CliSynth, Version) {
  for (const char* args : {"--version", "version"}) {
    const Result r = run_cxr(args);
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(r.output.rfind(std::string("cxr ") + CXR_VERSION_STRING + " (revision ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("build: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("CUDA"), std::string::npos) << r.output;
  }
}

TEST_F(CliSynth, RuntimeErrorsExitOne) {
  { std::ofstream(out("file")) << "x"; }
  const Result r = run_cxr("synth --out '" + out("file") + "' --count 2 --size 16");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("cxr synth: error:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not a directory"), std::string::npos) << r.output;
}

}  // namespace
