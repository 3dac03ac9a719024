// `cxr gradcam`: Grad-CAM heat maps (nn/gradcam.h) for images (files, directories searched
// recursively, or a --list file). Per image it writes OUT/<stem>_gradcam.png (the image in
// grayscale at its original size under a colour-mapped heat map) and the raw map at the
// model's input resolution (OUT/<stem>_gradcam_raw.png, 16-bit, or .npy float32); inputs
// sharing a stem get a short hash of their path in the name. OUT/gradcam.csv has one row
// per image, OUT/summary.json the totals. With --masks DIR each image's lesion mask (same
// file name under DIR) decides whether the map's peak is a hit. Preprocessing is that of
// `cxr infer`. An unreadable image gets an error row and the run goes on (exit code 1).
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cxr/cxr.hpp"
#include "data/dataset.h"
#include "data/image.h"
#include "data/transforms.h"
#include "nn/gradcam.h"
#include "nn/serialize.h"
#include "runtime/cuda.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/thread_pool.h"
#include "tools/cxr/cli_util.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct GradcamArgs {
  std::string model;
  std::vector<std::string> inputs;
  std::string list, out, target, layer, masks;
  std::string raw = "png16";
  std::string device = "auto";
  double alpha = 0.4;
  int batch = 8;
  int threads = 0;
  bool json = false;
};


std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t b = 0;
  while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  return s.substr(b);
}

std::vector<std::string> collect_inputs(const GradcamArgs& a) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& in : a.inputs) {
    if (fs::is_directory(in, ec)) {
      for (const std::string& rel : data::list_images(in, true)) paths.push_back((fs::path(in) / rel).string());
    } else {
      paths.push_back(in);  // a missing file becomes an error row
    }
  }
  if (!a.list.empty()) {
    std::ifstream lf(a.list);
    if (!lf) throw FileError(a.list + ": cannot open list file");
    for (std::string line; std::getline(lf, line);)
      if (!trim(line).empty()) paths.push_back(trim(line));
  }
  return paths;
}

// Output name stems: the file's stem, plus 8 hex digits of a hash of its path when
// another input has the same stem (and a counter should that still clash, as for a path
// given twice), so no output overwrites another.
std::vector<std::string> output_stems(const std::vector<std::string>& paths) {
  std::map<std::string, int> count, used;
  for (const auto& p : paths) ++count[fs::path(p).stem().string()];
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::string stem = fs::path(p).stem().string();
    if (stem.empty()) stem = "image";
    if (count[fs::path(p).stem().string()] > 1) {
      uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
      for (unsigned char c : fs::path(p).lexically_normal().string()) h = (h ^ c) * 0x100000001b3ull;
      char buf[16];
      std::snprintf(buf, sizeof buf, "_%08x", static_cast<unsigned>(h >> 32));
      stem += buf;
    }
    if (const int n = used[stem]++; n > 0) stem += "_" + std::to_string(n + 1);
    out.push_back(stem);
  }
  return out;
}

// Lesion masks under a folder, found by an image's file name (or, failing that, its stem).
class MaskIndex {
 public:
  explicit MaskIndex(const std::string& dir) : dir_(dir) {
    for (const std::string& rel : data::list_images(dir, true)) {
      const fs::path p(rel);
      by_name_[p.filename().string()].push_back(rel);
      by_stem_[p.stem().string()].push_back(rel);
    }
  }
  // The mask for `image`, "" when there is none; throws when several fit equally well.
  std::string find(const std::string& image) const {
    const fs::path ip(image);
    auto it = by_name_.find(ip.filename().string());
    if (it == by_name_.end()) {
      it = by_stem_.find(ip.stem().string());
      if (it == by_stem_.end()) return "";
    }
    const auto& cands = it->second;
    if (cands.size() == 1) return (fs::path(dir_) / cands[0]).string();
    // Several: prefer the one whose folders also appear in the image's path (masks/test
    // for .../test/PNEUMONIA/x.png).
    std::vector<std::string> parts;
    for (const auto& c : ip.parent_path()) parts.push_back(c.string());
    int best = -1, best_score = -1;
    bool tie = false;
    for (size_t i = 0; i < cands.size(); ++i) {
      int score = 0;
      for (const auto& c : fs::path(cands[i]).parent_path())
        if (std::find(parts.begin(), parts.end(), c.string()) != parts.end()) ++score;
      if (score > best_score) best = static_cast<int>(i), best_score = score, tie = false;
      else if (score == best_score) tie = true;
    }
    if (tie) throw FileError("several masks under " + dir_ + " match " + image + " equally well");
    return (fs::path(dir_) / cands[best]).string();
  }

