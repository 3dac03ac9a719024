// Self-contained HTML reports (report.h): page scaffolding and inline CSS, SVG charts
// (line charts, ROC, precision-recall, calibration) drawn on "nice" axis ticks, the
// confusion matrix as a shaded HTML table, and Document::evaluation, which lays out a
// metrics::EvalReport the way `cxr eval` presents it.
#include "tools/report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <string_view>

#include "runtime/error.h"
#include "runtime/file_util.h"

namespace cxr::report {

namespace {

// One palette for every chart, so a series keeps its colour across the report.
constexpr const char* kPalette[] = {"#1f5fbf", "#e07b00", "#2e9e5b", "#c0392b",
                                    "#7b4fc9", "#00838f", "#a6761d", "#5f6b7a"};
constexpr const char* kMarker = "#c0392b";                                                          // operating point
constexpr const char* kGuide = "stroke=\"#9aa5b1\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"";  // chance lines
constexpr const char* kFont = "'Helvetica Neue', Arial, 'Liberation Sans', sans-serif";

// ------------------------------------------------------------------ number formatting
std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  if (std::string_view(buf).find_first_not_of("-0.") == std::string_view::npos && buf[0] == '-')
    return buf + 1;  // no "-0.000"
  return buf;
}
std::string metric(double v) { return fixed(v, 3); }
std::string percent(double v) { return std::isfinite(v) ? fixed(100 * v, 1) + "%" : "n/a"; }
// Axis ticks: fixed decimals, or "2e-07" for tiny steps (learning rates) so labels stay short.
std::string tick_label(double t, int decimals) {
  if (decimals <= 4) return fixed(t, decimals);
  if (t == 0) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", t);
  return buf;
}
// SVG coordinates: one decimal keeps the files small and is finer than a pixel.
std::string px(double v) { return fixed(v, 1); }

// "0.953 (0.921-0.978)", or the estimate alone when there is no interval.
std::string with_ci(const metrics::ConfidenceInterval& ci) {
  std::string s = metric(ci.estimate);
  if (std::isfinite(ci.estimate) && std::isfinite(ci.lo) && std::isfinite(ci.hi))
    s += " (" + metric(ci.lo) + "-" + metric(ci.hi) + ")";
  return s;
}

std::string metric_label(const std::string& key) {
  static constexpr const char* kKeys[] = {
      "roc_auc", "average_precision", "accuracy", "sensitivity", "specificity", "ppv", "npv",
      "f1",      "macro_f1",          "macro_auc"};
  static constexpr const char* kLabels[] = {"ROC-AUC",     "PR-AUC (average precision)",
                                            "Accuracy",    "Sensitivity (recall)",
                                            "Specificity", "PPV (precision)",
                                            "NPV",         "F1 score",
                                            "Macro F1",    "Macro ROC-AUC (one-vs-rest)"};
  for (size_t i = 0; i < std::size(kKeys); ++i)
    if (key == kKeys[i]) return kLabels[i];
  return key;
}

// ------------------------------------------------------------------ axes
struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  int decimals = 1;
};

// 1, 2 or 5 times a power of ten, about range / target.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

// An axis covering [lo, hi] with ends and ticks at multiples of a nice step. An empty
// range (one value) is widened; `integers` keeps the step >= 1 (epochs).
Axis make_axis(double lo, double hi, bool integers, int target = 5) {
  if (!(lo <= hi) || !std::isfinite(hi - lo)) lo = 0, hi = 1;
  if (hi - lo <= 1e-12 * std::max({1.0, std::abs(lo), std::abs(hi)})) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  double step = nice_step(hi - lo, target);
  if (integers) step = std::max(step, 1.0);
  Axis a;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  for (int i = 0; i <= 50; ++i) {
    const double t = a.lo + i * step;
    if (t > a.hi + step * 1e-6) break;
    a.ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  a.decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return a;
}

Axis unit_axis() { return make_axis(0, 1, false); }

// The plot area of a chart in SVG pixels and the data ranges mapped onto it.
struct Frame {
  double x0 = 0, y0 = 0, w = 0, h = 0;
  Axis ax, ay;
  double sx(double x) const { return x0 + (x - ax.lo) / (ax.hi - ax.lo) * w; }
  double sy(double y) const { return y0 + h - (y - ay.lo) / (ay.hi - ay.lo) * h; }
};

std::string svg_open(int width, int height, const std::string& label) {
  return "<svg class=\"chart\" viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) + "\" width=\"" +
         std::to_string(width) + "\" height=\"" + std::to_string(height) + "\" role=\"img\" aria-label=\"" +
         html_escape(label) + "\" font-family=\"" + kFont + "\" font-size=\"12\"><title>" + html_escape(label) +
         "</title><rect width=\"" + std::to_string(width) + "\" height=\"" + std::to_string(height) +
         "\" fill=\"#ffffff\"/>";
}

std::string text(double x, double y, const std::string& s, const std::string& attrs = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\"" + (attrs.empty() ? "" : " " + attrs) + ">" + html_escape(s) +
         "</text>";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& attrs) {
  return "<line x1=\"" + px(x1) + "\" y1=\"" + px(y1) + "\" x2=\"" + px(x2) + "\" y2=\"" + px(y2) + "\" " + attrs +
         "/>";
}

// "x,y x,y ..." leaving out points within a quarter pixel of the last one kept (a ROC
// curve of 100k cases stays a few thousand points), but always the last point.
std::string points_attr(const std::vector<std::pair<double, double>>& pts) {
  std::string s;
  double lx = 0, ly = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    const auto [x, y] = pts[i];
    if (i > 0 && i + 1 < pts.size() && std::abs(x - lx) < 0.25 && std::abs(y - ly) < 0.25) continue;
    s += (s.empty() ? "" : " ") + px(x) + "," + px(y);
    lx = x, ly = y;
  }
  return s;
}

