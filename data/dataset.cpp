// Datasets: ImageFolder listing, CSV parsing with path confinement, class statistics,
// seeded permutations and stratified splits (see data/dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include "data/csv.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace cxr::data {

namespace fs = std::filesystem;
using detail::cat;

namespace {

// Domains of derived seeds, so a permutation and a split drawn from the same user seed
// use unrelated Philox streams.
constexpr uint64_t kPermutationDomain = 0x7065726d75746531ull;  // "permute1"
constexpr uint64_t kSplitDomain = 0x73706c6974736571ull;        // "splitseq"

uint64_t derive_seed(uint64_t seed, uint64_t domain, uint64_t value) {
  const PhiloxBlock b = philox4x32(seed, value, domain);
  return (static_cast<uint64_t>(b.v[0]) << 32) | b.v[1];
}

std::vector<int64_t> permutation_from(int64_t n, Generator& gen) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(gen.next_below(static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool is_dir(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_directory(ec);  // follows symlinks
}
bool is_file(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_regular_file(ec);
}


std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Non-negative decimal integer (digits only), or -1.
int64_t parse_index(const std::string& s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) return -1;
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return -1;
  return v;
}

// True when p is base or lies under it (component-wise, both absolute and normalised).
bool within(const fs::path& p, const fs::path& base) {
  auto pi = p.begin();
  for (auto bi = base.begin(); bi != base.end(); ++bi) {
    if (bi->empty()) continue;  // a trailing separator
    if (pi == p.end() || *pi != *bi) return false;
    ++pi;
  }
  return true;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError(cat("from_csv: cannot open '", path, "'"));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw FileError(cat("from_csv: error reading '", path, "'"));
  return ss.str();
}

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

}  // namespace

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  CXR_CHECK(n >= 0, "seeded_permutation: n must be >= 0, got ", n);
  Generator gen(derive_seed(seed, kPermutationDomain, stream));
  return permutation_from(n, gen);
}

