// The training loop behind `cxr train` (see trainer.h for the run directory and resume).
#include "tools/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/lr_schedule.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "runtime/cuda.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/thread_pool.h"
#include "tools/metrics/metrics.h"
#include "tools/report/report.h"
#include "tools/train/config.h"

namespace cxr::train {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kCheckpointFormat = 1;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers for the run and restores the previous ones.
class SignalScope {
 public:
  SignalScope() {
    g_signal.store(0);
    prev_int_ = std::signal(SIGINT, on_signal);
    prev_term_ = std::signal(SIGTERM, on_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, prev_int_);
    std::signal(SIGTERM, prev_term_);
  }

 private:
  void (*prev_int_)(int);
  void (*prev_term_)(int);
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  char b[32];
  if (t >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double from_num(const json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }

// ------------------------------------------------------------------ data
struct Data {
  data::Dataset train, val, test;
  bool has_test = false;
  std::string source;  // for the report
};

data::Dataset folder(const std::string& dir) { return data::Dataset::image_folder(dir); }

void same_classes(const data::Dataset& a, const data::Dataset& b, const std::string& what) {
  if (a.class_names != b.class_names) {
    std::string an, bn;
    for (const auto& c : a.class_names) an += (an.empty() ? "" : ", ") + c;
    for (const auto& c : b.class_names) bn += (bn.empty() ? "" : ", ") + c;
    throw ValueError(what + " has classes [" + bn + "] but the training data has [" + an + "]");
  }
}

Data load_data(const json& c) {
  Data d;
  const std::string root = c.at("data").get<std::string>();
  const double split = c.at("val_split").get<double>();
  const uint64_t seed = c.at("seed").get<uint64_t>();
  std::error_code ec;
  if (!root.empty()) {
    if (!fs::is_directory(root, ec)) throw FileError(root + ": no such data directory");
    const fs::path r(root);
    if (fs::is_directory(r / "train", ec)) {
      d.train = folder((r / "train").string());
      if (fs::is_directory(r / "val", ec)) {
        d.val = folder((r / "val").string());
        same_classes(d.train, d.val, (r / "val").string());
      } else {
        auto [tr, va] = d.train.stratified_split(split, seed);
        d.train = tr;
        d.val = va;
      }
      if (fs::is_directory(r / "test", ec)) {
        d.test = folder((r / "test").string());
        same_classes(d.train, d.test, (r / "test").string());
        d.has_test = true;
      }
    } else {
      auto [tr, va] = folder(root).stratified_split(split, seed);
      d.train = tr;
      d.val = va;
    }
    d.source = root;
  } else {
    const std::string tcsv = c.at("train_csv").get<std::string>();
    d.train = data::Dataset::from_csv(tcsv);
    const std::string vcsv = c.at("val_csv").get<std::string>();
    if (!vcsv.empty()) {
      d.val = data::Dataset::from_csv(vcsv, "", d.train.class_names);
    } else {
      auto [tr, va] = d.train.stratified_split(split, seed);
      d.train = tr;
      d.val = va;
    }
    const std::string ecsv = c.at("test_csv").get<std::string>();
    if (!ecsv.empty()) {
      d.test = data::Dataset::from_csv(ecsv, "", d.train.class_names);
      d.has_test = true;
    }
    d.source = tcsv;
  }
  if (d.train.num_classes() < 2) throw ValueError("training data needs at least 2 classes, found " + std::to_string(d.train.num_classes()));
  if (d.train.size() == 0) throw ValueError("no training images");
  const auto counts = d.train.class_counts();
  for (size_t k = 0; k < counts.size(); ++k)
    if (counts[k] == 0) throw ValueError("class '" + d.train.class_names[k] + "' has no training images");
  if (d.val.size() == 0)
    throw ValueError("no validation images: add a val/ folder, --val-csv, or a --val-split above 0");
  return d;
}

// A fingerprint of a data set's file list and labels (FNV-1a), so a resumed run can tell
// that its data changed.
std::string fingerprint(const data::Dataset& ds) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const auto& c : ds.class_names) mix(c);
  for (const auto& s : ds.samples) {
    mix(fs::path(s.path).lexically_relative(ds.root).generic_string());
    mix(std::to_string(s.label));
  }
  char b[20];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

// ------------------------------------------------------------------ model
json model_spec(const json& c, int64_t num_classes) {
  return nn::model_spec_for(c.at("model").get<std::string>(), c.at("channels").get<int64_t>(), num_classes,
                            c.at("image_size").get<int64_t>());
}

std::vector<std::pair<std::string, nn::Dropout*>> dropouts(nn::Model& m) {
  std::vector<std::pair<std::string, nn::Dropout*>> out;
  for (auto& [path, mod] : m.named_modules())
    if (auto* d = dynamic_cast<nn::Dropout*>(mod)) out.emplace_back(path, d);
  return out;
}

// ------------------------------------------------------------------ progress
class Progress {
 public:
  Progress(ProgressMode mode, int64_t epochs) : epochs_(epochs) {
    if (mode == ProgressMode::automatic) mode = ::isatty(::fileno(stderr)) == 1 ? ProgressMode::bar : ProgressMode::lines;
    mode_ = mode;
  }
  void start(const std::string& phase, int64_t epoch, int64_t total, int64_t done) {
    phase_ = phase;
    epoch_ = epoch;
    total_ = total;
    first_ = done;
    t0_ = last_ = now_s();
    next_line_ = 0.1;
  }
  void update(int64_t done, int64_t images, double loss) {
    if (mode_ == ProgressMode::none) return;
    const double t = now_s(), el = t - t0_;
    const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
    const double rate = el > 0 ? images / el : 0.0;
    const double eta = done > first_ ? el / (done - first_) * (total_ - done) : std::nan("");
    if (mode_ == ProgressMode::bar) {
      if (t - last_ < 0.1 && done < total_) return;
      last_ = t;
      const int w = 24, fill = static_cast<int>(frac * w);
      std::string bar(static_cast<size_t>(fill), '=');
      if (fill < w) bar += '>' + std::string(static_cast<size_t>(w - fill - 1), ' ');
      std::fprintf(stderr, "\r%s %lld/%lld [%s] %lld/%lld  %.0f img/s  loss %s  ETA %s   ", phase_.c_str(),
                   static_cast<long long>(epoch_), static_cast<long long>(epochs_), bar.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_), rate, fmt("%.4f", loss).c_str(),
                   hms(eta).c_str());
      std::fflush(stderr);
    } else if (mode_ == ProgressMode::lines && (frac >= next_line_ || done == total_) && phase_ == "train") {
      while (next_line_ <= frac) next_line_ += 0.25;
      std::fprintf(stderr, "  epoch %lld: %lld/%lld batches, %.0f img/s, loss %s, ETA %s\n", static_cast<long long>(epoch_),
                   static_cast<long long>(done), static_cast<long long>(total_), rate, fmt("%.4f", loss).c_str(),
                   hms(eta).c_str());
    }
  }
  void clear() {
    if (mode_ == ProgressMode::bar) {
      std::fprintf(stderr, "\r%*s\r", 110, "");
      std::fflush(stderr);
    }
  }