 private:
  std::string dir_;
  std::map<std::string, std::vector<std::string>> by_name_, by_stem_;
};

// The grayscale image (1 channel) with the heat map (same size) blended over it.
data::Image overlay(const data::Image& gray, const data::Image& heat, float alpha) {
  data::Image out(3, gray.height, gray.width);
  const size_t n = gray.plane_size();
  for (size_t i = 0; i < n; ++i) {
    float c[3];
    jet_colour(std::clamp(heat.data[i], 0.0f, 1.0f), c);
    const float g = std::clamp(gray.data[i], 0.0f, 1.0f);
    for (int ch = 0; ch < 3; ++ch) out.data[ch * n + i] = (1.0f - alpha) * g + alpha * c[ch];
  }
  return out;
}

// NumPy .npy format version 1.0 of a float32 (h, w) array, little-endian, C order.
std::string npy_bytes(const std::vector<float>& v, int64_t h, int64_t w) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(h) + ", " +
                       std::to_string(w) + "), }";
  const size_t unpadded = 10 + header.size() + 1;  // magic, version, length, header, '\n'
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.reserve(out.size() + v.size() * 4);
  for (float f : v) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    for (int b = 0; b < 4; ++b) out += static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return out;
}

// Pixel index in a dimension of size `to` covering pixel p of a dimension of size `from`.
int64_t rescale(int64_t p, int64_t from, int64_t to) {
  return std::min<int64_t>(to - 1, static_cast<int64_t>((static_cast<double>(p) + 0.5) * to / from));
}

struct Row {
  bool ok = false;
  std::string error;
  data::Image gray;  // the image in grayscale at its original size
  int64_t target = -1;
  double prob = 0;
  int64_t peak_x = 0, peak_y = 0;  // in the original image's pixels
  int hit = -1;                    // -1: no mask or an empty one
  std::string overlay;
};

int64_t parse_target(const std::string& s, const std::vector<std::string>& names) {
  if (s.empty()) return -1;
  const auto it = std::find(names.begin(), names.end(), s);
  if (it != names.end()) return it - names.begin();
  if (s.find_first_not_of("0123456789") == std::string::npos && s.size() < 10) {
    const int64_t i = std::stoll(s);
    if (i < static_cast<int64_t>(names.size())) return i;
  }
  std::string all;
  for (size_t i = 0; i < names.size(); ++i) all += (i ? ", " : "") + names[i] + " (" + std::to_string(i) + ")";
  throw UsageError("--class '" + s + "' is neither a class name nor an index of this model's classes: " + all);
}

std::string resolve_layer(nn::Model& model, const std::string& layer) {
  if (layer.empty()) return nn::default_gradcam_layer(model);
  const std::vector<std::string> layers = nn::gradcam_layers(model);
  if (std::find(layers.begin(), layers.end(), layer) != layers.end()) return layer;
  std::string all;
  for (size_t i = 0; i < layers.size() && i < 40; ++i) all += (i ? ", " : "") + layers[i];
  if (layers.size() > 40) all += ", ...";
  throw UsageError("--layer '" + layer + "' is not a layer of this model with a 4-D output; choose one of: " + all);
}

void check_args(const GradcamArgs& a) {
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  if (!(a.alpha >= 0 && a.alpha <= 1)) throw UsageError("--alpha must be in [0, 1]");
  if (a.raw != "png16" && a.raw != "npy" && a.raw != "none")
    throw UsageError("--raw must be png16, npy or none, got '" + a.raw + "'");
  if (a.device != "auto" && a.device != "cpu" && a.device != "cuda")
    throw UsageError("--device must be auto, cpu or cuda, got '" + a.device + "'");
  if (a.inputs.empty() && a.list.empty()) throw UsageError("no inputs: give image files, directories or --list FILE");
  std::error_code ec;
  if (!a.masks.empty() && !fs::is_directory(a.masks, ec)) throw UsageError("--masks " + a.masks + ": not a directory");
}

