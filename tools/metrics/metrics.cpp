// Implementation of cxr::metrics; conventions are documented in metrics.h.
#include "tools/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>

#include "runtime/error.h"

namespace cxr::metrics {
namespace {

using detail::cat;

double ratio(double num, double den) { return den == 0 ? kNaN : num / den; }

void check_binary(std::span<const double> scores, std::span<const int> labels, const char* what) {
  if (scores.size() != labels.size())
    throw ValueError(cat("metrics::", what, ": scores and labels differ in size (", scores.size(), " vs ",
                         labels.size(), ")"));
  if (scores.empty()) throw ValueError(cat("metrics::", what, ": empty input (no cases)"));
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!std::isfinite(scores[i]))
      throw ValueError(cat("metrics::", what, ": score at index ", i, " is not finite (", scores[i], ")"));
    if (labels[i] != 0 && labels[i] != 1)
      throw ValueError(cat("metrics::", what, ": label at index ", i, " is ", labels[i], ", expected 0 or 1"));
  }
}

std::pair<std::int64_t, std::int64_t> class_totals(std::span<const int> labels) {
  std::int64_t pos = 0;
  for (int l : labels) pos += l;
  return {pos, static_cast<std::int64_t>(labels.size()) - pos};
}

// Cases sorted by decreasing score (stable, so equal scores keep input order).
std::vector<std::size_t> order_desc(std::span<const double> scores) {
  std::vector<std::size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  return idx;
}

// Cumulative (threshold, tp, fp) after each group of tied scores, decreasing threshold.
struct Step {
  double threshold;
  std::int64_t tp, fp;
};
std::vector<Step> cumulative_steps(std::span<const double> scores, std::span<const int> labels) {
  const auto idx = order_desc(scores);
  std::vector<Step> steps;
  std::int64_t tp = 0, fp = 0;
  for (std::size_t i = 0; i < idx.size();) {
    const double s = scores[idx[i]];
    while (i < idx.size() && scores[idx[i]] == s) {
      (labels[idx[i]] == 1 ? tp : fp) += 1;
      ++i;
    }
    steps.push_back({s, tp, fp});
  }
  return steps;
}

OperatingPoint make_point(std::string rule, double threshold, std::span<const double> scores,
                          std::span<const int> labels) {
  OperatingPoint op;
  op.rule = std::move(rule);
  op.threshold = threshold;
  op.counts = counts_at(scores, labels, threshold);
  op.sensitivity = sensitivity(op.counts);
  op.specificity = specificity(op.counts);
  op.ppv = precision(op.counts);
  op.npv = npv(op.counts);
  op.f1 = f1(op.counts);
  op.youden_j = op.sensitivity + op.specificity - 1;
  return op;
}

void require_both_classes(std::span<const int> labels, const char* what) {
  auto [pos, neg] = class_totals(labels);
  if (pos == 0 || neg == 0)
    throw ValueError(cat("metrics::", what, ": needs both classes, got ", pos, " positive and ", neg,
                         " negative cases"));
}

double nan_mean(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v)
    if (!std::isnan(x)) sum += x, ++n;
  return n == 0 ? kNaN : sum / n;
}

// Uniform integer in [0, n) from a 64-bit engine by rejection (library-independent).
std::size_t draw_index(std::mt19937_64& rng, std::size_t n) {
  const std::uint64_t un = n;
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % un;
  std::uint64_t x;
  do x = rng();
  while (x >= limit);
  return static_cast<std::size_t>(x % un);
}

