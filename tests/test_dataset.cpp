// Dataset: ImageFolder listing (classes, extensions, hidden entries, recursion, errors),
// CSV parsing (quotes, labels, path confinement), class statistics, stratified splits,
// subsets and seeded permutations. Files are written as placeholder bytes: nothing here
// decodes them.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "expect_error.h"
#include "temp_dir.h"

namespace cxr::data {
namespace {

namespace fs = std::filesystem;

using cxr_test::TempDir;

void touch(const fs::path& p, const std::string& content = "x") {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

std::string rel(const Dataset& ds, size_t i) {
  return fs::path(ds.samples[i].path).lexically_relative(ds.root).generic_string();
}

std::vector<std::string> rels(const Dataset& ds) {
  std::vector<std::string> out;
  for (size_t i = 0; i < ds.samples.size(); ++i) out.push_back(rel(ds, i));
  return out;
}

std::vector<int64_t> labels(const Dataset& ds) {
  std::vector<int64_t> out;
  for (const Sample& s : ds.samples) out.push_back(s.label);
  return out;
}

// ---------------------------------------------------------------- ImageFolder

TEST(ImageFolder, ClassesSortedFilesFilteredAndSorted) {
  TempDir d;
  const fs::path r = d.path();
  touch(r / "b_dog" / "2.png");
  touch(r / "b_dog" / "10.PNG");
  touch(r / "b_dog" / "a.Jpg");
  touch(r / "b_dog" / "notes.txt");        // wrong extension
  touch(r / "b_dog" / ".hidden.png");      // hidden file
  touch(r / "b_dog" / "png");              // no extension
  touch(r / "b_dog" / "sub" / "deep.png");  // nested: only with recursive
  touch(r / "a_cat" / "x.jpeg");
  touch(r / "a_cat" / "y.JPEG");
  touch(r / "C_upper" / "z.jpg");          // 'C' sorts before 'a' (byte order)
  touch(r / ".cache" / "junk.png");        // hidden class folder
  touch(r / "README.png");                 // a file at the root is not a class
  const Dataset ds = Dataset::image_folder(d.str());
  EXPECT_EQ(ds.root, d.str());
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"C_upper", "a_cat", "b_dog"}));
  EXPECT_EQ(rels(ds), (std::vector<std::string>{"C_upper/z.jpg", "a_cat/x.jpeg", "a_cat/y.JPEG", "b_dog/10.PNG",
                                                "b_dog/2.png", "b_dog/a.Jpg"}));
  EXPECT_EQ(labels(ds), (std::vector<int64_t>{0, 1, 1, 2, 2, 2}));
  EXPECT_EQ(ds.size(), 6);
  EXPECT_EQ(ds.num_classes(), 3);
  for (const Sample& s : ds.samples) EXPECT_TRUE(fs::is_regular_file(s.path)) << s.path;
}

TEST(ImageFolder, RecursiveSkipsHiddenFolders) {
  TempDir d;
  const fs::path r = d.path();
  touch(r / "a" / "top.png");
  touch(r / "a" / "sub" / "deep.png");
  touch(r / "a" / "sub" / "deeper" / "x.jpg");
  touch(r / "a" / ".thumbs" / "t.png");
  touch(r / "a" / "sub" / ".git" / "objects.png");
  touch(r / "b" / "only" / "nested.png");  // a class with images only in a subfolder
  expect_error([&] { Dataset::image_folder(d.str()); }, {"b", "no .png/.jpg/.jpeg image"});
  ImageFolderOptions opts;
  opts.recursive = true;
  const Dataset ds = Dataset::image_folder(d.str(), opts);
  EXPECT_EQ(rels(ds), (std::vector<std::string>{"a/sub/deep.png", "a/sub/deeper/x.jpg", "a/top.png", "b/only/nested.png"}));
  EXPECT_EQ(labels(ds), (std::vector<int64_t>{0, 0, 0, 1}));
}

