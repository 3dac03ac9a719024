// Tests of data/synth: determinism of the generator (by seed, index, count and thread
// count), exact class and split counts, lesion masks and contrasts, NORMAL vs PNEUMONIA
// statistics, the written tree (images, masks, manifest.csv, synth.json), refusal to
// overwrite a data set, and option validation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/image.h"
#include "data/synth.h"
#include "expect_error.h"
#include "temp_dir.h"

namespace cxr::data {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed at the end of the test.
using cxr_test::TempDir;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) fields.push_back(f);
    if (!line.empty() && line.back() == ',') fields.push_back("");
    rows.push_back(fields);
  }
  return rows;
}

// Every regular file under root, as paths relative to root.
std::set<std::string> list_files(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), root).generic_string());
  return out;
}

double mean_in_box(const Image& img, double x0, double x1, double y0, double y1) {
  const int S = img.width;
  double s = 0;
  int n = 0;
  for (int y = static_cast<int>(y0 * S); y < static_cast<int>(y1 * S); ++y)
    for (int x = static_cast<int>(x0 * S); x < static_cast<int>(x1 * S); ++x) {
      s += img.at(0, y, x);
      ++n;
    }
  return s / n;
}

// ---------------------------------------------------------------- generator

TEST(SynthXray, SameSeedAndIndexGiveIdenticalPixels) {
  for (bool p : {false, true}) {
    const SynthImage a = synth_xray(64, 5, 3, p), b = synth_xray(64, 5, 3, p);
    ASSERT_EQ(a.image.channels, 1);
    ASSERT_EQ(a.image.height, 64);
    ASSERT_EQ(a.image.width, 64);
    EXPECT_EQ(a.image.data, b.image.data);
    EXPECT_EQ(a.mask.data, b.mask.data);
    EXPECT_EQ(a.lesion_contrast, b.lesion_contrast);
    EXPECT_EQ(a.pneumonia, p);
  }
}

TEST(SynthXray, DifferentSeedsAndIndicesDiffer) {
  const SynthImage a = synth_xray(64, 1, 0, false);
  EXPECT_NE(a.image.data, synth_xray(64, 2, 0, false).image.data);
  EXPECT_NE(a.image.data, synth_xray(64, 1, 1, false).image.data);
  // Not just noise: the anatomy moves (mean absolute difference well above the grain).
  const SynthImage b = synth_xray(64, 2, 0, false);
  double diff = 0;
  for (size_t i = 0; i < a.image.data.size(); ++i) diff += std::fabs(a.image.data[i] - b.image.data[i]);
  EXPECT_GT(diff / static_cast<double>(a.image.data.size()), 0.03);
}

TEST(SynthXray, ValuesInRangeAndLooksLikeAChestFilm) {
  for (int64_t i = 0; i < 10; ++i) {
    const SynthImage s = synth_xray(96, 7, i, i % 2 == 1);
    for (float v : s.image.data) ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << v;
    // Corners (air beside the neck) dark, mediastinum bright, lung fields dark.
    const double corner = mean_in_box(s.image, 0.0, 0.05, 0.0, 0.05);
    const double spine = mean_in_box(s.image, 0.47, 0.53, 0.3, 0.6);
    const double right_lung = mean_in_box(s.image, 0.2, 0.3, 0.35, 0.5);
    EXPECT_LT(corner, 0.2) << i;
    EXPECT_GT(spine, right_lung + 0.15) << i;
    EXPECT_GT(spine, 0.5) << i;
  }
}

TEST(SynthXray, AnatomyIsSharedBetweenClasses) {
  // The PNEUMONIA version of image i is its NORMAL version plus consolidations: far
  // from the lesions (here, the air outside the body at the top corners) pixels are equal.
  for (int64_t i = 0; i < 5; ++i) {
    const SynthImage n = synth_xray(64, 9, i, false), p = synth_xray(64, 9, i, true);
    size_t same = 0;
    for (size_t k = 0; k < n.image.data.size(); ++k) same += n.image.data[k] == p.image.data[k];
    EXPECT_GT(same, n.image.data.size() / 2) << i;
    EXPECT_EQ(n.image.at(0, 0, 0), p.image.at(0, 0, 0));
    EXPECT_EQ(n.image.at(0, 0, 63), p.image.at(0, 0, 63));
  }
}