std::string polyline(const std::vector<std::pair<double, double>>& pts, const std::string& colour) {
  return "<polyline points=\"" + points_attr(pts) + "\" fill=\"none\" stroke=\"" + colour +
         "\" stroke-width=\"2.3\" stroke-linejoin=\"round\" stroke-linecap=\"round\"/>";
}

std::string circle(double x, double y, double r, const std::string& attrs) {
  return "<circle cx=\"" + px(x) + "\" cy=\"" + px(y) + "\" r=\"" + px(r) + "\" " + attrs + "/>";
}

// A curve through screen points: a line, a dot when there is one point, nothing for none.
std::string curve(const std::vector<std::pair<double, double>>& pts, const std::string& colour) {
  if (pts.size() == 1) return circle(pts[0].first, pts[0].second, 3.5, "fill=\"" + colour + "\"");
  return pts.empty() ? "" : polyline(pts, colour);
}

// Title, grid, ticks, tick labels, axis lines and axis labels.
std::string draw_axes(const Frame& f, const std::string& title, const std::string& x_label, const std::string& y_label,
                      int height) {
  std::string s = text(f.x0, 22, title, "font-size=\"15\" font-weight=\"bold\" fill=\"#1f2933\"");
  s += "<g stroke=\"#e3e7ec\" stroke-width=\"1\">";
  for (double t : f.ax.ticks) s += line(f.sx(t), f.y0, f.sx(t), f.y0 + f.h, "");
  for (double t : f.ay.ticks) s += line(f.x0, f.sy(t), f.x0 + f.w, f.sy(t), "");
  s += "</g><g fill=\"#3e4a57\" font-size=\"11\">";
  for (double t : f.ax.ticks)
    s += text(f.sx(t), f.y0 + f.h + 17, tick_label(t, f.ax.decimals), "text-anchor=\"middle\"");
  for (double t : f.ay.ticks) s += text(f.x0 - 7, f.sy(t) + 4, tick_label(t, f.ay.decimals), "text-anchor=\"end\"");
  s += "</g><g stroke=\"#5f6b7a\" stroke-width=\"1\">";
  for (double t : f.ax.ticks) s += line(f.sx(t), f.y0 + f.h, f.sx(t), f.y0 + f.h + 5, "");
  for (double t : f.ay.ticks) s += line(f.x0 - 5, f.sy(t), f.x0, f.sy(t), "");
  s += line(f.x0, f.y0 + f.h, f.x0 + f.w, f.y0 + f.h, "") + line(f.x0, f.y0, f.x0, f.y0 + f.h, "") + "</g>";
  s += text(f.x0 + f.w / 2, height - 10, x_label, "text-anchor=\"middle\" font-size=\"12.5\" fill=\"#1f2933\"");
  const std::string ty = px(f.y0 + f.h / 2);
  s += "<text x=\"16\" y=\"" + ty + "\" transform=\"rotate(-90 16 " + ty +
       ")\" text-anchor=\"middle\" font-size=\"12.5\" fill=\"#1f2933\">" + html_escape(y_label) + "</text>";
  return s;
}

std::string no_data(const Frame& f) {
  return text(f.x0 + f.w / 2, f.y0 + f.h / 2, "no data", "text-anchor=\"middle\" font-size=\"14\" fill=\"#8a94a0\"");
}

struct LegendItem {
  std::string label, colour;
  enum class Kind { Line, Dashed, Marker } kind = Kind::Line;
};