// Everything fixed for the run: the model on its device, preprocessing, where outputs go.
struct Job {
  const GradcamArgs& args;
  nn::LoadedModel lm;
  std::vector<std::string> names;  // class names
  int64_t target = -1;             // -1: the predicted class
  std::string layer;
  Device device = Device::cpu();
  data::Pipeline pipe;
  data::DecodeOptions model_opts, gray_opts;
  std::unique_ptr<MaskIndex> masks;
  fs::path out_dir;

  explicit Job(const GradcamArgs& a) : args(a), out_dir(a.out) {
    std::error_code ec;
    if (!fs::exists(a.model, ec)) throw FileError(a.model + ": no such model file");
    try {
      lm = nn::load_model(a.model);
    } catch (const Error& e) {
      throw FileError(a.model + ": not a valid model file: " + e.what());
    }
    nn::Model& model = *lm.model;
    names = lm.info.class_names;
    if (static_cast<int64_t>(names.size()) != model.num_classes()) {
      names.clear();
      for (int64_t i = 0; i < model.num_classes(); ++i) names.push_back("class_" + std::to_string(i));
    }
    target = parse_target(a.target, names);
    if (a.device == "cuda" || (a.device == "auto" && cuda::available())) {
      if (!cuda::available()) throw Error("--device cuda: no CUDA device is available");
      device = Device::cuda(0);
    }
    model.to(device);
    model.eval();
    layer = resolve_layer(model, a.layer);
    if (!a.masks.empty()) masks = std::make_unique<MaskIndex>(a.masks);
    // Preprocessing exactly as `cxr infer`.
    pipe.channels = static_cast<int>(model.in_channels());
    pipe.height = static_cast<int>(model.input_height());
    pipe.width = static_cast<int>(model.input_width());
    pipe.mean.assign(lm.info.mean.begin(), lm.info.mean.end());
    pipe.stddev.assign(lm.info.stddev.begin(), lm.info.stddev.end());
    pipe.validate();
    model_opts.channels = pipe.channels;
    model_opts.min_width = pipe.width;
    model_opts.min_height = pipe.height;
    gray_opts.channels = 1;  // overlays and masks: one channel, full size
    fs::create_directories(out_dir, ec);
    if (!fs::is_directory(out_dir, ec)) throw FileError(a.out + ": cannot create the output directory");
  }
  int64_t sample_size() const { return int64_t(pipe.channels) * pipe.height * pipe.width; }

  // Decodes one file into the model's input (`x`) and its grayscale original (row.gray).
  void decode(const std::string& p, float* x, Row& row) const {
    if (!fs::exists(p)) throw FileError(p + ": no such file");
    const data::Image img = data::decode_image(p, model_opts);
    data::run_pipeline(img, pipe, false, data::SampleRng{}, x);
    // A JPEG may have been decoded at a reduced scale; the overlay uses the full size.
    const data::ImageInfo info = data::probe_image(p);
    const bool full = (img.width == info.width && img.height == info.height) ||
                      (img.width == info.height && img.height == info.width);
    row.gray = full ? (img.channels == 1 ? img : data::convert_channels(img, 1)) : data::decode_image(p, gray_opts);
  }

  // Writes the overlay and the raw map, and scores the peak against the image's mask.
  void finish(const std::string& p, const std::string& stem, const nn::GradCamResult& c, Row& r) const {
    r.target = c.target;
    r.prob = c.probabilities[c.target];
    const int h0 = r.gray.height, w0 = r.gray.width;
    r.peak_x = rescale(c.peak_x, c.width, w0);
    r.peak_y = rescale(c.peak_y, c.height, h0);
    data::Image small(1, static_cast<int>(c.map_height), static_cast<int>(c.map_width));
    small.data = c.map;
    r.overlay = stem + "_gradcam.png";
    data::write_png((out_dir / r.overlay).string(),
                    overlay(r.gray, data::resize(small, h0, w0), static_cast<float>(args.alpha)));
    r.gray = data::Image();
    if (args.raw == "png16") {
      data::Image raw(1, static_cast<int>(c.height), static_cast<int>(c.width));
      raw.data = c.upsampled;
      data::write_png((out_dir / (stem + "_gradcam_raw.png")).string(), raw, 16);
    } else if (args.raw == "npy") {
      write_file_atomic((out_dir / (stem + "_gradcam_raw.npy")).string(), npy_bytes(c.upsampled, c.height, c.width));
    }
    const std::string mask_path = masks ? masks->find(p) : "";
    if (mask_path.empty()) return;
    const data::Image mask = data::decode_image(mask_path, gray_opts);
    if (std::none_of(mask.data.begin(), mask.data.end(), [](float v) { return v > 0.5f; })) return;
    r.hit = mask.at(0, static_cast<int>(rescale(c.peak_y, c.height, mask.height)),
                    static_cast<int>(rescale(c.peak_x, c.width, mask.width))) > 0.5f;
  }

