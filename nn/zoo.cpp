#include "nn/zoo.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "nn/blocks.h"

namespace cxr::nn {

using nlohmann::json;

namespace {

[[noreturn]] void spec_error(const std::string& where, const std::string& what) {
  throw ValueError("model spec: " + where + ": " + what);
}

int64_t get_int(const json& j, const char* key, int64_t def, const std::string& where, int64_t min = 1) {
  if (!j.contains(key)) return def;
  const json& v = j.at(key);
  if (!v.is_number_integer()) spec_error(where, std::string("'") + key + "' must be an integer, got " + v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < min) spec_error(where, std::string("'") + key + "' = " + std::to_string(x) + " must be >= " + std::to_string(min));
  return x;
}

double get_double(const json& j, const char* key, double def, const std::string& where) {
  if (!j.contains(key)) return def;
  const json& v = j.at(key);
  if (!v.is_number()) spec_error(where, std::string("'") + key + "' must be a number, got " + v.dump());
  return v.get<double>();
}

bool get_bool(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key)) return def;
  const json& v = j.at(key);
  if (!v.is_boolean()) spec_error(where, std::string("'") + key + "' must be true or false, got " + v.dump());
  return v.get<bool>();
}

// torchvision's rounding of MobileNet channel counts to multiples of 8.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

json layer(const char* type) { return json{{"type", type}}; }
json named(const char* name, json l) {
  l["name"] = name;
  return l;
}
json conv_l(int64_t out, int64_t k, int64_t s, int64_t p, int64_t groups = 1) {
  json l = {{"type", "conv"}, {"out", out}, {"kernel", k}, {"stride", s}, {"padding", p}, {"bias", false}};
  if (groups != 1) l["groups"] = groups;
  return l;
}

json simple_cnn_layers(const json& spec) {
  const std::string w = "simple_cnn";
  std::vector<int64_t> channels = {32, 64, 128};
  if (spec.contains("channels")) {
    if (!spec["channels"].is_array() || spec["channels"].empty())
      spec_error(w, "'channels' must be a non-empty array of integers");
    channels.clear();
    for (const json& c : spec["channels"]) {
      if (!c.is_number_integer() || c.get<int64_t>() < 1) spec_error(w, "'channels' entries must be positive integers");
      channels.push_back(c.get<int64_t>());
    }
  }
  const int64_t hidden = get_int(spec, "hidden", 128, w, 0);
  const double p = get_double(spec, "dropout", 0.25, w);
  if (!(p >= 0 && p < 1)) spec_error(w, "'dropout' = " + std::to_string(p) + " must be in [0, 1)");
  json layers = json::array();
  for (int64_t c : channels) {
    layers.push_back(conv_l(c, 3, 1, 1));
    layers.push_back(layer("batchnorm"));
    layers.push_back(layer("relu"));
    layers.push_back({{"type", "maxpool"}, {"kernel", 2}, {"stride", 2}});
  }
  layers.push_back(layer("global_avgpool"));
  layers.push_back(layer("flatten"));
  if (hidden > 0) {
    layers.push_back({{"type", "linear"}, {"out", hidden}});
    layers.push_back(layer("relu"));
  }
  if (p > 0) layers.push_back({{"type", "dropout"}, {"p", p}});
  layers.push_back({{"type", "linear"}, {"out", "num_classes"}});
  return layers;
}

