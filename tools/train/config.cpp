// Training settings: the table, parsing of values, config files, environment, checks.
#include "tools/train/config.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#if __has_include(<toml++/toml.hpp>)
#include <toml++/toml.hpp>
#else
#include <toml++/toml.h>
#endif

#include "runtime/error.h"


namespace cxr::train {

using nlohmann::json;

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table = {
      // data
      {"data", Kind::string, "", "ImageFolder root: with train/ and val/ (and test/) folders, or class folders split by --val-split", "data"},
      {"train_csv", Kind::string, "", "CSV (path,label) of training images, paths relative to the CSV (instead of --data)", "data"},
      {"val_csv", Kind::string, "", "CSV (path,label) of validation images", "data"},
      {"test_csv", Kind::string, "", "CSV (path,label) of test images, evaluated once with the best model", "data"},
      {"val_split", Kind::number, 0.15, "fraction of each class held out for validation when there is no val set", "data"},
      {"image_size", Kind::integer, 224, "images are resized to SIZE x SIZE", "data"},
      {"channels", Kind::integer, 1, "1 (grayscale) or 3 (RGB)", "data"},
      {"workers", Kind::integer, 0, "image decoding threads (0: one per core)", "data"},
      // model
      {"model", Kind::string, "simple_cnn", "architecture from the zoo (simple_cnn, resnet18, resnet34, resnet50, mobilenet_v2) or a JSON spec file", "model"},
      // optimization
      {"epochs", Kind::integer, 10, "passes over the training set", "optimization"},
      {"batch_size", Kind::integer, 32, "images per step", "optimization"},
      {"optimizer", Kind::string, "adamw", "sgd, adam or adamw", "optimization"},
      {"lr", Kind::number, 1e-3, "peak learning rate", "optimization"},
      {"momentum", Kind::number, 0.9, "SGD momentum", "optimization"},
      {"weight_decay", Kind::number, 1e-4, "weight decay (not applied to biases and BatchNorm)", "optimization"},
      {"schedule", Kind::string, "cosine", "cosine (per step, after warmup), onecycle, step, plateau or constant", "optimization"},
      {"warmup_epochs", Kind::number, 0.0, "linear warmup length for cosine, in epochs (fractions allowed)", "optimization"},
      {"min_lr", Kind::number, 0.01, "cosine: final learning rate as a fraction of --lr", "optimization"},
      {"step_size", Kind::integer, 10, "step: epochs between decays", "optimization"},
      {"gamma", Kind::number, 0.1, "step and plateau: decay factor", "optimization"},
      {"plateau_patience", Kind::integer, 2, "plateau: epochs without improvement before decaying", "optimization"},
      {"label_smoothing", Kind::number, 0.0, "cross-entropy label smoothing in [0, 1)", "optimization"},
      {"class_weights", Kind::string, "none", "none, auto (balanced: N / (K n_c)) or comma-separated weights", "optimization"},
      {"clip_grad", Kind::number, 0.0, "clip the gradient's global L2 norm to this (0: off)", "optimization"},
      // augmentation
      {"augment", Kind::boolean, true, "augment training images (the settings below)", "augmentation"},
      {"rotation", Kind::number, 10.0, "random rotation, degrees", "augmentation"},
      {"shift", Kind::number, 0.05, "random shift, fraction of the size", "augmentation"},
      {"zoom", Kind::number, 0.1, "random zoom: scale in [1-z, 1+z]", "augmentation"},
      {"hflip", Kind::boolean, false, "random horizontal flips (off: chest X-rays are not mirror-symmetric)", "augmentation"},
      {"brightness", Kind::number, 0.1, "brightness factor in [1-r, 1+r]", "augmentation"},
      {"contrast", Kind::number, 0.1, "contrast factor in [1-r, 1+r]", "augmentation"},
      {"noise", Kind::number, 0.0, "Gaussian noise standard deviation", "augmentation"},
      {"erase", Kind::number, 0.0, "random erasing probability", "augmentation"},
      // run
      {"out", Kind::string, "", "run directory (default runs/<model>-<date>-<time>)", "run"},
      {"monitor", Kind::string, "auto", "metric for the best checkpoint and early stopping: val_loss, val_accuracy, val_auc, or auto (val_auc for two classes, else val_accuracy)", "run"},
      {"patience", Kind::integer, 0, "stop after this many epochs without improvement of --monitor (0: never)", "run"},
      {"checkpoint_every", Kind::integer, 0, "also write the last checkpoint every N steps (0: at epoch ends only)", "run"},
      {"seed", Kind::integer, 1, "seed for initialisation, data order, augmentation and dropout", "run"},
      {"device", Kind::string, "auto", "auto, cpu or cuda", "run"},
      {"threads", Kind::integer, 0, "compute threads (0: one per core)", "run"},
  };
  return table;
}