TEST(ImageFolder, EmptyClassIsAnErrorUnlessAllowed) {
  TempDir d;
  touch(d.path() / "full" / "1.png");
  touch(d.path() / "full" / "2.png");
  touch(d.path() / "empty" / "readme.txt");
  touch(d.path() / "empty" / ".hidden.png");
  try {
    Dataset::image_folder(d.str());
    ADD_FAILURE() << "no exception";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find((d.path() / "empty").string()), std::string::npos) << e.what();
  }
  ImageFolderOptions opts;
  opts.allow_empty_classes = true;
  const Dataset ds = Dataset::image_folder(d.str(), opts);
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"empty", "full"}));
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{0, 2}));
}

TEST(ImageFolder, RootErrors) {
  TempDir d;
  try {
    Dataset::image_folder((d.path() / "missing").string());
    ADD_FAILURE() << "no exception";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  touch(d.path() / "file.png");
  EXPECT_THROW(Dataset::image_folder((d.path() / "file.png").string()), FileError);
  // Only files and hidden folders: no class folder.
  touch(d.path() / ".hidden" / "x.png");
  try {
    Dataset::image_folder(d.str());
    ADD_FAILURE() << "no exception";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("no class folders"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- CSV

fs::path write_csv(const fs::path& p, const std::string& text) {
  touch(p, text);
  return p;
}

TEST(CsvDataset, NamesQuotesAndDefaultRoot) {
  TempDir d;
  const fs::path csv = write_csv(d.path() / "labels.csv",
                                 "path,label\n"
                                 "img/a.png,PNEUMONIA\n"
                                 "\"img/with, comma.png\",NORMAL\n"
                                 "\"img/say \"\"hi\"\".png\",\"PNEUMONIA\"\n"
                                 "\n"
                                 "  img/spaced.jpg , NORMAL \n"
                                 "img/sub/../b.jpg,NORMAL\n");
  const Dataset ds = Dataset::from_csv(csv.string());
  EXPECT_EQ(ds.root, d.str());
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"NORMAL", "PNEUMONIA"}));
  EXPECT_EQ(rels(ds), (std::vector<std::string>{"img/a.png", "img/with, comma.png", "img/say \"hi\".png",
                                                "img/spaced.jpg", "img/b.jpg"}));
  EXPECT_EQ(labels(ds), (std::vector<int64_t>{1, 0, 1, 0, 0}));
}

TEST(CsvDataset, HeaderOrderExtraColumnsCrlfAndBom) {
  TempDir d;
  const fs::path csv = write_csv(d.path() / "l.csv",
                                 "\xEF\xBB\xBF" "id,Label,PATH\r\n"
                                 "1,b,x1.png\r\n"
                                 "2,a,\"multi\nline.png\"\r\n"
                                 "3,b,x3.png");  // no final line end
  const Dataset ds = Dataset::from_csv(csv.string());
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(rels(ds), (std::vector<std::string>{"x1.png", "multi\nline.png", "x3.png"}));
  EXPECT_EQ(labels(ds), (std::vector<int64_t>{1, 0, 1}));
  // The record after a quoted line break is reported on its physical line (line 5).
  write_csv(d.path() / "bad.csv", "path,label\nok.png,a\n\"two\nlines.png\",a\nbad.png,zzz\n");
  expect_error([&] { Dataset::from_csv((d.path() / "bad.csv").string(), "", {"a"}); }, {"bad.csv:5", "zzz"});
}

TEST(CsvDataset, IntegerLabels) {
  TempDir d;
  const fs::path csv = write_csv(d.path() / "l.csv", "path,label\na.png,2\nb.png,0\nc.png,2\n");
  const Dataset ds = Dataset::from_csv(csv.string());
  // Classes "0".."max", the label is the index (class 1 has no samples).
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(labels(ds), (std::vector<int64_t>{2, 0, 2}));
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{1, 0, 2}));

  // With class names: names and indices both work.
  const fs::path csv2 = write_csv(d.path() / "m.csv", "path,label\na.png,PNEUMONIA\nb.png,0\nc.png,1\n");
  const Dataset ds2 = Dataset::from_csv(csv2.string(), "", {"NORMAL", "PNEUMONIA"});
  EXPECT_EQ(ds2.class_names, (std::vector<std::string>{"NORMAL", "PNEUMONIA"}));
  EXPECT_EQ(labels(ds2), (std::vector<int64_t>{1, 0, 1}));
  // Out-of-range index and unknown name name the line.
  write_csv(d.path() / "n.csv", "path,label\na.png,0\nb.png,2\n");
  expect_error([&] { Dataset::from_csv((d.path() / "n.csv").string(), "", {"NORMAL", "PNEUMONIA"}); },
               {"n.csv:3", "unknown label '2'"});
  write_csv(d.path() / "o.csv", "path,label\na.png,COVID\n");
  expect_error([&] { Dataset::from_csv((d.path() / "o.csv").string(), "", {"NORMAL", "PNEUMONIA"}); },
               {"o.csv:2", "unknown label 'COVID'", "NORMAL, PNEUMONIA"});
  // Mixed names and numbers without class names: all are names.
  write_csv(d.path() / "p.csv", "path,label\na.png,7\nb.png,cat\n");
  EXPECT_EQ(Dataset::from_csv((d.path() / "p.csv").string()).class_names, (std::vector<std::string>{"7", "cat"}));
  expect_error([&] { Dataset::from_csv(csv.string(), "", {"a", "a"}); }, {"'a' given twice"});
}