std::string legend_swatch(double x, double y, const LegendItem& it) {
  switch (it.kind) {
    case LegendItem::Kind::Dashed:
      return line(x, y, x + 20, y, "stroke=\"" + it.colour + "\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"");
    case LegendItem::Kind::Marker:
      return circle(x + 10, y, 5, "fill=\"#ffffff\" stroke=\"" + it.colour + "\" stroke-width=\"2.2\"");
    case LegendItem::Kind::Line:
      break;
  }
  return line(x, y, x + 20, y, "stroke=\"" + it.colour + "\" stroke-width=\"2.5\"");
}

double label_width(const std::string& s) { return 6.6 * static_cast<double>(s.size()); }

// A boxed legend, one item per row, anchored at the lower right of the plot area.
std::string legend_box(const Frame& f, const std::vector<LegendItem>& items) {
  double w = 0;
  for (const auto& it : items) w = std::max(w, label_width(it.label));
  w += 42;
  const double h = 10 + 18.0 * static_cast<double>(items.size());
  const double x = f.x0 + f.w - w - 8, y = f.y0 + f.h - h - 8;
  std::string s = "<rect x=\"" + px(x) + "\" y=\"" + px(y) + "\" width=\"" + px(w) + "\" height=\"" + px(h) +
                  "\" rx=\"4\" fill=\"#ffffff\" fill-opacity=\"0.92\" stroke=\"#d9dee4\"/>";
  for (size_t i = 0; i < items.size(); ++i) {
    const double cy = y + 14 + 18.0 * static_cast<double>(i);
    s += legend_swatch(x + 8, cy, items[i]) + text(x + 34, cy + 4, items[i].label, "fill=\"#1f2933\"");
  }
  return s;
}

// Legend items in rows above the plot area, wrapped at `max_width`; returns the rows.
int legend_rows(const std::vector<LegendItem>& items, double max_width, std::string* out, double x0, double y0) {
  double x = x0;
  int row = 0;
  for (const auto& it : items) {
    const double w = 30 + label_width(it.label) + 16;
    if (x > x0 && x + w > x0 + max_width) x = x0, ++row;
    if (out)
      *out += legend_swatch(x, y0 + 18.0 * row, it) + text(x + 26, y0 + 18.0 * row + 4, it.label, "fill=\"#1f2933\"");
    x += w;
  }
  return items.empty() ? 0 : row + 1;
}

// A polyline through finite points, broken where a point is missing, with dots.
std::string draw_series(const Frame& f, const Series& s, const std::string& colour, bool dots) {
  std::string out;
  std::vector<std::pair<double, double>> seg;
  auto flush = [&] {
    if (seg.size() >= 2) out += polyline(seg, colour);
    if (seg.size() == 1) dots = true;  // an isolated point is visible only as a dot
    seg.clear();
  };
  std::vector<std::pair<double, double>> all;
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
      flush();
      continue;
    }
    seg.emplace_back(f.sx(s.x[i]), f.sy(s.y[i]));
    all.push_back(seg.back());
  }
  flush();
  if (dots)
    for (const auto& [x, y] : all)
      out += circle(x, y, 3.2, "fill=\"" + colour + "\" stroke=\"#ffffff\" stroke-width=\"1\"");
  return out;
}

// A square chart of two quantities in [0, 1] (ROC, PR, calibration): the frame and axes.
Frame unit_frame(std::string* svg, const std::string& title, const std::string& x_label, const std::string& y_label) {
  constexpr int kW = 440, kH = 450;
  Frame f{66, 40, 354, 354, unit_axis(), unit_axis()};
  *svg = svg_open(kW, kH, title) + draw_axes(f, title, x_label, y_label, kH);
  return f;
}

std::string chance_diagonal(const Frame& f) { return line(f.sx(0), f.sy(0), f.sx(1), f.sy(1), kGuide); }

std::string figure(const std::string& svg) { return "<figure class=\"chart\">" + svg + "</figure>\n"; }

std::string cell_style(double frac, bool diagonal) {
  if (!std::isfinite(frac)) return "";
  if (frac <= 0) return " style=\"background:#f7f8fa;color:#8a94a0\"";  // an empty cell is neither right nor wrong
  const char* rgb = diagonal ? "31,95,191" : "192,57,43";
  const double a = 0.06 + 0.84 * std::clamp(frac, 0.0, 1.0);
  return " style=\"background:rgba(" + std::string(rgb) + "," + fixed(a, 2) + ");" +
         (a > 0.55 ? "color:#ffffff" : "color:#1f2933") + "\"";
}

std::string rule_label(const std::string& rule) {
  if (rule == "youden") return "Youden's J (maximise sensitivity + specificity - 1)";
  if (rule.rfind("sensitivity:", 0) == 0) return "highest threshold with sensitivity >= " + rule.substr(12);
  return rule;
}

