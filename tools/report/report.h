// Self-contained HTML reports: one .html file with inline CSS and inline SVG plots, no
// scripts, no external resources, so it opens in any browser, offline, and can be
// archived with the run. `cxr train` writes one per run (loss/accuracy/AUC curves and
// the validation evaluation); `cxr eval --html` writes one per evaluation.
//
// Build a Document section by section, then write() it (atomically: temp file, fsync,
// rename). Every text given is HTML-escaped; NaN and infinite values are shown as "n/a"
// and left out of plots.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tools/metrics/metrics.h"

namespace cxr::report {

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite points are skipped
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // one colour each, with a legend
  bool y_unit_range = false;   // fix the y axis to [0, 1] (accuracy, AUC)
};

class Document {
 public:
  explicit Document(std::string title);

  void heading(const std::string& text);    // a section heading
  void paragraph(const std::string& text);  // plain text
  // A two-column table of names and values.
  void key_values(const std::string& title, const std::vector<std::pair<std::string, std::string>>& rows);
  void table(const std::string& title, const std::vector<std::string>& header,
             const std::vector<std::vector<std::string>>& rows);
  void line_chart(const LineChart& chart);
  // ROC curve with the chance diagonal and the AUC in the title; `marker` (if finite)
  // highlights an operating point (fpr, tpr).
  void roc_curve(const std::vector<metrics::RocPoint>& roc, double auc, const std::string& title = "ROC curve",
                 double marker_fpr = metrics::kNaN, double marker_tpr = metrics::kNaN);
  void pr_curve(const std::vector<metrics::PrPoint>& pr, double average_precision,
                const std::string& title = "Precision-recall curve");
  // Rows = true class, columns = predicted class; cells shaded by row-normalised count.
  void confusion_matrix(const metrics::ConfusionMatrix& cm, const std::vector<std::string>& class_names,
                        const std::string& title = "Confusion matrix");
  void calibration(const metrics::Calibration& cal, const std::string& title = "Calibration");
  // Everything an EvalReport holds, as `cxr eval` presents it: headline metrics with 95%
  // CIs, ROC and PR curves, operating point and threshold sweep (binary), per-class table
  // (multiclass), confusion matrix, calibration.
  void evaluation(const metrics::EvalReport& r, const std::string& title = "Evaluation");
  // A PNG image embedded as a data: URI (e.g. Grad-CAM overlays).
  void image_png(const std::string& caption, const std::string& png_bytes);

  std::string html() const;
  void write(const std::string& path) const;

 private:
  std::string title_;
  std::string body_;
};

std::string html_escape(const std::string& s);
std::string base64_encode(const std::string& bytes);
// The SVG of a line chart on its own (what line_chart embeds).
std::string svg_line_chart(const LineChart& chart, int width = 640, int height = 360);

}  // namespace cxr::report