void check_probs(const std::vector<std::vector<double>>& probs, std::span<const int> labels, int k,
                 const char* what) {
  if (k < 2) throw ValueError(cat("metrics::", what, ": need at least 2 classes, got ", k));
  if (probs.size() != labels.size())
    throw ValueError(cat("metrics::", what, ": probability rows and labels differ in size (", probs.size(), " vs ",
                         labels.size(), ")"));
  if (probs.empty()) throw ValueError(cat("metrics::", what, ": empty input (no cases)"));
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (probs[i].size() != static_cast<std::size_t>(k))
      throw ValueError(cat("metrics::", what, ": probability row ", i, " has ", probs[i].size(), " entries, expected ",
                           k, " (one per class)"));
    for (std::size_t j = 0; j < probs[i].size(); ++j)
      if (!std::isfinite(probs[i][j]))
        throw ValueError(cat("metrics::", what, ": probability at row ", i, ", column ", j, " is not finite"));
    if (labels[i] < 0 || labels[i] >= k)
      throw ValueError(cat("metrics::", what, ": label at index ", i, " is ", labels[i], ", expected 0..", k - 1));
  }
}

}  // namespace

// ------------------------------------------------------------------------------ binary
BinaryCounts counts_at(std::span<const double> scores, std::span<const int> labels, double threshold) {
  check_binary(scores, labels, "counts_at");
  BinaryCounts c;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const bool pred = scores[i] >= threshold;
    if (labels[i] == 1) (pred ? c.tp : c.fn) += 1;
    else (pred ? c.fp : c.tn) += 1;
  }
  return c;
}

double accuracy(const BinaryCounts& c) { return ratio(double(c.tp + c.tn), double(c.total())); }
double precision(const BinaryCounts& c) { return ratio(double(c.tp), double(c.tp + c.fp)); }
double recall(const BinaryCounts& c) { return ratio(double(c.tp), double(c.tp + c.fn)); }
double sensitivity(const BinaryCounts& c) { return recall(c); }
double specificity(const BinaryCounts& c) { return ratio(double(c.tn), double(c.tn + c.fp)); }
double npv(const BinaryCounts& c) { return ratio(double(c.tn), double(c.tn + c.fn)); }
double f1(const BinaryCounts& c) { return ratio(2.0 * double(c.tp), double(2 * c.tp + c.fp + c.fn)); }

std::vector<RocPoint> roc_curve(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "roc_curve");
  require_both_classes(labels, "roc_curve");
  auto [pos, neg] = class_totals(labels);
  std::vector<RocPoint> pts{{0.0, 0.0, kInf}};
  for (const Step& s : cumulative_steps(scores, labels))
    pts.push_back({double(s.fp) / double(neg), double(s.tp) / double(pos), s.threshold});
  return pts;
}

double roc_auc(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "roc_auc");
  auto [pos, neg] = class_totals(labels);
  if (pos == 0 || neg == 0) return kNaN;
  const auto pts = roc_curve(scores, labels);
  double area = 0;
  for (std::size_t i = 1; i < pts.size(); ++i)
    area += (pts[i].fpr - pts[i - 1].fpr) * (pts[i].tpr + pts[i - 1].tpr) / 2;
  return area;
}

double mann_whitney_auc(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "mann_whitney_auc");
  auto [pos, neg] = class_totals(labels);
  if (pos == 0 || neg == 0) return kNaN;
  std::vector<std::size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  double rank_sum = 0;  // sum of mid-ranks (1-based) of the positives
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j < idx.size() && scores[idx[j]] == scores[idx[i]]) ++j;
    const double mid = (double(i + 1) + double(j)) / 2;
    for (std::size_t k = i; k < j; ++k)
      if (labels[idx[k]] == 1) rank_sum += mid;
    i = j;
  }
  const double u = rank_sum - double(pos) * double(pos + 1) / 2;
  return u / (double(pos) * double(neg));
}

std::vector<PrPoint> pr_curve(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "pr_curve");
  const std::int64_t pos = class_totals(labels).first;
  if (pos == 0) throw ValueError("metrics::pr_curve: needs at least one positive case, got 0");
  std::vector<PrPoint> pts{{0.0, 1.0, kInf}};
  for (const Step& s : cumulative_steps(scores, labels))
    pts.push_back({double(s.tp) / double(pos), double(s.tp) / double(s.tp + s.fp), s.threshold});
  return pts;
}