TEST(CsvDataset, ExplicitRoot) {
  TempDir d;
  fs::create_directories(d.path() / "images");
  const fs::path csv = write_csv(d.path() / "meta" / "l.csv", "path,label\nx/a.png,a\n");
  const Dataset ds = Dataset::from_csv(csv.string(), (d.path() / "images").string());
  EXPECT_EQ(ds.root, (d.path() / "images").string());
  EXPECT_EQ(ds.samples[0].path, (d.path() / "images" / "x" / "a.png").string());
  EXPECT_THROW(Dataset::from_csv(csv.string(), (d.path() / "nope").string()), FileError);
}

TEST(CsvDataset, RejectsPathsOutsideTheRoot) {
  TempDir d;
  const fs::path root = d.path() / "root";
  fs::create_directories(root / "inside");
  touch(d.path() / "secret.png");
  auto check = [&](const std::string& line, std::initializer_list<const char*> parts) {
    write_csv(root / "l.csv", "path,label\nok.png,a\n" + line + "\n");
    expect_error([&] { Dataset::from_csv((root / "l.csv").string()); }, parts);
  };
  check("../secret.png,a", {"l.csv:3", "leaves the root"});
  check("inside/../../secret.png,a", {"l.csv:3", "leaves the root"});
  check("/etc/passwd,a", {"l.csv:3", "absolute path '/etc/passwd'"});
  check(".,a", {"l.csv:3", "leaves the root"});
  check(",a", {"l.csv:3", "empty path"});
  check("x.png,", {"l.csv:3", "empty label"});
  check("x.png", {"l.csv:3", "expected at least 2 fields"});
  // A symlink inside the root that points outside it: to a file and to a folder.
  fs::create_symlink(d.path() / "secret.png", root / "link.png");
  fs::create_directory_symlink(d.path(), root / "up");
  check("link.png,a", {"l.csv:3", "outside the root", "symbolic link"});
  check("up/secret.png,a", {"l.csv:3", "outside the root"});
  // A symlink that stays inside the root is fine.
  touch(root / "inside" / "real.png");
  fs::create_symlink(root / "inside" / "real.png", root / "alias.png");
  write_csv(root / "l.csv", "path,label\nalias.png,a\ninside/./real.png,b\n");
  const Dataset ds = Dataset::from_csv((root / "l.csv").string());
  EXPECT_EQ(rels(ds), (std::vector<std::string>{"alias.png", "inside/real.png"}));
}