TEST(SynthXray, MasksNonEmptyForPneumoniaInsideTheLungsAndEmptyForNormal) {
  const int S = 64;
  for (int64_t i = 0; i < 40; ++i) {
    const SynthImage n = synth_xray(S, 11, i, false), p = synth_xray(S, 11, i, true);
    for (float v : n.mask.data) ASSERT_EQ(v, 0.0f);
    EXPECT_TRUE(n.lesion_contrast.empty());
    ASSERT_EQ(p.mask.channels, 1);
    ASSERT_EQ(p.mask.height, S);
    ASSERT_EQ(p.mask.width, S);
    ASSERT_GE(p.lesion_contrast.size(), 1u);
    ASSERT_LE(p.lesion_contrast.size(), 3u);
    int64_t on = 0;
    double normal_under_mask = 0;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        const float m = p.mask.at(0, y, x);
        ASSERT_TRUE(m == 0.0f || m == 1.0f);
        if (m == 0.0f) continue;
        ++on;
        normal_under_mask += n.image.at(0, y, x);
        // Lesions are inside the lung fields, never on the image border.
        EXPECT_TRUE(y > 1 && y < S - 2 && x > 1 && x < S - 2) << "index " << i << " at " << x << "," << y;
      }
    EXPECT_GT(on, 0) << i;
    EXPECT_LT(on, S * S / 4) << i;
    // Under the mask the NORMAL image is lung (dark), not mediastinum or abdomen.
    const double spine = mean_in_box(n.image, 0.47, 0.53, 0.3, 0.6);
    EXPECT_LT(normal_under_mask / static_cast<double>(on), spine - 0.1) << i;
  }
}

TEST(SynthXray, PneumoniaBrightensTheLungUnderTheMask) {
  // Paired: same index with and without lesions.
  for (int64_t i = 0; i < 30; ++i) {
    const SynthImage n = synth_xray(64, 13, i, false), p = synth_xray(64, 13, i, true);
    double in = 0;
    int64_t m = 0;
    for (size_t k = 0; k < n.image.data.size(); ++k)
      if (p.mask.data[k] > 0) {
        in += p.image.data[k] - n.image.data[k];
        ++m;
      }
    ASSERT_GT(m, 0);
    EXPECT_GT(in / static_cast<double>(m), 0.02) << i;
  }
}

