// Tests of `cxr eval`, run as a child process (CXR_CLI_PATH is the built binary): binary
// and multiclass reports against --truth CSVs and --truth-folder layouts, --out files,
// the --html report, and the exit codes of its errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;

class CliEval : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_eval_");
  }
  void TearDown() override {
    cxr_test::remove_test_dir(dir_);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::string q(const std::string& s) const { return "'" + s + "'"; }
  fs::path dir_;
};

// Negatives score {0.1, 0.4, 0.6}, positives {0.3, 0.7, 0.9} (probability of PNEUMONIA):
// AUC = 7/9; at threshold 0.5 accuracy 4/6, sensitivity 2/3, specificity 2/3. One row has
// an error and is skipped; one path is quoted and holds a comma.
const char* kBinaryPred =
    "path,predicted,prob_PNEUMONIA,prob_NORMAL,error\n"
    "n1.png,NORMAL,0.1,0.9,\n"
    "n2.png,NORMAL,0.4,0.6,\n"
    "\"n,3.png\",PNEUMONIA,0.6,0.4,\n"
    "p1.png,NORMAL,0.3,0.7,\n"
    "p2.png,PNEUMONIA,0.7,0.3,\n"
    "p3.png,PNEUMONIA,0.9,0.1,\n"
    "bad.png,,,,\"cannot decode, truncated\"\n";
const char* kBinaryTruth =
    "path,label\n"
    "n1.png,NORMAL\nn2.png,NORMAL\n\"n,3.png\",NORMAL\np1.png,PNEUMONIA\np2.png,PNEUMONIA\np3.png,PNEUMONIA\n";

TEST_F(CliEval, ListedInHelp) {
  const Result r = run_cxr("--help");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "eval")) << r.output;
  const Result h = run_cxr("eval --help");
  EXPECT_EQ(h.code, 0) << h.output;
  EXPECT_TRUE(has(h.output, "--truth-folder")) << h.output;
}

