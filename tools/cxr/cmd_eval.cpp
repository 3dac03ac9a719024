// `cxr eval`: scores a predictions CSV (the format `cxr infer` writes: path, predicted,
// prob_<class>... and an optional error column) against ground truth taken from an
// ImageFolder layout (--truth-folder: the label is the name of the folder directly
// holding the file) or a `path,label` CSV (--truth). Two classes give a binary report
// (scores = probability of the positive class), more a multiclass one (tools/metrics).
// Prints a readable summary, or the report JSON with --json; --out DIR also writes
// metrics.json, roc.csv, pr.csv, sweep.csv and report.html; --html FILE writes the
// self-contained HTML report (headline metrics with CIs, ROC/PR curves, confusion matrix,
// threshold sweep, calibration; tools/report) to FILE.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "data/csv.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "tools/cxr/commands.h"
#include "tools/metrics/metrics.h"
#include "tools/report/report.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct EvalArgs {
  std::string predictions;
  std::string truth_folder;
  std::string truth_csv;
  std::string positive;
  double threshold = 0.5;
  std::string rule = "youden";
  int bootstrap = 1000;
  uint64_t seed = 1;
  int bins = 10;
  std::string out;
  std::string html;
  bool json = false;
  bool ignore_missing = false;
};

// ------------------------------------------------------------------ CSV reading
using data::CsvRecord;

// The records of a CSV file (data/csv.h), with clear errors for a missing file or a folder.
std::vector<CsvRecord> read_csv(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw FileError(path + ": no such file");
  if (fs::is_directory(path, ec)) throw FileError(path + ": is a directory; expected a CSV file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open for reading");
  std::ostringstream os;
  os << in.rdbuf();
  return data::parse_csv(os.str(), path);
}

std::string trim(std::string s) {
  const auto sp = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && sp(s.back())) s.pop_back();
  size_t b = 0;
  while (b < s.size() && sp(s[b])) ++b;
  return s.substr(b);
}

// ------------------------------------------------------------------ predictions
struct Predictions {
  std::vector<std::string> class_names;
  std::vector<std::string> paths;
  std::vector<int64_t> lines;
  std::vector<std::vector<double>> probs;
  int64_t skipped_errors = 0;
};

Predictions read_predictions(const std::string& path) {
  const auto rows = read_csv(path);
  if (rows.empty()) throw ValueError(path + ": empty file; expected a header path,predicted,prob_<class>,...");
  const auto& header = rows[0].fields;
  int path_col = -1, error_col = -1;
  std::vector<int> prob_cols;
  Predictions p;
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string h = trim(header[i]);
    if (h == "path") path_col = static_cast<int>(i);
    else if (h == "error") error_col = static_cast<int>(i);
    else if (h.rfind("prob_", 0) == 0) {
      const std::string name = h.substr(5);
      if (name.empty()) throw ValueError(path + ": header column " + std::to_string(i + 1) + " is 'prob_' with no class name");
      if (std::find(p.class_names.begin(), p.class_names.end(), name) != p.class_names.end())
        throw ValueError(path + ": class '" + name + "' has two probability columns");
      p.class_names.push_back(name);
      prob_cols.push_back(static_cast<int>(i));
    }
  }
  if (path_col < 0) throw ValueError(path + ": the header has no 'path' column");
  if (p.class_names.size() < 2)
    throw ValueError(detail::cat(path, ": need at least 2 prob_<class> columns, found ", p.class_names.size()));
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& f = rows[r].fields;
    const int64_t line = rows[r].line;
    if (f.size() != header.size())
      throw ValueError(detail::cat(path, ": line ", line, ": ", f.size(), " fields, the header has ", header.size()));
    if (error_col >= 0 && !trim(f[error_col]).empty()) {
      ++p.skipped_errors;
      continue;
    }
    std::vector<double> row;
    for (size_t k = 0; k < prob_cols.size(); ++k) {
      const std::string v = trim(f[prob_cols[k]]);
      double d = 0;
      size_t used = 0;
      bool ok = !v.empty();
      if (ok) {
        try {
          d = std::stod(v, &used);
        } catch (const std::exception&) {
          ok = false;
        }
      }
      if (!ok || used != v.size() || !std::isfinite(d))
        throw ValueError(detail::cat(path, ": line ", line, ": prob_", p.class_names[k], " is '", v,
                                     "', expected a finite number"));
      row.push_back(d);
    }
    const std::string rp = trim(f[path_col]);
    if (rp.empty()) throw ValueError(detail::cat(path, ": line ", line, ": empty path"));
    p.paths.push_back(rp);
    p.lines.push_back(line);
    p.probs.push_back(std::move(row));
  }
  return p;
}