TEST(SynthXray, NormalAndPneumoniaDifferStatisticallyInTheLungFields) {
  // Unpaired: different images of each class; the mean brightness of boxes inside the
  // lung fields is higher for PNEUMONIA (Welch t statistic).
  const int S = 32, n = 150;
  auto lung_mean = [&](int64_t index, bool p) {
    const Image img = synth_xray(S, 17, index, p).image;
    return 0.5 * (mean_in_box(img, 0.18, 0.38, 0.25, 0.65) + mean_in_box(img, 0.62, 0.82, 0.25, 0.55));
  };
  std::vector<double> a, b;
  for (int i = 0; i < n; ++i) {
    a.push_back(lung_mean(2 * i, false));
    b.push_back(lung_mean(2 * i + 1, true));
  }
  auto mean = [](const std::vector<double>& v) { double s = 0; for (double x : v) s += x; return s / static_cast<double>(v.size()); };
  auto var = [&](const std::vector<double>& v) {
    const double m = mean(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return s / static_cast<double>(v.size() - 1);
  };
  const double t = (mean(b) - mean(a)) / std::sqrt(var(a) / n + var(b) / n);
  EXPECT_GT(t, 4.0) << "normal " << mean(a) << " pneumonia " << mean(b);
}

TEST(SynthXray, LesionContrastRangeIsHonouredAndTheFaintestAreFaint) {
  const int S = 48;
  float lo = 1.0f, hi = 0.0f;
  int faint_images = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const SynthImage p = synth_xray(S, 19, i, true);
    float cmax = 0.0f;
    for (float c : p.lesion_contrast) {
      ASSERT_GE(c, kSynthMinLesionContrast);
      ASSERT_LE(c, kSynthMaxLesionContrast);
      lo = std::min(lo, c);
      hi = std::max(hi, c);
      cmax = std::max(cmax, c);
    }
    // The brightening never exceeds what the contrast allows (exposure gain, gamma
    // and noise add a margin); images whose lesions are all faint change only a little.
    if (cmax < 0.1f || i < 40) {
      const SynthImage n = synth_xray(S, 19, i, false);
      double in = 0;
      int64_t m = 0;
      for (size_t k = 0; k < n.image.data.size(); ++k)
        if (p.mask.data[k] > 0) {
          in += p.image.data[k] - n.image.data[k];
          ++m;
        }
      const double mean_diff = in / static_cast<double>(std::max<int64_t>(m, 1));
      EXPECT_LT(mean_diff, 1.3 * cmax + 0.01) << "index " << i << " contrast " << cmax;
      if (cmax < 0.1f) {
        ++faint_images;
        EXPECT_LT(mean_diff, 0.12) << "index " << i << " contrast " << cmax;
      }
    }
  }
  EXPECT_LT(lo, 0.09f) << "no faint lesion in 400 images";
  EXPECT_GT(hi, 0.25f) << "no obvious lesion in 400 images";
  EXPECT_GT(faint_images, 0);
}

TEST(SynthXray, RejectsBadArguments) {
  expect_error([] { synth_xray(8, 1, 0, false); }, {"size", "8"});
  expect_error([] { synth_xray(5000, 1, 0, false); }, {"size", "5000"});
  expect_error([] { synth_xray(64, 1, -1, false); }, {"index", "-1"});
}

// ---------------------------------------------------------------- assignment

TEST(SynthAssignments, ExactClassAndStratifiedSplitCounts) {
  struct Case {
    int64_t count;
    double pf, val, test;
  };
  for (const Case c : {Case{1000, 0.5, 0.15, 0.15}, Case{1000, 0.3, 0.1, 0.2}, Case{37, 0.5, 0.15, 0.15},
                       Case{10, 0.25, 0.0, 0.0}, Case{1, 1.0, 0.0, 0.0}, Case{200, 0.0, 0.5, 0.25}, Case{7, 1.0, 0.3, 0.3}}) {
    SynthOptions o;
    o.count = c.count;
    o.pneumonia_fraction = c.pf;
    o.val_fraction = c.val;
    o.test_fraction = c.test;
    o.seed = 42;
    const std::vector<SynthAssignment> a = synth_assignments(o);
    ASSERT_EQ(static_cast<int64_t>(a.size()), c.count);
    int64_t counts[3][2] = {};
    for (const SynthAssignment& s : a) ++counts[static_cast<int>(s.split)][s.pneumonia];
    const int64_t np = std::llround(static_cast<double>(c.count) * c.pf);
    for (int cls = 0; cls < 2; ++cls) {
      const int64_t nc = cls ? np : c.count - np;
      const int64_t nv = std::llround(static_cast<double>(nc) * c.val), nt = std::llround(static_cast<double>(nc) * c.test);
      EXPECT_EQ(counts[1][cls], nv) << c.count << " class " << cls;
      EXPECT_EQ(counts[2][cls], nt) << c.count << " class " << cls;
      EXPECT_EQ(counts[0][cls], nc - nv - nt) << c.count << " class " << cls;
    }
  }
}

