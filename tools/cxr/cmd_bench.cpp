// `cxr bench`: how fast a model trains and infers here, and how fast images load.
//
// Train: full steps (forward, cross-entropy, backward, AdamW update) on a fixed random
// batch. Infer: eval-mode forward passes without autograd at the batch size, and at batch
// 1 (the latency one image sees). Each is timed per iteration after warm-up iterations
// (which also let cuDNN pick its algorithms); on CUDA every iteration ends with a device
// synchronize. Loader: one epoch of the data loader (decode + resize + augment into
// batches) over --data, or over PNGs generated into a temporary folder. Memory: the
// process's peak resident set and, on CUDA, the allocator's peak.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/synth.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "runtime/cuda.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct BenchArgs {
  std::string model = "simple_cnn";
  int64_t batch = 32, image_size = 0, channels = 0, classes = 2;
  int warmup = 3, iters = 20, loader_images = 512;
  std::string device = "auto", data, out, only;
  int threads = 0, workers = 0;
  bool json_out = false;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  std::vector<double> ms;  // per iteration
  json to_json(int64_t images_per_iter) const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    auto pct = [&](double q) {
      if (s.empty()) return 0.0;
      const double pos = q * static_cast<double>(s.size() - 1);
      const size_t lo = static_cast<size_t>(pos);
      const size_t hi = std::min(lo + 1, s.size() - 1);
      return s[lo] + (s[hi] - s[lo]) * (pos - static_cast<double>(lo));
    };
    double total = 0;
    for (double v : s) total += v;
    const double mean = s.empty() ? 0.0 : total / static_cast<double>(s.size());
    return {{"iterations", s.size()},
            {"images_per_iteration", images_per_iter},
            {"images_per_s", mean > 0 ? images_per_iter * 1000.0 / mean : 0.0},
            {"ms_mean", mean},
            {"ms_p50", pct(0.5)},
            {"ms_p90", pct(0.9)},
            {"ms_p99", pct(0.99)},
            {"ms_min", s.empty() ? 0.0 : s.front()},
            {"ms_max", s.empty() ? 0.0 : s.back()}};
  }
};

Timing time_it(int warmup, int iters, Device dev, const std::function<void()>& fn) {
  auto sync = [&] {
    if (dev.is_cuda()) cuda::synchronize(dev.index);
  };
  for (int i = 0; i < warmup; ++i) fn();
  sync();
  Timing t;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_s();
    fn();
    sync();
    t.ms.push_back((now_s() - t0) * 1000.0);
  }
  return t;
}

double peak_rss_mib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

std::shared_ptr<nn::Model> make_model(const BenchArgs& a, std::string* label) {
  const std::string& m = a.model;
  std::error_code ec;
  auto ends = [&](const char* suf) {
    const std::string s(suf);
    return m.size() >= s.size() && m.compare(m.size() - s.size(), s.size(), s) == 0;
  };
  if (ends(".safetensors")) {
    if (!fs::exists(m, ec)) throw FileError(m + ": no such model file");
    *label = m;
    auto lm = nn::load_model(m);
    if ((a.image_size > 0 && a.image_size != lm.model->input_height()) || (a.channels > 0 && a.channels != lm.model->in_channels()))
      throw UsageError("a model file fixes its input size and channels; leave --image-size and --channels out");
    return lm.model;
  }
  const int64_t size = a.image_size > 0 ? a.image_size : 224, ch = a.channels > 0 ? a.channels : 1;
  nlohmann::json spec;
  try {
    spec = nn::model_spec_for(m, ch, a.classes, size);
  } catch (const ValueError& e) {
    // A name that is neither a zoo architecture nor a file is a usage error (exit 2).
    if (!ends(".json") && !fs::exists(m, ec)) throw UsageError(e.what());
    throw;
  }
  *label = m;
  return nn::build_model(spec, 1);
}

