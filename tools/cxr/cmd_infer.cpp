// `cxr infer`: runs a model file over images (files, directories searched recursively for
// .png/.jpg/.jpeg, or a --list file of paths) and writes a predictions CSV
// (path,predicted,prob_<class>...,error), the format `cxr eval` reads. Images stream
// through in batches (decoded in parallel), so memory is bounded by one batch. An
// unreadable image gets a row with its error and the run goes on (exit code 1 at the end).
// The CSV is written to PRED.csv.tmp and renamed into place when complete.
// A model `registry:NAME[@VERSION|@production|@staging]` is loaded from the model registry
// (--registry DIR, else $CXR_REGISTRY, else ./registry) with its SHA-256 checked; the run
// is recorded in the registry's audit log (version, image counts, never image paths) and
// in the version's performance log (latency, throughput, counts).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "data/dataset.h"
#include "data/image.h"
#include "data/transforms.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/serialize.h"
#include "registry/registry.h"
#include "runtime/cuda.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"
#include "tools/cxr/cli_util.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;

struct InferArgs {
  std::string model;
  std::string registry;  // for registry: models
  std::string key_file;
  std::vector<std::string> inputs;
  std::string list;
  std::string out;
  int batch = 32;
  int threads = 0;
  std::string device = "auto";
  std::string tta;
  double threshold = -1;
  bool threshold_set = false;
};

// Image files under `dir`, recursively, hidden files and folders skipped, sorted.
void collect_dir(const fs::path& dir, std::vector<std::string>& out) {
  for (const std::string& rel : data::list_images(dir.string(), true)) out.push_back((dir / rel).string());
}

std::string fmt_prob(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.8g", v);
  return buf;
}

// Horizontal flip of an NCHW float buffer, in place.
void hflip_batch(std::vector<float>& buf, int64_t n, int64_t c, int64_t h, int64_t w) {
  for (int64_t r = 0; r < n * c * h; ++r) std::reverse(buf.begin() + r * w, buf.begin() + (r + 1) * w);
}

// A model from the registry, loaded through it (hash checked, load audited).
struct RegistryModel {
  std::unique_ptr<registry::Registry> reg;
  registry::VersionRecord record;
};

nn::LoadedModel load_from_registry(const InferArgs& a, RegistryModel& rm) {
  const std::string ref = a.model.substr(std::string("registry:").size());
  try {
    registry::Ref::parse(ref);
  } catch (const ValueError& e) {
    throw UsageError(std::string("model ") + a.model + ": " + e.what());
  }
  std::string dir = a.registry;
  if (dir.empty()) dir = std::getenv("CXR_REGISTRY") != nullptr ? std::getenv("CXR_REGISTRY") : "";
  if (dir.empty()) dir = "registry";
  registry::OpenOptions opt;
  if (!a.key_file.empty()) opt.key = registry::Key::from_file(a.key_file);
  rm.reg = std::make_unique<registry::Registry>(registry::Registry::open(dir, opt));
  registry::LoadedVersion lv = rm.reg->load(ref, {.audit = true, .purpose = "cxr infer"});
  rm.record = lv.record;
  std::fprintf(stderr, "model %s@%s (%s, sha256 %s) from registry %s\n", lv.record.name.c_str(),
               lv.record.version.c_str(), registry::stage_name(lv.record.stage), lv.record.sha256.substr(0, 12).c_str(),
               dir.c_str());
  return lv.model;
}