bool is_image_name(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> list_images(const std::string& dir_name, bool recursive) {
  const fs::path dir(dir_name);
  std::vector<std::string> out;
  std::error_code ec;
  if (recursive) {
    fs::recursive_directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const fs::directory_entry& e = *it;
      if (hidden(e.path())) {
        if (is_dir(e)) it.disable_recursion_pending();
        continue;
      }
      if (is_file(e) && is_image_name(e.path())) out.push_back(e.path().lexically_relative(dir).generic_string());
    }
  } else {
    fs::directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const fs::directory_entry& e = *it;
      if (!hidden(e.path()) && is_file(e) && is_image_name(e.path())) out.push_back(e.path().filename().string());
    }
  }
  if (ec) throw FileError(cat("cannot list '", dir.string(), "': ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

Dataset Dataset::image_folder(const std::string& root, const ImageFolderOptions& opts) {
  std::error_code ec;
  const fs::path root_path(root);
  if (!fs::exists(root_path, ec)) throw FileError(cat("image_folder: root '", root, "' does not exist"));
  if (!fs::is_directory(root_path, ec)) throw FileError(cat("image_folder: root '", root, "' is not a directory"));

  std::vector<std::string> classes;
  fs::directory_iterator it(root_path, ec), end;
  for (; !ec && it != end; it.increment(ec))
    if (!hidden(it->path()) && is_dir(*it)) classes.push_back(it->path().filename().string());
  if (ec) throw FileError(cat("image_folder: cannot list '", root, "': ", ec.message()));
  if (classes.empty())
    throw ValueError(cat("image_folder: no class folders in '", root,
                         "' (expected <root>/<class name>/<image>.png|jpg|jpeg)"));
  std::sort(classes.begin(), classes.end());

  Dataset ds;
  ds.root = root;
  ds.class_names = classes;
  for (size_t c = 0; c < classes.size(); ++c) {
    const fs::path dir = root_path / classes[c];
    const std::vector<std::string> files = list_images(dir.string(), opts.recursive);
    if (files.empty() && !opts.allow_empty_classes)
      throw ValueError(cat("image_folder: class folder '", dir.string(),
                           "' holds no .png/.jpg/.jpeg image (allow_empty_classes keeps it as an empty class)"));
    for (const std::string& f : files)
      ds.samples.push_back({(dir / fs::path(f)).lexically_normal().string(), static_cast<int64_t>(c)});
  }
  return ds;
}

Dataset Dataset::from_csv(const std::string& csv_path, const std::string& root,
                          const std::vector<std::string>& class_names) {
  const std::string text = read_text(csv_path);
  std::string root_str = root;
  if (root_str.empty()) {
    root_str = fs::path(csv_path).parent_path().string();
    if (root_str.empty()) root_str = ".";
  }
  std::error_code ec;
  if (!fs::is_directory(root_str, ec))
    throw FileError(cat("from_csv: root '", root_str, "' is not an existing directory"));
  const fs::path root_canon = fs::canonical(root_str, ec);
  if (ec) throw FileError(cat("from_csv: cannot resolve root '", root_str, "': ", ec.message()));

  const std::vector<CsvRecord> records = parse_csv(text, csv_path);
  if (records.empty()) throw ValueError(cat(csv_path, ": empty CSV (expected a header line 'path,label')"));
  int path_col = -1, label_col = -1;
  for (size_t i = 0; i < records[0].fields.size(); ++i) {
    const std::string h = lower(records[0].fields[i]);
    if (h == "path" && path_col < 0) path_col = static_cast<int>(i);
    if (h == "label" && label_col < 0) label_col = static_cast<int>(i);
  }
  if (path_col < 0 || label_col < 0)
    throw ValueError(cat(csv_path, ":", records[0].line, ": the header must name the columns 'path' and 'label', got '",
                         join_names(records[0].fields), "'"));
  const size_t need = static_cast<size_t>(std::max(path_col, label_col)) + 1;

  Dataset ds;
  ds.root = root_str;
  std::vector<std::string> labels;  // raw label per row
  std::vector<int64_t> lines;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    const std::string where = cat(csv_path, ":", rec.line, ": ");
    if (rec.fields.size() < need)
      throw ValueError(cat(where, "expected at least ", need, " fields, got ", rec.fields.size()));
    const std::string& p = rec.fields[path_col];
    if (p.empty()) throw ValueError(cat(where, "empty path"));
    const fs::path rel(p);
    if (rel.is_absolute() || rel.has_root_directory() || rel.has_root_name())
      throw ValueError(cat(where, "absolute path '", p, "' (paths must be relative to the root '", root_str, "')"));
    const fs::path norm = rel.lexically_normal();
    if (norm.empty() || norm == "." || *norm.begin() == "..")
      throw ValueError(cat(where, "path '", p, "' leaves the root '", root_str, "'"));
    const fs::path resolved = fs::weakly_canonical(root_canon / norm, ec);
    if (ec) throw FileError(cat(where, "cannot resolve path '", p, "': ", ec.message()));
    if (!within(resolved, root_canon) || resolved == root_canon)
      throw ValueError(cat(where, "path '", p, "' resolves to '", resolved.string(), "', outside the root '",
                           root_canon.string(), "' (through a symbolic link)"));
    const std::string& label = rec.fields[label_col];
    if (label.empty()) throw ValueError(cat(where, "empty label"));
    ds.samples.push_back({(fs::path(root_str) / norm).lexically_normal().string(), 0});
    labels.push_back(label);
    lines.push_back(rec.line);
  }

  constexpr int64_t kMaxIntegerClasses = int64_t(1) << 20;
  if (!class_names.empty()) {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < class_names.size(); ++i)
      if (!index.emplace(class_names[i], static_cast<int64_t>(i)).second)
        throw ValueError(cat("from_csv: class name '", class_names[i], "' given twice"));
    ds.class_names = class_names;
    for (size_t i = 0; i < labels.size(); ++i) {
      auto f = index.find(labels[i]);
      int64_t v = f != index.end() ? f->second : parse_index(labels[i]);
      if (v < 0 || v >= static_cast<int64_t>(class_names.size()))
        throw ValueError(cat(csv_path, ":", lines[i], ": unknown label '", labels[i], "' (classes: ",
                             join_names(class_names), "; or an index below ", class_names.size(), ")"));
      ds.samples[i].label = v;
    }
    return ds;
  }
  const bool all_int = !labels.empty() && std::all_of(labels.begin(), labels.end(),
                                                      [](const std::string& l) { return parse_index(l) >= 0; });
  if (all_int) {
    int64_t max_label = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      const int64_t v = parse_index(labels[i]);
      if (v >= kMaxIntegerClasses)
        throw ValueError(cat(csv_path, ":", lines[i], ": label ", v, " is too large (integer labels are class indices below ",
                             kMaxIntegerClasses, ")"));
      ds.samples[i].label = v;
      max_label = std::max(max_label, v);
    }
    for (int64_t c = 0; c <= max_label; ++c) ds.class_names.push_back(std::to_string(c));
    return ds;
  }
  ds.class_names = labels;
  std::sort(ds.class_names.begin(), ds.class_names.end());
  ds.class_names.erase(std::unique(ds.class_names.begin(), ds.class_names.end()), ds.class_names.end());
  for (size_t i = 0; i < labels.size(); ++i)
    ds.samples[i].label = std::lower_bound(ds.class_names.begin(), ds.class_names.end(), labels[i]) - ds.class_names.begin();
  return ds;
}

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(class_names.size(), 0);
  for (const Sample& s : samples) {
    CXR_CHECK(s.label >= 0 && s.label < num_classes(), "class_counts: sample '", s.path, "' has label ", s.label,
              " outside [0, ", num_classes(), ")");
    ++counts[static_cast<size_t>(s.label)];
  }
  return counts;
}