// ------------------------------------------------------------------ evaluation pieces
const metrics::ConfidenceInterval* find_metric(const metrics::EvalReport& r, const std::string& key) {
  for (const auto& m : r.metrics)
    if (m.name == key) return &m.value;
  return nullptr;
}

std::string lead_text(const metrics::EvalReport& r) {
  if (r.task != "binary")
    return "Multiclass evaluation of " + std::to_string(r.num_cases) + " cases over " +
           std::to_string(r.class_names.size()) + " classes; the predicted class is the most probable one.";
  const int64_t pos = r.counts.tp + r.counts.fn;
  const std::string name = r.class_names.size() == 2 ? r.class_names[1] : "positive";
  const double prevalence =
      r.num_cases > 0 ? static_cast<double>(pos) / static_cast<double>(r.num_cases) : metrics::kNaN;
  return "Binary evaluation of " + std::to_string(r.num_cases) + " cases; positive class " + name + ": " +
         std::to_string(pos) + " cases (prevalence " + percent(prevalence) +
         "). Sensitivity, specificity, PPV, NPV, accuracy and F1 are at threshold " + metric(r.options.threshold) + ".";
}

// The headline numbers as cards: estimate, 95% CI, and the threshold where one applies.
std::string headline_cards(const metrics::EvalReport& r) {
  const bool binary = r.task == "binary";
  const std::vector<std::string> keys =
      binary ? std::vector<std::string>{"roc_auc", "sensitivity", "specificity", "accuracy"}
             : std::vector<std::string>{"accuracy", "macro_f1", "macro_auc"};
  std::string s = "<div class=\"cards\">";
  for (const auto& key : keys) {
    const auto* ci = find_metric(r, key);
    if (!ci) continue;
    std::string label = metric_label(key);
    label = label.substr(0, label.find(" ("));
    std::string sub =
        std::isfinite(ci->lo) && std::isfinite(ci->hi) ? "95% CI " + metric(ci->lo) + "-" + metric(ci->hi) : "";
    if (binary && key != "roc_auc")
      sub += (sub.empty() ? "" : ", ") + std::string("at threshold ") + metric(r.options.threshold);
    s += "<div class=\"card\"><div class=\"label\">" + html_escape(label) + "</div><div class=\"value\">" +
         metric(ci->estimate) + "</div><div class=\"ci\">" + (sub.empty() ? "&nbsp;" : html_escape(sub)) +
         "</div></div>";
  }
  return s + "</div>\n";
}

std::string ci_note(const metrics::EvalOptions& o) {
  if (o.bootstrap <= 0) return "Confidence intervals were not computed (no bootstrap resamples).";
  return "95% confidence intervals: percentile bootstrap over " + std::to_string(o.bootstrap) +
         " resamples of the cases (seed " + std::to_string(o.seed) + ").";
}

std::vector<std::pair<std::string, std::string>> operating_point_rows(const metrics::OperatingPoint& op) {
  const auto& c = op.counts;
  return {{"Rule", rule_label(op.rule)},
          {"Threshold", metric(op.threshold)},
          {"Sensitivity", metric(op.sensitivity)},
          {"Specificity", metric(op.specificity)},
          {"PPV", metric(op.ppv)},
          {"NPV", metric(op.npv)},
          {"F1 score", metric(op.f1)},
          {"Youden's J", metric(op.youden_j)},
          {"TP / FP / TN / FN", std::to_string(c.tp) + " / " + std::to_string(c.fp) + " / " + std::to_string(c.tn) +
                                    " / " + std::to_string(c.fn)}};
}

// The threshold sweep, with the report's own threshold highlighted.
std::string sweep_table(const metrics::EvalReport& r) {
  std::string s = "<table class=\"data\"><thead><tr>";
  for (const char* h : {"Threshold", "TP", "FP", "TN", "FN", "Sensitivity", "Specificity", "PPV", "NPV", "F1"})
    s += std::string("<th class=\"num\">") + h + "</th>";
  s += "</tr></thead><tbody>";
  bool marked = false;
  for (const auto& w : r.sweep) {
    const bool hl = std::abs(w.threshold - r.options.threshold) < 1e-9;
    marked = marked || hl;
    s += hl ? "<tr class=\"hl\">" : "<tr>";
    for (const std::string& v : {metric(w.threshold), std::to_string(w.counts.tp), std::to_string(w.counts.fp),
                                 std::to_string(w.counts.tn), std::to_string(w.counts.fn), metric(w.sensitivity),
                                 metric(w.specificity), metric(w.ppv), metric(w.npv), metric(w.f1)})
      s += "<td class=\"num\">" + v + "</td>";
    s += "</tr>";
  }
  return s +
         "</tbody></table>\n<p class=\"note\">A case is called positive when its score is at or above the "
         "threshold." +
         (marked ? " The highlighted row is the threshold used above." : "") + "</p>\n";
}