 private:
  ProgressMode mode_;
  int64_t epochs_, epoch_ = 0, total_ = 0, first_ = 0;
  std::string phase_;
  double t0_ = 0, last_ = 0, next_line_ = 0;
};

// ------------------------------------------------------------------ evaluation
struct Eval {
  double loss = 0, accuracy = 0, auc = std::nan("");
  std::vector<std::vector<double>> probs;  // per sample
  std::vector<int> labels;
};

int positive_class(const std::vector<std::string>& names) {
  const auto it = std::find(names.begin(), names.end(), "PNEUMONIA");
  return it != names.end() ? static_cast<int>(it - names.begin()) : 1;
}

// Scores (probability of the positive class) and 0/1 labels of a binary evaluation.
void binary_scores(const Eval& e, int pos, std::vector<double>& s, std::vector<int>& l) {
  for (size_t i = 0; i < e.labels.size(); ++i) {
    s.push_back(e.probs[i][static_cast<size_t>(pos)]);
    l.push_back(e.labels[i] == pos ? 1 : 0);
  }
}

Eval evaluate(nn::Model& model, data::Loader& loader, int64_t k, const std::vector<std::string>& names,
              Progress& progress, int64_t epoch) {
  nn::NoGradGuard ng;
  model.eval();
  loader.start_epoch(0);
  Eval e;
  double loss_sum = 0;
  int64_t n = 0, correct = 0, b = 0;
  progress.start("val  ", epoch, loader.batches_per_epoch(), 0);
  data::Batch batch;
  while (loader.next(batch)) {
    Tensor logits = model.forward(batch.images);
    const int64_t m = logits.shape()[0];
    loss_sum += nn::cross_entropy(logits, batch.labels).item() * static_cast<double>(m);
    const auto p = nn::softmax(logits, 1).to(Device::cpu()).to(DType::f64).to_vector();
    const auto y = batch.labels.to(Device::cpu()).to(DType::f64).to_vector();
    for (int64_t i = 0; i < m; ++i) {
      std::vector<double> row(p.begin() + i * k, p.begin() + (i + 1) * k);
      const int pred = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
      const int label = static_cast<int>(y[static_cast<size_t>(i)]);
      correct += pred == label;
      e.probs.push_back(std::move(row));
      e.labels.push_back(label);
    }
    n += m;
    progress.update(++b, n, loss_sum / std::max<int64_t>(n, 1));
  }
  progress.clear();
  if (n == 0) throw Error("no validation image could be read");
  e.loss = loss_sum / static_cast<double>(n);
  e.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  if (k == 2) {
    std::vector<double> s;
    std::vector<int> l;
    binary_scores(e, positive_class(names), s, l);
    e.auc = metrics::roc_auc(s, l);
  } else {
    const auto aucs = metrics::one_vs_rest_auc(e.probs, e.labels, static_cast<int>(k));
    double sum = 0;
    int cnt = 0;
    for (double a : aucs)
      if (std::isfinite(a)) sum += a, ++cnt;
    e.auc = cnt > 0 ? sum / cnt : std::nan("");
  }
  return e;
}

metrics::EvalReport full_report(const Eval& e, const std::vector<std::string>& names, uint64_t seed) {
  metrics::EvalOptions o;
  o.bootstrap = 500;
  o.seed = seed;
  if (names.size() == 2) {
    const int pos = positive_class(names);
    std::vector<double> s;
    std::vector<int> l;
    binary_scores(e, pos, s, l);
    auto r = metrics::evaluate_binary(s, l, o);
    // Present the confusion matrix with the data's class names, in their order.
    std::vector<int> pred;
    for (double v : s) pred.push_back(v >= o.threshold ? pos : 1 - pos);
    r.class_names = names;
    r.confusion = metrics::confusion_matrix(e.labels, pred, 2);
    return r;
  }
  return metrics::evaluate_multiclass(e.probs, e.labels, names, o);
}

// ------------------------------------------------------------------ state
struct State {
  int64_t epoch = 0;        // epoch in progress (0-based); == epochs when done
  int64_t batch = 0;        // next batch of that epoch
  int64_t global_step = 0;  // optimizer steps so far
  double loss_sum = 0;      // running sums of the epoch in progress
  int64_t correct = 0, seen = 0;
  double epoch_seconds = 0;
  bool has_best = false;
  double best = std::nan("");
  int64_t best_epoch = 0, bad_epochs = 0;
  bool stopped_early = false;
  json history = json::array();
};

json state_json(const State& s) {
  return {{"epoch", s.epoch},       {"batch", s.batch},           {"global_step", s.global_step},
          {"loss_sum", s.loss_sum}, {"correct", s.correct},       {"seen", s.seen},
          {"epoch_seconds", s.epoch_seconds}, {"has_best", s.has_best}, {"best", num(s.best)},
          {"best_epoch", s.best_epoch}, {"bad_epochs", s.bad_epochs}, {"stopped_early", s.stopped_early},
          {"history", s.history}};
}

State state_from_json(const json& j) {
  State s;
  s.epoch = j.at("epoch").get<int64_t>();
  s.batch = j.at("batch").get<int64_t>();
  s.global_step = j.at("global_step").get<int64_t>();
  s.loss_sum = j.at("loss_sum").get<double>();
  s.correct = j.at("correct").get<int64_t>();
  s.seen = j.at("seen").get<int64_t>();
  s.epoch_seconds = j.at("epoch_seconds").get<double>();
  s.has_best = j.at("has_best").get<bool>();
  s.best = from_num(j.at("best"));
  s.best_epoch = j.at("best_epoch").get<int64_t>();
  s.bad_epochs = j.at("bad_epochs").get<int64_t>();
  s.stopped_early = j.at("stopped_early").get<bool>();
  s.history = j.at("history");
  return s;
}

void write_history_csv(const std::string& path, const json& history) {
  std::ostringstream os;
  os << "epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_auc,lr,seconds,images_per_s\n";
  os.precision(8);
  for (const auto& r : history) {
    os << r.at("epoch").get<int64_t>();
    for (const char* k : {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc", "lr", "seconds", "images_per_s"}) {
      os << ",";
      if (r.at(k).is_number()) os << r.at(k).get<double>();
    }
    os << "\n";
  }
  write_file_atomic(path, os.str());
}

std::string now_stamp(const char* f) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char b[64];
  std::strftime(b, sizeof b, f, &tm);
  return b;
}

bool better(const std::string& monitor, double v, const State& s) {
  if (!s.has_best) return true;
  if (!std::isfinite(v)) return false;
  if (!std::isfinite(s.best)) return true;
  return monitor == "val_loss" ? v < s.best : v > s.best;
}

}  // namespace

