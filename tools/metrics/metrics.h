// cxr::metrics — evaluation metrics behind `cxr eval`: binary counts and rates, ROC and
// precision-recall curves, threshold sweeps, operating-point rules, calibration (ECE),
// percentile-bootstrap confidence intervals, multiclass confusion matrices and
// one-vs-rest summaries, and a JSON report.
//
// Conventions (all computation in double precision, fully deterministic):
// - Binary labels are 0 (negative) or 1 (positive). A case is predicted positive when
//   score >= threshold.
// - Undefined ratios (zero denominator, e.g. precision with no predicted positives, or an
//   AUC when only one class is present) are returned as quiet NaN, never 0. In JSON NaN
//   and infinities are written as null.
// - Inputs are validated: empty inputs, mismatched sizes, labels out of range and
//   non-finite scores/probabilities throw cxr::ValueError naming the problem and index.
// - Bootstrap: plain (non-stratified) resampling of cases with replacement, driven by
//   std::mt19937_64 seeded with the given seed; indices are drawn by rejection sampling
//   (not std::uniform_int_distribution) so the resamples are identical on every standard
//   library. A resample on which the metric is NaN (e.g. a single-class resample for AUC)
//   is skipped; `resamples_used` reports how many counted. The interval is the percentile
//   interval with linear interpolation between order statistics (numpy's default).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace cxr::metrics {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------------------ binary
struct BinaryCounts {
  std::int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  std::int64_t total() const { return tp + fp + tn + fn; }
  bool operator==(const BinaryCounts&) const = default;
};

BinaryCounts counts_at(std::span<const double> scores, std::span<const int> labels, double threshold);

// Each returns NaN when its denominator is zero.
double accuracy(const BinaryCounts& c);     // (tp+tn)/total
double precision(const BinaryCounts& c);    // PPV: tp/(tp+fp)
double recall(const BinaryCounts& c);       // sensitivity, TPR: tp/(tp+fn)
double sensitivity(const BinaryCounts& c);  // same as recall
double specificity(const BinaryCounts& c);  // TNR: tn/(tn+fp)
double npv(const BinaryCounts& c);          // tn/(tn+fn)
double f1(const BinaryCounts& c);           // 2tp/(2tp+fp+fn)

struct RocPoint {
  double fpr = 0, tpr = 0, threshold = 0;
};
// One point per distinct score, in decreasing threshold order, preceded by (0, 0, +inf).
// Tied scores move the curve diagonally in one step. Throws ValueError unless both
// classes are present.
std::vector<RocPoint> roc_curve(std::span<const double> scores, std::span<const int> labels);
// Trapezoidal area under roc_curve; NaN when only one class is present. Equals
// mann_whitney_auc: P(score_pos > score_neg) + 1/2 P(score_pos == score_neg).
double roc_auc(std::span<const double> scores, std::span<const int> labels);
// The same quantity from mid-ranks (Mann-Whitney U / (P N)); NaN with one class.
double mann_whitney_auc(std::span<const double> scores, std::span<const int> labels);

struct PrPoint {
  double recall = 0, precision = 1, threshold = 0;
};
// (recall 0, precision 1, +inf) followed by one point per distinct score in decreasing
// threshold order. Throws ValueError when there is no positive case.
std::vector<PrPoint> pr_curve(std::span<const double> scores, std::span<const int> labels);
// Average precision (scikit-learn's definition): sum_n (R_n - R_{n-1}) P_n over the
// distinct thresholds in decreasing order, R_0 = 0. NaN when there is no positive case.
double average_precision(std::span<const double> scores, std::span<const int> labels);

struct SweepRow {
  double threshold = 0;
  BinaryCounts counts;
  double sensitivity = 0, specificity = 0, ppv = 0, npv = 0, f1 = 0;
};
std::vector<SweepRow> threshold_sweep(std::span<const double> scores, std::span<const int> labels,
                                      std::span<const double> thresholds);
// Thresholds for a report sweep: 0, 0.05, ..., 1 when every score is in [0, 1], otherwise
// `steps` evenly spaced values from min to max score.
std::vector<double> default_sweep_thresholds(std::span<const double> scores, int steps = 21);

struct OperatingPoint {
  std::string rule;  // "youden" or "sensitivity:<target>"
  double threshold = 0;
  BinaryCounts counts;
  double sensitivity = 0, specificity = 0, ppv = 0, npv = 0, f1 = 0;
  double youden_j = 0;  // sensitivity + specificity - 1
};
// Candidate thresholds are the distinct scores. Youden: maximises tpr - fpr, ties broken
// toward the higher threshold. Target sensitivity: the highest threshold whose
// sensitivity >= target (target in (0, 1]). Both need both classes (ValueError otherwise).
OperatingPoint youden_point(std::span<const double> scores, std::span<const int> labels);
OperatingPoint target_sensitivity_point(std::span<const double> scores, std::span<const int> labels,
                                        double target);
// rule: "youden" or "sensitivity:<target>", e.g. "sensitivity:0.95".
OperatingPoint choose_operating_point(std::span<const double> scores, std::span<const int> labels,
                                      const std::string& rule);

struct CalibrationBin {
  double lo = 0, hi = 0;             // [lo, hi); the last bin includes 1
  std::int64_t count = 0;
  double mean_confidence = kNaN;     // mean predicted probability in the bin (NaN if empty)
  double observed = kNaN;            // fraction of outcomes == 1 in the bin (NaN if empty)
};
struct Calibration {
  std::vector<CalibrationBin> bins;
  double ece = 0;  // sum_b (n_b / N) |mean_confidence_b - observed_b|
};
// Reliability bins over `bins` equal-width bins of [0, 1]. `probs` must lie in [0, 1];
// `outcomes` are 0/1 (the label for binary probabilities, "prediction correct" for
// top-class confidences).
Calibration calibration(std::span<const double> probs, std::span<const int> outcomes, int bins = 10);
double expected_calibration_error(std::span<const double> probs, std::span<const int> outcomes,
                                  int bins = 10);