json loader_bench(const BenchArgs& a, const nn::Model& model, Device dev) {
  std::string root = a.data;
  std::unique_ptr<fs::path> tmp;
  if (root.empty()) {
    tmp = std::make_unique<fs::path>(fs::temp_directory_path() / ("cxr-bench-" + std::to_string(::getpid())));
    data::SynthOptions so;
    so.size = static_cast<int>(std::max<int64_t>(model.input_height(), 16));
    so.count = a.loader_images;
    so.val_fraction = so.test_fraction = 0;
    so.masks = false;
    so.overwrite = true;
    data::write_synthetic_dataset(tmp->string(), so);
    root = (*tmp / "train").string();
  } else {
    std::error_code ec;
    if (fs::is_directory(fs::path(root) / "train", ec)) root = (fs::path(root) / "train").string();
  }
  json out;
  try {
    const data::Dataset ds = data::Dataset::image_folder(root);
    data::LoaderOptions lo;
    lo.batch_size = a.batch;
    lo.workers = a.workers;
    lo.device = dev;
    lo.pipeline.channels = static_cast<int>(model.in_channels());
    lo.pipeline.height = static_cast<int>(model.input_height());
    lo.pipeline.width = static_cast<int>(model.input_width());
    lo.pipeline.mean.assign(static_cast<size_t>(lo.pipeline.channels), 0.5f);
    lo.pipeline.stddev.assign(static_cast<size_t>(lo.pipeline.channels), 0.25f);
    lo.pipeline.augment.rotation = 10;
    lo.pipeline.augment.zoom = 0.1;
    data::Loader loader(ds, lo);
    loader.start_epoch(0);
    data::Batch b;
    const double t0 = now_s();
    int64_t n = 0;
    while (loader.next(b)) n += b.images.shape()[0];
    if (dev.is_cuda()) cuda::synchronize(dev.index);
    const double s = now_s() - t0;
    out = {{"data", a.data.empty() ? "generated PNGs" : root},
           {"images", n},
           {"source_size", a.data.empty() ? json(std::max<int64_t>(model.input_height(), 16)) : json(nullptr)},
           {"workers", loader.num_workers()},
           {"seconds", s},
           {"images_per_s", s > 0 ? n / s : 0.0}};
  } catch (...) {
    if (tmp) fs::remove_all(*tmp);
    throw;
  }
  if (tmp) fs::remove_all(*tmp);
  return out;
}