// ------------------------------------------------------------------ ground truth
fs::path normalized(const fs::path& p, const fs::path& base) {
  const fs::path abs = p.is_absolute() ? p : base / p;
  std::error_code ec;
  fs::path c = fs::weakly_canonical(abs, ec);
  if (ec) c = abs;
  return c.lexically_normal();
}

// The label of `file` under `root` (both normalized): the directory directly holding it.
std::optional<std::string> folder_label(const fs::path& file, const fs::path& root) {
  const fs::path rel = file.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..") return std::nullopt;
  const fs::path parent = rel.parent_path();
  if (parent.empty() || parent == ".") return std::nullopt;
  return parent.filename().string();
}

struct TruthCsv {
  std::map<std::string, std::string> by_raw;  // lexically normal path as written
  std::map<std::string, std::string> by_abs;  // normalized absolute, relative to the CSV's folder
};

TruthCsv read_truth_csv(const std::string& path) {
  const auto rows = read_csv(path);
  if (rows.empty()) throw ValueError(path + ": empty file; expected a header path,label");
  int path_col = -1, label_col = -1;
  for (size_t i = 0; i < rows[0].fields.size(); ++i) {
    const std::string h = trim(rows[0].fields[i]);
    if (h == "path") path_col = static_cast<int>(i);
    if (h == "label") label_col = static_cast<int>(i);
  }
  if (path_col < 0 || label_col < 0) throw ValueError(path + ": the header must name the columns 'path' and 'label'");
  std::error_code ec;
  const fs::path base = fs::absolute(fs::path(path), ec).parent_path();
  TruthCsv t;
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& f = rows[r].fields;
    if (f.size() != rows[0].fields.size())
      throw ValueError(detail::cat(path, ": line ", rows[r].line, ": ", f.size(), " fields, the header has ",
                                   rows[0].fields.size()));
    const std::string p = trim(f[path_col]), label = trim(f[label_col]);
    if (p.empty() || label.empty())
      throw ValueError(detail::cat(path, ": line ", rows[r].line, ": empty path or label"));
    t.by_raw[fs::path(p).lexically_normal().string()] = label;
    t.by_abs[normalized(p, base).string()] = label;
  }
  return t;
}

// ------------------------------------------------------------------ rule / output
void check_rule(const std::string& rule) {
  if (rule == "youden") return;
  const std::string prefix = "sensitivity:";
  const std::string usage = "--rule must be 'youden' or 'sensitivity:<target>' with a target in (0, 1], got '" + rule + "'";
  if (rule.rfind(prefix, 0) != 0) throw UsageError(usage);
  const std::string v = rule.substr(prefix.size());
  size_t used = 0;
  double t = 0;
  try {
    t = std::stod(v, &used);
  } catch (const std::exception&) {
    throw UsageError(usage);
  }
  if (used != v.size() || !(t > 0 && t <= 1)) throw UsageError(usage);
}