TEST(CsvDataset, MalformedFiles) {
  TempDir d;
  EXPECT_THROW(Dataset::from_csv((d.path() / "missing.csv").string()), FileError);
  write_csv(d.path() / "empty.csv", "");
  expect_error([&] { Dataset::from_csv((d.path() / "empty.csv").string()); }, {"empty CSV"});
  write_csv(d.path() / "hdr.csv", "file,class\na.png,x\n");
  expect_error([&] { Dataset::from_csv((d.path() / "hdr.csv").string()); }, {"hdr.csv:1", "'path' and 'label'"});
  write_csv(d.path() / "q.csv", "path,label\n\"a.png,x\n");
  expect_error([&] { Dataset::from_csv((d.path() / "q.csv").string()); }, {"q.csv:2", "unterminated"});
  write_csv(d.path() / "q2.csv", "path,label\n\"a.png\"junk,x\n");
  expect_error([&] { Dataset::from_csv((d.path() / "q2.csv").string()); }, {"q2.csv:2", "after a closing quote"});
  // Header only: an empty dataset with no classes.
  write_csv(d.path() / "h.csv", "path,label\n");
  const Dataset ds = Dataset::from_csv((d.path() / "h.csv").string());
  EXPECT_EQ(ds.size(), 0);
  EXPECT_TRUE(ds.class_names.empty());
}

// ---------------------------------------------------------------- statistics and splits

Dataset synthetic(const std::vector<int64_t>& counts) {
  Dataset ds;
  ds.root = "/data";
  for (size_t c = 0; c < counts.size(); ++c) ds.class_names.push_back("c" + std::to_string(c));
  // Interleave classes so that a split keeping dataset order is visible.
  std::vector<int64_t> left = counts;
  int64_t id = 0;
  for (bool any = true; any;) {
    any = false;
    for (size_t c = 0; c < counts.size(); ++c)
      if (left[c] > 0) {
        --left[c];
        any = true;
        ds.samples.push_back({"/data/" + std::to_string(id++) + ".png", static_cast<int64_t>(c)});
      }
  }
  return ds;
}

TEST(DatasetStats, CountsAndBalancedWeights) {
  const Dataset ds = synthetic({6, 2, 0, 4});
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{6, 2, 0, 4}));
  const std::vector<double> w = ds.balanced_class_weights();
  ASSERT_EQ(w.size(), 4u);
  // N = 12, K = 4: w_c = 12 / (4 n_c)
  EXPECT_DOUBLE_EQ(w[0], 0.5);
  EXPECT_DOUBLE_EQ(w[1], 1.5);
  EXPECT_EQ(w[2], 0.0);
  EXPECT_DOUBLE_EQ(w[3], 0.75);
  // Balanced two-class set: every weight 1.
  EXPECT_EQ(synthetic({5, 5}).balanced_class_weights(), (std::vector<double>{1.0, 1.0}));
  EXPECT_TRUE(Dataset{}.balanced_class_weights().empty());
}

TEST(DatasetSplit, ExactPerClassCountsDisjointAndDeterministic) {
  const Dataset ds = synthetic({10, 7, 3, 1, 5});
  // round(n_c * 0.3): 3, 2 (2.1), 1 (0.9), 0 (0.3), 2 (1.5 -> 2, half away from zero)
  const auto [train, val] = ds.stratified_split(0.3, 42);
  EXPECT_EQ(val.class_counts(), (std::vector<int64_t>{3, 2, 1, 0, 2}));
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>{7, 5, 2, 1, 3}));
  EXPECT_EQ(train.class_names, ds.class_names);
  EXPECT_EQ(val.root, ds.root);
  std::set<std::string> all;
  for (const Sample& s : train.samples) EXPECT_TRUE(all.insert(s.path).second);
  for (const Sample& s : val.samples) EXPECT_TRUE(all.insert(s.path).second) << "in both halves: " << s.path;
  EXPECT_EQ(all.size(), ds.samples.size());
  // Each half keeps dataset order (paths are numbered in order).
  auto in_order = [](const Dataset& d) {
    for (size_t i = 1; i < d.samples.size(); ++i)
      if (std::stoi(fs::path(d.samples[i - 1].path).stem().string()) >= std::stoi(fs::path(d.samples[i].path).stem().string()))
        return false;
    return true;
  };
  EXPECT_TRUE(in_order(train));
  EXPECT_TRUE(in_order(val));
  // Same seed, same split; another seed, another split (for these sizes, surely).
  const auto [train2, val2] = ds.stratified_split(0.3, 42);
  ASSERT_EQ(val2.samples.size(), val.samples.size());
  for (size_t i = 0; i < val.samples.size(); ++i) EXPECT_EQ(val2.samples[i].path, val.samples[i].path);
  bool differs = false;
  for (uint64_t seed = 43; seed < 48 && !differs; ++seed) {
    const auto [t3, v3] = ds.stratified_split(0.3, seed);
    EXPECT_EQ(v3.class_counts(), val.class_counts());
    for (size_t i = 0; i < v3.samples.size(); ++i) differs |= v3.samples[i].path != val.samples[i].path;
  }
  EXPECT_TRUE(differs);
}

