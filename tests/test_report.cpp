// Tests of the HTML reports (tools/report): page structure, escaping of hostile text,
// base64 against RFC 4648 vectors, NaN handling, charts with one point / no points /
// constant series, nice axis ticks, well-formed markup (a small tag-balance checker),
// no scripts or external resources, and the atomic write. ReportSample.WritesFullReport
// writes a complete sample page to $CXR_REPORT_SAMPLE when set (the "browser" ctest
// renders it with headless Chromium).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "data/image.h"
#include "runtime/error.h"
#include "temp_dir.h"
#include "tools/metrics/metrics.h"
#include "tools/report/report.h"

namespace {

namespace fs = std::filesystem;
using namespace cxr::report;
namespace metrics = cxr::metrics;

constexpr double kNaN = metrics::kNaN;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }
size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + what.size())) ++n;
  return n;
}

// Checks that every opened tag is closed in order (HTML void elements excepted) and that
// no raw '<' or '&' starts anything but a tag, a comment/doctype or an entity. Returns
// "" when well formed, else a description of the first problem.
std::string markup_problem(const std::string& s) {
  static const std::vector<std::string> kVoid = {"meta", "img", "br", "hr", "link", "input"};
  static const std::regex kEntity("^&(#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);");
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '&') {
      if (!std::regex_search(s.substr(i, 12), kEntity)) return "bare '&' at " + std::to_string(i);
      ++i;
      continue;
    }
    if (s[i] != '<') {
      if (s[i] == '>') return "bare '>' at " + std::to_string(i);
      ++i;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    const std::string tag = s.substr(i + 1, end - i - 1);
    if (tag.empty()) return "empty tag at " + std::to_string(i);
    if (tag[0] == '!') {
      i = end + 1;
      continue;
    }
    if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) return "odd quotes in <" + tag + ">";
    if (tag.find('<') != std::string::npos) return "'<' inside <" + tag + ">";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> closes <" + (stack.empty() ? std::string("nothing") : stack.back()) + ">";
      stack.pop_back();
    } else if (tag.back() != '/') {
      const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
      if (std::find(kVoid.begin(), kVoid.end(), name) == kVoid.end()) stack.push_back(name);
    }
    i = end + 1;
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

// Every <svg>...</svg> in a page.
std::vector<std::string> svgs(const std::string& html) {
  std::vector<std::string> out;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1))
    out.push_back(html.substr(p, html.find("</svg>", p) + 6 - p));
  return out;
}

// Attribute values holding "nan" or "inf" (a non-finite number leaked into a coordinate).
bool leaks_non_finite(const std::string& svg) {
  static const std::regex kBad("=\"[^\"]*(nan|inf)[^\"]*\"", std::regex::icase);
  return std::regex_search(svg, kBad);
}