json resnet_layers(const std::string& arch, const json& spec, int64_t h, int64_t w) {
  std::vector<int64_t> blocks;
  std::string block = "basic_block";
  if (arch == "resnet18") blocks = {2, 2, 2, 2};
  else if (arch == "resnet34") blocks = {3, 4, 6, 3};
  else { blocks = {3, 4, 6, 3}; block = "bottleneck"; }  // resnet50
  if (spec.contains("stem") && !spec["stem"].is_string())
    spec_error(arch, "'stem' must be auto, imagenet or small, got " + spec["stem"].dump());
  std::string stem = spec.value("stem", "auto");
  if (stem == "auto") stem = std::max(h, w) > 64 ? "imagenet" : "small";
  if (stem != "imagenet" && stem != "small") spec_error(arch, "'stem' must be auto, imagenet or small, got " + stem);
  json layers = json::array();
  if (stem == "imagenet") {
    layers.push_back(named("conv1", conv_l(64, 7, 2, 3)));
    layers.push_back(named("bn1", layer("batchnorm")));
    layers.push_back(named("relu", layer("relu")));
    layers.push_back(named("maxpool", json{{"type", "maxpool"}, {"kernel", 3}, {"stride", 2}, {"padding", 1}}));
  } else {
    layers.push_back(named("conv1", conv_l(64, 3, 1, 1)));
    layers.push_back(named("bn1", layer("batchnorm")));
    layers.push_back(named("relu", layer("relu")));
  }
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int i = 0; i < 4; ++i) {
    json stage = json::array();
    for (int64_t b = 0; b < blocks[i]; ++b)
      stage.push_back({{"type", block}, {"out", widths[i]}, {"stride", (b == 0 && i > 0) ? 2 : 1}});
    const std::string name = "layer" + std::to_string(i + 1);
    layers.push_back({{"name", name}, {"type", "sequential"}, {"layers", stage}});
  }
  layers.push_back(named("avgpool", layer("global_avgpool")));
  layers.push_back(named("flatten", layer("flatten")));
  layers.push_back(named("fc", json{{"type", "linear"}, {"out", "num_classes"}}));
  return layers;
}

json mobilenet_v2_layers(const json& spec) {
  const double wm = get_double(spec, "width_mult", 1.0, "mobilenet_v2");
  if (!(wm > 0)) spec_error("mobilenet_v2", "'width_mult' must be > 0");
  const double p = get_double(spec, "dropout", 0.2, "mobilenet_v2");
  if (!(p >= 0 && p < 1)) spec_error("mobilenet_v2", "'dropout' = " + std::to_string(p) + " must be in [0, 1)");
  // (expand t, channels c, repeats n, first stride s), Sandler et al. Table 2.
  const int64_t cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  json features = json::array();
  const int64_t first = make_divisible(32 * wm);
  const int64_t last = make_divisible(1280 * std::max(1.0, wm));
  features.push_back({{"type", "sequential"},
                      {"layers", {conv_l(first, 3, 2, 1), layer("batchnorm"), layer("relu6")}}});
  for (const auto& r : cfg) {
    const int64_t out = make_divisible(static_cast<double>(r[1]) * wm);
    for (int64_t i = 0; i < r[2]; ++i)
      features.push_back({{"type", "inverted_residual"}, {"out", out}, {"stride", i == 0 ? r[3] : 1}, {"expand", r[0]}});
  }
  features.push_back({{"type", "sequential"}, {"layers", {conv_l(last, 1, 1, 0), layer("batchnorm"), layer("relu6")}}});
  json classifier = json::array();
  if (p > 0) classifier.push_back({{"type", "dropout"}, {"p", p}});
  classifier.push_back({{"type", "linear"}, {"out", "num_classes"}});
  return json::array({{{"name", "features"}, {"type", "sequential"}, {"layers", features}},
                      named("avgpool", layer("global_avgpool")), named("flatten", layer("flatten")),
                      {{"name", "classifier"}, {"type", "sequential"}, {"layers", classifier}}});
}

// Tracks the activation shape while building, to size layers and catch bad specs.
struct Cur {
  int64_t c, h, w;
  bool flat = false;
};

struct Builder {
  Generator& gen;
  uint64_t seed;
  int64_t num_classes;
  int64_t dropout_count = 0;

  void need_spatial(const Cur& cur, const std::string& where) {
    if (cur.flat) spec_error(where, "needs a (C, H, W) input but follows a flatten");
  }

