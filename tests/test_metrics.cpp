// Tests for tools/metrics (cxr::metrics): every metric against values worked by hand.
#include "tools/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <vector>

#include "expect_error.h"

namespace cxr::metrics {
namespace {

// The 10-case example used throughout, worked by hand:
//
//   case   1    2    3    4    5    6    7    8    9    10
//   score .95  .85  .80  .70  .60  .55  .40  .30  .20  .10
//   label  1    1    0    1    0    1    0    1    0    0        P = 5, N = 5
//
// Threshold 0.5 (score >= 0.5 is positive): cases 1-6 positive.
//   tp = {1,2,4,6} = 4, fp = {3,5} = 2, fn = {8} = 1, tn = {7,9,10} = 3
//   accuracy 7/10 = 0.7, PPV 4/6, sensitivity 4/5 = 0.8, specificity 3/5 = 0.6,
//   NPV 3/4 = 0.75, F1 = 2*4 / (2*4 + 2 + 1) = 8/11.
// ROC-AUC by counting pairs (positive scored above negative):
//   .95 -> 5, .85 -> 5, .70 -> 4 (.60 .40 .20 .10), .55 -> 3, .30 -> 2  => 19/25 = 0.76
// Average precision, walking down the scores (R = recall, P = precision at each positive):
//   .95 R.2 P1, .85 R.4 P1, .70 R.6 P3/4, .55 R.8 P4/6, .30 R1 P5/8
//   AP = 0.2 * (1 + 1 + 0.75 + 2/3 + 0.625) = 0.808333...
// Youden J = tpr - fpr per threshold:
//   .95 .2, .85 .4, .80 .2, .70 .4, .60 .2, .55 .4, .40 .2, .30 .4, .20 .2, .10 0
//   max 0.4, reached first (highest threshold) at 0.85.
// Target sensitivity 0.8: highest threshold with tpr >= 0.8 is 0.55 (tp = 4);
//   target 0.9 -> 0.30 (tp = 5).
const std::vector<double> kScores = {.95, .85, .80, .70, .60, .55, .40, .30, .20, .10};
const std::vector<int> kLabels = {1, 1, 0, 1, 0, 1, 0, 1, 0, 0};

TEST(Metrics, CountsAndRatesOnHandExample) {
  const BinaryCounts c = counts_at(kScores, kLabels, 0.5);
  EXPECT_EQ(c, (BinaryCounts{4, 2, 3, 1}));
  EXPECT_DOUBLE_EQ(accuracy(c), 0.7);
  EXPECT_DOUBLE_EQ(precision(c), 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(recall(c), 0.8);
  EXPECT_DOUBLE_EQ(sensitivity(c), 0.8);
  EXPECT_DOUBLE_EQ(specificity(c), 0.6);
  EXPECT_DOUBLE_EQ(npv(c), 0.75);
  EXPECT_DOUBLE_EQ(f1(c), 8.0 / 11.0);
  // score == threshold counts as positive
  EXPECT_EQ(counts_at(kScores, kLabels, 0.55).tp, 4);
  EXPECT_EQ(counts_at(kScores, kLabels, 0.5500001).tp, 3);
}

TEST(Metrics, ZeroDenominatorsAreNaN) {
  const BinaryCounts none{0, 0, 5, 5};  // nothing predicted positive
  EXPECT_TRUE(std::isnan(precision(none)));
  EXPECT_DOUBLE_EQ(recall(none), 0.0);
  EXPECT_DOUBLE_EQ(f1(none), 0.0);
  const BinaryCounts no_pos{0, 3, 2, 0};
  EXPECT_TRUE(std::isnan(recall(no_pos)));
  EXPECT_TRUE(std::isnan(npv(BinaryCounts{3, 2, 0, 0})));
  EXPECT_TRUE(std::isnan(specificity(BinaryCounts{3, 0, 0, 2})));
  EXPECT_TRUE(std::isnan(accuracy(BinaryCounts{})));
  EXPECT_TRUE(std::isnan(f1(BinaryCounts{0, 0, 4, 0})));
}

TEST(Metrics, RocCurveAndAucOnHandExample) {
  const auto roc = roc_curve(kScores, kLabels);
  ASSERT_EQ(roc.size(), 11u);
  EXPECT_TRUE(std::isinf(roc[0].threshold));
  EXPECT_DOUBLE_EQ(roc[0].fpr, 0.0);
  EXPECT_DOUBLE_EQ(roc[0].tpr, 0.0);
  EXPECT_DOUBLE_EQ(roc[2].tpr, 0.4);
  EXPECT_DOUBLE_EQ(roc[2].threshold, 0.85);
  EXPECT_DOUBLE_EQ(roc[3].fpr, 0.2);
  EXPECT_DOUBLE_EQ(roc.back().fpr, 1.0);
  EXPECT_DOUBLE_EQ(roc.back().tpr, 1.0);
  EXPECT_NEAR(roc_auc(kScores, kLabels), 0.76, 1e-12);
  EXPECT_NEAR(mann_whitney_auc(kScores, kLabels), 0.76, 1e-12);
}

TEST(Metrics, AucOfPerfectInvertedAndConstantScorers) {
  const std::vector<int> y = {0, 0, 1, 1, 0, 1};
  const std::vector<double> perfect = {.1, .2, .8, .9, .3, .7};
  std::vector<double> inverted;
  for (double s : perfect) inverted.push_back(1 - s);
  const std::vector<double> constant(6, 0.5);
  EXPECT_DOUBLE_EQ(roc_auc(perfect, y), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(inverted, y), 0.0);
  EXPECT_DOUBLE_EQ(roc_auc(constant, y), 0.5);
  // one point per distinct score: the constant scorer jumps straight to (1, 1)
  const auto roc = roc_curve(constant, y);
  ASSERT_EQ(roc.size(), 2u);
  EXPECT_DOUBLE_EQ(roc[1].fpr, 1.0);
  EXPECT_DOUBLE_EQ(roc[1].tpr, 1.0);
  // undefined with a single class
  EXPECT_TRUE(std::isnan(roc_auc(perfect, std::vector<int>(6, 1))));
  EXPECT_TRUE(std::isnan(mann_whitney_auc(perfect, std::vector<int>(6, 0))));
}

TEST(Metrics, AucEqualsMannWhitneyWithTies) {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
    std::mt19937_64 rng(seed);
    const std::size_t n = 300;
    std::vector<double> s(n);
    std::vector<int> y(n);
    for (std::size_t i = 0; i < n; ++i) {
      y[i] = static_cast<int>(rng() % 3 == 0);
      s[i] = double(rng() % 10 + (y[i] ? 2 : 0)) / 10.0;  // only 12 distinct values: many ties
    }
    double wins = 0, pairs = 0;  // brute-force Mann-Whitney probability, ties count 1/2
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j)
        if (y[i] == 1 && y[j] == 0) {
          pairs += 1;
          wins += s[i] > s[j] ? 1.0 : (s[i] == s[j] ? 0.5 : 0.0);
        }
    const double expected = wins / pairs;
    EXPECT_NEAR(roc_auc(s, y), expected, 1e-12) << "seed " << seed;
    EXPECT_NEAR(mann_whitney_auc(s, y), expected, 1e-12) << "seed " << seed;
  }
}

TEST(Metrics, AveragePrecisionSklearnExample) {
  // y = [0,0,1,1], scores [0.1,0.4,0.35,0.8]. Descending: 0.8 (pos) R=.5 P=1;
  // 0.4 (neg) R=.5 P=.5; 0.35 (pos) R=1 P=2/3; 0.1 (neg) R=1 P=.5.
  // AP = (.5-0)*1 + 0*.5 + (1-.5)*(2/3) + 0*.5 = 0.8333...
  const std::vector<int> y = {0, 0, 1, 1};
  const std::vector<double> s = {0.1, 0.4, 0.35, 0.8};
  EXPECT_NEAR(average_precision(s, y), 5.0 / 6.0, 1e-12);
  const auto pr = pr_curve(s, y);
  ASSERT_EQ(pr.size(), 5u);
  EXPECT_DOUBLE_EQ(pr[0].recall, 0.0);
  EXPECT_DOUBLE_EQ(pr[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(pr[3].recall, 1.0);
  EXPECT_DOUBLE_EQ(pr[3].precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(pr[3].threshold, 0.35);
  EXPECT_NEAR(average_precision(kScores, kLabels), 0.2 * (1 + 1 + 0.75 + 2.0 / 3.0 + 0.625), 1e-12);
  // ties: all scores equal -> one step to recall 1 at precision P/(P+N)
  EXPECT_NEAR(average_precision(std::vector<double>(4, 0.3), y), 0.5, 1e-12);
  EXPECT_TRUE(std::isnan(average_precision(s, std::vector<int>(4, 0))));
}

TEST(Metrics, ThresholdSweep) {
  const std::vector<double> t = {0.5, 0.0, 1.0};
  const auto rows = threshold_sweep(kScores, kLabels, t);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].counts, (BinaryCounts{4, 2, 3, 1}));
  EXPECT_DOUBLE_EQ(rows[0].sensitivity, 0.8);
  EXPECT_DOUBLE_EQ(rows[0].specificity, 0.6);
  EXPECT_DOUBLE_EQ(rows[0].ppv, 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(rows[0].npv, 0.75);
  EXPECT_DOUBLE_EQ(rows[0].f1, 8.0 / 11.0);
  EXPECT_DOUBLE_EQ(rows[1].sensitivity, 1.0);
  EXPECT_DOUBLE_EQ(rows[1].specificity, 0.0);
  EXPECT_TRUE(std::isnan(rows[2].ppv));  // nothing predicted positive at 1.0
  const auto grid = default_sweep_thresholds(kScores);
  ASSERT_EQ(grid.size(), 21u);
  EXPECT_DOUBLE_EQ(grid[10], 0.5);
  const auto grid2 = default_sweep_thresholds(std::vector<double>{-2.0, 3.0}, 6);
  ASSERT_EQ(grid2.size(), 6u);
  EXPECT_DOUBLE_EQ(grid2[1], -1.0);
}

TEST(Metrics, OperatingPoints) {
  const auto y = youden_point(kScores, kLabels);
  EXPECT_DOUBLE_EQ(y.threshold, 0.85);
  EXPECT_NEAR(y.youden_j, 0.4, 1e-12);
  EXPECT_EQ(y.counts, (BinaryCounts{2, 0, 5, 3}));
  const auto s80 = target_sensitivity_point(kScores, kLabels, 0.8);
  EXPECT_DOUBLE_EQ(s80.threshold, 0.55);
  EXPECT_DOUBLE_EQ(s80.sensitivity, 0.8);
  EXPECT_DOUBLE_EQ(s80.specificity, 0.6);
  const auto s90 = choose_operating_point(kScores, kLabels, "sensitivity:0.9");
  EXPECT_DOUBLE_EQ(s90.threshold, 0.30);
  EXPECT_EQ(s90.rule, "sensitivity:0.9");
  EXPECT_DOUBLE_EQ(s90.sensitivity, 1.0);
  EXPECT_EQ(choose_operating_point(kScores, kLabels, "youden").threshold, 0.85);
  // an unambiguous Youden maximum: 0.6 separates perfectly
  const std::vector<double> s = {.9, .6, .5, .2};
  const std::vector<int> l = {1, 1, 0, 0};
  EXPECT_DOUBLE_EQ(youden_point(s, l).threshold, 0.6);
  EXPECT_DOUBLE_EQ(youden_point(s, l).youden_j, 1.0);
}

TEST(Metrics, Calibration) {
  // Perfectly calibrated: p = 0.25 with 1 of 4 positive, p = 0.75 with 3 of 4 positive.
  const std::vector<double> p = {.25, .25, .25, .25, .75, .75, .75, .75};
  const std::vector<int> y = {1, 0, 0, 0, 1, 1, 1, 0};
  const auto cal = calibration(p, y, 10);
  EXPECT_NEAR(cal.ece, 0.0, 1e-15);
  ASSERT_EQ(cal.bins.size(), 10u);
  EXPECT_EQ(cal.bins[2].count, 4);
  EXPECT_EQ(cal.bins[7].count, 4);
  EXPECT_DOUBLE_EQ(cal.bins[2].observed, 0.25);
  EXPECT_TRUE(std::isnan(cal.bins[0].mean_confidence));
  // Hand example: bin 9 holds {.9,.9} with 1 of 2 positive -> |.9-.5| * 2/4 = .2;
  // bin 1 holds {.1,.1} with none positive -> |.1-0| * 2/4 = .05. ECE = .25.
  EXPECT_NEAR(expected_calibration_error(std::vector<double>{.9, .9, .1, .1}, std::vector<int>{1, 0, 0, 0}), 0.25,
              1e-12);
  // p = 1 falls in the last bin; 5 bins
  const auto c5 = calibration(std::vector<double>{1.0, 0.0}, std::vector<int>{1, 0}, 5);
  EXPECT_EQ(c5.bins[4].count, 1);
  EXPECT_EQ(c5.bins[0].count, 1);
  EXPECT_DOUBLE_EQ(c5.ece, 0.0);
}

TEST(Metrics, BootstrapIsDeterministicAndContainsEstimate) {
  std::mt19937_64 rng(7);
  std::vector<double> s(200);
  std::vector<int> y(200);
  for (std::size_t i = 0; i < s.size(); ++i) {
    y[i] = static_cast<int>(rng() % 2);
    s[i] = double(rng() % 1000) / 1000.0 + 0.3 * y[i];
  }
  const BinaryMetric auc = [](auto a, auto b) { return roc_auc(a, b); };
  const auto a = bootstrap_ci(s, y, auc, {1000, 42, 0.95});
  const auto b = bootstrap_ci(s, y, auc, {1000, 42, 0.95});
  EXPECT_DOUBLE_EQ(a.estimate, roc_auc(s, y));
  EXPECT_LE(a.lo, a.estimate);
  EXPECT_GE(a.hi, a.estimate);
  EXPECT_LT(a.lo, a.hi);
  EXPECT_EQ(a.resamples_used, 1000);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  const auto c = bootstrap_ci(s, y, auc, {1000, 43, 0.95});
  EXPECT_NE(a.lo, c.lo);
  // tiny data: single-class resamples are skipped for AUC
  const std::vector<double> ts = {.9, .1, .8};
  const std::vector<int> ty = {1, 0, 0};
  const auto t = bootstrap_ci(ts, ty, auc, {500, 1, 0.95});
  EXPECT_LT(t.resamples_used, 500);
  EXPECT_GT(t.resamples_used, 0);
  // percentile with linear interpolation
  const std::vector<double> sorted = {1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(percentile_sorted(sorted, 0.5), 3.0);
  EXPECT_DOUBLE_EQ(percentile_sorted(sorted, 0.125), 1.5);
}

// 3-class example, worked by hand:
//   true: 0 0 0 1 1 1 2 2 2 2
//   pred: 0 0 1 1 1 2 2 2 1 2
//   confusion (rows true, cols pred): [2 1 0] [0 2 1] [0 1 3]
//   class 0: tp 2 fp 0 fn 1 -> P 1,   R 2/3, F1 4/5
//   class 1: tp 2 fp 2 fn 1 -> P 1/2, R 2/3, F1 4/7
//   class 2: tp 3 fp 1 fn 1 -> P 3/4, R 3/4, F1 3/4
//   macro P = 0.75, macro R = (2/3+2/3+3/4)/3, macro F1 = (4/5+4/7+3/4)/3, micro = 7/10.
const std::vector<int> kTrue3 = {0, 0, 0, 1, 1, 1, 2, 2, 2, 2};
const std::vector<int> kPred3 = {0, 0, 1, 1, 1, 2, 2, 2, 1, 2};

TEST(Metrics, ConfusionMatrixAndAverages) {
  const auto cm = confusion_matrix(kTrue3, kPred3, 3);
  const std::vector<std::int64_t> expected = {2, 1, 0, 0, 2, 1, 0, 1, 3};
  EXPECT_EQ(cm.cells, expected);
  EXPECT_EQ(cm.total(), 10);
  const auto s = summarize(cm, {"a", "b", "c"});
  EXPECT_DOUBLE_EQ(s.per_class[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(s.per_class[1].precision, 0.5);
  EXPECT_DOUBLE_EQ(s.per_class[2].recall, 0.75);
  EXPECT_DOUBLE_EQ(s.per_class[0].f1, 0.8);
  EXPECT_DOUBLE_EQ(s.per_class[1].f1, 4.0 / 7.0);
  EXPECT_EQ(s.per_class[2].support, 4);
  EXPECT_EQ(s.per_class[1].name, "b");
  EXPECT_NEAR(s.macro_precision, 0.75, 1e-12);
  EXPECT_NEAR(s.macro_recall, (2.0 / 3 + 2.0 / 3 + 0.75) / 3, 1e-12);
  EXPECT_NEAR(s.macro_f1, (0.8 + 4.0 / 7 + 0.75) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.7);
  EXPECT_DOUBLE_EQ(s.micro_precision, 0.7);
  EXPECT_DOUBLE_EQ(s.micro_recall, 0.7);
  EXPECT_DOUBLE_EQ(s.micro_f1, 0.7);
}

// Probability rows whose argmax is kPred3.
std::vector<std::vector<double>> probs3() {
  std::vector<std::vector<double>> p;
  for (std::size_t i = 0; i < kPred3.size(); ++i) {
    std::vector<double> row(3, 0.2);
    row[kPred3[i]] = 0.6;
    if (i == 8) row = {0.1, 0.5, 0.4};  // true 2 predicted 1, but class 2 still ranked high
    p.push_back(row);
  }
  return p;
}

TEST(Metrics, OneVsRestAucAndMulticlassReport) {
  const auto p = probs3();
  EXPECT_EQ(argmax_rows(p), kPred3);
  EXPECT_EQ(argmax_rows({{0.3, 0.3, 0.1}}), std::vector<int>{0});  // first on ties
  const auto aucs = one_vs_rest_auc(p, kTrue3, 3);
  ASSERT_EQ(aucs.size(), 3u);
  // class 0: positives {0,1,2} score .6,.6,.2; negatives score .2 x6, .1 (case 8).
  //   .6 beats all 7 (x2) = 14; .2 beats 1 (.1) and ties 6 -> 1 + 3 = 4. (14+4)/21 = 18/21.
  EXPECT_NEAR(aucs[0], 18.0 / 21.0, 1e-12);
  for (int c = 0; c < 3; ++c) {
    std::vector<double> col;
    std::vector<int> bin;
    for (std::size_t i = 0; i < p.size(); ++i) col.push_back(p[i][c]), bin.push_back(kTrue3[i] == c);
    EXPECT_DOUBLE_EQ(aucs[c], roc_auc(col, bin));
  }
  EvalOptions o;
  o.bootstrap = 100;
  o.seed = 3;
  const auto r = evaluate_multiclass(p, kTrue3, {"normal", "bacterial", "viral"}, o);
  EXPECT_EQ(r.task, "multiclass");
  EXPECT_DOUBLE_EQ(r.summary.accuracy, 0.7);
  EXPECT_NEAR(r.summary.macro_auc, (aucs[0] + aucs[1] + aucs[2]) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(r.per_class[0].auc, aucs[0]);
  ASSERT_EQ(r.metrics.size(), 3u);
  EXPECT_EQ(r.metrics[0].name, "accuracy");
  EXPECT_DOUBLE_EQ(r.metrics[0].value.estimate, 0.7);
  const auto j = to_json(r);
  EXPECT_EQ(j["confusion_matrix"][2][1].get<int>(), 1);
  EXPECT_EQ(j["per_class"][2]["name"], "viral");
  EXPECT_DOUBLE_EQ(j["summary"]["micro_f1"].get<double>(), 0.7);
  EXPECT_EQ(j["calibration"]["bins"].size(), 10u);
  EXPECT_FALSE(j.contains("roc"));
}

TEST(Metrics, BinaryReportAndJson) {
  EvalOptions o;
  o.bootstrap = 200;
  o.seed = 11;
  o.rule = "sensitivity:0.8";
  const auto r = evaluate_binary(kScores, kLabels, o);
  EXPECT_EQ(r.task, "binary");
  EXPECT_EQ(r.counts, (BinaryCounts{4, 2, 3, 1}));
  EXPECT_EQ(r.roc.size(), 11u);
  EXPECT_EQ(r.pr.size(), 11u);
  EXPECT_EQ(r.sweep.size(), 21u);
  EXPECT_DOUBLE_EQ(r.operating_point.threshold, 0.55);
  EXPECT_EQ(r.confusion.cells, (std::vector<std::int64_t>{3, 2, 1, 4}));
  const auto j = to_json(r);
  EXPECT_NEAR(j["metrics"]["roc_auc"]["value"].get<double>(), 0.76, 1e-12);
  EXPECT_NEAR(j["metrics"]["average_precision"]["value"].get<double>(), 0.8083333333333333, 1e-12);
  EXPECT_DOUBLE_EQ(j["metrics"]["f1"]["value"].get<double>(), 8.0 / 11.0);
  EXPECT_LE(j["metrics"]["sensitivity"]["ci_low"].get<double>(), 0.8);
  EXPECT_GE(j["metrics"]["sensitivity"]["ci_high"].get<double>(), 0.8);
  EXPECT_TRUE(j["roc"][0]["threshold"].is_null());  // +inf written as null
  EXPECT_EQ(j["counts"]["tp"].get<int>(), 4);
  EXPECT_EQ(j["operating_point"]["rule"], "sensitivity:0.8");
  EXPECT_EQ(j["confusion_matrix"][1][1].get<int>(), 4);
  EXPECT_EQ(j["options"]["bootstrap"].get<int>(), 200);
  const std::string text = j.dump();  // valid JSON: no NaN/inf literals
  EXPECT_EQ(text.find("NaN"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(text), j);
  // the same seed gives the same report
  EXPECT_EQ(to_json(evaluate_binary(kScores, kLabels, o)).dump(), text);
  // bootstrap 0: point estimates only
  o.bootstrap = 0;
  const auto r0 = evaluate_binary(kScores, kLabels, o);
  EXPECT_TRUE(std::isnan(r0.metrics[0].value.lo));
  EXPECT_NEAR(r0.metrics[0].value.estimate, 0.76, 1e-12);
}

TEST(Metrics, CsvWriters) {
  std::ostringstream roc, pr, sweep;
  write_roc_csv(roc, roc_curve(std::vector<double>{0.8, 0.2}, std::vector<int>{1, 0}));
  EXPECT_EQ(roc.str(), "threshold,fpr,tpr\ninf,0,0\n0.80000000000000004,0,1\n0.20000000000000001,1,1\n");
  write_pr_csv(pr, pr_curve(std::vector<double>{0.5, 0.5}, std::vector<int>{1, 0}));
  EXPECT_EQ(pr.str(), "threshold,recall,precision\ninf,0,1\n0.5,1,0.5\n");
  const std::vector<double> t = {1.0};
  write_sweep_csv(sweep, threshold_sweep(kScores, kLabels, t));
  EXPECT_EQ(sweep.str(), "threshold,tp,fp,tn,fn,sensitivity,specificity,ppv,npv,f1\n1,0,0,5,5,0,1,,0.5,0\n");
}

TEST(Metrics, ValidationErrors) {
  const std::vector<double> s3 = {.1, .2, .3};
  const std::vector<int> y2 = {0, 1};
  expect_error([&] { counts_at(s3, y2, 0.5); }, {"differ in size", "3 vs 2"});
  expect_error([&] { roc_auc(s3, std::vector<int>{0, 2, 1}); }, {"label at index 1", "is 2"});
  expect_error([&] { roc_auc(std::vector<double>{.1, NAN}, y2); }, {"score at index 1", "not finite"});
  expect_error([&] { roc_auc(std::vector<double>{}, std::vector<int>{}); }, {"empty"});
  expect_error([&] { roc_curve(s3, std::vector<int>{1, 1, 1}); }, {"needs both classes"});
  expect_error([&] { evaluate_binary(s3, std::vector<int>{0, 0, 0}); }, {"evaluate_binary", "needs both classes"});
  expect_error([&] { choose_operating_point(kScores, kLabels, "f1"); }, {"unknown operating-point rule", "f1"});
  expect_error([&] { choose_operating_point(kScores, kLabels, "sensitivity:abc"); }, {"sensitivity:abc"});
  expect_error([&] { target_sensitivity_point(kScores, kLabels, 1.5); }, {"target sensitivity", "1.5"});
  expect_error([&] { calibration(std::vector<double>{.5, 1.5}, y2); }, {"index 1", "outside [0, 1]"});
  expect_error([&] { calibration(std::vector<double>{.5, .5}, y2, 0); }, {"bins"});
  expect_error([&] { confusion_matrix(std::vector<int>{0, 3}, std::vector<int>{0, 1}, 3); },
               {"label at index 1", "expected 0..2"});
  expect_error([&] { confusion_matrix(std::vector<int>{0, 1}, std::vector<int>{0, -1}, 3); },
               {"prediction at index 1"});
  const auto p = probs3();
  expect_error([&] { evaluate_multiclass(p, std::vector<int>{0, 1}, {"a", "b", "c"}); }, {"differ in size"});
  auto bad = p;
  bad[4] = {0.5, 0.5};
  expect_error([&] { evaluate_multiclass(bad, kTrue3, {"a", "b", "c"}); }, {"row 4", "expected 3"});
  bad = p;
  bad[6][2] = INFINITY;
  expect_error([&] { evaluate_multiclass(bad, kTrue3, {"a", "b", "c"}); }, {"row 6", "not finite"});
  auto badl = kTrue3;
  badl[9] = 3;
  expect_error([&] { evaluate_multiclass(p, badl, {"a", "b", "c"}); }, {"label at index 9", "expected 0..2"});
  expect_error([&] { evaluate_multiclass(p, kTrue3, {"only"}); }, {"at least 2 classes"});
}

}  // namespace
}  // namespace cxr::metrics