double average_precision(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "average_precision");
  if (class_totals(labels).first == 0) return kNaN;
  const auto pts = pr_curve(scores, labels);
  double ap = 0;
  for (std::size_t i = 1; i < pts.size(); ++i) ap += (pts[i].recall - pts[i - 1].recall) * pts[i].precision;
  return ap;
}

std::vector<SweepRow> threshold_sweep(std::span<const double> scores, std::span<const int> labels,
                                      std::span<const double> thresholds) {
  check_binary(scores, labels, "threshold_sweep");
  std::vector<SweepRow> rows;
  rows.reserve(thresholds.size());
  for (double t : thresholds) {
    if (std::isnan(t)) throw ValueError("metrics::threshold_sweep: a threshold is NaN");
    SweepRow r;
    r.threshold = t;
    r.counts = counts_at(scores, labels, t);
    r.sensitivity = sensitivity(r.counts);
    r.specificity = specificity(r.counts);
    r.ppv = precision(r.counts);
    r.npv = npv(r.counts);
    r.f1 = f1(r.counts);
    rows.push_back(r);
  }
  return rows;
}

std::vector<double> default_sweep_thresholds(std::span<const double> scores, int steps) {
  if (steps < 2) throw ValueError(cat("metrics::default_sweep_thresholds: steps must be >= 2, got ", steps));
  if (scores.empty()) throw ValueError("metrics::default_sweep_thresholds: empty input (no cases)");
  const auto [mn, mx] = std::minmax_element(scores.begin(), scores.end());
  const bool probs = *mn >= 0 && *mx <= 1;
  const double lo = probs ? 0.0 : *mn, hi = probs ? 1.0 : *mx;
  const int n = probs ? 21 : steps;
  std::vector<double> t(n);
  for (int i = 0; i < n; ++i) t[i] = lo + (hi - lo) * double(i) / double(n - 1);
  return t;
}

OperatingPoint youden_point(std::span<const double> scores, std::span<const int> labels) {
  check_binary(scores, labels, "youden_point");
  require_both_classes(labels, "youden_point");
  auto [pos, neg] = class_totals(labels);
  // J = tp/pos - fp/neg compared exactly as the integer tp*neg - fp*pos (same sign and order).
  bool found = false;
  std::int64_t best_j = 0;
  double best_t = 0;
  for (const Step& s : cumulative_steps(scores, labels)) {  // decreasing threshold: '>' keeps the highest on ties
    const std::int64_t j = s.tp * neg - s.fp * pos;
    if (!found || j > best_j) found = true, best_j = j, best_t = s.threshold;
  }
  return make_point("youden", best_t, scores, labels);
}

OperatingPoint target_sensitivity_point(std::span<const double> scores, std::span<const int> labels,
                                        double target) {
  check_binary(scores, labels, "target_sensitivity_point");
  if (!(target > 0 && target <= 1))
    throw ValueError(cat("metrics::target_sensitivity_point: target sensitivity must be in (0, 1], got ", target));
  require_both_classes(labels, "target_sensitivity_point");
  const double pos = double(class_totals(labels).first);
  double chosen = kNaN;
  for (const Step& s : cumulative_steps(scores, labels))  // sensitivity grows as the threshold falls
    if (double(s.tp) / pos >= target) {
      chosen = s.threshold;
      break;
    }
  // The lowest score always reaches sensitivity 1, so a threshold is always found.
  return make_point(cat("sensitivity:", target), chosen, scores, labels);
}

OperatingPoint choose_operating_point(std::span<const double> scores, std::span<const int> labels,
                                      const std::string& rule) {
  if (rule == "youden") return youden_point(scores, labels);
  const std::string prefix = "sensitivity:";
  if (rule.rfind(prefix, 0) == 0) {
    const std::string num = rule.substr(prefix.size());
    char* end = nullptr;
    const double target = std::strtod(num.c_str(), &end);
    if (num.empty() || end != num.c_str() + num.size())
      throw ValueError(cat("metrics: operating-point rule '", rule, "' has no valid number after 'sensitivity:'"));
    auto op = target_sensitivity_point(scores, labels, target);
    op.rule = rule;
    return op;
  }
  throw ValueError(cat("metrics: unknown operating-point rule '", rule,
                       "', expected 'youden' or 'sensitivity:<target>'"));
}