  std::string csv_row(const std::string& p, const Row& r) const {
    std::string s = csv_field(p) + ",";
    if (r.ok) {
      char prob[32];
      std::snprintf(prob, sizeof prob, "%.8g", r.prob);
      s += std::to_string(r.target) + "," + csv_field(names[r.target]) + "," + prob + "," + std::to_string(r.peak_x) +
           "," + std::to_string(r.peak_y) + "," + (r.hit < 0 ? "" : std::to_string(r.hit)) + "," + csv_field(r.overlay);
    } else {
      s += ",,,,,,";
    }
    return s + "," + csv_field(r.error) + "\n";
  }
};

struct Totals {
  int64_t done = 0, failed = 0, scored = 0, hits = 0;
};

// One batch: parallel decode, Grad-CAM of the readable images, parallel writes; rows in order.
std::vector<Row> run_batch(const Job& job, ThreadPool& pool, const std::vector<std::string>& paths,
                           const std::vector<std::string>& stems, size_t start, int64_t n) {
  const int64_t sample = job.sample_size();
  std::vector<float> buf(static_cast<size_t>(n * sample), 0.0f);
  std::vector<Row> rows(static_cast<size_t>(n));
  pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        job.decode(paths[start + i], buf.data() + i * sample, rows[i]);
        rows[i].ok = true;
      } catch (const std::exception& ex) {
        rows[i].error = *ex.what() ? ex.what() : "unreadable image";
      }
    }
  });
  std::vector<int64_t> good;
  for (int64_t i = 0; i < n; ++i)
    if (rows[i].ok) {
      if (static_cast<int64_t>(good.size()) != i)
        std::copy(buf.begin() + i * sample, buf.begin() + (i + 1) * sample, buf.begin() + good.size() * sample);
      good.push_back(i);
    }
  if (good.empty()) return rows;
  const int64_t m = static_cast<int64_t>(good.size());
  buf.resize(static_cast<size_t>(m * sample));
  const Tensor x = Tensor::from_vector(buf, {m, job.pipe.channels, job.pipe.height, job.pipe.width}).to(job.device);
  const std::vector<nn::GradCamResult> cams =
      nn::grad_cam(*job.lm.model, x, std::vector<int64_t>(static_cast<size_t>(m), job.target), job.layer);
  pool.parallel_for(m, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) {
      try {
        job.finish(paths[start + good[g]], stems[start + good[g]], cams[g], rows[good[g]]);
      } catch (const std::exception& ex) {
        rows[good[g]].error = *ex.what() ? ex.what() : "cannot write the outputs";
      }
    }
  });
  return rows;
}

void report(const Job& job, const Totals& t, const std::string& csv_path, double seconds) {
  const GradcamArgs& a = job.args;
  json summary = {{"model", a.model},
                  {"layer", job.layer},
                  {"target", job.target < 0 ? std::string("predicted") : job.names[job.target]},
                  {"count", t.done},
                  {"failed", t.failed},
                  {"raw", a.raw},
                  {"csv", csv_path},
                  {"seconds", seconds}};
  if (job.masks) {
    summary["masks"] = a.masks;
    summary["scored"] = t.scored;
    summary["hits"] = t.hits;
    summary["hit_rate"] = t.scored > 0 ? json(static_cast<double>(t.hits) / t.scored) : json(nullptr);
  }
  write_file_atomic((job.out_dir / "summary.json").string(), summary.dump(2) + "\n");
  if (a.json) {
    std::printf("%s\n", summary.dump(2).c_str());
    return;
  }
  std::printf("%lld images, %lld failed, layer %s, wrote %s\n", static_cast<long long>(t.done),
              static_cast<long long>(t.failed), job.layer.c_str(), a.out.c_str());
  if (job.masks && t.scored > 0)
    std::printf("hit rate: %.4f (%lld of %lld images with a lesion mask)\n", static_cast<double>(t.hits) / t.scored,
                static_cast<long long>(t.hits), static_cast<long long>(t.scored));
  else if (job.masks)
    std::printf("hit rate: n/a (no image has a non-empty lesion mask under %s)\n", a.masks.c_str());
}