constexpr const char* kCss = R"css(
:root{--ink:#1f2933;--muted:#5f6b7a;--line:#d9dee4;--accent:#1f5fbf}
*{box-sizing:border-box}
html{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;background:#eef1f4;color:var(--ink);font:14px/1.45 'Helvetica Neue',Arial,'Liberation Sans',sans-serif}
main{max-width:1160px;margin:0 auto;padding:28px 32px 36px;background:#fff;min-height:100vh}
header.top{border-bottom:3px solid var(--accent);padding-bottom:10px;margin-bottom:8px}
h1{font-size:25px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:19px;margin:30px 0 10px;padding-bottom:5px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:22px 0 6px;color:#2c3a47}
p{margin:6px 0 10px;max-width:900px}
.row{display:flex;flex-wrap:wrap;gap:0 32px;align-items:flex-start}
.col{flex:1 1 440px;min-width:0}
.meta,.note{color:var(--muted);font-size:12.5px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0 6px}
.card{flex:1 1 190px;border:1px solid var(--line);border-top:4px solid var(--accent);border-radius:6px;padding:10px 14px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.card .value{font-size:30px;font-weight:700;font-variant-numeric:tabular-nums;line-height:1.2}
.card .ci{font-size:12.5px;color:var(--muted)}
figure{margin:10px 18px 10px 0;display:inline-block;vertical-align:top;max-width:100%}
figure svg{max-width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:6px}
figure img{max-width:100%;display:block;border:1px solid var(--line);border-radius:6px}
figcaption{font-size:13px;font-weight:600;margin:0 0 6px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0 12px;font-size:13px}
caption{text-align:left;font-weight:600;padding:0 0 6px;font-size:13.5px}
th,td{padding:5px 12px;border-bottom:1px solid var(--line);text-align:left}
thead th{background:#f3f5f8;border-bottom:2px solid #c4ccd5;font-weight:600}
td.num,th.num{text-align:right}
tr.hl td{background:#fff4d1;font-weight:600}
table.kv th{font-weight:500;color:var(--muted);width:16em}
table.confusion td{text-align:center;min-width:7.5em;border:2px solid #fff;padding:8px 10px}
table.confusion td b{font-size:17px;display:block}
table.confusion td span{font-size:12px}
table.confusion th.corner{font-size:11.5px;color:var(--muted);font-weight:500;background:#fff}
table.confusion td.total{background:#f3f5f8;color:var(--muted)}
footer{margin-top:34px;padding-top:8px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}
@media (max-width:760px){main{padding:16px}figure{margin-right:0}}
@media print{body{background:#fff;font-size:12px}main{max-width:none;padding:0;min-height:0}
figure,table,.cards{break-inside:avoid}h2,h3{break-after:avoid}}
)css";

}  // namespace

// ------------------------------------------------------------------ free functions
std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const char* entity = c == '&'    ? "&amp;"
                         : c == '<'  ? "&lt;"
                         : c == '>'  ? "&gt;"
                         : c == '"'  ? "&quot;"
                         : c == '\'' ? "&#39;"
                                     : nullptr;
    out += entity ? std::string_view(entity) : std::string_view(&c, 1);
  }
  return out;
}

std::string base64_encode(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                       static_cast<uint8_t>(bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kAlphabet[(v >> k) & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string svg_line_chart(const LineChart& chart, int width, int height) {
  if (width < 200 || height < 150)
    throw ValueError(
        detail::cat("report: chart '", chart.title, "' is ", width, "x", height, ", expected at least 200x150"));
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  bool integers = true;
  for (const auto& s : chart.series) {
    if (s.x.size() != s.y.size())
      throw ValueError(detail::cat("report: series '", s.name, "' of chart '", chart.title, "' has ", s.x.size(),
                                   " x values and ", s.y.size(), " y values"));
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
      integers = integers && s.x[i] == std::round(s.x[i]);
    }
  }
  const bool empty = !(xlo <= xhi);
  if (chart.y_unit_range) ylo = empty ? 0 : std::min(ylo, 0.0), yhi = empty ? 1 : std::max(yhi, 1.0);
  std::vector<LegendItem> items;
  for (size_t i = 0; i < chart.series.size(); ++i) items.push_back({chart.series[i].name, kPalette[i % 8]});
  const double x0 = 66, right = 20;
  const int rows = legend_rows(items, width - x0 - right, nullptr, x0, 0);
  Frame f{
      x0, 40.0 + 18 * rows, width - x0 - right, 0, make_axis(xlo, xhi, integers && !empty), make_axis(ylo, yhi, false)};
  f.h = height - f.y0 - 48;
  if (f.h < 40) throw ValueError(detail::cat("report: chart '", chart.title, "' has too many series for its height"));
  std::string s =
      svg_open(width, height, chart.title) + draw_axes(f, chart.title, chart.x_label, chart.y_label, height);
  legend_rows(items, width - x0 - right, &s, x0, 40);
  if (empty) s += no_data(f);
  size_t n_points = 0;
  for (const auto& se : chart.series) n_points = std::max(n_points, se.x.size());
  for (size_t i = 0; i < chart.series.size(); ++i)
    s += draw_series(f, chart.series[i], kPalette[i % 8], n_points <= 40);
  return s + "</svg>";
}

// ------------------------------------------------------------------ Document
Document::Document(std::string title) : title_(std::move(title)) {}

void Document::heading(const std::string& text) { body_ += "<h2>" + html_escape(text) + "</h2>\n"; }

void Document::paragraph(const std::string& text) { body_ += "<p>" + html_escape(text) + "</p>\n"; }

void Document::key_values(const std::string& title, const std::vector<std::pair<std::string, std::string>>& rows) {
  body_ += "<table class=\"kv\">";
  if (!title.empty()) body_ += "<caption>" + html_escape(title) + "</caption>";
  body_ += "<tbody>";
  for (const auto& [k, v] : rows)
    body_ += "<tr><th scope=\"row\">" + html_escape(k) + "</th><td>" + html_escape(v) + "</td></tr>";
  body_ += "</tbody></table>\n";
}

void Document::table(const std::string& title, const std::vector<std::string>& header,
                     const std::vector<std::vector<std::string>>& rows) {
  // Columns whose cells all look like numbers are right-aligned.
  std::vector<bool> numeric(header.size(), true);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size() && c < numeric.size(); ++c)
      numeric[c] = numeric[c] && !r[c].empty() &&
                   (r[c] == "n/a" || r[c].find_first_not_of("0123456789.-+eE%() ") == std::string::npos);
  body_ += "<table class=\"data\">";
  if (!title.empty()) body_ += "<caption>" + html_escape(title) + "</caption>";
  body_ += "<thead><tr>";
  for (size_t c = 0; c < header.size(); ++c)
    body_ +=
        std::string(numeric[c] && !rows.empty() ? "<th class=\"num\">" : "<th>") + html_escape(header[c]) + "</th>";
  body_ += "</tr></thead><tbody>";
  for (const auto& r : rows) {
    body_ += "<tr>";
    for (size_t c = 0; c < r.size(); ++c)
      body_ +=
          std::string(c < numeric.size() && numeric[c] ? "<td class=\"num\">" : "<td>") + html_escape(r[c]) + "</td>";
    body_ += "</tr>";
  }
  body_ += "</tbody></table>\n";
}

void Document::line_chart(const LineChart& chart) { body_ += figure(svg_line_chart(chart, 520, 330)); }

void Document::roc_curve(const std::vector<metrics::RocPoint>& roc, double auc, const std::string& title,
                         double marker_fpr, double marker_tpr) {
  const std::string full = std::isfinite(auc) ? title + " (AUC " + metric(auc) + ")" : title;
  std::string s;
  const Frame f = unit_frame(&s, full, "1 - specificity (false positive rate)", "Sensitivity (true positive rate)");
  s += chance_diagonal(f);
  std::vector<std::pair<double, double>> pts;
  for (const auto& p : roc)
    if (std::isfinite(p.fpr) && std::isfinite(p.tpr)) pts.emplace_back(f.sx(p.fpr), f.sy(p.tpr));
  if (pts.empty()) s += no_data(f);
  if (pts.size() >= 2) {
    auto area = pts;
    area.emplace_back(pts.back().first, f.sy(0));
    area.emplace_back(pts.front().first, f.sy(0));
    s += "<polygon points=\"" + points_attr(area) + "\" fill=\"" + kPalette[0] + "\" fill-opacity=\"0.08\"/>";
  }
  s += curve(pts, kPalette[0]);
  std::vector<LegendItem> items = {{"Model", kPalette[0]}, {"Chance", "#9aa5b1", LegendItem::Kind::Dashed}};
  if (std::isfinite(marker_fpr) && std::isfinite(marker_tpr)) {
    s += circle(f.sx(std::clamp(marker_fpr, 0.0, 1.0)), f.sy(std::clamp(marker_tpr, 0.0, 1.0)), 5.5,
                std::string("fill=\"#ffffff\" stroke=\"") + kMarker + "\" stroke-width=\"2.5\"");
    items.push_back({"Operating point", kMarker, LegendItem::Kind::Marker});
  }
  body_ += figure(s + legend_box(f, items) + "</svg>");
}

void Document::pr_curve(const std::vector<metrics::PrPoint>& pr, double average_precision, const std::string& title) {
  const std::string full = std::isfinite(average_precision) ? title + " (AP " + metric(average_precision) + ")" : title;
  std::string s;
  const Frame f = unit_frame(&s, full, "Recall (sensitivity)", "Precision (PPV)");
  std::vector<metrics::PrPoint> ok;
  for (const auto& p : pr)
    if (std::isfinite(p.recall) && std::isfinite(p.precision)) ok.push_back(p);
  std::vector<LegendItem> items = {{"Model", kPalette[0]}};
  // The last point (everything called positive) has precision = prevalence: the chance level.
  if (!ok.empty() && ok.back().recall == 1.0 && ok.size() >= 2) {
    const double prev = ok.back().precision;
    s += line(f.sx(0), f.sy(prev), f.sx(1), f.sy(prev), kGuide);
    items.push_back({"Prevalence " + metric(prev), "#9aa5b1", LegendItem::Kind::Dashed});
  }
  if (ok.empty()) s += no_data(f);
  // Steps of height P_n over (R_{n-1}, R_n]: the area is the average precision.
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < ok.size(); ++i) {
    if (i > 0) pts.emplace_back(f.sx(ok[i - 1].recall), f.sy(ok[i].precision));
    pts.emplace_back(f.sx(ok[i].recall), f.sy(ok[i].precision));
  }
  s += curve(pts, kPalette[0]);
  body_ += figure(s + legend_box(f, items) + "</svg>");
}

void Document::confusion_matrix(const metrics::ConfusionMatrix& cm, const std::vector<std::string>& class_names,
                                const std::string& title) {
  const int n = cm.num_classes;
  if (n < 0 || cm.cells.size() != static_cast<size_t>(n) * static_cast<size_t>(n))
    throw ValueError(detail::cat("report: confusion matrix of ", n, " classes has ", cm.cells.size(),
                                 " cells, expected ", static_cast<int64_t>(n) * n));
  auto name = [&](int k) {
    return k < static_cast<int>(class_names.size()) ? class_names[k] : "class " + std::to_string(k);
  };
  std::string s = "<table class=\"confusion\"><caption>" + html_escape(title) + "</caption><thead><tr>" +
                  "<th class=\"corner\">true &#8595; / predicted &#8594;</th>";
  for (int p = 0; p < n; ++p) s += "<th>" + html_escape(name(p)) + "</th>";
  s += "<th>Total</th></tr></thead><tbody>";
  for (int t = 0; t < n; ++t) {
    int64_t row = 0;
    for (int p = 0; p < n; ++p) row += cm.at(t, p);
    s += "<tr><th scope=\"row\">" + html_escape(name(t)) + "</th>";
    for (int p = 0; p < n; ++p) {
      const double frac = row > 0 ? static_cast<double>(cm.at(t, p)) / static_cast<double>(row) : metrics::kNaN;
      s += "<td" + cell_style(frac, t == p) + "><b>" + std::to_string(cm.at(t, p)) + "</b><span>" +
           (row > 0 ? percent(frac) : "-") + "</span></td>";
    }
    s += "<td class=\"total\"><b>" + std::to_string(row) + "</b><span>cases</span></td></tr>";
  }
  body_ += s +
           "</tbody></table>\n<p class=\"note\">Each cell: number of cases and percentage of the true class (row). "
           "Blue: correct; red: errors; darker means a larger share of the row.</p>\n";
}

void Document::calibration(const metrics::Calibration& cal, const std::string& title) {
  const std::string full =
      std::isfinite(cal.ece) && !cal.bins.empty() ? title + " (ECE " + metric(cal.ece) + ")" : title;
  std::string s;
  const Frame f = unit_frame(&s, full, "Mean predicted probability", "Observed frequency");
  s += chance_diagonal(f);
  int64_t most = 0;
  for (const auto& b : cal.bins) most = std::max(most, b.count);
  Series series{"Model", {}, {}};
  std::string dots;
  for (const auto& b : cal.bins) {
    if (b.count <= 0 || !std::isfinite(b.mean_confidence) || !std::isfinite(b.observed)) continue;
    series.x.push_back(b.mean_confidence);
    series.y.push_back(b.observed);
    const double r = 3 + 5 * std::sqrt(static_cast<double>(b.count) / static_cast<double>(most));
    dots += circle(f.sx(b.mean_confidence), f.sy(b.observed), r,
                   std::string("fill=\"") + kPalette[0] + "\" fill-opacity=\"0.85\" stroke=\"#ffffff\"");
  }
  if (series.x.empty()) s += no_data(f);
  s += draw_series(f, series, kPalette[0], false) + dots;
  const std::vector<LegendItem> items = {{"Model (dot size: cases)", kPalette[0]},
                                         {"Perfect calibration", "#9aa5b1", LegendItem::Kind::Dashed}};
  body_ += figure(s + legend_box(f, items) + "</svg>");
}

void Document::evaluation(const metrics::EvalReport& r, const std::string& title) {
  const bool binary = r.task == "binary";
  const std::string thr = metric(r.options.threshold);
  body_ += "<section class=\"evaluation\"><h2>" + html_escape(title) + "</h2>\n";
  paragraph(lead_text(r));
  body_ += headline_cards(r);
  if (binary) {
    const auto* auc = find_metric(r, "roc_auc");
    const auto* ap = find_metric(r, "average_precision");
    const auto& op = r.operating_point;
    body_ += "<div class=\"row\">";
    roc_curve(r.roc, auc ? auc->estimate : metrics::kNaN, "ROC curve", 1 - op.specificity, op.sensitivity);
    pr_curve(r.pr, ap ? ap->estimate : metrics::kNaN);
    body_ += "</div>\n";
  }
  // Metrics (and per-class metrics) beside the confusion matrix.
  body_ += "<div class=\"row\"><div class=\"col\"><h3>Metrics</h3>\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : r.metrics) rows.push_back({metric_label(m.name), with_ci(m.value)});
  table("", {"Metric", "Estimate (95% CI)"}, rows);
  body_ += "<p class=\"note\">" + html_escape(ci_note(r.options)) + "</p>\n";
  if (!binary) {
    rows.clear();
    for (const auto& c : r.per_class)
      rows.push_back(
          {c.name, std::to_string(c.support), metric(c.precision), metric(c.recall), metric(c.f1), metric(c.auc)});
    table("Per class (one-vs-rest)", {"Class", "Cases", "Precision", "Recall", "F1", "ROC-AUC"}, rows);
  }
  body_ += "</div><div class=\"col\"><h3>Confusion matrix</h3>\n";
  confusion_matrix(r.confusion, r.class_names,
                   binary ? "At threshold " + thr : "Predicted class: the most probable one");
  body_ += "</div></div>\n<div class=\"row\">";
  if (binary) {
    body_ += "<div class=\"col\"><h3>Operating point</h3>\n";
    key_values("", operating_point_rows(r.operating_point));
    body_ += "</div>";
  }
  body_ += "<div class=\"col\"><h3>Calibration</h3>\n";
  if (r.calibration.bins.empty()) {
    paragraph("Calibration is not available: the scores are not probabilities in [0, 1].");
  } else {
    calibration(r.calibration, binary ? "Calibration" : "Calibration of the top-class probability");
    body_ += "<p class=\"note\">" +
             html_escape(std::to_string(r.calibration.bins.size()) + " equal-width bins; expected calibration error " +
                         "(ECE) " + metric(r.calibration.ece) + ". Observed frequency: share of " +
                         (binary ? "positive cases" : "correct predictions") + " in the bin.") +
             "</p>\n";
  }
  body_ += "</div></div>\n";
  if (binary) body_ += "<h3>Threshold sweep</h3>\n" + sweep_table(r);
  body_ += "</section>\n";
}

void Document::image_png(const std::string& caption, const std::string& png_bytes) {
  static const std::string kSignature = "\x89PNG\r\n\x1a\n";
  if (png_bytes.compare(0, kSignature.size(), kSignature) != 0)
    throw ValueError("report: image '" + caption + "' is not PNG data (bad signature)");
  body_ += "<figure class=\"image\"><figcaption>" + html_escape(caption) + "</figcaption><img alt=\"" +
           html_escape(caption) + "\" src=\"data:image/png;base64," + base64_encode(png_bytes) + "\"></figure>\n";
}

std::string Document::html() const {
  char when[64] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm)) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
         html_escape(title_) + "</title>\n<style>" + kCss +
         "</style>\n</head>\n<body>\n<main>\n<header class=\"top\"><h1>" + html_escape(title_) +
         "</h1><div class=\"meta\">Generated " + when + " by cxr " + CXR_VERSION_STRING + "</div></header>\n" + body_ +
         "<footer>Self-contained report written by cxr " + CXR_VERSION_STRING +
         ": no scripts, no external resources. Metrics describe the cases evaluated here only.</footer>\n"
         "</main>\n</body>\n</html>\n";
}

void Document::write(const std::string& path) const { write_file_atomic(path, html()); }

}  // namespace cxr::report