Calibration calibration(std::span<const double> probs, std::span<const int> outcomes, int bins) {
  check_binary(probs, outcomes, "calibration");
  if (bins < 1) throw ValueError(cat("metrics::calibration: bins must be >= 1, got ", bins));
  for (std::size_t i = 0; i < probs.size(); ++i)
    if (probs[i] < 0 || probs[i] > 1)
      throw ValueError(cat("metrics::calibration: probability at index ", i, " is ", probs[i], ", outside [0, 1]"));
  std::vector<double> sum_p(bins, 0.0), sum_y(bins, 0.0);
  std::vector<std::int64_t> cnt(bins, 0);
  for (std::size_t i = 0; i < probs.size(); ++i) {
    int b = static_cast<int>(std::floor(probs[i] * bins));
    b = std::clamp(b, 0, bins - 1);  // p == 1 goes to the last bin
    sum_p[b] += probs[i];
    sum_y[b] += outcomes[i];
    ++cnt[b];
  }
  Calibration cal;
  const double n = double(probs.size());
  for (int b = 0; b < bins; ++b) {
    CalibrationBin bin;
    bin.lo = double(b) / bins;
    bin.hi = double(b + 1) / bins;
    bin.count = cnt[b];
    if (cnt[b] > 0) {
      bin.mean_confidence = sum_p[b] / double(cnt[b]);
      bin.observed = sum_y[b] / double(cnt[b]);
      cal.ece += double(cnt[b]) / n * std::abs(bin.mean_confidence - bin.observed);
    }
    cal.bins.push_back(bin);
  }
  return cal;
}

double expected_calibration_error(std::span<const double> probs, std::span<const int> outcomes, int bins) {
  return calibration(probs, outcomes, bins).ece;
}