// The numbers drawn as tick labels, in order.
std::vector<std::string> tick_labels(const std::string& svg) {
  std::vector<std::string> out;
  static const std::regex kText(">(-?[0-9]+(\\.[0-9]+)?(e[-+][0-9]+)?)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), kText); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

// 2 x 120 cases, scores in [0, 1] from a fixed linear congruential generator; positives
// score higher on average.
struct BinaryData {
  std::vector<double> scores;
  std::vector<int> labels;
};
BinaryData binary_data() {
  BinaryData d;
  uint64_t s = 12345;
  auto uniform = [&s] {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(s >> 11) / 9007199254740992.0;
  };
  for (int i = 0; i < 240; ++i) {
    const int y = i % 2;
    const double v = 0.5 * (uniform() + uniform()) * 0.7 + (y ? 0.28 : 0.02);
    d.scores.push_back(std::clamp(v, 0.0, 1.0));
    d.labels.push_back(y);
  }
  return d;
}

metrics::EvalReport binary_report() {
  const BinaryData d = binary_data();
  metrics::EvalOptions o;
  o.bootstrap = 200;
  metrics::EvalReport r = metrics::evaluate_binary(d.scores, d.labels, o);
  r.class_names = {"NORMAL", "PNEUMONIA"};
  return r;
}

metrics::EvalReport multiclass_report(const std::vector<std::string>& names) {
  std::vector<std::vector<double>> probs;
  std::vector<int> labels;
  for (int i = 0; i < 90; ++i) {
    const int y = i % 3;
    const int pred = (i % 7 == 0) ? (y + 1) % 3 : y;
    std::vector<double> row(3, 0.15);
    row[pred] = 0.7;
    probs.push_back(row);
    labels.push_back(y);
  }
  metrics::EvalOptions o;
  o.bootstrap = 50;
  return metrics::evaluate_multiclass(probs, labels, names, o);
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ReportText, HtmlEscape) {
  EXPECT_EQ(html_escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;");
  EXPECT_EQ(html_escape("plain text 0.953"), "plain text 0.953");
  EXPECT_EQ(html_escape(""), "");
}

TEST(ReportText, Base64KnownVectors) {
  // RFC 4648, section 10.
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  // High bytes and NULs: the last two characters of the alphabet.
  EXPECT_EQ(base64_encode(std::string("\x00\xff\xfe", 3)), "AP/+");
  EXPECT_EQ(base64_encode(std::string("\xfb\xff", 2)), "+/8=");
  EXPECT_EQ(base64_encode("\x89PNG\r\n\x1a\n"), "iVBORw0KGgo=");
}

TEST(ReportDocument, StructureAndOrder) {
  Document doc("Run <42> report");
  doc.heading("Data");
  doc.paragraph("Two & three");
  doc.key_values("Settings", {{"epochs", "10"}, {"model", "resnet18"}});
  doc.table("Per epoch", {"epoch", "loss"}, {{"1", "0.693"}, {"2", "n/a"}});
  const std::string h = doc.html();
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_TRUE(has(h, "<meta charset=\"utf-8\">"));
  EXPECT_TRUE(has(h, "<title>Run &lt;42&gt; report</title>"));
  EXPECT_TRUE(has(h, "<h1>Run &lt;42&gt; report</h1>"));
  EXPECT_EQ(count(h, "<style>"), 1u);
  EXPECT_TRUE(has(h, "<p>Two &amp; three</p>"));
  EXPECT_TRUE(has(h, "<th scope=\"row\">model</th><td>resnet18</td>"));
  EXPECT_TRUE(has(h, "<td class=\"num\">0.693</td>"));  // numeric columns are right-aligned
  const size_t a = h.find("<h2>Data</h2>"), b = h.find("Two &amp;"), c = h.find("Settings"), d = h.find("Per epoch");
  ASSERT_NE(a, std::string::npos);
  EXPECT_TRUE(a < b && b < c && c < d);
  EXPECT_TRUE(h.size() > 20 && h.substr(h.size() - 8) == "</html>\n");
  EXPECT_EQ(markup_problem(h), "");
}

TEST(ReportDocument, HostileClassNamesAreEscaped) {
  const std::vector<std::string> names = {"<script>alert(1)</script>", "a&b \"quoted\"", "<img src=x onerror=y>"};
  Document doc("<script>document.title</script>");
  doc.evaluation(multiclass_report(names), "<b>bold</b>");
  metrics::ConfusionMatrix cm{3, {5, 1, 0, 0, 4, 2, 1, 0, 6}};
  doc.confusion_matrix(cm, names, "<i>cm</i>");
  doc.line_chart({"<script>", "x<", "y>", {{"<script>s</script>", {1, 2}, {3, 4}}}});
  const std::string h = doc.html();
  EXPECT_FALSE(has(lower(h), "<script")) << "unescaped script tag";
  EXPECT_FALSE(has(lower(h), "<img")) << "unescaped img tag";
  EXPECT_FALSE(has(h, "<b>bold"));
  EXPECT_TRUE(has(h, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(has(h, "a&amp;b &quot;quoted&quot;"));
  EXPECT_EQ(markup_problem(h), "");
}

TEST(ReportDocument, NoExternalResourcesOrScripts) {
  Document doc("Full");
  doc.evaluation(binary_report());
  doc.evaluation(multiclass_report({"A", "B", "C"}), "Multiclass");
  const std::vector<uint8_t> png = cxr::data::encode_png_u8(std::vector<uint8_t>(4 * 4 * 3, 128).data(), 4, 4, 3);
  doc.image_png("overlay", std::string(png.begin(), png.end()));
  doc.line_chart({"Loss", "epoch", "loss", {{"train", {1, 2, 3}, {0.9, 0.5, 0.4}}}});
  const std::string h = lower(doc.html());
  for (const char* bad : {"http:", "https:", "src=\"/", "href=", "<script", "@import", "url(", "<link", "<iframe"})
    EXPECT_FALSE(has(h, bad)) << bad;
  EXPECT_TRUE(has(h, "src=\"data:image/png;base64,ivborw0kggo"));  // the only source: inline data
}

TEST(ReportDocument, MarkupIsWellFormed) {
  Document doc("Well formed");
  doc.evaluation(binary_report());
  doc.evaluation(multiclass_report({"A", "B", "C"}), "Multiclass");
  doc.line_chart({"Loss", "epoch", "loss", {{"train", {1, 2, 3}, {1, kNaN, 0.5}}, {"val", {}, {}}}});
  const std::string h = doc.html();
  EXPECT_EQ(markup_problem(h), "");
  const auto all = svgs(h);
  EXPECT_EQ(all.size(), 5u);  // binary: ROC, PR, calibration; multiclass: calibration; the line chart
  for (const auto& s : all) {
    EXPECT_EQ(markup_problem(s), "") << s;
    EXPECT_TRUE(has(s, "viewBox=\"0 0 "));
    EXPECT_FALSE(leaks_non_finite(s)) << s;
  }
  // The checker itself catches what it is for.
  EXPECT_NE(markup_problem("<svg><g></svg>"), "");
  EXPECT_NE(markup_problem("<svg><text>a < b</text></svg>"), "");
  EXPECT_NE(markup_problem("<p>fish & chips</p>"), "");
  EXPECT_EQ(markup_problem("<p>fish &amp; chips<br></p><line x=\"1\"/>"), "");
}

TEST(ReportCharts, NiceTicksAndLegend) {
  const LineChart c{
      "Loss",
      "epoch",
      "loss",
      {{"train", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {2.3, 1.9, 1.2, 0.9, 0.7, 0.6, 0.52, 0.47, 0.44, 0.41}},
       {"validation", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {2.4, 2.0, 1.5, 1.1, 0.9, 0.85, 0.8, 0.8, 0.79, 0.8}}}};
  const std::string s = svg_line_chart(c);
  EXPECT_TRUE(has(s, "viewBox=\"0 0 640 360\""));
  const auto t = tick_labels(s);
  // x: epochs 0..10 in steps of 2 (integers only); y: 0.0..2.5 in steps of 0.5.
  for (const char* want : {"0", "2", "4", "6", "8", "10", "0.5", "1.0", "1.5", "2.0", "2.5"})
    EXPECT_NE(std::find(t.begin(), t.end(), want), t.end()) << want << " missing from ticks";
  for (const auto& v : t) EXPECT_FALSE(has(v, ".") && v.size() > 4) << "unrounded tick " << v;
  EXPECT_TRUE(has(s, ">train</text>"));
  EXPECT_TRUE(has(s, ">validation</text>"));
  EXPECT_TRUE(has(s, ">epoch</text>"));
  EXPECT_TRUE(has(s, ">Loss</text>"));
  EXPECT_EQ(count(s, "<polyline"), 2u);
  EXPECT_NE(s.find("#1f5fbf"), std::string::npos);  // one colour per series
  EXPECT_NE(s.find("#e07b00"), std::string::npos);
  EXPECT_EQ(markup_problem(s), "");
}

TEST(ReportCharts, UnitRangeAxis) {
  const std::string s = svg_line_chart({"Accuracy", "epoch", "accuracy", {{"val", {1, 2}, {0.61, 0.74}}}, true});
  const auto t = tick_labels(s);
  for (const char* want : {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"})
    EXPECT_NE(std::find(t.begin(), t.end(), want), t.end()) << want;
}

TEST(ReportCharts, TinyValuesGetShortLabels) {
  // Learning rates decaying from 1e-6: ticks in steps of 2e-7, written compactly.
  const std::string s = svg_line_chart({"Learning rate", "epoch", "lr", {{"lr", {1, 2, 3}, {1e-6, 5e-7, 1e-7}}}});
  const auto t = tick_labels(s);
  for (const char* want : {"2e-07", "4e-07", "1e-06"}) EXPECT_NE(std::find(t.begin(), t.end(), want), t.end()) << want;
  for (const auto& v : t) EXPECT_LE(v.size(), 7u) << v;
}

TEST(ReportCharts, OnePointNoPointsConstantAndNaN) {
  const std::string one = svg_line_chart({"One", "epoch", "loss", {{"train", {1}, {0.5}}}});
  EXPECT_EQ(count(one, "<polyline"), 0u);
  EXPECT_EQ(count(one, "<circle"), 1u);  // a lone point is drawn as a dot
  EXPECT_FALSE(leaks_non_finite(one));
  EXPECT_GE(tick_labels(one).size(), 4u);

  for (const LineChart& empty : {LineChart{"Empty", "x", "y", {}}, LineChart{"Empty", "x", "y", {{"s", {}, {}}}},
                                 LineChart{"Empty", "x", "y", {{"s", {1, 2}, {kNaN, kNaN}}}}}) {
    const std::string s = svg_line_chart(empty);
    EXPECT_TRUE(has(s, ">no data</text>"));
    EXPECT_FALSE(leaks_non_finite(s));
    EXPECT_EQ(markup_problem(s), "");
  }

  const std::string flat = svg_line_chart({"Flat", "epoch", "loss", {{"s", {1, 2, 3}, {0.25, 0.25, 0.25}}}});
  EXPECT_FALSE(leaks_non_finite(flat));
  EXPECT_EQ(count(flat, "<polyline"), 1u);
  const auto t = tick_labels(flat);
  EXPECT_GE(t.size(), 4u);
  EXPECT_EQ(std::set<std::string>(t.begin(), t.end()).size(), t.size()) << "repeated tick labels";

  // NaN and infinite points are skipped and break the line in two.
  const std::string gap =
      svg_line_chart({"Gap", "epoch", "loss", {{"s", {1, 2, 3, 4, 5}, {0.9, 0.8, kNaN, 0.5, metrics::kInf}}}});
  EXPECT_FALSE(leaks_non_finite(gap));
  EXPECT_EQ(count(gap, "<polyline"), 1u);  // {1,2} is a line; {4} a lone dot
  EXPECT_EQ(count(gap, "<circle"), 3u);

  EXPECT_THROW(svg_line_chart({"Bad", "x", "y", {{"s", {1, 2}, {1}}}}), cxr::ValueError);
}

TEST(ReportCharts, RocPrCalibration) {
  const metrics::EvalReport r = binary_report();
  Document doc("Curves");
  doc.roc_curve(r.roc, 0.9123, "ROC curve", 0.2, 0.8);
  doc.pr_curve(r.pr, 0.88);
  doc.calibration(r.calibration);
  doc.roc_curve({}, kNaN);  // nothing to draw
  const std::string h = doc.html();
  EXPECT_TRUE(has(h, ">ROC curve (AUC 0.912)</text>"));
  EXPECT_TRUE(has(h, ">Precision-recall curve (AP 0.880)</text>"));
  EXPECT_TRUE(has(h, ">Calibration (ECE "));
  EXPECT_TRUE(has(h, ">Operating point</text>"));
  EXPECT_TRUE(has(h, ">Chance</text>"));
  EXPECT_TRUE(has(h, ">Prevalence 0.500</text>"));
  EXPECT_TRUE(has(h, ">no data</text>"));
  const auto all = svgs(h);
  ASSERT_EQ(all.size(), 4u);
  // Square plots: 440 x 450 with a 354 x 354 plot area.
  for (const auto& s : all) {
    EXPECT_TRUE(has(s, "viewBox=\"0 0 440 450\""));
    EXPECT_FALSE(leaks_non_finite(s));
  }
}

TEST(ReportCharts, LargeRocCurveIsThinned) {
  std::vector<double> scores;
  std::vector<int> labels;
  uint64_t s = 7;
  for (int i = 0; i < 20000; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    labels.push_back(i % 2);
    scores.push_back(static_cast<double>(s >> 11) / 9007199254740992.0 * 0.8 + 0.2 * (i % 2));
  }
  const auto roc = metrics::roc_curve(scores, labels);
  ASSERT_GT(roc.size(), 19000u);
  Document doc("big");
  doc.roc_curve(roc, metrics::roc_auc(scores, labels));
  const std::string svg = svgs(doc.html()).at(0);
  const size_t b = svg.find("<polyline points=\"");
  ASSERT_NE(b, std::string::npos);
  const std::string pts = svg.substr(b, svg.find('"', b + 18) - b);
  EXPECT_LT(count(pts, ","), 4000u);  // sub-pixel steps dropped
  EXPECT_TRUE(has(pts, " 420.0,40.0")) << "the end point (1, 1) is kept";
  EXPECT_LT(svg.size(), 100000u);
}

TEST(ReportCharts, ConfusionMatrixCountsAndRowPercentages) {
  Document doc("cm");
  doc.confusion_matrix({2, {8, 2, 1, 9}}, {"NORMAL", "PNEUMONIA"});
  doc.confusion_matrix({2, {0, 0, 3, 1}}, {"only"});  // an empty row, a missing name
  const std::string h = doc.html();
  for (const char* s : {"<b>8</b><span>80.0%</span>", "<b>2</b><span>20.0%</span>", "<b>1</b><span>10.0%</span>",
                        "<b>9</b><span>90.0%</span>", "<b>10</b><span>cases</span>", ">NORMAL</th>", ">PNEUMONIA</th>",
                        "<b>0</b><span>-</span>", ">class 1</th>", "<b>3</b><span>75.0%</span>"})
    EXPECT_TRUE(has(h, s)) << s;
  EXPECT_THROW(doc.confusion_matrix({2, {1, 2, 3}}, {}), cxr::ValueError);
}

TEST(ReportDocument, EvaluationSections) {
  Document doc("Eval");
  doc.evaluation(binary_report(), "Validation");
  const std::string h = doc.html();
  for (const char* s : {"<h2>Validation</h2>", "ROC curve (AUC ", "Precision-recall curve (AP ", "Confusion matrix",
                        "Operating point", "Threshold sweep", "Calibration", "PNEUMONIA", "NORMAL", "class=\"card\"",
                        "Sensitivity", "Specificity", "<tr class=\"hl\">", "200 resamples"})
    EXPECT_TRUE(has(h, s)) << s;
  // CIs as "0.953 (0.921-0.978)".
  EXPECT_TRUE(std::regex_search(h, std::regex(">[01]\\.[0-9]{3} \\([01]\\.[0-9]{3}-[01]\\.[0-9]{3}\\)<")));

  // NaN metrics read "n/a", never "nan".
  metrics::EvalReport r = binary_report();
  for (auto& m : r.metrics) m.value = {kNaN, kNaN, kNaN, 0};
  r.calibration = {};
  Document nan_doc("Undefined metrics");
  nan_doc.evaluation(r);
  const std::string n = nan_doc.html();
  EXPECT_TRUE(has(n, ">n/a<"));
  std::smatch m;
  EXPECT_FALSE(std::regex_search(n, m, std::regex(">[^<]*\\bnan\\b", std::regex::icase))) << m.str();
  EXPECT_TRUE(has(n, "Calibration is not available"));
  EXPECT_EQ(markup_problem(n), "");
}

TEST(ReportDocument, ImagePng) {
  Document doc("img");
  EXPECT_THROW(doc.image_png("not a png", "GIF89a...."), cxr::ValueError);
  const std::string png = "\x89PNG\r\n\x1a\nrest";
  doc.image_png("Grad-CAM <overlay>", png);
  const std::string h = doc.html();
  EXPECT_TRUE(has(h, "src=\"data:image/png;base64," + base64_encode(png) + "\""));
  EXPECT_TRUE(has(h, "alt=\"Grad-CAM &lt;overlay&gt;\""));
}

TEST(ReportDocument, WriteIsAtomic) {
  cxr_test::TempDir dir("cxr_test_report_");
  const std::string path = dir.file("report.html");
  Document first("First");
  first.paragraph("old");
  first.write(path);
  EXPECT_TRUE(has(read(path), "<p>old</p>"));
  Document second("Second");
  second.paragraph("new");
  second.write(path);  // replaces the file
  const std::string text = read(path);
  EXPECT_TRUE(has(text, "<p>new</p>"));
  EXPECT_FALSE(has(text, "<p>old</p>"));
  EXPECT_EQ(text.substr(text.size() - 8), "</html>\n");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(e.path().filename(), "report.html");
  }
  EXPECT_EQ(files, 1u);  // no temp file left behind
  EXPECT_THROW(second.write(dir.file("missing/dir/report.html")), cxr::FileError);
  EXPECT_THROW(second.write(dir.str()), cxr::FileError);  // a directory
}

// A complete report like `cxr train` writes: settings, curves, two evaluations and an image.
TEST(ReportSample, WritesFullReport) {
  Document doc("Training report: resnet18 on chest X-rays");
  doc.key_values("Run",
                 {{"Model", "resnet18 (1 channel, 224 x 224)"}, {"Epochs", "12"}, {"Optimizer", "AdamW, lr 0.001"}});
  LineChart loss{"Loss", "Epoch", "Cross-entropy loss", {{"Training", {}, {}}, {"Validation", {}, {}}}};
  LineChart acc{"Accuracy", "Epoch", "Accuracy", {{"Training", {}, {}}, {"Validation", {}, {}}}, true};
  for (int e = 1; e <= 12; ++e) {
    loss.series[0].x.push_back(e), loss.series[0].y.push_back(0.7 * std::exp(-0.25 * e) + 0.08);
    loss.series[1].x.push_back(e), loss.series[1].y.push_back(0.72 * std::exp(-0.2 * e) + 0.17);
    acc.series[0].x.push_back(e), acc.series[0].y.push_back(0.97 - 0.4 * std::exp(-0.35 * e));
    acc.series[1].x.push_back(e), acc.series[1].y.push_back(0.93 - 0.38 * std::exp(-0.3 * e));
  }
  doc.heading("Training curves");
  doc.line_chart(loss);
  doc.line_chart(acc);
  LineChart lr{"Learning rate", "Epoch", "Learning rate", {{"lr", {}, {}}}};
  for (int e = 1; e <= 12; ++e)
    lr.series[0].x.push_back(e), lr.series[0].y.push_back(5e-4 * (1 + std::cos(3.14159265 * e / 12)) + 1e-6);
  doc.line_chart(lr);
  doc.evaluation(binary_report(), "Validation");
  doc.evaluation(multiclass_report({"NORMAL", "BACTERIAL", "VIRAL"}), "Three-class model");
  std::vector<uint8_t> px(64 * 64 * 3);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x)
      px[(y * 64 + x) * 3] = static_cast<uint8_t>(4 * x), px[(y * 64 + x) * 3 + 2] = static_cast<uint8_t>(4 * y);
  const auto png = cxr::data::encode_png_u8(px.data(), 64, 64, 3);
  doc.image_png("Grad-CAM overlay", std::string(png.begin(), png.end()));
  EXPECT_EQ(markup_problem(doc.html()), "");

  const char* env = std::getenv("CXR_REPORT_SAMPLE");
  cxr_test::TempDir dir("cxr_test_report_sample_");
  const std::string path = env && *env ? std::string(env) : dir.file("sample.html");
  doc.write(path);
  EXPECT_GT(fs::file_size(path), 20000u);
}

}  // namespace