TEST_F(CliEval, BinaryJsonWithTruthCsv) {
  const std::string pred = write("pred.csv", kBinaryPred), truth = write("truth.csv", kBinaryTruth);
  const Result r = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 50 --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["task"], "binary");
  EXPECT_EQ(j["num_cases"], 6);
  EXPECT_EQ(j["positive_class"], "PNEUMONIA");
  EXPECT_EQ(j["skipped_errors"], 1);
  EXPECT_NEAR(j["metrics"]["roc_auc"]["value"].get<double>(), 7.0 / 9.0, 1e-12);
  EXPECT_NEAR(j["metrics"]["accuracy"]["value"].get<double>(), 4.0 / 6.0, 1e-12);
  EXPECT_NEAR(j["metrics"]["sensitivity"]["value"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(j["metrics"]["specificity"]["value"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_FALSE(j["metrics"]["roc_auc"]["ci_low"].is_null());
  EXPECT_EQ(j["counts"]["tp"], 2);
  EXPECT_EQ(j["counts"]["fp"], 1);
  EXPECT_EQ(j["class_names"], json({"NORMAL", "PNEUMONIA"}));
  EXPECT_EQ(j["operating_point"]["rule"], "youden");
}

TEST_F(CliEval, PositiveOverrideAndTextSummary) {
  const std::string pred = write("pred.csv", kBinaryPred), truth = write("truth.csv", kBinaryTruth);
  // With NORMAL as the positive class the scores are prob_NORMAL = 1 - prob_PNEUMONIA: same AUC.
  const Result j = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) +
                               " --positive NORMAL --bootstrap 0 --json",
                           true);
  ASSERT_EQ(j.code, 0) << j.output;
  const json rep = json::parse(j.output);
  EXPECT_EQ(rep["positive_class"], "NORMAL");
  EXPECT_NEAR(rep["metrics"]["roc_auc"]["value"].get<double>(), 7.0 / 9.0, 1e-12);
  EXPECT_TRUE(rep["metrics"]["roc_auc"]["ci_low"].is_null());

  const Result t = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 20");
  ASSERT_EQ(t.code, 0) << t.output;
  for (const char* s : {"n = 6", "Accuracy", "Sensitivity", "Specificity", "PPV", "NPV", "F1", "ROC-AUC", "PR-AUC",
                        "95% CI", "Confusion matrix", "Operating point (youden)", "ECE", "0.7778"})
    EXPECT_TRUE(has(t.output, s)) << s << "\n" << t.output;
}

TEST_F(CliEval, TruthFolderAndOutFiles) {
  const fs::path root = dir_ / "root";
  std::ostringstream pred;
  pred << "path,predicted,prob_NORMAL,prob_PNEUMONIA\n";
  // NORMAL {0.2, 0.6}, PNEUMONIA {0.4, 0.8, 0.9} as prob_PNEUMONIA: AUC = (1 + 2 + 2) / 6.
  const std::pair<const char*, double> rows[] = {
      {"NORMAL/a.png", 0.2}, {"NORMAL/sub/../b.png", 0.6}, {"PNEUMONIA/c.png", 0.4}, {"PNEUMONIA/d.png", 0.8},
      {"PNEUMONIA/e.png", 0.9}};
  for (const auto& [rel, p] : rows) pred << (root / rel).string() << ",x," << 1 - p << ',' << p << '\n';
  fs::create_directories(root / "NORMAL");
  fs::create_directories(root / "PNEUMONIA");
  const std::string pf = write("pred.csv", pred.str());
  const fs::path out = dir_ / "out";
  const Result r = run_cxr("eval --predictions " + q(pf) + " --truth-folder " + q(root.string()) +
                               " --bootstrap 30 --rule sensitivity:0.9 --out " + q(out.string()) + " --json",
                           true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["num_cases"], 5);
  EXPECT_NEAR(j["metrics"]["roc_auc"]["value"].get<double>(), 5.0 / 6.0, 1e-12);
  EXPECT_NEAR(j["metrics"]["accuracy"]["value"].get<double>(), 3.0 / 5.0, 1e-12);
  EXPECT_EQ(j["operating_point"]["rule"], "sensitivity:0.9");
  EXPECT_NEAR(j["operating_point"]["threshold"].get<double>(), 0.4, 1e-12);
  for (const char* f : {"metrics.json", "roc.csv", "pr.csv", "sweep.csv"})
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  std::ifstream in(out / "metrics.json");
  const json m = json::parse(in);
  EXPECT_EQ(m["metrics"]["roc_auc"], j["metrics"]["roc_auc"]);
  std::ifstream roc(out / "roc.csv");
  std::string header;
  std::getline(roc, header);
  EXPECT_EQ(header, "threshold,fpr,tpr");
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(CliEval, HtmlReport) {
  const std::string pred = write("pred.csv", kBinaryPred), truth = write("truth.csv", kBinaryTruth);
  const fs::path html = dir_ / "report.html", out = dir_ / "out";
  const Result r = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 20 --html " +
                           q(html.string()) + " --out " + q(out.string()));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "Wrote " + html.string())) << r.output;
  ASSERT_TRUE(fs::is_regular_file(html));
  const std::string h = read_file(html);
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* s : {"<svg", ">ROC curve (AUC 0.778)</text>", ">Precision-recall curve (AP ", "class=\"confusion\"",
                        ">NORMAL</th>", ">PNEUMONIA</th>", "positive class PNEUMONIA", "Threshold sweep", "pred.csv",
                        "Rows skipped (inference errors)"})
    EXPECT_TRUE(has(h, s)) << s;
  // Confusion matrix at 0.5: each row holds 2 of its 3 cases on the diagonal.
  EXPECT_TRUE(has(h, "<b>2</b><span>66.7%</span>")) << "row percentages";
  EXPECT_FALSE(has(h, "<script"));
  EXPECT_FALSE(has(h, "http:"));
  // --out DIR holds the same report.
  ASSERT_TRUE(fs::is_regular_file(out / "report.html"));
  EXPECT_TRUE(has(read_file(out / "report.html"), ">ROC curve (AUC 0.778)</text>"));

  // Multiclass, with a hostile class name: escaped, never markup.
  const std::string mpred = write("m.csv",
                                  "path,predicted,prob_A,prob_<script>x</script>,prob_C\n"
                                  "1.png,A,0.7,0.2,0.1\n2.png,B,0.1,0.8,0.1\n3.png,C,0.2,0.2,0.6\n4.png,B,0.3,0.5,0.2\n");
  const std::string mtruth = write("mt.csv", "path,label\n1.png,A\n2.png,<script>x</script>\n3.png,C\n4.png,A\n");
  const fs::path mhtml = dir_ / "multi.html";
  const Result m = run_cxr("eval --predictions " + q(mpred) + " --truth " + q(mtruth) + " --bootstrap 0 --html " +
                           q(mhtml.string()));
  ASSERT_EQ(m.code, 0) << m.output;
  const std::string mh = read_file(mhtml);
  EXPECT_TRUE(has(mh, "class=\"confusion\""));
  EXPECT_TRUE(has(mh, ">&lt;script&gt;x&lt;/script&gt;</th>"));
  EXPECT_TRUE(has(mh, "Per class (one-vs-rest)"));
  EXPECT_FALSE(has(mh, "<script"));

  // An unwritable destination is an error naming the file.
  const Result bad = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 0 --html " +
                             q((dir_ / "no/such/dir/r.html").string()));
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_TRUE(has(bad.output, "r.html")) << bad.output;
}