  int64_t out_channels(const json& l, const std::string& where) {
    if (!l.contains("out")) spec_error(where, "missing 'out'");
    if (l["out"].is_string() && l["out"] == "num_classes") return num_classes;
    return get_int(l, "out", 0, where);
  }

  void spatial_after(Cur& cur, int64_t k, int64_t s, int64_t p, int64_t d, const std::string& where) {
    const int64_t h = (cur.h + 2 * p - d * (k - 1) - 1) / s + 1, w = (cur.w + 2 * p - d * (k - 1) - 1) / s + 1;
    if (h < 1 || w < 1 || cur.h + 2 * p < d * (k - 1) + 1 || cur.w + 2 * p < d * (k - 1) + 1)
      spec_error(where, "the " + std::to_string(cur.h) + "x" + std::to_string(cur.w) + " input is smaller than the " +
                            std::to_string(k) + "x" + std::to_string(k) + " window");
    cur.h = h;
    cur.w = w;
  }

  ModulePtr build(const json& l, Cur& cur, const std::string& where) {
    if (!l.is_object() || !l.contains("type") || !l["type"].is_string())
      spec_error(where, "each layer must be an object with a string 'type'");
    const std::string type = l["type"];
    const std::string at = where + " (" + type + ")";
    if (type == "conv") {
      need_spatial(cur, at);
      Conv2dConfig c;
      c.in_channels = cur.c;
      c.out_channels = out_channels(l, at);
      c.kernel = get_int(l, "kernel", 3, at);
      c.stride = get_int(l, "stride", 1, at);
      c.padding = get_int(l, "padding", 0, at, 0);
      c.dilation = get_int(l, "dilation", 1, at);
      c.groups = get_int(l, "groups", 1, at);
      c.bias = get_bool(l, "bias", true, at);
      if (cur.c % c.groups || c.out_channels % c.groups)
        spec_error(at, "channels " + std::to_string(cur.c) + "->" + std::to_string(c.out_channels) +
                           " are not divisible by groups " + std::to_string(c.groups));
      spatial_after(cur, c.kernel, c.stride, c.padding, c.dilation, at);
      cur.c = c.out_channels;
      return std::make_shared<Conv2d>(c, gen);
    }
    if (type == "batchnorm") {
      return std::make_shared<BatchNorm2d>(cur.c, get_double(l, "eps", 1e-5, at), get_double(l, "momentum", 0.1, at));
    }
    if (type == "relu") return std::make_shared<Activation>(cpu::Act::relu);
    if (type == "relu6") return std::make_shared<Activation>(cpu::Act::relu6);
    if (type == "leaky_relu") return std::make_shared<Activation>(cpu::Act::leaky_relu, get_double(l, "slope", 0.01, at));
    if (type == "sigmoid") return std::make_shared<Activation>(cpu::Act::sigmoid);
    if (type == "tanh") return std::make_shared<Activation>(cpu::Act::tanh);
    if (type == "gelu") return std::make_shared<Activation>(cpu::Act::gelu);
    if (type == "silu") return std::make_shared<Activation>(cpu::Act::silu);
    if (type == "maxpool" || type == "avgpool") {
      need_spatial(cur, at);
      const int64_t k = get_int(l, "kernel", 2, at), s = get_int(l, "stride", k, at), p = get_int(l, "padding", 0, at, 0);
      if (2 * p > k) spec_error(at, "padding must be at most half the kernel");
      spatial_after(cur, k, s, p, 1, at);
      if (type == "maxpool") return std::make_shared<MaxPool2d>(k, s, p);
      return std::make_shared<AvgPool2d>(k, s, p);
    }
    if (type == "global_avgpool") {
      need_spatial(cur, at);
      cur.h = cur.w = 1;
      return std::make_shared<GlobalAvgPool2d>();
    }
    if (type == "flatten") {
      if (!cur.flat) cur.c = cur.c * cur.h * cur.w;
      cur.h = cur.w = 1;
      cur.flat = true;
      return std::make_shared<Flatten>();
    }
    if (type == "linear") {
      if (!cur.flat) spec_error(at, "needs a flat (N, features) input: add a flatten layer before it");
      const int64_t out = out_channels(l, at);
      auto m = std::make_shared<Linear>(cur.c, out, get_bool(l, "bias", true, at), gen);
      cur.c = out;
      return m;
    }
    if (type == "dropout") {
      const double p = get_double(l, "p", 0.5, at);
      if (!(p >= 0 && p < 1)) spec_error(at, "'p' must be in [0, 1)");
      // A distinct, reproducible stream per dropout layer.
      return std::make_shared<Dropout>(p, seed * 0x9E3779B97F4A7C15ull + 0x5851F42D4C957F2Dull * ++dropout_count);
    }
    if (type == "basic_block" || type == "bottleneck") {
      need_spatial(cur, at);
      const int64_t out = out_channels(l, at), s = get_int(l, "stride", 1, at);
      spatial_after(cur, 3, s, 1, 1, at);
      ModulePtr m;
      if (type == "basic_block") {
        m = std::make_shared<BasicBlock>(cur.c, out, s, gen);
        cur.c = out;
      } else {
        m = std::make_shared<Bottleneck>(cur.c, out, s, gen);
        cur.c = out * Bottleneck::kExpansion;
      }
      return m;
    }
    if (type == "inverted_residual") {
      need_spatial(cur, at);
      const int64_t out = out_channels(l, at), s = get_int(l, "stride", 1, at), t = get_int(l, "expand", 6, at);
      if (s > 2) spec_error(at, "'stride' must be 1 or 2");
      spatial_after(cur, 3, s, 1, 1, at);
      auto m = std::make_shared<InvertedResidual>(cur.c, out, s, t, gen);
      cur.c = out;
      return m;
    }
    if (type == "sequential") {
      if (!l.contains("layers") || !l["layers"].is_array()) spec_error(at, "needs a 'layers' array");
      auto seq = std::make_shared<Sequential>();
      fill(*seq, l["layers"], cur, at);
      return seq;
    }
    spec_error(at, "unknown layer type '" + type + "'");
  }

