// Labelled image datasets: a folder of class folders (ImageFolder) or a CSV of
// (path, label) rows, with class statistics, class weights and seeded stratified splits.
//
// A Dataset is a plain value: the root directory, the class names (index = label) and
// the samples, each a file path (root joined with the file's relative path) and a label.
// Nothing is decoded here; the Loader (data/loader.h) reads the files.
//
// Determinism: directory listings are sorted (byte order of the relative paths), and every
// random choice (stratified_split, seeded_permutation) comes from the counter-based Philox
// generator, so the same inputs and seed give the same datasets on every machine.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace cxr::data {

struct Sample {
  std::string path;   // root / relative path, lexically normalised
  int64_t label = 0;  // index into Dataset::class_names
};

struct ImageFolderOptions {
  // Also take images in subfolders of a class folder (hidden subfolders are skipped).
  bool recursive = false;
  // Keep a class folder with no images as a class with zero samples instead of failing.
  bool allow_empty_classes = false;
};

class Dataset {
 public:
  std::string root;
  std::vector<std::string> class_names;  // label i is class_names[i]
  std::vector<Sample> samples;

  // root/<class>/<image>: class names are the names of root's subfolders, sorted; images
  // are the files ending in .png, .jpg or .jpeg (any case), sorted by relative path.
  // Hidden entries (a leading '.') are skipped, folders and files alike. Throws FileError
  // when root is missing or unreadable, ValueError when it has no class folders or (unless
  // allow_empty_classes) a class folder holds no image, naming the folder.
  static Dataset image_folder(const std::string& root, const ImageFolderOptions& opts = {});

  // A CSV file whose header names the columns `path` and `label` (in any order; other
  // columns are ignored; fields may be double-quoted, with "" for a quote inside). Paths
  // are relative to `root` (default: the CSV's directory); absolute paths and paths that
  // leave the root, lexically (`../x`) or through symlinks, are rejected with a ValueError
  // naming the line. Labels:
  //   - with `class_names` given, a label is a class name or an integer index into them;
  //   - without, when every label is a non-negative integer the classes are "0".."max"
  //     and the label is the index; otherwise the classes are the sorted distinct labels.
  // An unknown label is a ValueError naming the line. A missing CSV is a FileError.
  // Files are not opened here: a missing image is reported by the loader.
  static Dataset from_csv(const std::string& csv_path, const std::string& root = "",
                          const std::vector<std::string>& class_names = {});

  int64_t size() const { return static_cast<int64_t>(samples.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }

  // Samples per class (size num_classes()).
  std::vector<int64_t> class_counts() const;
  // scikit-learn's 'balanced' weights: w_c = N / (K * n_c) for N samples, K classes and
  // n_c samples of class c, so that sum_c n_c * w_c = N. A class with no samples gets
  // weight 0 (it contributes nothing to a weighted loss either way).
  std::vector<double> balanced_class_weights() const;

  // (train, val): within each class, the class's samples are shuffled by a permutation
  // seeded from (seed, class) and the first round(n_c * val_fraction) go to val (rounding
  // half away from zero), the rest to train. Both halves keep dataset order, the root and
  // the class names; together they hold every sample exactly once. 0 <= val_fraction <= 1.
  std::pair<Dataset, Dataset> stratified_split(double val_fraction, uint64_t seed) const;

  // The samples at `indices` (in that order; repeats allowed), same root and classes.
  // An index outside [0, size()) is a ValueError.
  Dataset subset(const std::vector<int64_t>& indices) const;
};

// A uniformly random permutation of [0, n) (Fisher-Yates with Philox draws), a pure
// function of (n, seed, stream). The loader uses stream = epoch.
// True for names ending in .png, .jpg or .jpeg (any case).
bool is_image_name(const std::filesystem::path& p);
// Relative paths (generic form) of the image files in `dir`, sorted; hidden files (and,
// with `recursive`, hidden folders) are skipped. FileError when `dir` cannot be listed.
std::vector<std::string> list_images(const std::string& dir, bool recursive);

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace cxr::data