TEST_F(CliEval, TruthFolderPathOutsideRoot) {
  const fs::path root = dir_ / "root";
  fs::create_directories(root);
  const std::string pf = write("pred.csv", "path,predicted,prob_A,prob_B\n" + (dir_ / "elsewhere/A/x.png").string() +
                                               ",A,0.9,0.1\n");
  const Result r = run_cxr("eval --predictions " + q(pf) + " --truth-folder " + q(root.string()));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "line 2")) << r.output;
  EXPECT_TRUE(has(r.output, "not inside")) << r.output;
}

TEST_F(CliEval, MulticlassThreeClasses) {
  const std::string pred = write("pred.csv",
                                 "path,predicted,prob_A,prob_B,prob_C\n"
                                 "1.png,A,0.7,0.2,0.1\n"
                                 "2.png,B,0.1,0.8,0.1\n"
                                 "3.png,C,0.2,0.2,0.6\n"
                                 "4.png,B,0.3,0.5,0.2\n");  // truth A: wrong
  const std::string truth = write("truth.csv", "path,label\n1.png,A\n2.png,B\n3.png,C\n4.png,A\n");
  const Result r = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 20 --json", true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["task"], "multiclass");
  EXPECT_NEAR(j["metrics"]["accuracy"]["value"].get<double>(), 0.75, 1e-12);
  EXPECT_EQ(j["confusion_matrix"], json({{1, 1, 0}, {0, 1, 0}, {0, 0, 1}}));
  EXPECT_EQ(j["class_names"], json({"A", "B", "C"}));
  const Result t = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --bootstrap 0");
  ASSERT_EQ(t.code, 0) << t.output;
  EXPECT_TRUE(has(t.output, "multiclass")) << t.output;
  EXPECT_TRUE(has(t.output, "Per class")) << t.output;
}

TEST_F(CliEval, BadRuleIsUsageError) {
  const std::string pred = write("pred.csv", kBinaryPred), truth = write("truth.csv", kBinaryTruth);
  for (const char* rule : {"best", "sensitivity:", "sensitivity:1.5", "sensitivity:abc"}) {
    const Result r = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --rule " + rule);
    EXPECT_EQ(r.code, 2) << rule << "\n" << r.output;
    EXPECT_TRUE(has(r.output, "--rule")) << r.output;
  }
  const Result both = run_cxr("eval --predictions " + q(pred));
  EXPECT_EQ(both.code, 2) << both.output;
  const Result pos = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --positive COVID");
  EXPECT_EQ(pos.code, 2) << pos.output;
}

TEST_F(CliEval, MissingTruthAndBadData) {
  const std::string pred = write("pred.csv", kBinaryPred);
  const std::string truth = write("truth.csv", "path,label\nn1.png,NORMAL\np1.png,PNEUMONIA\n");
  const Result r = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "no ground truth")) << r.output;
  EXPECT_TRUE(has(r.output, "n2.png")) << r.output;
  // --ignore-missing evaluates the rest (1 negative, 1 positive).
  const Result ig = run_cxr("eval --predictions " + q(pred) + " --truth " + q(truth) + " --ignore-missing --json", true);
  ASSERT_EQ(ig.code, 0) << ig.output;
  EXPECT_EQ(json::parse(ig.output)["num_cases"], 2);

  const Result nofile = run_cxr("eval --predictions " + q((dir_ / "nope.csv").string()) + " --truth " + q(truth));
  EXPECT_EQ(nofile.code, 1) << nofile.output;
  EXPECT_TRUE(has(nofile.output, "nope.csv")) << nofile.output;

  const std::string other = write("other.csv", "path,label\nn1.png,COVID\n");
  const std::string one = write("one.csv", "path,predicted,prob_NORMAL,prob_PNEUMONIA\nn1.png,NORMAL,0.9,0.1\n");
  const Result mismatch = run_cxr("eval --predictions " + q(one) + " --truth " + q(other));
  EXPECT_EQ(mismatch.code, 1) << mismatch.output;
  EXPECT_TRUE(has(mismatch.output, "COVID")) << mismatch.output;
}

}  // namespace