TEST(SynthAssignments, DeterministicBySeedAndShuffled) {
  SynthOptions o;
  o.count = 500;
  o.seed = 3;
  const auto a = synth_assignments(o), b = synth_assignments(o);
  o.seed = 4;
  const auto c = synth_assignments(o);
  int same_ab = 0, same_ac = 0, first_half_pneu = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    same_ab += a[i].pneumonia == b[i].pneumonia && a[i].split == b[i].split;
    same_ac += a[i].pneumonia == c[i].pneumonia && a[i].split == c[i].split;
    first_half_pneu += i < 250 && a[i].pneumonia;
  }
  EXPECT_EQ(same_ab, 500);
  EXPECT_LT(same_ac, 400);
  // Shuffled, not "first half PNEUMONIA".
  EXPECT_GT(first_half_pneu, 90);
  EXPECT_LT(first_half_pneu, 160);
}

// ---------------------------------------------------------------- written data sets

TEST(SynthDataset, ImageIsTheSameWhateverTheCountAndThreadCount) {
  TempDir tmp;
  SynthOptions o;
  o.size = 32;
  o.seed = 21;
  o.count = 10;
  o.threads = 1;
  write_synthetic_dataset(tmp.str("a"), o);
  o.threads = 4;
  write_synthetic_dataset(tmp.str("b"), o);
  o.count = 50;
  write_synthetic_dataset(tmp.str("c"), o);

  // Same options, 1 vs 4 threads: identical trees, byte for byte.
  const std::set<std::string> fa = list_files(tmp.path() / "a");
  ASSERT_EQ(fa, list_files(tmp.path() / "b"));
  for (const std::string& f : fa) EXPECT_EQ(read_file(tmp.path() / "a" / f), read_file(tmp.path() / "b" / f)) << f;

  // count 10 vs 50: image i is the same (when its class is the same in both), and equal
  // to synth_xray's output.
  const auto ma = read_csv(tmp.path() / "a" / "manifest.csv"), mc = read_csv(tmp.path() / "c" / "manifest.csv");
  int compared = 0;
  for (int i = 0; i < 10; ++i) {
    const auto& ra = ma[static_cast<size_t>(i) + 1];
    const auto& rc = mc[static_cast<size_t>(i) + 1];
    const std::string png = read_file(tmp.path() / "a" / ra[0]);
    const std::vector<uint8_t> expect = encode_png(synth_xray(32, 21, i, ra[1] == "PNEUMONIA").image);
    EXPECT_EQ(png, std::string(expect.begin(), expect.end())) << ra[0];
    if (ra[1] != rc[1]) continue;
    EXPECT_EQ(png, read_file(tmp.path() / "c" / rc[0])) << ra[0] << " vs " << rc[0];
    ++compared;
  }
  EXPECT_GE(compared, 3);
}