std::string fmt(double v, int prec = 4) {
  if (!std::isfinite(v)) return "n/a";
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

std::string with_ci(const metrics::ConfidenceInterval& ci) {
  std::string s = fmt(ci.estimate);
  if (std::isfinite(ci.lo) && std::isfinite(ci.hi)) s += "  (95% CI " + fmt(ci.lo) + " - " + fmt(ci.hi) + ")";
  return s;
}

void print_confusion(std::ostream& os, const metrics::ConfusionMatrix& cm, const std::vector<std::string>& names) {
  size_t w = 9;
  for (const auto& n : names) w = std::max(w, n.size());
  for (int t = 0; t < cm.num_classes; ++t)
    for (int p = 0; p < cm.num_classes; ++p) w = std::max(w, std::to_string(cm.at(t, p)).size());
  w += 2;
  os << "Confusion matrix (rows: true, columns: predicted)\n" << std::setw(static_cast<int>(w)) << "";
  for (const auto& n : names) os << std::setw(static_cast<int>(w)) << n;
  os << '\n';
  for (int t = 0; t < cm.num_classes; ++t) {
    os << std::setw(static_cast<int>(w)) << names[t];
    for (int p = 0; p < cm.num_classes; ++p) os << std::setw(static_cast<int>(w)) << cm.at(t, p);
    os << '\n';
  }
}

void print_summary(std::ostream& os, const metrics::EvalReport& r, const std::string& positive, int64_t skipped) {
  os << "Evaluation (" << r.task << "), n = " << r.num_cases;
  if (skipped > 0) os << " (" << skipped << " rows with errors skipped)";
  os << '\n';
  if (r.task == "binary") os << "Positive class: " << positive << ", threshold " << fmt(r.options.threshold) << '\n';
  os << '\n';
  static const std::map<std::string, std::string> labels = {
      {"accuracy", "Accuracy"},      {"sensitivity", "Sensitivity"}, {"specificity", "Specificity"},
      {"ppv", "PPV"},                {"npv", "NPV"},                 {"f1", "F1"},
      {"roc_auc", "ROC-AUC"},        {"average_precision", "PR-AUC (AP)"},
      {"macro_f1", "Macro F1"},      {"macro_auc", "Macro ROC-AUC"}};
  const std::vector<std::string> order = {"accuracy", "sensitivity", "specificity", "ppv", "npv",
                                          "f1", "roc_auc", "average_precision", "macro_f1", "macro_auc"};
  for (const auto& key : order)
    for (const auto& m : r.metrics)
      if (m.name == key) os << "  " << std::left << std::setw(16) << labels.at(key) << std::right << with_ci(m.value) << '\n';
  os << '\n';
  print_confusion(os, r.confusion, r.class_names);
  if (r.task == "binary") {
    const auto& op = r.operating_point;
    os << "\nOperating point (" << op.rule << "): threshold " << fmt(op.threshold) << ", sensitivity "
       << fmt(op.sensitivity) << ", specificity " << fmt(op.specificity) << ", PPV " << fmt(op.ppv) << ", NPV "
       << fmt(op.npv) << '\n';
  } else {
    os << "\nPer class:\n";
    os << "  " << std::left << std::setw(20) << "class" << std::right << std::setw(9) << "support" << std::setw(11)
       << "precision" << std::setw(9) << "recall" << std::setw(9) << "F1" << std::setw(9) << "AUC" << '\n';
    for (const auto& c : r.per_class)
      os << "  " << std::left << std::setw(20) << c.name << std::right << std::setw(9) << c.support << std::setw(11)
         << fmt(c.precision) << std::setw(9) << fmt(c.recall) << std::setw(9) << fmt(c.f1) << std::setw(9)
         << fmt(c.auc) << '\n';
  }
  os << "\nECE (" << r.options.bins << " bins): " << fmt(r.calibration.ece) << '\n';
}

// Atomically (temp file, fsync, rename): a crash leaves the old file or the new one.
void write_file(const fs::path& p, const std::string& text) { write_file_atomic(p.string(), text); }

// The HTML report of an evaluation: where its data came from, then the evaluation itself.
std::string html_report(const EvalArgs& a, const metrics::EvalReport& r, const std::string& positive,
                        int64_t skipped_errors, int64_t n_missing) {
  report::Document doc("Evaluation report");
  std::vector<std::pair<std::string, std::string>> inputs = {
      {"Predictions", a.predictions},
      {a.truth_csv.empty() ? "Ground truth (class folders)" : "Ground truth (CSV)",
       a.truth_csv.empty() ? a.truth_folder : a.truth_csv},
      {"Cases evaluated", std::to_string(r.num_cases)}};
  if (!positive.empty()) inputs.emplace_back("Positive class", positive);
  inputs.emplace_back("Decision threshold", fmt(r.options.threshold, 3));
  if (skipped_errors > 0) inputs.emplace_back("Rows skipped (inference errors)", std::to_string(skipped_errors));
  if (a.ignore_missing && n_missing > 0) inputs.emplace_back("Rows skipped (no ground truth)", std::to_string(n_missing));
  doc.key_values("Inputs", inputs);
  doc.evaluation(r, "Results");
  return doc.html();
}

int run(const EvalArgs& a) {
  check_rule(a.rule);
  if (a.truth_folder.empty() == a.truth_csv.empty()) throw UsageError("give exactly one of --truth-folder and --truth");
  if (!std::isfinite(a.threshold)) throw UsageError("--threshold must be a finite number");
  if (a.bootstrap < 0) throw UsageError("--bootstrap must be >= 0");
  if (a.bins < 1) throw UsageError("--bins must be >= 1");

  Predictions p = read_predictions(a.predictions);
  const int k = static_cast<int>(p.class_names.size());
  int positive = -1;
  if (!a.positive.empty()) {
    const auto it = std::find(p.class_names.begin(), p.class_names.end(), a.positive);
    if (it == p.class_names.end()) {
      std::string names;
      for (const auto& n : p.class_names) names += (names.empty() ? "" : ", ") + n;
      throw UsageError("--positive '" + a.positive + "' is not a class of " + a.predictions + " (" + names + ")");
    }
    if (k != 2) throw UsageError("--positive applies to binary predictions (2 classes); these have " + std::to_string(k));
    positive = static_cast<int>(it - p.class_names.begin());
  } else if (k == 2) {
    const auto it = std::find(p.class_names.begin(), p.class_names.end(), "PNEUMONIA");
    positive = it != p.class_names.end() ? static_cast<int>(it - p.class_names.begin()) : 1;
  }

  // Ground truth per prediction.
  std::error_code ec;
  const fs::path cwd = fs::current_path(ec);
  std::vector<int> labels;
  std::vector<std::vector<double>> probs;
  std::vector<std::string> missing;
  int64_t n_missing = 0;
  std::optional<TruthCsv> truth;
  fs::path root;
  if (!a.truth_csv.empty()) {
    truth = read_truth_csv(a.truth_csv);
  } else {
    if (!fs::is_directory(a.truth_folder, ec)) throw FileError(a.truth_folder + ": no such directory");
    root = normalized(a.truth_folder, cwd);
  }
  for (size_t i = 0; i < p.paths.size(); ++i) {
    const std::string& path = p.paths[i];
    std::optional<std::string> label;
    if (truth) {
      const auto it = truth->by_raw.find(fs::path(path).lexically_normal().string());
      if (it != truth->by_raw.end()) {
        label = it->second;
      } else {
        const auto jt = truth->by_abs.find(normalized(path, cwd).string());
        if (jt != truth->by_abs.end()) label = jt->second;
      }
    } else {
      label = folder_label(normalized(path, cwd), root);
      if (!label)
        throw ValueError(detail::cat(a.predictions, ": line ", p.lines[i], ": ", path, " is not inside a class folder of ",
                                     a.truth_folder));
    }
    if (!label) {
      ++n_missing;
      if (missing.size() < 5) missing.push_back(detail::cat(path, " (line ", p.lines[i], ")"));
      continue;
    }
    const auto c = std::find(p.class_names.begin(), p.class_names.end(), *label);
    if (c == p.class_names.end()) {
      std::string names;
      for (const auto& n : p.class_names) names += (names.empty() ? "" : ", ") + n;
      throw ValueError(detail::cat("class mismatch: the truth for ", path, " is '", *label,
                                   "', which has no prob_ column in ", a.predictions, " (classes: ", names, ")"));
    }
    labels.push_back(static_cast<int>(c - p.class_names.begin()));
    probs.push_back(p.probs[i]);
  }
  if (n_missing > 0 && !a.ignore_missing) {
    std::string list;
    for (const auto& m : missing) list += "\n  " + m;
    throw ValueError(detail::cat(n_missing, " prediction(s) have no ground truth in ", a.truth_csv, ", e.g.:", list,
                                 "\n(use --ignore-missing to skip them)"));
  }
  if (labels.empty()) throw ValueError(a.predictions + ": no predictions to evaluate");

  metrics::EvalOptions opts;
  opts.threshold = a.threshold;
  opts.rule = a.rule;
  opts.bootstrap = a.bootstrap;
  opts.seed = a.seed;
  opts.bins = a.bins;
  metrics::EvalReport report;
  std::string positive_name;
  if (k == 2) {
    std::vector<double> scores(labels.size());
    std::vector<int> bin(labels.size());
    for (size_t i = 0; i < labels.size(); ++i) scores[i] = probs[i][positive], bin[i] = labels[i] == positive;
    const bool has_pos = std::count(bin.begin(), bin.end(), 1) > 0, has_neg = std::count(bin.begin(), bin.end(), 0) > 0;
    if (!has_pos || !has_neg)
      throw ValueError(detail::cat("binary evaluation needs cases of both classes; all ", labels.size(), " are ",
                                   p.class_names[has_pos ? positive : 1 - positive]));
    report = metrics::evaluate_binary(scores, bin, opts);
    positive_name = p.class_names[positive];
    report.class_names = {p.class_names[1 - positive], positive_name};
    for (size_t c = 0; c < report.per_class.size() && c < 2; ++c) report.per_class[c].name = report.class_names[c];
    for (size_t c = 0; c < report.summary.per_class.size() && c < 2; ++c)
      report.summary.per_class[c].name = report.class_names[c];
  } else {
    report = metrics::evaluate_multiclass(probs, labels, p.class_names, opts);
  }

  json j = metrics::to_json(report);
  if (k == 2) j["positive_class"] = positive_name;
  j["skipped_errors"] = p.skipped_errors;
  if (a.ignore_missing) j["skipped_missing"] = n_missing;

  if (!a.out.empty()) {
    fs::create_directories(a.out, ec);
    if (ec || !fs::is_directory(a.out)) throw FileError(a.out + ": cannot create directory");
    const fs::path dir(a.out);
    write_file(dir / "metrics.json", j.dump(2) + "\n");
    std::ostringstream roc, pr, sweep;
    metrics::write_roc_csv(roc, report.roc);
    metrics::write_pr_csv(pr, report.pr);
    metrics::write_sweep_csv(sweep, report.sweep);
    if (k == 2) {
      write_file(dir / "roc.csv", roc.str());
      write_file(dir / "pr.csv", pr.str());
      write_file(dir / "sweep.csv", sweep.str());
    }
  }
  if (!a.out.empty() || !a.html.empty()) {
    const std::string page = html_report(a, report, positive_name, p.skipped_errors, n_missing);
    if (!a.out.empty()) write_file_atomic((fs::path(a.out) / "report.html").string(), page);
    if (!a.html.empty()) write_file_atomic(a.html, page);
  }
  if (a.json) {
    std::cout << j.dump(2) << '\n';
  } else {
    print_summary(std::cout, report, positive_name, p.skipped_errors);
    if (a.ignore_missing && n_missing > 0) std::cout << n_missing << " predictions without ground truth skipped\n";
    if (!a.out.empty()) std::cout << "Wrote " << a.out << "\n";
    if (!a.html.empty()) std::cout << "Wrote " << a.html << "\n";
  }
  return 0;
}

}  // namespace