std::vector<double> Dataset::balanced_class_weights() const {
  const std::vector<int64_t> counts = class_counts();
  std::vector<double> w(counts.size(), 0.0);
  const double n = static_cast<double>(size()), k = static_cast<double>(counts.size());
  for (size_t c = 0; c < counts.size(); ++c)
    if (counts[c] > 0) w[c] = n / (k * static_cast<double>(counts[c]));
  return w;
}

std::pair<Dataset, Dataset> Dataset::stratified_split(double val_fraction, uint64_t seed) const {
  CXR_CHECK(val_fraction >= 0.0 && val_fraction <= 1.0, "stratified_split: val_fraction must be in [0, 1], got ",
            val_fraction);
  const std::vector<int64_t> counts = class_counts();
  std::vector<std::vector<int64_t>> by_class(counts.size());
  for (int64_t i = 0; i < size(); ++i) by_class[static_cast<size_t>(samples[i].label)].push_back(i);
  std::vector<uint8_t> to_val(samples.size(), 0);
  for (size_t c = 0; c < by_class.size(); ++c) {
    const auto& members = by_class[c];
    const auto n = static_cast<int64_t>(members.size());
    const auto n_val = static_cast<int64_t>(std::llround(static_cast<double>(n) * val_fraction));
    Generator gen(derive_seed(seed, kSplitDomain, c));
    const std::vector<int64_t> perm = permutation_from(n, gen);
    for (int64_t k = 0; k < n_val; ++k) to_val[static_cast<size_t>(members[perm[k]])] = 1;
  }
  std::vector<int64_t> train_idx, val_idx;
  for (int64_t i = 0; i < size(); ++i) (to_val[i] ? val_idx : train_idx).push_back(i);
  return {subset(train_idx), subset(val_idx)};
}

Dataset Dataset::subset(const std::vector<int64_t>& indices) const {
  Dataset out;
  out.root = root;
  out.class_names = class_names;
  out.samples.reserve(indices.size());
  for (int64_t i : indices) {
    CXR_CHECK(i >= 0 && i < size(), "subset: index ", i, " outside [0, ", size(), ")");
    out.samples.push_back(samples[static_cast<size_t>(i)]);
  }
  return out;
}

}  // namespace cxr::data