  void fill(Sequential& seq, const json& layers, Cur& cur, const std::string& where) {
    for (size_t i = 0; i < layers.size(); ++i) {
      const json& l = layers[i];
      const std::string at = where + ".layers[" + std::to_string(i) + "]";
      ModulePtr m = build(l, cur, at);
      if (l.contains("name")) {
        if (!l["name"].is_string()) spec_error(at, "'name' must be a string");
        seq.add(l["name"].get<std::string>(), m);
      } else {
        seq.push_back(m);
      }
    }
  }
};

}  // namespace

std::vector<std::string> zoo_architectures() {
  return {"simple_cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v2"};
}

json arch_spec(const std::string& arch, int64_t in_channels, int64_t num_classes, int64_t height, int64_t width) {
  return {{"arch", arch}, {"in_channels", in_channels}, {"num_classes", num_classes}, {"input_size", {height, width}}};
}

json model_spec_for(const std::string& model, int64_t in_channels, int64_t num_classes, int64_t size) {
  std::error_code ec;
  const bool is_file = model.size() > 5 && model.compare(model.size() - 5, 5, ".json") == 0;
  if (is_file || std::filesystem::is_regular_file(model, ec)) {
    std::ifstream in(model, std::ios::binary);
    if (!in) throw FileError(model + ": cannot open model spec");
    json spec;
    try {
      spec = json::parse(in);
    } catch (const json::parse_error& e) {
      throw ValueError(model + ": invalid JSON model spec: " + e.what());
    }
    if (!spec.is_object()) throw ValueError(model + ": a model spec must be a JSON object");
    spec["in_channels"] = in_channels;
    spec["num_classes"] = num_classes;
    spec["input_size"] = {size, size};
    return spec;
  }
  const auto archs = zoo_architectures();
  if (std::find(archs.begin(), archs.end(), model) == archs.end()) {
    std::string list;
    for (const auto& a : archs) list += (list.empty() ? "" : ", ") + a;
    throw ValueError("unknown model '" + model + "': choose one of " + list + ", or give a JSON spec file");
  }
  return arch_spec(model, in_channels, num_classes, size, size);
}