// ------------------------------------------------------------------------------ bootstrap
double percentile_sorted(std::span<const double> sorted, double q) {
  if (sorted.empty()) return kNaN;
  const double pos = q * double(sorted.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - double(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

ConfidenceInterval bootstrap_ci(std::size_t n, const IndexMetric& metric, const BootstrapOptions& opts) {
  if (n == 0) throw ValueError("metrics::bootstrap_ci: empty input (no cases)");
  if (opts.resamples < 0) throw ValueError(cat("metrics::bootstrap_ci: resamples must be >= 0, got ", opts.resamples));
  if (!(opts.level > 0 && opts.level < 1))
    throw ValueError(cat("metrics::bootstrap_ci: level must be in (0, 1), got ", opts.level));
  ConfidenceInterval ci;
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  ci.estimate = metric(idx);
  std::mt19937_64 rng(opts.seed);
  std::vector<double> values;
  values.reserve(opts.resamples);
  for (int r = 0; r < opts.resamples; ++r) {
    for (auto& i : idx) i = draw_index(rng, n);
    const double v = metric(idx);
    if (!std::isnan(v)) values.push_back(v);  // undefined on this resample (e.g. one class): skipped
  }
  std::sort(values.begin(), values.end());
  ci.resamples_used = static_cast<std::int64_t>(values.size());
  const double alpha = 1 - opts.level;
  ci.lo = percentile_sorted(values, alpha / 2);
  ci.hi = percentile_sorted(values, 1 - alpha / 2);
  return ci;
}

ConfidenceInterval bootstrap_ci(std::span<const double> scores, std::span<const int> labels,
                                const BinaryMetric& metric, const BootstrapOptions& opts) {
  check_binary(scores, labels, "bootstrap_ci");
  std::vector<double> s;
  std::vector<int> l;
  return bootstrap_ci(
      scores.size(),
      [&](std::span<const std::size_t> idx) {
        s.resize(idx.size());
        l.resize(idx.size());
        for (std::size_t i = 0; i < idx.size(); ++i) s[i] = scores[idx[i]], l[i] = labels[idx[i]];
        return metric(s, l);
      },
      opts);
}

// ------------------------------------------------------------------------------ multiclass
std::int64_t ConfusionMatrix::total() const { return std::accumulate(cells.begin(), cells.end(), std::int64_t{0}); }

ConfusionMatrix confusion_matrix(std::span<const int> labels, std::span<const int> predicted, int num_classes) {
  if (num_classes < 1) throw ValueError(cat("metrics::confusion_matrix: num_classes must be >= 1, got ", num_classes));
  if (labels.size() != predicted.size())
    throw ValueError(cat("metrics::confusion_matrix: labels and predictions differ in size (", labels.size(), " vs ",
                         predicted.size(), ")"));
  ConfusionMatrix cm;
  cm.num_classes = num_classes;
  cm.cells.assign(static_cast<std::size_t>(num_classes) * num_classes, 0);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes)
      throw ValueError(cat("metrics::confusion_matrix: label at index ", i, " is ", labels[i], ", expected 0..",
                           num_classes - 1));
    if (predicted[i] < 0 || predicted[i] >= num_classes)
      throw ValueError(cat("metrics::confusion_matrix: prediction at index ", i, " is ", predicted[i],
                           ", expected 0..", num_classes - 1));
    ++cm.cells[static_cast<std::size_t>(labels[i]) * num_classes + predicted[i]];
  }
  return cm;
}

std::vector<int> argmax_rows(const std::vector<std::vector<double>>& probs) {
  std::vector<int> out;
  out.reserve(probs.size());
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (probs[i].empty()) throw ValueError(cat("metrics::argmax_rows: row ", i, " is empty"));
    out.push_back(static_cast<int>(std::max_element(probs[i].begin(), probs[i].end()) - probs[i].begin()));
  }
  return out;
}

MulticlassSummary summarize(const ConfusionMatrix& cm, const std::vector<std::string>& class_names) {
  const int k = cm.num_classes;
  if (!class_names.empty() && class_names.size() != static_cast<std::size_t>(k))
    throw ValueError(cat("metrics::summarize: ", class_names.size(), " class names for ", k, " classes"));
  MulticlassSummary s;
  std::int64_t sum_tp = 0, sum_fp = 0, sum_fn = 0;
  std::vector<double> ps, rs, fs;
  for (int c = 0; c < k; ++c) {
    std::int64_t tp = cm.at(c, c), row = 0, col = 0;
    for (int j = 0; j < k; ++j) row += cm.at(c, j), col += cm.at(j, c);
    const BinaryCounts bc{tp, col - tp, 0, row - tp};
    ClassMetrics m;
    m.name = class_names.empty() ? cat("class_", c) : class_names[c];
    m.support = row;
    m.precision = precision(bc);
    m.recall = recall(bc);
    m.f1 = f1(bc);
    ps.push_back(m.precision), rs.push_back(m.recall), fs.push_back(m.f1);
    s.per_class.push_back(m);
    sum_tp += tp, sum_fp += col - tp, sum_fn += row - tp;
  }
  const BinaryCounts micro{sum_tp, sum_fp, 0, sum_fn};
  s.accuracy = ratio(double(sum_tp), double(cm.total()));
  s.macro_precision = nan_mean(ps);
  s.macro_recall = nan_mean(rs);
  s.macro_f1 = nan_mean(fs);
  s.micro_precision = precision(micro);
  s.micro_recall = recall(micro);
  s.micro_f1 = f1(micro);
  return s;
}