TEST(SynthDataset, WritesTheTreeManifestAndSummary) {
  TempDir tmp;
  SynthOptions o;
  o.size = 32;
  o.count = 40;
  o.seed = 5;
  o.pneumonia_fraction = 0.4;
  o.val_fraction = 0.2;
  o.test_fraction = 0.1;
  std::vector<std::pair<int64_t, int64_t>> calls;
  const SynthSummary s = write_synthetic_dataset(tmp.str("ds"), o, [&](int64_t d, int64_t t) { calls.push_back({d, t}); });
  const fs::path root = tmp.path() / "ds";

  // Summary counts: 16 PNEUMONIA (val 3, test 2, train 11) and 24 NORMAL (val 5, test 2, train 17).
  EXPECT_EQ(s.total, 40);
  EXPECT_EQ(s.masks, 16);
  EXPECT_EQ(s.count(Split::train, true), 11);
  EXPECT_EQ(s.count(Split::val, true), 3);
  EXPECT_EQ(s.count(Split::test, true), 2);
  EXPECT_EQ(s.count(Split::train, false), 17);
  EXPECT_EQ(s.count(Split::val, false), 5);
  EXPECT_EQ(s.count(Split::test, false), 2);
  EXPECT_EQ(s.class_total(true), 16);
  EXPECT_GT(s.seconds, 0.0);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(int64_t(40), int64_t(40)));
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);

  // Manifest: header, one row per image in index order, the files it names and nothing else.
  const auto rows = read_csv(root / "manifest.csv");
  ASSERT_EQ(rows.size(), 41u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"path", "label", "split", "mask"}));
  std::set<std::string> expected = {"manifest.csv", "synth.json"};
  std::map<std::string, int> per_dir;
  const std::vector<SynthAssignment> assign = synth_assignments(o);
  for (int i = 0; i < 40; ++i) {
    const auto& r = rows[static_cast<size_t>(i) + 1];
    ASSERT_EQ(r.size(), 4u) << i;
    char name[32];
    std::snprintf(name, sizeof name, "%s_%06d.png", r[2].c_str(), i);
    EXPECT_EQ(r[0], r[2] + "/" + r[1] + "/" + name);
    EXPECT_EQ(r[1], synth_class_name(assign[static_cast<size_t>(i)].pneumonia));
    EXPECT_EQ(r[2], split_name(assign[static_cast<size_t>(i)].split));
    EXPECT_EQ(r[0], synth_image_path(assign[static_cast<size_t>(i)], i));
    expected.insert(r[0]);
    ++per_dir[r[2] + "/" + r[1]];
    const ImageInfo info = probe_image((root / r[0]).string());
    EXPECT_EQ(info.width, 32);
    EXPECT_EQ(info.height, 32);
    EXPECT_EQ(info.bit_depth, 8);
    if (r[1] == "PNEUMONIA") {
      EXPECT_EQ(r[3], std::string("masks/") + r[2] + "/" + name);
      expected.insert(r[3]);
      const Image mask = decode_image((root / r[3]).string());
      ASSERT_EQ(mask.channels, 1);
      ASSERT_EQ(mask.width, 32);
      int on = 0;
      for (float v : mask.data) {
        ASSERT_TRUE(v == 0.0f || v == 1.0f);
        on += v == 1.0f;
      }
      EXPECT_GT(on, 0) << r[3];
      EXPECT_EQ(mask.data, synth_xray(32, 5, i, true).mask.data) << r[3];
    } else {
      EXPECT_EQ(r[3], "");
    }
  }
  EXPECT_EQ(list_files(root), expected);  // no temp files, no stray files
  EXPECT_EQ(per_dir["train/PNEUMONIA"], 11);
  EXPECT_EQ(per_dir["val/NORMAL"], 5);

  const nlohmann::json j = nlohmann::json::parse(read_file(root / "synth.json"));
  EXPECT_EQ(j["engine_version"], CXR_VERSION_STRING);
  EXPECT_EQ(j["generator_version"], kSynthGeneratorVersion);
  EXPECT_EQ(j["options"]["size"], 32);
  EXPECT_EQ(j["options"]["count"], 40);
  EXPECT_EQ(j["options"]["seed"], 5);
  EXPECT_DOUBLE_EQ(j["options"]["pneumonia_fraction"].get<double>(), 0.4);
  EXPECT_DOUBLE_EQ(j["options"]["val_fraction"].get<double>(), 0.2);
  EXPECT_EQ(j["options"]["masks"], true);
  EXPECT_EQ(j["options"]["bit_depth"], 8);
  EXPECT_EQ(j["counts"]["train"]["PNEUMONIA"], 11);
  EXPECT_EQ(j["counts"]["test"]["NORMAL"], 2);
  EXPECT_EQ(j["total"], 40);
  EXPECT_EQ(j["masks"], 16);
}

TEST(SynthDataset, SixteenBitImagesAndNoMasks) {
  TempDir tmp;
  SynthOptions o;
  o.size = 24;
  o.count = 8;
  o.bit_depth = 16;
  o.masks = false;
  const SynthSummary s = write_synthetic_dataset(tmp.str(), o);
  EXPECT_EQ(s.masks, 0);
  EXPECT_FALSE(fs::exists(tmp.path() / "masks"));
  const auto rows = read_csv(tmp.path() / "manifest.csv");
  ASSERT_EQ(rows.size(), 9u);
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i][3], "");
    EXPECT_EQ(probe_image((tmp.path() / rows[i][0]).string()).bit_depth, 16);
  }
  // 16-bit keeps the generator's precision: decoded values within 1/65535 of the render.
  const Image img = decode_image((tmp.path() / rows[1][0]).string());
  const Image ref = synth_xray(24, o.seed, 0, rows[1][1] == "PNEUMONIA").image;
  for (size_t k = 0; k < img.data.size(); ++k) ASSERT_NEAR(img.data[k], ref.data[k], 1.0 / 65535.0);
}