int run(const GradcamArgs& a) {
  check_args(a);
  const std::vector<std::string> paths = collect_inputs(a);
  if (paths.empty()) throw UsageError("no images found in the given inputs");
  if (a.threads > 0) set_num_threads(a.threads);
  const Job job(a);
  const std::vector<std::string> stems = output_stems(paths);

  const std::string csv_path = (job.out_dir / "gradcam.csv").string(), tmp = csv_path + ".tmp";
  struct RemoveOnExit {  // a run cut short by an error leaves no partial CSV behind
    std::string path;
    ~RemoveOnExit() {
      std::error_code e;
      fs::remove(path, e);
    }
  } tmp_guard{tmp};
  std::ofstream csv(tmp, std::ios::binary | std::ios::trunc);
  if (!csv) throw FileError(tmp + ": cannot open for writing");
  csv << "path,target,target_name,probability,peak_x,peak_y,hit,overlay,error\n";

  ThreadPool pool(a.threads > 0 ? a.threads : 0);
  const bool tty = ::isatty(::fileno(stderr)) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  Totals t;
  for (size_t start = 0; start < paths.size(); start += a.batch) {
    const int64_t n = static_cast<int64_t>(std::min<size_t>(a.batch, paths.size() - start));
    const std::vector<Row> rows = run_batch(job, pool, paths, stems, start, n);
    for (int64_t i = 0; i < n; ++i) {
      const Row& r = rows[i];
      csv << job.csv_row(paths[start + i], r);
      if (!r.error.empty()) ++t.failed;
      if (r.hit >= 0) ++t.scored, t.hits += r.hit;
    }
    csv.flush();
    if (!csv) throw FileError(tmp + ": write error");
    t.done += n;
    if (tty) {
      std::fprintf(stderr, "\r%lld/%zu images, %.1f img/s", static_cast<long long>(t.done), paths.size(),
                   t.done / std::max(elapsed(), 1e-9));
      std::fflush(stderr);
    }
  }
  csv.close();
  if (!csv) throw FileError(tmp + ": write error");
  std::error_code ec;
  fs::rename(tmp, csv_path, ec);
  if (ec) throw FileError(csv_path + ": cannot rename " + tmp + " into place: " + ec.message());
  if (tty) std::fprintf(stderr, "\n");
  report(job, t, csv_path, elapsed());
  return t.failed > 0 ? 1 : 0;
}

}  // namespace

Command gradcam_command() {
  return {"gradcam", "Grad-CAM heat maps: where a model looked in each image", [](CLI::App& app) {
            auto a = std::make_shared<GradcamArgs>();
            app.footer(
                "Writes OUT/<stem>_gradcam.png (the image in grayscale at its original size with the heat map "
                "over it), the raw map at the model's input resolution (OUT/<stem>_gradcam_raw.png or .npy), "
                "OUT/gradcam.csv (path,target,target_name,probability,peak_x,peak_y,hit,overlay,error; the "
                "peak in the original image's pixels) and OUT/summary.json. Inputs sharing a file stem get a "
                "short hash of their path in the output names. With --masks, hit is 1 when the map's peak lies "
                "in the image's lesion mask (value > 0.5), empty for images without a mask or with an empty one; "
                "the hit rate is printed and stored in summary.json.");
            app.add_option("model", a->model, "model file (.safetensors)")->required();
            app.add_option("inputs", a->inputs, "image files or directories (searched recursively)");
            app.add_option("--list", a->list, "file with one image path per line");
            app.add_option("--out", a->out, "output directory")->required();
            app.add_option("--class", a->target, "class to explain, by name or index (default: the predicted one)");
            app.add_option("--layer", a->layer,
                           "layer path, e.g. layer4 or 10 (default: the last convolutional stage)");
            app.add_option("--alpha", a->alpha, "opacity of the heat map over the image")->capture_default_str();
            app.add_option("--raw", a->raw, "raw map format: png16, npy (float32) or none")->capture_default_str();
            app.add_option("--masks", a->masks, "folder of lesion masks (matched by file name, searched recursively)");
            app.add_option("--batch", a->batch, "images per batch")->capture_default_str();
            app.add_option("--threads", a->threads, "decode and compute threads (0: all cores)");
            app.add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
            app.add_flag("--json", a->json, "print the summary as JSON");
            return [a] { return run(*a); };
          }};
}

}  // namespace cxr::cli