std::vector<double> one_vs_rest_auc(const std::vector<std::vector<double>>& probs, std::span<const int> labels,
                                    int num_classes) {
  check_probs(probs, labels, num_classes, "one_vs_rest_auc");
  std::vector<double> aucs;
  std::vector<double> col(probs.size());
  std::vector<int> bin(probs.size());
  for (int c = 0; c < num_classes; ++c) {
    for (std::size_t i = 0; i < probs.size(); ++i) col[i] = probs[i][c], bin[i] = labels[i] == c ? 1 : 0;
    aucs.push_back(roc_auc(col, bin));
  }
  return aucs;
}

// ------------------------------------------------------------------------------ report
EvalReport evaluate_binary(std::span<const double> scores, std::span<const int> labels, const EvalOptions& opts) {
  check_binary(scores, labels, "evaluate_binary");
  require_both_classes(labels, "evaluate_binary");
  if (std::isnan(opts.threshold)) throw ValueError("metrics::evaluate_binary: threshold is NaN");
  if (opts.bootstrap < 0) throw ValueError(cat("metrics::evaluate_binary: bootstrap must be >= 0, got ", opts.bootstrap));
  EvalReport r;
  r.task = "binary";
  r.num_cases = static_cast<std::int64_t>(scores.size());
  r.options = opts;
  r.counts = counts_at(scores, labels, opts.threshold);
  r.roc = roc_curve(scores, labels);
  r.pr = pr_curve(scores, labels);
  r.sweep = threshold_sweep(scores, labels, default_sweep_thresholds(scores));
  r.operating_point = choose_operating_point(scores, labels, opts.rule);
  const auto [mn, mx] = std::minmax_element(scores.begin(), scores.end());
  if (*mn >= 0 && *mx <= 1) r.calibration = calibration(scores, labels, opts.bins);
  else r.calibration.ece = kNaN;

  r.class_names = {"negative", "positive"};
  r.confusion.num_classes = 2;
  r.confusion.cells = {r.counts.tn, r.counts.fp, r.counts.fn, r.counts.tp};
  r.summary = summarize(r.confusion, r.class_names);
  r.per_class = r.summary.per_class;

  const double t = opts.threshold;
  auto at = [t](double (*f)(const BinaryCounts&)) {
    return [t, f](std::span<const double> s, std::span<const int> l) { return f(counts_at(s, l, t)); };
  };
  const std::vector<std::pair<std::string, BinaryMetric>> defs = {
      {"roc_auc", [](auto s, auto l) { return roc_auc(s, l); }},
      {"average_precision", [](auto s, auto l) { return average_precision(s, l); }},
      {"accuracy", at(&accuracy)},
      {"sensitivity", at(&sensitivity)},
      {"specificity", at(&specificity)},
      {"ppv", at(&precision)},
      {"npv", at(&npv)},
      {"f1", at(&f1)},
  };
  // Every metric uses the same seed, hence the same resamples (paired intervals).
  const BootstrapOptions bo{opts.bootstrap, opts.seed, 0.95};
  for (const auto& [name, fn] : defs) {
    ConfidenceInterval ci = bootstrap_ci(scores, labels, fn, bo);
    if (opts.bootstrap == 0) ci.lo = ci.hi = kNaN;
    r.metrics.push_back({name, ci});
  }
  return r;
}