// ------------------------------------------------------------------------------ bootstrap
struct ConfidenceInterval {
  double estimate = kNaN;  // the metric on the full data
  double lo = kNaN, hi = kNaN;
  std::int64_t resamples_used = 0;
};
struct BootstrapOptions {
  int resamples = 1000;
  std::uint64_t seed = 0;
  double level = 0.95;
};
// Generic: `metric(indices)` evaluates the metric on the cases at `indices` (with
// repetition). The estimate uses indices 0..n-1.
using IndexMetric = std::function<double(std::span<const std::size_t>)>;
ConfidenceInterval bootstrap_ci(std::size_t n, const IndexMetric& metric, const BootstrapOptions& opts = {});
// Convenience for binary metrics of (scores, labels).
using BinaryMetric = std::function<double(std::span<const double>, std::span<const int>)>;
ConfidenceInterval bootstrap_ci(std::span<const double> scores, std::span<const int> labels,
                                const BinaryMetric& metric, const BootstrapOptions& opts = {});
// Percentile of sorted data with linear interpolation (q in [0, 1]).
double percentile_sorted(std::span<const double> sorted, double q);

// ------------------------------------------------------------------------------ multiclass
struct ConfusionMatrix {
  int num_classes = 0;
  std::vector<std::int64_t> cells;  // row-major, rows = true class, cols = predicted class
  std::int64_t at(int truth, int predicted) const {
    return cells[static_cast<std::size_t>(truth) * num_classes + predicted];
  }
  std::int64_t total() const;
};
ConfusionMatrix confusion_matrix(std::span<const int> labels, std::span<const int> predicted, int num_classes);
// Index of the largest entry in each row (first one on ties).
std::vector<int> argmax_rows(const std::vector<std::vector<double>>& probs);

struct ClassMetrics {
  std::string name;
  std::int64_t support = 0;  // true cases of this class
  double precision = kNaN, recall = kNaN, f1 = kNaN, auc = kNaN;  // one-vs-rest
};
struct MulticlassSummary {
  std::vector<ClassMetrics> per_class;
  double accuracy = kNaN;
  // Macro averages are the unweighted means over classes where the metric is defined
  // (NaN classes are left out; NaN if none is defined).
  double macro_precision = kNaN, macro_recall = kNaN, macro_f1 = kNaN, macro_auc = kNaN;
  // Micro averages pool tp/fp/fn over classes; for single-label data all three equal accuracy.
  double micro_precision = kNaN, micro_recall = kNaN, micro_f1 = kNaN;
};
// Per-class and averaged metrics from a confusion matrix (AUCs left NaN).
MulticlassSummary summarize(const ConfusionMatrix& cm, const std::vector<std::string>& class_names = {});
// One-vs-rest ROC-AUC of class k using column k of the probabilities (NaN if class k is
// absent or is the only class present).
std::vector<double> one_vs_rest_auc(const std::vector<std::vector<double>>& probs, std::span<const int> labels,
                                    int num_classes);

// ------------------------------------------------------------------------------ report
struct EvalOptions {
  double threshold = 0.5;
  std::string rule = "youden";  // or "sensitivity:<target>"
  int bootstrap = 1000;         // 0 disables the confidence intervals
  std::uint64_t seed = 0;
  int bins = 10;
};

struct NamedMetric {
  std::string name;
  ConfidenceInterval value;
};

struct EvalReport {
  std::string task;  // "binary" or "multiclass"
  std::int64_t num_cases = 0;
  EvalOptions options;
  // binary
  BinaryCounts counts;  // at options.threshold
  std::vector<RocPoint> roc;
  std::vector<PrPoint> pr;
  std::vector<SweepRow> sweep;
  OperatingPoint operating_point;
  // both (multiclass: calibration of the top-class confidence against correctness)
  std::vector<NamedMetric> metrics;  // point estimates with bootstrap CIs, in a fixed order
  Calibration calibration;
  // multiclass
  std::vector<std::string> class_names;
  ConfusionMatrix confusion;  // binary: 2 x 2 at options.threshold
  std::vector<ClassMetrics> per_class;
  MulticlassSummary summary;
};

// Needs both classes present (ValueError otherwise). `scores` are used as probabilities
// for calibration only when they all lie in [0, 1] (otherwise calibration has no bins).
EvalReport evaluate_binary(std::span<const double> scores, std::span<const int> labels, const EvalOptions& opts = {});
// probs: one row per case, one column per class (rows need not sum to 1, but must be
// finite); predicted class = argmax of the row.
EvalReport evaluate_multiclass(const std::vector<std::vector<double>>& probs, std::span<const int> labels,
                               const std::vector<std::string>& class_names, const EvalOptions& opts = {});

nlohmann::json to_json(const EvalReport& report);

// CSV writers (header row, one row per point; numbers with 17 significant digits, an
// infinite threshold as "inf", NaN as an empty field).
void write_roc_csv(std::ostream& os, const std::vector<RocPoint>& roc);      // threshold,fpr,tpr
void write_pr_csv(std::ostream& os, const std::vector<PrPoint>& pr);         // threshold,recall,precision
void write_sweep_csv(std::ostream& os, const std::vector<SweepRow>& sweep);  // threshold,tp,fp,tn,fn,sens,spec,ppv,npv,f1

}  // namespace cxr::metrics