TEST(SynthDataset, RefusesAnExistingDataSetUnlessOverwriting) {
  TempDir tmp;
  SynthOptions o;
  o.size = 24;
  o.count = 12;
  write_synthetic_dataset(tmp.str(), o);
  const std::set<std::string> before = list_files(tmp.path());
  expect_error([&] { write_synthetic_dataset(tmp.str(), o); }, {"already holds a data set", "manifest.csv", "overwrite"});
  EXPECT_EQ(list_files(tmp.path()), before);  // nothing touched

  // Overwrite with fewer images: the old data set's files are gone, a foreign file stays.
  { std::ofstream(tmp.path() / "notes.txt") << "mine"; }
  o.overwrite = true;
  o.count = 4;
  o.seed = 2;
  write_synthetic_dataset(tmp.str(), o);
  const auto rows = read_csv(tmp.path() / "manifest.csv");
  ASSERT_EQ(rows.size(), 5u);
  std::set<std::string> expected = {"manifest.csv", "synth.json", "notes.txt"};
  for (size_t i = 1; i < rows.size(); ++i) {
    expected.insert(rows[i][0]);
    if (!rows[i][3].empty()) expected.insert(rows[i][3]);
  }
  EXPECT_EQ(list_files(tmp.path()), expected);
}

TEST(SynthDataset, RefusesAFileAsOutputDirectory) {
  TempDir tmp;
  { std::ofstream(tmp.path() / "file") << "x"; }
  SynthOptions o;
  o.size = 16;
  o.count = 2;
  expect_error([&] { write_synthetic_dataset(tmp.str("file"), o); }, {"file", "not a directory"});
  expect_error([&] { write_synthetic_dataset("", o); }, {"output directory"});
}

TEST(SynthOptions, ValidationNamesTheFieldAndValue) {
  auto with = [](auto edit) {
    SynthOptions o;
    edit(o);
    return o;
  };
  expect_error([&] { with([](SynthOptions& o) { o.size = 8; }).validate(); }, {"size", "8"});
  expect_error([&] { with([](SynthOptions& o) { o.count = -5; }).validate(); }, {"count", "-5"});
  expect_error([&] { with([](SynthOptions& o) { o.count = 0; }).validate(); }, {"count", "0"});
  expect_error([&] { with([](SynthOptions& o) { o.pneumonia_fraction = 1.5; }).validate(); }, {"pneumonia_fraction", "1.5"});
  expect_error([&] { with([](SynthOptions& o) { o.pneumonia_fraction = std::nan(""); }).validate(); }, {"pneumonia_fraction"});
  expect_error([&] { with([](SynthOptions& o) { o.val_fraction = -0.1; }).validate(); }, {"val_fraction", "-0.1"});
  expect_error([&] { with([](SynthOptions& o) { o.test_fraction = 1.0; }).validate(); }, {"test_fraction", "1"});
  expect_error([&] { with([](SynthOptions& o) { o.val_fraction = 0.6; o.test_fraction = 0.4; }).validate(); },
               {"val_fraction + test_fraction", "below 1"});
  expect_error([&] { with([](SynthOptions& o) { o.bit_depth = 12; }).validate(); }, {"bit_depth", "12"});
  expect_error([&] { with([](SynthOptions& o) { o.threads = -1; }).validate(); }, {"threads", "-1"});
  SynthOptions ok;
  EXPECT_NO_THROW(ok.validate());
  // The writer validates before touching the disk.
  TempDir tmp;
  expect_error([&] { write_synthetic_dataset(tmp.str("x"), with([](SynthOptions& o) { o.count = 0; })); }, {"count"});
  EXPECT_FALSE(fs::exists(tmp.path() / "x"));
}

}  // namespace
}  // namespace cxr::data