EvalReport evaluate_multiclass(const std::vector<std::vector<double>>& probs, std::span<const int> labels,
                               const std::vector<std::string>& class_names, const EvalOptions& opts) {
  const int k = static_cast<int>(class_names.size());
  check_probs(probs, labels, k, "evaluate_multiclass");
  if (opts.bootstrap < 0)
    throw ValueError(cat("metrics::evaluate_multiclass: bootstrap must be >= 0, got ", opts.bootstrap));
  EvalReport r;
  r.task = "multiclass";
  r.num_cases = static_cast<std::int64_t>(probs.size());
  r.options = opts;
  r.class_names = class_names;
  const std::vector<int> pred = argmax_rows(probs);
  r.confusion = confusion_matrix(labels, pred, k);
  r.summary = summarize(r.confusion, class_names);
  const auto aucs = one_vs_rest_auc(probs, labels, k);
  for (int c = 0; c < k; ++c) r.summary.per_class[c].auc = aucs[c];
  r.summary.macro_auc = nan_mean(aucs);
  r.per_class = r.summary.per_class;

  // Calibration of the top-class confidence against correctness, when rows look like
  // probabilities (every entry in [0, 1]).
  bool are_probs = true;
  for (const auto& row : probs)
    for (double p : row) are_probs = are_probs && p >= 0 && p <= 1;
  if (are_probs) {
    std::vector<double> conf(probs.size());
    std::vector<int> correct(probs.size());
    for (std::size_t i = 0; i < probs.size(); ++i) conf[i] = probs[i][pred[i]], correct[i] = pred[i] == labels[i];
    r.calibration = calibration(conf, correct, opts.bins);
  } else {
    r.calibration.ece = kNaN;
  }

  std::vector<int> sub_labels, sub_pred;
  std::vector<std::vector<double>> sub_probs;
  auto gather = [&](std::span<const std::size_t> idx) {
    sub_labels.resize(idx.size());
    sub_pred.resize(idx.size());
    sub_probs.resize(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i)
      sub_labels[i] = labels[idx[i]], sub_pred[i] = pred[idx[i]], sub_probs[i] = probs[idx[i]];
  };
  const std::vector<std::pair<std::string, IndexMetric>> defs = {
      {"accuracy",
       [&](auto idx) {
         gather(idx);
         return summarize(confusion_matrix(sub_labels, sub_pred, k)).accuracy;
       }},
      {"macro_f1",
       [&](auto idx) {
         gather(idx);
         return summarize(confusion_matrix(sub_labels, sub_pred, k)).macro_f1;
       }},
      {"macro_auc",
       [&](auto idx) {
         gather(idx);
         return nan_mean(one_vs_rest_auc(sub_probs, sub_labels, k));
       }},
  };
  for (const auto& [name, fn] : defs) {
    ConfidenceInterval ci = bootstrap_ci(probs.size(), fn, BootstrapOptions{opts.bootstrap, opts.seed, 0.95});
    if (opts.bootstrap == 0) ci.lo = ci.hi = kNaN;
    r.metrics.push_back({name, ci});
  }
  return r;
}