Command eval_command() {
  return {"eval", "score a predictions CSV against ground truth (ROC/PR, CIs, calibration)", [](CLI::App& app) {
            auto a = std::make_shared<EvalArgs>();
            app.add_option("--predictions", a->predictions, "predictions CSV (path,predicted,prob_<class>...)")
                ->required();
            app.add_option("--truth-folder", a->truth_folder, "ImageFolder root: the label is the file's folder name");
            app.add_option("--truth", a->truth_csv, "CSV with columns path,label");
            app.add_option("--positive", a->positive, "positive class (binary; default PNEUMONIA or the second class)");
            app.add_option("--threshold", a->threshold, "decision threshold on the positive probability")
                ->capture_default_str();
            app.add_option("--rule", a->rule, "operating-point rule: youden or sensitivity:<target>")
                ->capture_default_str();
            app.add_option("--bootstrap", a->bootstrap, "bootstrap resamples for 95% CIs (0: none)")
                ->capture_default_str();
            app.add_option("--seed", a->seed, "bootstrap seed")->capture_default_str();
            app.add_option("--bins", a->bins, "calibration bins")->capture_default_str();
            app.add_option("--out", a->out, "write metrics.json, roc.csv, pr.csv, sweep.csv and report.html here");
            app.add_option("--html", a->html,
                           "write a self-contained HTML report (metrics with CIs, ROC/PR curves, confusion "
                           "matrix, calibration) to this file");
            app.add_flag("--json", a->json, "print the report as JSON");
            app.add_flag("--ignore-missing", a->ignore_missing, "skip predictions without ground truth");
            return [a] { return run(*a); };
          }};
}

}  // namespace cxr::cli