TEST(DatasetSplit, EdgeFractions) {
  const Dataset ds = synthetic({4, 3});
  auto [t0, v0] = ds.stratified_split(0.0, 1);
  EXPECT_EQ(v0.size(), 0);
  EXPECT_EQ(t0.size(), 7);
  auto [t1, v1] = ds.stratified_split(1.0, 1);
  EXPECT_EQ(v1.size(), 7);
  EXPECT_EQ(t1.size(), 0);
  expect_error([&] { ds.stratified_split(1.5, 1); }, {"val_fraction", "1.5"});
  expect_error([&] { ds.stratified_split(-0.1, 1); }, {"val_fraction"});
}

TEST(DatasetSplit, EveryMemberCanLandInVal) {
  // Over many seeds, each sample of a class lands in val about equally often.
  const Dataset ds = synthetic({6});
  std::vector<int> hits(6, 0);
  for (uint64_t seed = 0; seed < 600; ++seed) {
    const auto [t, v] = ds.stratified_split(0.5, seed);
    ASSERT_EQ(v.size(), 3);
    for (const Sample& s : v.samples) ++hits[std::stoi(fs::path(s.path).stem().string())];
  }
  for (int h : hits) EXPECT_NEAR(h, 300, 60);
}

TEST(DatasetSubset, OrderRepeatsAndBounds) {
  const Dataset ds = synthetic({2, 2});
  const Dataset s = ds.subset({3, 0, 3});
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s.samples[0].path, ds.samples[3].path);
  EXPECT_EQ(s.samples[1].path, ds.samples[0].path);
  EXPECT_EQ(s.samples[2].label, ds.samples[3].label);
  EXPECT_EQ(s.class_names, ds.class_names);
  expect_error([&] { ds.subset({0, 4}); }, {"subset", "index 4"});
  expect_error([&] { ds.subset({-1}); }, {"subset", "index -1"});
}

TEST(SeededPermutation, PermutationDeterministicAndUniform) {
  for (int64_t n : {0, 1, 2, 7, 100}) {
    std::vector<int64_t> p = seeded_permutation(n, 5, 3);
    EXPECT_EQ(p, seeded_permutation(n, 5, 3));
    std::sort(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(p[i], i);
  }
  EXPECT_NE(seeded_permutation(100, 5, 3), seeded_permutation(100, 5, 4));
  EXPECT_NE(seeded_permutation(100, 5, 3), seeded_permutation(100, 6, 3));
  // All 6 permutations of 3 items, about equally often.
  std::map<std::vector<int64_t>, int> freq;
  for (uint64_t s = 0; s < 6000; ++s) ++freq[seeded_permutation(3, 11, s)];
  EXPECT_EQ(freq.size(), 6u);
  for (const auto& [perm, count] : freq) EXPECT_NEAR(count, 1000, 150);
  expect_error([] { seeded_permutation(-1, 0, 0); }, {"n must be >= 0"});
}

}  // namespace
}  // namespace cxr::data