// ------------------------------------------------------------------------------ CSV
namespace {
// Shortest round-trip text for finite values; empty field for NaN/inf ("inf" for +inf thresholds).
std::string csv_num(double v) {
  if (std::isnan(v)) return "";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
}  // namespace

void write_roc_csv(std::ostream& os, const std::vector<RocPoint>& roc) {
  os << "threshold,fpr,tpr\n";
  for (const auto& p : roc) os << csv_num(p.threshold) << ',' << csv_num(p.fpr) << ',' << csv_num(p.tpr) << '\n';
}

void write_pr_csv(std::ostream& os, const std::vector<PrPoint>& pr) {
  os << "threshold,recall,precision\n";
  for (const auto& p : pr) os << csv_num(p.threshold) << ',' << csv_num(p.recall) << ',' << csv_num(p.precision) << '\n';
}

void write_sweep_csv(std::ostream& os, const std::vector<SweepRow>& sweep) {
  os << "threshold,tp,fp,tn,fn,sensitivity,specificity,ppv,npv,f1\n";
  for (const auto& r : sweep)
    os << csv_num(r.threshold) << ',' << r.counts.tp << ',' << r.counts.fp << ',' << r.counts.tn << ','
       << r.counts.fn << ',' << csv_num(r.sensitivity) << ',' << csv_num(r.specificity) << ','
       << csv_num(r.ppv) << ',' << csv_num(r.npv) << ',' << csv_num(r.f1) << '\n';
}

// ------------------------------------------------------------------------------ JSON
namespace {
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
nlohmann::json counts_json(const BinaryCounts& c) { return {{"tp", c.tp}, {"fp", c.fp}, {"tn", c.tn}, {"fn", c.fn}}; }
nlohmann::json class_json(const ClassMetrics& m) {
  return {{"name", m.name},           {"support", m.support}, {"precision", num(m.precision)},
          {"recall", num(m.recall)}, {"f1", num(m.f1)},       {"auc", num(m.auc)}};
}
}  // namespace

nlohmann::json to_json(const EvalReport& r) {
  using nlohmann::json;
  json j;
  j["task"] = r.task;
  j["num_cases"] = r.num_cases;
  j["options"] = {{"threshold", num(r.options.threshold)}, {"rule", r.options.rule},
                  {"bootstrap", r.options.bootstrap},       {"seed", r.options.seed},
                  {"bins", r.options.bins}};
  json metrics = json::object();
  for (const auto& m : r.metrics)
    metrics[m.name] = {{"value", num(m.value.estimate)},
                       {"ci_low", num(m.value.lo)},
                       {"ci_high", num(m.value.hi)},
                       {"resamples_used", m.value.resamples_used}};
  j["metrics"] = metrics;
  if (r.task == "binary") {
    j["counts"] = counts_json(r.counts);
    json roc = json::array(), pr = json::array(), sweep = json::array();
    for (const auto& p : r.roc) roc.push_back({{"fpr", p.fpr}, {"tpr", p.tpr}, {"threshold", num(p.threshold)}});
    for (const auto& p : r.pr)
      pr.push_back({{"recall", p.recall}, {"precision", p.precision}, {"threshold", num(p.threshold)}});
    for (const auto& s : r.sweep)
      sweep.push_back({{"threshold", num(s.threshold)}, {"counts", counts_json(s.counts)},
                       {"sensitivity", num(s.sensitivity)}, {"specificity", num(s.specificity)},
                       {"ppv", num(s.ppv)}, {"npv", num(s.npv)}, {"f1", num(s.f1)}});
    j["roc"] = roc;
    j["pr"] = pr;
    j["sweep"] = sweep;
    const auto& op = r.operating_point;
    j["operating_point"] = {{"rule", op.rule},
                            {"threshold", num(op.threshold)},
                            {"counts", counts_json(op.counts)},
                            {"sensitivity", num(op.sensitivity)},
                            {"specificity", num(op.specificity)},
                            {"ppv", num(op.ppv)},
                            {"npv", num(op.npv)},
                            {"f1", num(op.f1)},
                            {"youden_j", num(op.youden_j)}};
  }
  json bins = json::array();
  for (const auto& b : r.calibration.bins)
    bins.push_back({{"lo", b.lo}, {"hi", b.hi}, {"count", b.count},
                    {"mean_confidence", num(b.mean_confidence)}, {"observed", num(b.observed)}});
  j["calibration"] = {{"ece", num(r.calibration.ece)}, {"bins", bins}};
  json rows = json::array();
  for (int t = 0; t < r.confusion.num_classes; ++t) {
    json row = json::array();
    for (int p = 0; p < r.confusion.num_classes; ++p) row.push_back(r.confusion.at(t, p));
    rows.push_back(row);
  }
  j["class_names"] = r.class_names;
  j["confusion_matrix"] = rows;  // rows = true class, columns = predicted class
  json per = json::array();
  for (const auto& m : r.per_class) per.push_back(class_json(m));
  j["per_class"] = per;
  const auto& s = r.summary;
  j["summary"] = {{"accuracy", num(s.accuracy)},
                  {"macro_precision", num(s.macro_precision)},
                  {"macro_recall", num(s.macro_recall)},
                  {"macro_f1", num(s.macro_f1)},
                  {"macro_auc", num(s.macro_auc)},
                  {"micro_precision", num(s.micro_precision)},
                  {"micro_recall", num(s.micro_recall)},
                  {"micro_f1", num(s.micro_f1)}};
  return j;
}

}  // namespace cxr::metrics