int run(const BenchArgs& a) {
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  if (a.iters < 1 || a.warmup < 0) throw UsageError("--iters must be >= 1 and --warmup >= 0");
  if (a.channels != 0 && a.channels != 1 && a.channels != 3) throw UsageError("--channels must be 1 or 3");
  if (a.image_size != 0 && (a.image_size < 8 || a.image_size > 4096)) throw UsageError("--image-size must be in [8, 4096]");
  if (a.device != "auto" && a.device != "cpu" && a.device != "cuda")
    throw UsageError("--device must be auto, cpu or cuda, got '" + a.device + "'");
  if (!a.only.empty() && a.only != "train" && a.only != "infer" && a.only != "loader")
    throw UsageError("--only must be train, infer or loader");
  if (a.threads > 0) set_num_threads(a.threads);
  Device dev = Device::cpu();
  if (a.device == "cuda" || (a.device == "auto" && cuda::available())) {
    if (!cuda::available()) throw Error("--device cuda: no CUDA device is available");
    dev = Device::cuda(0);
  }
  std::string label;
  auto model = make_model(a, &label);
  model->to(dev);
  const int64_t C = model->in_channels(), H = model->input_height(), W = model->input_width(), K = model->num_classes();
  const bool quiet = a.json_out;
  auto say = [&](const char* what) {
    if (!quiet) std::fprintf(stderr, "bench: %s...\n", what);
  };

  json r = {{"model", label},
            {"parameters", model->num_parameters()},
            {"batch", a.batch},
            {"input", {C, H, W}},
            {"device", dev.str()},
            {"device_name", dev.is_cuda() ? cuda::device_description(dev.index) : "CPU"},
            {"threads", get_num_threads()},
            {"versions",
             {{"cxr", CXR_VERSION_STRING},
              {"revision", CXR_GIT_REVISION},
              {"cuda_runtime", cuda::runtime_version()},
              {"cuda_driver", cuda::driver_version()},
              {"cudnn", cuda::cudnn_version()},
              {"cublas", cuda::cublas_version()}}},
            {"build", {{"type", CXR_BUILD_TYPE}, {"native", CXR_BUILD_NATIVE}, {"compiler", CXR_CXX_COMPILER}, {"cuda", cuda::built_with_cuda()}}},
            {"settings", {{"warmup", a.warmup}, {"iterations", a.iters}}}};
  if (dev.is_cuda()) r["settings"]["tf32"] = cuda::allow_tf32(dev.index);

  Generator gen(7);
  Tensor x = rand_normal({a.batch, C, H, W}, gen).to(dev);
  std::vector<int64_t> yl(static_cast<size_t>(a.batch));
  for (int64_t i = 0; i < a.batch; ++i) yl[static_cast<size_t>(i)] = i % K;
  Tensor y = Tensor::from_vector(yl, {a.batch}).to(dev);

  if (a.only.empty() || a.only == "train") {
    say("training steps");
    model->train();
    auto opt = nn::make_adamw(nn::make_param_groups(*model, 1e-3, 1e-4), nn::AdamOptions{});
    const Timing t = time_it(a.warmup, a.iters, dev, [&] {
      opt->zero_grad();
      Tensor loss = nn::cross_entropy(model->forward(x), y);
      nn::backward(loss);
      opt->step();
    });
    r["train"] = t.to_json(a.batch);
    model->zero_grad();
  }
  if (a.only.empty() || a.only == "infer") {
    say("inference");
    model->eval();
    nn::NoGradGuard ng;
    r["infer"] = time_it(a.warmup, a.iters, dev, [&] { (void)model->forward(x); }).to_json(a.batch);
    Tensor x1 = rand_normal({1, C, H, W}, gen).to(dev);
    r["infer_batch1"] = time_it(a.warmup, std::max(a.iters, 20), dev, [&] { (void)model->forward(x1); }).to_json(1);
  }
  if (a.only.empty() || a.only == "loader") {
    say("data loader");
    r["loader"] = loader_bench(a, *model, dev);
  }
  r["memory"] = {{"peak_host_mib", peak_rss_mib()}};
  if (dev.is_cuda()) r["memory"]["peak_device_mib"] = static_cast<double>(cuda::memory_stats(dev.index).peak_allocated) / (1 << 20);

  const std::string text = r.dump(2) + "\n";
  if (!a.out.empty()) write_file_atomic(a.out, text);
  if (a.json_out) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::printf("%s, %lld parameters, batch %lld, input %lldx%lldx%lld, on %s (%d threads)\n", label.c_str(),
              static_cast<long long>(model->num_parameters()), static_cast<long long>(a.batch), static_cast<long long>(C),
              static_cast<long long>(H), static_cast<long long>(W), r["device_name"].get<std::string>().c_str(), get_num_threads());
  auto line = [&](const char* name, const json& j) {
    std::printf("  %-13s %9.1f images/s   step p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", name,
                j["images_per_s"].get<double>(), j["ms_p50"].get<double>(), j["ms_p90"].get<double>(), j["ms_p99"].get<double>());
  };
  if (r.contains("train")) line("train", r["train"]);
  if (r.contains("infer")) line("infer", r["infer"]);
  if (r.contains("infer_batch1")) line("infer batch 1", r["infer_batch1"]);
  if (r.contains("loader"))
    std::printf("  %-13s %9.1f images/s   (%lld images, %d workers)\n", "loader", r["loader"]["images_per_s"].get<double>(),
                static_cast<long long>(r["loader"]["images"].get<int64_t>()), r["loader"]["workers"].get<int>());
  std::printf("  peak host memory %.0f MiB", r["memory"]["peak_host_mib"].get<double>());
  if (dev.is_cuda()) std::printf(", peak device memory %.0f MiB", r["memory"]["peak_device_mib"].get<double>());
  std::printf("\n");
  if (!a.out.empty()) std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

}  // namespace

Command bench_command() {
  return {"bench", "measure training and inference throughput, latency, loader rate and memory", [](CLI::App& app) {
            auto a = std::make_shared<BenchArgs>();
            app.add_option("--model", a->model, "zoo architecture, JSON spec or .safetensors model file")->capture_default_str();
            app.add_option("--batch", a->batch, "images per step")->capture_default_str();
            app.add_option("--image-size", a->image_size, "input height and width (default 224; model files fix it)");
            app.add_option("--channels", a->channels, "input channels, 1 or 3 (default 1; model files fix it)");
            app.add_option("--classes", a->classes, "output classes of a zoo model")->capture_default_str();
            app.add_option("--warmup", a->warmup, "untimed iterations first")->capture_default_str();
            app.add_option("--iters", a->iters, "timed iterations")->capture_default_str();
            app.add_option("--data", a->data, "image folder for the loader benchmark (default: generated PNGs)");
            app.add_option("--loader-images", a->loader_images, "generated images for the loader benchmark")->capture_default_str();
            app.add_option("--workers", a->workers, "loader threads (0: one per core)");
            app.add_option("--threads", a->threads, "compute threads (0: one per core)");
            app.add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
            app.add_option("--only", a->only, "run one part: train, infer or loader");
            app.add_option("--out", a->out, "also write the JSON results to this file");
            app.add_flag("--json", a->json_out, "print the results as JSON");
            return [a] { return run(*a); };
          }};
}

}  // namespace cxr::cli