// ------------------------------------------------------------------ the run
TrainResult train(const json& config_in, const TrainOptions& opts) {
  json c;
  json ckpt_meta;
  std::map<std::string, Tensor> ckpt_tensors;
  const bool resuming = !opts.resume.empty();
  if (resuming) {
    std::string path = opts.resume;
    std::error_code ec;
    if (fs::is_directory(path, ec)) path = (fs::path(path) / "checkpoints" / "last.ckpt").string();
    if (!fs::exists(path, ec)) throw FileError(path + ": no such checkpoint");
    nn::SafetensorsFile f;
    try {
      f = nn::load_safetensors(path);
    } catch (const Error& e) {
      throw FileError(path + ": not a readable checkpoint: " + e.what());
    }
    auto it = f.metadata.find("cxr.checkpoint");
    if (it == f.metadata.end()) throw FileError(path + ": not a cxr checkpoint (no cxr.checkpoint metadata)");
    try {
      ckpt_meta = json::parse(it->second);
    } catch (const json::parse_error& e) {
      throw FileError(path + ": corrupt checkpoint metadata: " + e.what());
    }
    if (ckpt_meta.value("format", 0) != kCheckpointFormat)
      throw FileError(path + ": checkpoint format " + ckpt_meta.value("format", json(0)).dump() + " is not supported");
    ckpt_tensors = std::move(f.tensors);
    c = ckpt_meta.at("config");
    for (const auto& [k, v] : opts.overrides.items()) {
      static const std::vector<std::string> allowed = {"epochs", "patience", "device", "threads", "workers", "checkpoint_every"};
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end() && c.contains(k) && c[k] != v)
        throw ValueError(flag_name(k) + " cannot change when resuming (the checkpoint was trained with " + c[k].dump() +
                         "); only --epochs, --patience, --device, --threads, --workers and --checkpoint-every can");
    }
    merge_config(c, opts.overrides, "resume settings");
  } else {
    c = default_config();
    merge_config(c, config_in, "settings");
  }
  validate_config(c);

  // Where to run.
  const std::string model_name = fs::path(c.at("model").get<std::string>()).stem().string();
  if (c.at("out").get<std::string>().empty()) c["out"] = "runs/" + model_name + "-" + now_stamp("%Y%m%d-%H%M%S");
  const fs::path run = c.at("out").get<std::string>();
  const fs::path ckdir = run / "checkpoints";
  std::error_code ec;
  if (!resuming && (fs::exists(ckdir / "last.ckpt", ec) || fs::exists(run / "history.csv", ec)))
    throw ValueError(run.string() + " already holds a training run: resume it with --resume " + run.string() +
                     ", or choose another --out");

  if (c.at("threads").get<int64_t>() > 0) set_num_threads(static_cast<int>(c.at("threads").get<int64_t>()));
  Device device = Device::cpu();
  const std::string dev = c.at("device").get<std::string>();
  if (dev == "cuda" || (dev == "auto" && cuda::available())) {
    if (!cuda::available()) throw Error("--device cuda: no CUDA device is available");
    device = Device::cuda(0);
  }

  // Data.
  Data d = load_data(c);
  const auto& names = d.train.class_names;
  const int64_t K = d.train.num_classes();
  const json data_info = {{"source", d.source},
                          {"classes", names},
                          {"train", d.train.size()},
                          {"val", d.val.size()},
                          {"test", d.has_test ? d.test.size() : 0},
                          {"train_fingerprint", fingerprint(d.train)},
                          {"val_fingerprint", fingerprint(d.val)}};
  if (resuming) {
    const json& was = ckpt_meta.at("data");
    if (was.at("train_fingerprint") != data_info.at("train_fingerprint") ||
        was.at("val_fingerprint") != data_info.at("val_fingerprint"))
      throw ValueError("the training data changed since the checkpoint was written (" + was.at("train").dump() +
                       " train / " + was.at("val").dump() + " val images then, " + std::to_string(d.train.size()) +
                       " / " + std::to_string(d.val.size()) + " now): resuming would not continue the same run");
  }

  // Model.
  const uint64_t seed = c.at("seed").get<uint64_t>();
  const json spec = resuming ? ckpt_meta.at("spec") : model_spec(c, K);
  std::shared_ptr<nn::Model> model = nn::build_model(spec, seed);
  if (resuming) {
    std::map<std::string, Tensor> ms;
    for (const auto& [k, t] : ckpt_tensors)
      if (k.rfind("model.", 0) == 0) ms[k.substr(6)] = t;
    model->load_state_dict(ms, true);
    for (auto& [path, drop] : dropouts(*model)) {
      const json& g = ckpt_meta.at("dropout_rng").at(path);
      drop->generator().set_state(g.at(0).get<uint64_t>(), g.at(1).get<uint64_t>());
    }
  }
  model->to(device);

  // Loaders.
  data::Pipeline pipe;
  pipe.channels = static_cast<int>(c.at("channels").get<int64_t>());
  pipe.height = pipe.width = static_cast<int>(c.at("image_size").get<int64_t>());
  pipe.mean.assign(static_cast<size_t>(pipe.channels), 0.5f);
  pipe.stddev.assign(static_cast<size_t>(pipe.channels), 0.25f);
  if (c.at("augment").get<bool>()) {
    auto& a = pipe.augment;
    a.rotation = c.at("rotation").get<double>();
    a.shift_x = a.shift_y = c.at("shift").get<double>();
    a.zoom = c.at("zoom").get<double>();
    a.hflip = c.at("hflip").get<bool>();
    a.brightness = c.at("brightness").get<double>();
    a.contrast = c.at("contrast").get<double>();
    a.noise_std = c.at("noise").get<double>();
    a.erase_prob = c.at("erase").get<double>();
  }
  pipe.augment.validate();
  pipe.validate();
  data::LoaderOptions lo;
  lo.batch_size = c.at("batch_size").get<int64_t>();
  lo.workers = static_cast<int>(c.at("workers").get<int64_t>());
  lo.seed = seed;
  lo.pipeline = pipe;
  lo.device = device;
  lo.drop_last = d.train.size() > lo.batch_size;  // no tiny last batch for BatchNorm
  data::Loader train_loader(d.train, lo);
  data::LoaderOptions vo = lo;
  vo.shuffle = false;
  vo.drop_last = false;
  vo.train = false;
  data::Loader val_loader(d.val, vo);
  const int64_t spe = train_loader.batches_per_epoch();
  const int64_t epochs = c.at("epochs").get<int64_t>();

  // Loss.
  nn::CrossEntropyOptions ce;
  ce.label_smoothing = c.at("label_smoothing").get<double>();
  const std::string cw = c.at("class_weights").get<std::string>();
  std::vector<double> weights;
  if (cw == "auto") {
    weights = d.train.balanced_class_weights();
  } else if (cw != "none" && !cw.empty()) {
    std::stringstream ss(cw);
    std::string part;
    while (std::getline(ss, part, ',')) {
      const Setting s{"class_weights", Kind::number, 0.0, "", ""};
      const double w = parse_setting(s, part, "--class-weights").get<double>();
      if (w < 0) throw ValueError("--class-weights: weights must be >= 0, got " + part);
      weights.push_back(w);
    }
    if (static_cast<int64_t>(weights.size()) != K)
      throw ValueError("--class-weights has " + std::to_string(weights.size()) + " values but the data has " +
                       std::to_string(K) + " classes");
  }
  if (!weights.empty()) ce.class_weight = Tensor::from_vector(std::vector<float>(weights.begin(), weights.end()), {K}).to(device);

  // Optimizer and schedule.
  const double lr = c.at("lr").get<double>();
  auto groups = nn::make_param_groups(*model, lr, c.at("weight_decay").get<double>());
  std::unique_ptr<nn::Optimizer> opt;
  const std::string oname = c.at("optimizer").get<std::string>();
  if (oname == "sgd") {
    nn::SgdOptions so;
    so.momentum = c.at("momentum").get<double>();
    opt = std::make_unique<nn::SGD>(std::move(groups), so);
  } else if (oname == "adam") {
    opt = std::make_unique<nn::Adam>(std::move(groups), nn::AdamOptions{});
  } else {
    opt = nn::make_adamw(std::move(groups), nn::AdamOptions{});
  }
  std::unique_ptr<nn::LRScheduler> sched;
  std::unique_ptr<nn::ReduceLROnPlateau> plateau;
  const std::string sname = c.at("schedule").get<std::string>();
  std::string monitor = c.at("monitor").get<std::string>();
  if (monitor == "auto") monitor = K == 2 ? "val_auc" : "val_accuracy";
  const int64_t total_steps = epochs * spe;
  if (sname == "cosine") {
    const auto warm = static_cast<int64_t>(std::llround(c.at("warmup_epochs").get<double>() * spe));
    sched = std::make_unique<nn::CosineWarmupLR>(*opt, std::min(warm, total_steps), total_steps, c.at("min_lr").get<double>(), 0.1);
  } else if (sname == "onecycle") {
    sched = std::make_unique<nn::OneCycleLR>(*opt, std::max<int64_t>(total_steps, 2));
  } else if (sname == "step") {
    sched = std::make_unique<nn::StepLR>(*opt, c.at("step_size").get<int64_t>() * spe, c.at("gamma").get<double>());
  } else if (sname == "plateau") {
    if (c.at("gamma").get<double>() >= 1) throw ValueError("--gamma must be below 1 for --schedule plateau");
    plateau = std::make_unique<nn::ReduceLROnPlateau>(
        *opt, monitor == "val_loss" ? nn::ReduceLROnPlateau::Mode::min : nn::ReduceLROnPlateau::Mode::max,
        c.at("gamma").get<double>(), c.at("plateau_patience").get<int64_t>(), 1e-4, lr * 1e-4);
  }

  State st;
  if (resuming) {
    st = state_from_json(ckpt_meta.at("state"));
    std::map<std::string, Tensor> os;
    for (const auto& [k, t] : ckpt_tensors)
      if (k.rfind("optim.", 0) == 0) os[k.substr(6)] = t;
    opt->load_state(os, ckpt_meta.at("optimizer_steps").get<int64_t>());
    if (sched) sched->set_step(ckpt_meta.at("schedule_step").get<int64_t>());
    if (plateau) {
      const json& p = ckpt_meta.at("plateau");
      plateau->restore(from_num(p.at("best")), p.at("bad").get<int64_t>(), p.at("has_best").get<bool>());
      opt->set_lr(ckpt_meta.at("lr").get<double>());
    }
    if (st.batch > spe) throw ValueError("checkpoint position (batch " + std::to_string(st.batch) + ") is past the epoch's " +
                                         std::to_string(spe) + " batches");
    ckpt_tensors.clear();
  }

  fs::create_directories(ckdir, ec);
  if (ec) throw FileError(ckdir.string() + ": cannot create: " + ec.message());
  write_file_atomic((run / "config.json").string(), c.dump(2) + "\n");

  const std::string model_path = (run / "model.safetensors").string();
  auto model_info = [&](const json& extra) {
    nn::ModelInfo info;
    info.class_names = names;
    info.mean.assign(pipe.mean.begin(), pipe.mean.end());
    info.stddev.assign(pipe.stddev.begin(), pipe.stddev.end());
    info.training = extra;
    return info;
  };
  auto save_checkpoint = [&](const std::string& path) {
    std::map<std::string, Tensor> t;
    for (const auto& [k, v] : model->state_dict()) t["model." + k] = v.to(Device::cpu());
    for (const auto& [k, v] : opt->state()) t["optim." + k] = v.to(Device::cpu());
    json rng = json::object();
    for (auto& [path2, drop] : dropouts(*model)) rng[path2] = {drop->generator().seed(), drop->generator().offset()};
    json meta = {{"format", kCheckpointFormat},
                 {"engine_version", CXR_VERSION_STRING},
                 {"written", now_stamp("%Y-%m-%dT%H:%M:%S%z")},
                 {"config", c},
                 {"spec", spec},
                 {"data", data_info},
                 {"state", state_json(st)},
                 {"optimizer_steps", opt->steps()},
                 {"schedule_step", sched ? sched->last_step() : 0},
                 {"lr", opt->lr()},
                 {"dropout_rng", rng}};
    if (plateau) meta["plateau"] = {{"best", num(plateau->best())}, {"bad", plateau->bad_epochs()}, {"has_best", plateau->has_best()}};
    nn::save_safetensors(path, t, {{"cxr.checkpoint", meta.dump()}});
  };

  Progress progress(opts.progress, epochs);
  // Epoch summaries always go to stdout; --progress governs only the bar.
  {
    std::printf("training %s (%lld parameters) on %s: %lld train / %lld val images, %lld classes, %lld epochs of %lld steps%s\n",
                model_name.c_str(), static_cast<long long>(model->num_parameters()), device.str().c_str(),
                static_cast<long long>(d.train.size()), static_cast<long long>(d.val.size()), static_cast<long long>(K),
                static_cast<long long>(epochs), static_cast<long long>(spe),
                resuming ? (", resuming at epoch " + std::to_string(st.epoch + 1) + " batch " + std::to_string(st.batch)).c_str() : "");
    std::printf("run directory: %s\n", run.string().c_str());
    std::fflush(stdout);
  }

  SignalScope signals;
  TrainResult res;
  res.run_dir = run.string();
  res.model_path = model_path;
  res.report_path = (run / "report.html").string();
  res.monitor = monitor;
  const int64_t ckpt_every = c.at("checkpoint_every").get<int64_t>();
  int64_t steps_here = 0;
  const std::vector<Tensor> params = model->parameters();
  const double clip_grad = c.at("clip_grad").get<double>();

  while (st.epoch < epochs && !st.stopped_early) {
    const int64_t e = st.epoch;
    model->train();
    train_loader.start_epoch(e, st.batch);
    progress.start("train", e + 1, spe, st.batch);
    const double t0 = now_s() - st.epoch_seconds;
    data::Batch batch;
    bool stop = false;
    while (train_loader.next(batch)) {
      opt->zero_grad();
      Tensor logits = model->forward(batch.images);
      Tensor loss = nn::cross_entropy(logits, batch.labels, ce);
      nn::backward(loss);
      if (clip_grad > 0) nn::clip_grad_norm(params, clip_grad);
      opt->step();
      if (sched) sched->step();
      const int64_t m = logits.shape()[0];
      const double lv = loss.item();
      if (!std::isfinite(lv))
        throw Error("the training loss became " + fmt("%g", lv) + " at epoch " + std::to_string(e + 1) + ", step " +
                    std::to_string(st.global_step + 1) + ": lower --lr or set --clip-grad");
      st.loss_sum += lv * static_cast<double>(m);
      const auto lg = logits.detach().to(Device::cpu()).to_vector();
      const auto y = batch.labels.to(Device::cpu()).to(DType::f64).to_vector();
      for (int64_t i = 0; i < m; ++i) {
        const auto row = lg.begin() + i * K;
        st.correct += (std::max_element(row, row + K) - row) == static_cast<int64_t>(y[static_cast<size_t>(i)]);
      }
      st.seen += m;
      st.batch = batch.number + 1;
      ++st.global_step;
      ++steps_here;
      progress.update(st.batch, st.seen, st.loss_sum / static_cast<double>(st.seen));
      stop = g_signal.load() != 0 || (opts.max_steps > 0 && steps_here >= opts.max_steps);
      if (stop || (ckpt_every > 0 && st.global_step % ckpt_every == 0 && st.batch < spe)) {
        st.epoch_seconds = now_s() - t0;
        save_checkpoint((ckdir / "last.ckpt").string());
      }
      if (stop) break;
    }
    progress.clear();
    if (stop) {
      res.interrupted = true;
      std::printf("stopped at epoch %lld, batch %lld; checkpoint written. Continue with: cxr train --resume %s\n",
                    static_cast<long long>(e + 1), static_cast<long long>(st.batch), run.string().c_str());
      break;
    }
    if (st.seen == 0) throw Error("no training image of epoch " + std::to_string(e + 1) + " could be read");
    const double train_s = now_s() - t0;
    const auto skipped = train_loader.stats().skipped;
    const Eval v = evaluate(*model, val_loader, K, names, progress, e + 1);
    const double secs = now_s() - t0;
    json row = {{"epoch", e + 1},
                {"train_loss", st.loss_sum / static_cast<double>(st.seen)},
                {"train_accuracy", static_cast<double>(st.correct) / static_cast<double>(st.seen)},
                {"val_loss", v.loss},
                {"val_accuracy", v.accuracy},
                {"val_auc", num(v.auc)},
                {"lr", opt->lr()},
                {"seconds", secs},
                {"images_per_s", st.seen / std::max(train_s, 1e-9)}};
    const double mv = monitor == "val_loss" ? v.loss : monitor == "val_accuracy" ? v.accuracy : v.auc;
    const bool improved = better(monitor, mv, st);
    if (improved) {
      st.has_best = true;
      st.best = mv;
      st.best_epoch = e + 1;
      st.bad_epochs = 0;
    } else {
      ++st.bad_epochs;
    }
    if (plateau && std::isfinite(mv)) plateau->report(mv);
    st.history.push_back(row);
    st.epoch = e + 1;
    st.batch = 0;
    st.loss_sum = 0;
    st.correct = st.seen = 0;
    st.epoch_seconds = 0;
    const int64_t patience = c.at("patience").get<int64_t>();
    if (patience > 0 && st.bad_epochs >= patience && st.epoch < epochs) st.stopped_early = true;
    // Files: the best model first, then the checkpoints, then the history.
    if (improved) {
      nn::save_model(model_path, *model, model_info({{"epoch", e + 1}, {monitor, num(mv)}, {"data", data_info}}));
      save_checkpoint((ckdir / "best.ckpt").string());
    }
    save_checkpoint((ckdir / "last.ckpt").string());
    write_history_csv((run / "history.csv").string(), st.history);
    {
      std::printf("epoch %lld/%lld  train loss %s acc %s  val loss %s acc %s auc %s  lr %.2e  %.1f s%s%s\n",
                  static_cast<long long>(e + 1), static_cast<long long>(epochs),
                  fmt("%.4f", row["train_loss"].get<double>()).c_str(), fmt("%.3f", row["train_accuracy"].get<double>()).c_str(),
                  fmt("%.4f", v.loss).c_str(), fmt("%.3f", v.accuracy).c_str(), fmt("%.3f", v.auc).c_str(), opt->lr(), secs,
                  skipped > 0 ? (" (" + std::to_string(skipped) + " unreadable images skipped)").c_str() : "",
                  improved ? "  *" : "");
      if (st.stopped_early)
        std::printf("early stop: %s has not improved for %lld epochs (best %s at epoch %lld)\n", monitor.c_str(),
                    static_cast<long long>(patience), fmt("%.4f", st.best).c_str(), static_cast<long long>(st.best_epoch));
      std::fflush(stdout);
    }
    if (g_signal.load() != 0) {
      res.interrupted = true;
      break;
    }
  }
  res.epochs_completed = st.epoch;
  res.best_epoch = st.best_epoch;
  res.best_value = st.best;
  res.stopped_early = st.stopped_early;
  if (res.interrupted) return res;

  // The best model on val (and test): metrics.json, report.html, and the model file's summary.
  nn::LoadedModel best = nn::load_model(model_path);
  best.model->to(device);
  const Eval bv = evaluate(*best.model, val_loader, K, names, progress, st.best_epoch);
  const metrics::EvalReport vr = full_report(bv, names, seed);
  json mj = {{"monitor", monitor},
             {"best_epoch", st.best_epoch},
             {"best_value", num(st.best)},
             {"epochs_completed", st.epoch},
             {"stopped_early", st.stopped_early},
             {"class_names", names},
             {"data", data_info},
             {"val", metrics::to_json(vr)}};
  std::optional<metrics::EvalReport> tr;
  if (d.has_test && d.test.size() > 0) {
    data::Loader test_loader(d.test, vo);
    const Eval te = evaluate(*best.model, test_loader, K, names, progress, st.best_epoch);
    tr = full_report(te, names, seed);
    mj["test"] = metrics::to_json(*tr);
  }
  write_file_atomic((run / "metrics.json").string(), mj.dump(2) + "\n");

  json summary = {{"epochs", st.epoch}, {"best_epoch", st.best_epoch}, {"monitor", monitor}, {"best_value", num(st.best)},
                  {"val_accuracy", bv.accuracy}, {"val_auc", num(bv.auc)}, {"data", data_info}, {"config", c}};
  if (tr) summary["test"] = {{"cases", tr->num_cases}};
  nn::save_model(model_path, *best.model, model_info(summary));

  // Report.
  report::Document doc("Training report: " + model_name);
  doc.key_values("Run", {{"run directory", run.string()},
                         {"model", c.at("model").get<std::string>() + " (" + std::to_string(model->num_parameters()) + " parameters)"},
                         {"data", d.source},
                         {"images", std::to_string(d.train.size()) + " train, " + std::to_string(d.val.size()) + " val" +
                                        (d.has_test ? ", " + std::to_string(d.test.size()) + " test" : "")},
                         {"classes", [&] {
                            std::string s;
                            for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
                            return s;
                          }()},
                         {"epochs", std::to_string(st.epoch) + (st.stopped_early ? " (stopped early)" : "")},
                         {"best epoch", std::to_string(st.best_epoch) + " (" + monitor + " " + fmt("%.4f", st.best) + ")"},
                         {"optimizer", oname + ", lr " + fmt("%g", lr) + ", " + sname + " schedule, batch " +
                                           std::to_string(lo.batch_size)},
                         {"device", device.str()},
                         {"engine", std::string("cxr ") + CXR_VERSION_STRING}});
  auto series = [&](const char* key, const char* label) {
    report::Series s;
    s.name = label;
    for (const auto& r : st.history) {
      s.x.push_back(r.at("epoch").get<double>());
      s.y.push_back(from_num(r.at(key)));
    }
    return s;
  };
  doc.line_chart({"Loss", "epoch", "cross-entropy", {series("train_loss", "train"), series("val_loss", "validation")}, false});
  doc.line_chart({"Accuracy", "epoch", "accuracy", {series("train_accuracy", "train"), series("val_accuracy", "validation")}, true});
  if (K == 2 || std::any_of(st.history.begin(), st.history.end(), [](const json& r) { return r.at("val_auc").is_number(); }))
    doc.line_chart({"Validation ROC-AUC", "epoch", "AUC", {series("val_auc", "validation")}, true});
  doc.line_chart({"Learning rate", "epoch", "lr (end of epoch)", {series("lr", "lr")}, false});
  doc.evaluation(vr, "Validation set, best model (epoch " + std::to_string(st.best_epoch) + ")");
  if (tr) doc.evaluation(*tr, "Test set, best model");
  doc.write(res.report_path);
  {
    std::printf("best %s %s at epoch %lld; val accuracy %s, AUC %s", monitor.c_str(), fmt("%.4f", st.best).c_str(),
                static_cast<long long>(st.best_epoch), fmt("%.4f", bv.accuracy).c_str(), fmt("%.4f", bv.auc).c_str());
    if (tr) {
      std::printf("; test set (%lld images):", static_cast<long long>(tr->num_cases));
      for (const auto& m : tr->metrics)
        if (m.name == "accuracy" || m.name == "roc_auc" || m.name == "macro_auc")
          std::printf(" %s %s", m.name.c_str(), fmt("%.4f", m.value.estimate).c_str());
    }
    std::printf("\nmodel: %s\nreport: %s\n", model_path.c_str(), res.report_path.c_str());
  }
  return res;
}

}  // namespace cxr::train