int run(const InferArgs& a) {
  const bool from_registry = a.model.rfind("registry:", 0) == 0;
  if (!from_registry && (!a.registry.empty() || !a.key_file.empty()))
    throw UsageError("--registry and --key-file apply to registry:NAME@VERSION models");
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  if (!a.tta.empty() && a.tta != "flip") throw UsageError("--tta must be 'flip', got '" + a.tta + "'");
  if (a.device != "auto" && a.device != "cpu" && a.device != "cuda")
    throw UsageError("--device must be auto, cpu or cuda, got '" + a.device + "'");
  if (a.threshold_set && !(a.threshold >= 0 && a.threshold <= 1))
    throw UsageError("--threshold must be in [0, 1]");
  if (a.inputs.empty() && a.list.empty()) throw UsageError("no inputs: give image files, directories or --list FILE");

  // Inputs (paths only; images are read batch by batch).
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& in : a.inputs) {
    if (fs::is_directory(in, ec)) collect_dir(in, paths);
    else paths.push_back(in);  // a missing file becomes an error row
  }
  if (!a.list.empty()) {
    std::ifstream lf(a.list);
    if (!lf) throw FileError(a.list + ": cannot open list file");
    std::string line;
    while (std::getline(lf, line)) {
      while (!line.empty() && (line.back() == '\r' || std::isspace(static_cast<unsigned char>(line.back()))))
        line.pop_back();
      size_t b = 0;
      while (b < line.size() && std::isspace(static_cast<unsigned char>(line[b]))) ++b;
      if (b < line.size()) paths.push_back(line.substr(b));
    }
  }
  if (paths.empty()) throw UsageError("no images found in the given inputs");

  // Model.
  nn::LoadedModel lm;
  RegistryModel rm;
  if (from_registry) {
    lm = load_from_registry(a, rm);
  } else {
    if (!fs::exists(a.model, ec)) throw FileError(a.model + ": no such model file");
    try {
      lm = nn::load_model(a.model);
    } catch (const Error& e) {
      throw FileError(a.model + ": not a valid model file: " + e.what());
    }
  }
  auto model = lm.model;
  const auto& info = lm.info;
  const int64_t k = model->num_classes();
  std::vector<std::string> names = info.class_names;
  if (static_cast<int64_t>(names.size()) != k) {
    names.clear();
    for (int64_t i = 0; i < k; ++i) names.push_back("class_" + std::to_string(i));
  }
  int positive = -1;
  if (a.threshold_set) {
    if (k != 2) throw UsageError("--threshold applies to binary models; this one has " + std::to_string(k) + " classes");
    const auto it = std::find(names.begin(), names.end(), "PNEUMONIA");
    positive = it != names.end() ? static_cast<int>(it - names.begin()) : 1;
  }

  Device device = Device::cpu();
  if (a.device == "cuda" || (a.device == "auto" && cuda::available())) {
    if (!cuda::available()) throw Error("--device cuda: no CUDA device is available");
    device = Device::cuda(0);
  }
  if (a.threads > 0) set_num_threads(a.threads);
  model->to(device);
  model->eval();

  data::Pipeline pipe;
  pipe.channels = static_cast<int>(model->in_channels());
  pipe.height = static_cast<int>(model->input_height());
  pipe.width = static_cast<int>(model->input_width());
  pipe.mean.assign(info.mean.begin(), info.mean.end());
  pipe.stddev.assign(info.stddev.begin(), info.stddev.end());
  pipe.validate();
  data::DecodeOptions dopt;
  dopt.channels = pipe.channels;
  dopt.min_width = pipe.width;
  dopt.min_height = pipe.height;

  // Output.
  const std::string tmp = a.out + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) throw FileError(tmp + ": cannot open for writing");
  out << "path,predicted";
  for (const auto& n : names) out << "," << csv_field("prob_" + n);
  out << ",error\n";

  ThreadPool pool(a.threads > 0 ? a.threads : 0);
  const int64_t C = pipe.channels, H = pipe.height, W = pipe.width, sample = C * H * W;
  const bool tty = ::isatty(::fileno(stderr)) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  int64_t done = 0, failed = 0;
  std::vector<float> buf;
  std::vector<std::string> errors;
  for (size_t start = 0; start < paths.size(); start += a.batch) {
    const int64_t n = static_cast<int64_t>(std::min<size_t>(a.batch, paths.size() - start));
    buf.assign(static_cast<size_t>(n * sample), 0.0f);
    errors.assign(static_cast<size_t>(n), std::string());
    std::vector<char> ok(static_cast<size_t>(n), 0);
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        try {
          const std::string& p = paths[start + i];
          std::error_code ec2;
          if (!fs::exists(p, ec2)) throw FileError(p + ": no such file");
          const data::Image img = data::decode_image(p, dopt);
          data::run_pipeline(img, pipe, false, data::SampleRng{}, buf.data() + i * sample);
          ok[i] = 1;
        } catch (const std::exception& ex) {
          errors[i] = ex.what();
          if (errors[i].empty()) errors[i] = "unreadable image";
        }
      }
    });
    // Compact the good samples.
    std::vector<int64_t> good;
    for (int64_t i = 0; i < n; ++i)
      if (ok[i]) {
        if (static_cast<int64_t>(good.size()) != i)
          std::copy(buf.begin() + i * sample, buf.begin() + (i + 1) * sample, buf.begin() + good.size() * sample);
        good.push_back(i);
      }
    std::vector<double> probs;
    const int64_t m = static_cast<int64_t>(good.size());
    if (m > 0) {
      buf.resize(static_cast<size_t>(m * sample));
      nn::NoGradGuard ng;
      auto forward = [&](const std::vector<float>& v) {
        Tensor x = Tensor::from_vector(v, {m, C, H, W}).to(device);
        Tensor pr = nn::softmax(model->forward(x), 1).to(Device::cpu()).to(DType::f64);
        return pr.to_vector();
      };
      probs = forward(buf);
      if (a.tta == "flip") {
        hflip_batch(buf, m, C, H, W);
        const auto p2 = forward(buf);
        for (size_t j = 0; j < probs.size(); ++j) probs[j] = 0.5 * (probs[j] + p2[j]);
      }
    }
    size_t g = 0;
    for (int64_t i = 0; i < n; ++i) {
      out << csv_field(paths[start + i]);
      if (!ok[i]) {
        out << ",";
        for (int64_t c = 0; c < k; ++c) out << ",";
        out << "," << csv_field(errors[i]) << "\n";
        ++failed;
        continue;
      }
      const double* pr = probs.data() + g * k;
      ++g;
      int pred = 0;
      if (positive >= 0) {
        pred = pr[positive] >= a.threshold ? positive : 1 - positive;
      } else {
        for (int64_t c = 1; c < k; ++c)
          if (pr[c] > pr[pred]) pred = static_cast<int>(c);
      }
      out << "," << csv_field(names[pred]);
      for (int64_t c = 0; c < k; ++c) out << "," << fmt_prob(pr[c]);
      out << ",\n";
    }
    out.flush();
    if (!out) throw FileError(tmp + ": write error");
    done += n;
    if (tty) {
      const double t = elapsed();
      std::fprintf(stderr, "\r%lld/%zu images, %.1f img/s", static_cast<long long>(done), paths.size(),
                   t > 0 ? done / t : 0.0);
      std::fflush(stderr);
    }
  }
  out.close();
  if (!out) throw FileError(tmp + ": write error");
  fs::rename(tmp, a.out, ec);
  if (ec) throw FileError(a.out + ": cannot rename " + tmp + " into place: " + ec.message());
  const double t = elapsed();
  if (tty) std::fprintf(stderr, "\n");
  if (rm.reg) {
    const std::string dev = device.is_cuda() ? "cuda" : "cpu";
    rm.reg->audit("infer", {{"model", rm.record.name}, {"version", rm.record.version}, {"sha256", rm.record.sha256},
                            {"images", done}, {"failed", failed}, {"device", dev}});
    rm.reg->record_perf(rm.record.name, rm.record.version,
                        {{"source", "cxr infer"}, {"images", done}, {"failed", failed}, {"seconds", t},
                         {"images_per_s", t > 0 ? done / t : 0.0},
                         {"ms_per_image", done > 0 ? 1000.0 * t / done : 0.0}, {"batch", a.batch}, {"device", dev},
                         {"tta", a.tta.empty() ? "none" : a.tta}});
  }
  std::fprintf(stderr, "%lld images, %lld failed, %.1f img/s, wrote %s\n", static_cast<long long>(done),
               static_cast<long long>(failed), t > 0 ? done / t : 0.0, a.out.c_str());
  return failed > 0 ? 1 : 0;
}

}  // namespace

Command infer_command() {
  return {"infer", "run a model over images and write a predictions CSV", [](CLI::App& app) {
            auto a = std::make_shared<InferArgs>();
            app.add_option("model", a->model, "model file (.safetensors) or registry:NAME[@VERSION|@production|@staging]")->required();
            app.add_option("inputs", a->inputs, "image files or directories (searched recursively)");
            app.add_option("--list", a->list, "file with one image path per line");
            app.add_option("--out", a->out, "predictions CSV to write")->required();
            app.add_option("--batch", a->batch, "images per batch")->capture_default_str();
            app.add_option("--threads", a->threads, "decode and compute threads (0: all cores)");
            app.add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
            app.add_option("--registry", a->registry, "model registry for registry: models (default: $CXR_REGISTRY, else ./registry)");
            app.add_option("--key-file", a->key_file, "key of an encrypted registry");
            app.add_option("--tta", a->tta, "test-time augmentation: flip (average with the mirrored image)");
            auto* th = app.add_option("--threshold", a->threshold,
                                      "binary models: predict the positive class when its probability >= T");
            return [a, th] {
              a->threshold_set = th->count() > 0;
              return run(*a);
            };
          }};
}

}  // namespace cxr::cli