const Setting* find_setting(const std::string& key) {
  for (const Setting& s : settings())
    if (s.key == key) return &s;
  return nullptr;
}

std::string flag_name(const std::string& key) {
  std::string f = "--" + key;
  for (char& c : f)
    if (c == '_') c = '-';
  return f;
}

std::string env_name(const std::string& key) {
  std::string e = "CXR_" + key;
  for (char& c : e) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return e;
}

json default_config() {
  json c = json::object();
  for (const Setting& s : settings()) c[s.key] = s.def;
  return c;
}

namespace {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::integer: return "an integer";
    case Kind::number: return "a number";
    case Kind::string: return "a string";
    case Kind::boolean: return "true or false";
  }
  return "?";
}

// A JSON value of the right kind, or a ValueError.
json coerce(const Setting& s, const json& v, const std::string& source) {
  auto bad = [&] {
    return ValueError(source + ": '" + s.key + "' must be " + kind_name(s.kind) + ", got " + v.dump());
  };
  switch (s.kind) {
    case Kind::integer:
      if (v.is_number_integer()) return v;
      if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::abs(v.get<double>()) < 9e15)
        return json(static_cast<int64_t>(v.get<double>()));
      throw bad();
    case Kind::number:
      if (v.is_number() && std::isfinite(v.get<double>())) return json(v.get<double>());
      throw bad();
    case Kind::string:
      if (v.is_string()) return v;
      throw bad();
    case Kind::boolean:
      if (v.is_boolean()) return v;
      throw bad();
  }
  throw bad();
}

json toml_to_json(const toml::node& n, const std::string& where) {
  if (auto* v = n.as_integer()) return json(v->get());
  if (auto* v = n.as_floating_point()) return json(v->get());
  if (auto* v = n.as_boolean()) return json(v->get());
  if (auto* v = n.as_string()) return json(v->get());
  throw ValueError(where + ": unsupported TOML value (use numbers, strings and booleans)");
}

void flatten_toml(const toml::table& t, const std::string& path, json& out) {
  for (const auto& [k, node] : t) {
    const std::string key(k.str());
    if (const auto* sub = node.as_table()) {
      flatten_toml(*sub, path, out);
      continue;
    }
    if (out.contains(key)) throw ValueError(path + ": '" + key + "' is set twice");
    out[key] = toml_to_json(node, path + ": '" + key + "'");
  }
}

}  // namespace

json parse_setting(const Setting& s, const std::string& text, const std::string& source) {
  auto bad = [&] { return ValueError(source + ": '" + text + "' is not " + kind_name(s.kind)); };
  switch (s.kind) {
    case Kind::string: return json(text);
    case Kind::boolean: {
      std::string t;
      for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (t == "true" || t == "1" || t == "yes" || t == "on") return json(true);
      if (t == "false" || t == "0" || t == "no" || t == "off") return json(false);
      throw bad();
    }
    case Kind::integer: {
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || errno != 0 || *end != '\0') throw bad();
      return json(static_cast<int64_t>(v));
    }
    case Kind::number: {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(v)) throw bad();
      return json(v);
    }
  }
  throw bad();
}

json read_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw FileError(path + ": no such config file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) throw FileError(path + ": cannot read");
  const std::string text = ss.str();
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  json out = json::object();
  if (ext == ".toml") {
    try {
      flatten_toml(toml::parse(text, path), path, out);
    } catch (const toml::parse_error& e) {
      std::ostringstream msg;
      msg << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
      throw ValueError(msg.str());
    }
  } else if (ext == ".json") {
    try {
      out = json::parse(text);
    } catch (const json::parse_error& e) {
      throw ValueError(path + ": invalid JSON: " + e.what());
    }
    if (!out.is_object()) throw ValueError(path + ": expected a JSON object of settings");
  } else {
    throw ValueError(path + ": config files must end in .json or .toml");
  }
  return out;
}