json expand_spec(const json& spec) {
  if (!spec.is_object()) spec_error("top level", "a spec must be a JSON object");
  json out = spec;
  const int64_t in_ch = get_int(spec, "in_channels", 1, "top level");
  const int64_t classes = get_int(spec, "num_classes", 2, "top level");
  int64_t h = 224, w = 224;
  if (spec.contains("input_size")) {
    const json& s = spec["input_size"];
    if (s.is_number_integer()) {
      h = w = s.get<int64_t>();
    } else if (s.is_array() && s.size() == 2 && s[0].is_number_integer() && s[1].is_number_integer()) {
      h = s[0].get<int64_t>();
      w = s[1].get<int64_t>();
    } else {
      spec_error("top level", "'input_size' must be an integer or [height, width]");
    }
    if (h < 1 || w < 1) spec_error("top level", "'input_size' must be positive");
  }
  out["in_channels"] = in_ch;
  out["num_classes"] = classes;
  out["input_size"] = {h, w};
  // An explicit layer list wins over "arch": a saved model keeps both (the name for
  // display, the layers for rebuilding), and must rebuild exactly as it was trained even
  // if a named architecture's expansion changes later.
  if (spec.contains("layers")) {
    if (!spec["layers"].is_array() || spec["layers"].empty())
      spec_error("top level", "needs a non-empty 'layers' array");
    if (spec.contains("arch") && !spec["arch"].is_string()) spec_error("top level", "'arch' must be a string");
  } else if (spec.contains("arch")) {
    if (!spec["arch"].is_string()) spec_error("top level", "'arch' must be a string");
    const std::string arch = spec["arch"];
    if (arch == "simple_cnn") out["layers"] = simple_cnn_layers(spec);
    else if (arch == "resnet18" || arch == "resnet34" || arch == "resnet50") out["layers"] = resnet_layers(arch, spec, h, w);
    else if (arch == "mobilenet_v2") out["layers"] = mobilenet_v2_layers(spec);
    else {
      std::string names;
      for (const auto& n : zoo_architectures()) names += (names.empty() ? "" : ", ") + n;
      spec_error("top level", "unknown arch '" + arch + "' (known: " + names + ")");
    }
  } else {
    spec_error("top level", "needs either 'arch' or a non-empty 'layers' array");
  }
  return out;
}

std::shared_ptr<Model> build_model(const json& spec, uint64_t seed) {
  json full = expand_spec(spec);
  auto model = std::make_shared<Model>();
  model->spec_ = full;
  model->in_channels_ = full["in_channels"];
  model->num_classes_ = full["num_classes"];
  model->input_h_ = full["input_size"][0];
  model->input_w_ = full["input_size"][1];
  Generator gen(seed);
  Builder b{gen, seed, model->num_classes_};
  Cur cur{model->in_channels_, model->input_h_, model->input_w_};
  b.fill(*model, full["layers"], cur, "model");
  if (!cur.flat || cur.c != model->num_classes_)
    spec_error("model", "the last layer must produce (N, num_classes = " + std::to_string(model->num_classes_) +
                            ") logits; it produces " +
                            (cur.flat ? std::to_string(cur.c) + " features"
                                      : "a " + std::to_string(cur.c) + "x" + std::to_string(cur.h) + "x" +
                                            std::to_string(cur.w) + " feature map"));
  return model;
}

}  // namespace cxr::nn