json config_from_env(const std::map<std::string, std::string>* env) {
  json out = json::object();
  for (const Setting& s : settings()) {
    const std::string name = env_name(s.key);
    std::string value;
    if (env != nullptr) {
      auto it = env->find(name);
      if (it == env->end()) continue;
      value = it->second;
    } else {
      const char* v = std::getenv(name.c_str());
      if (v == nullptr) continue;
      value = v;
    }
    out[s.key] = parse_setting(s, value, "environment variable " + name);
  }
  return out;
}

void merge_config(json& base, const json& over, const std::string& source) {
  if (!over.is_object()) throw ValueError(source + ": expected an object of settings");
  for (const auto& [k, v] : over.items()) {
    const Setting* s = find_setting(k);
    if (s == nullptr) throw ValueError(source + ": unknown setting '" + k + "' ('cxr train --help' lists them)");
    base[k] = coerce(*s, v, source);
  }
}

void validate_config(const json& c) {
  auto i = [&](const char* k) { return c.at(k).get<int64_t>(); };
  auto d = [&](const char* k) { return c.at(k).get<double>(); };
  auto str = [&](const char* k) { return c.at(k).get<std::string>(); };
  auto fail = [](const std::string& key, const std::string& what) {
    return ValueError(flag_name(key) + " " + what);
  };
  auto one_of = [&](const char* k, std::initializer_list<const char*> ok) {
    const std::string v = str(k);
    std::string list;
    for (const char* o : ok) {
      if (v == o) return;
      list += (list.empty() ? "" : ", ") + std::string(o);
    }
    throw fail(k, "must be one of " + list + "; got '" + v + "'");
  };
  if (i("epochs") < 1) throw fail("epochs", "must be >= 1");
  if (i("batch_size") < 1) throw fail("batch_size", "must be >= 1");
  if (i("image_size") < 8 || i("image_size") > 4096) throw fail("image_size", "must be in [8, 4096]");
  if (i("channels") != 1 && i("channels") != 3) throw fail("channels", "must be 1 or 3");
  if (i("workers") < 0) throw fail("workers", "must be >= 0");
  if (i("threads") < 0) throw fail("threads", "must be >= 0");
  if (!(d("lr") > 0)) throw fail("lr", "must be > 0");
  if (d("momentum") < 0 || d("momentum") >= 1) throw fail("momentum", "must be in [0, 1)");
  if (d("weight_decay") < 0) throw fail("weight_decay", "must be >= 0");
  if (d("warmup_epochs") < 0) throw fail("warmup_epochs", "must be >= 0");
  if (d("min_lr") < 0 || d("min_lr") > 1) throw fail("min_lr", "must be in [0, 1]");
  if (i("step_size") < 1) throw fail("step_size", "must be >= 1");
  if (!(d("gamma") > 0 && d("gamma") <= 1)) throw fail("gamma", "must be in (0, 1]");
  if (i("plateau_patience") < 0) throw fail("plateau_patience", "must be >= 0");
  if (d("label_smoothing") < 0 || d("label_smoothing") >= 1) throw fail("label_smoothing", "must be in [0, 1)");
  if (d("clip_grad") < 0) throw fail("clip_grad", "must be >= 0");
  if (d("val_split") < 0 || d("val_split") >= 1) throw fail("val_split", "must be in [0, 1)");
  if (i("patience") < 0) throw fail("patience", "must be >= 0");
  if (i("checkpoint_every") < 0) throw fail("checkpoint_every", "must be >= 0");
  if (i("seed") < 0) throw fail("seed", "must be >= 0");
  one_of("optimizer", {"sgd", "adam", "adamw"});
  one_of("schedule", {"cosine", "onecycle", "step", "plateau", "constant"});
  one_of("monitor", {"auto", "val_loss", "val_accuracy", "val_auc"});
  one_of("device", {"auto", "cpu", "cuda"});
  if (str("data").empty() && str("train_csv").empty()) throw ValueError("no training data: give --data DIR or --train-csv FILE");
  if (!str("data").empty() && !str("train_csv").empty()) throw ValueError("give either --data or --train-csv, not both");
}

}  // namespace cxr::train
