// `cxr validate`: builds a model from a JSON spec, a model file or a zoo name, runs one
// forward pass on zeros and prints every layer's output shape, parameters, FLOPs and
// activation memory (nn/summary.h), or the same as JSON with --json. An inconsistent
// spec fails with the zoo's error, which names the offending layer.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "nn/serialize.h"
#include "nn/summary.h"
#include "nn/zoo.h"
#include "runtime/error.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kMaxChannels = 4096, kMaxSide = 65536, kMaxBatch = 1 << 20;

struct ValidateArgs {
  std::string source;
  std::string input;
  int64_t batch = 1;
  int64_t classes = 0;  // 0: the spec's (2 for a zoo name)
  bool json = false;
  int depth = -1;
};

struct InputSize {
  std::optional<int64_t> channels;
  int64_t height = 0, width = 0;
};

// "CxHxW" or "HxW".
InputSize parse_input(const std::string& text) {
  const std::string usage = "--input must be CxHxW or HxW with positive integers (e.g. 1x224x224), got '" + text + "'";
  std::vector<int64_t> dims;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, 'x')) {
    if (part.empty() || part.size() > 9) throw UsageError(usage);
    for (char c : part)
      if (!std::isdigit(static_cast<unsigned char>(c))) throw UsageError(usage);
    dims.push_back(std::stoll(part));
  }
  if (text.empty() || text.back() == 'x' || (dims.size() != 2 && dims.size() != 3)) throw UsageError(usage);
  for (int64_t d : dims)
    if (d < 1) throw UsageError(usage);
  InputSize s;
  if (dims.size() == 3) s.channels = dims[0];
  s.height = dims[dims.size() - 2];
  s.width = dims.back();
  if (s.channels && *s.channels > kMaxChannels)
    throw UsageError(detail::cat("--input: at most ", kMaxChannels, " channels, got ", *s.channels));
  if (s.height > kMaxSide || s.width > kMaxSide)
    throw UsageError(detail::cat("--input: height and width must be at most ", kMaxSide, ", got ", text));
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open for reading");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw FileError(path + ": read error");
  return os.str();
}

std::string known_archs() {
  std::string names;
  for (const std::string& n : nn::zoo_architectures()) names += (names.empty() ? "" : ", ") + n;
  return names;
}

bool is_model_file(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".safetensors") return true;
  if (ext == ".json") return false;
  // Otherwise by content: a spec starts with '{', a safetensors file with its header length.
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c))
    if (!std::isspace(static_cast<unsigned char>(c))) return c != '{';
  return false;
}

// What to summarise and how it was described.
struct Resolved {
  std::shared_ptr<nn::Model> model;
  std::string kind;   // "zoo", "spec", "file"
  std::string label;  // for the text header
  int64_t channels = 0, height = 0, width = 0;  // the input size to summarise at
  json info;          // the "model" object of --json
};

// Applies --input / --classes to a spec (so the zoo validates the model at that size).
void apply_overrides(json& spec, const InputSize* in, int64_t classes) {
  if (in != nullptr) {
    if (in->channels) spec["in_channels"] = *in->channels;
    spec["input_size"] = {in->height, in->width};
  }
  if (classes > 0) spec["num_classes"] = classes;
}

Resolved resolve(const ValidateArgs& a, const InputSize* in) {
  Resolved r;
  const std::string& src = a.source;
  std::error_code ec;
  const bool exists = fs::exists(src, ec);
  const auto zoo = nn::zoo_architectures();
  if (!exists && std::find(zoo.begin(), zoo.end(), src) != zoo.end()) {
    json spec = nn::arch_spec(src, 1, 2, 224, 224);
    apply_overrides(spec, in, a.classes);
    r.model = nn::build_model(spec);
    r.kind = "zoo";
    r.label = "zoo architecture";
  } else if (!exists) {
    throw FileError(src + ": no such file, and not a zoo architecture (" + known_archs() + ")");
  } else if (fs::is_directory(src, ec)) {
    throw FileError(src + ": is a directory; expected a model spec (.json), a model file (.safetensors) or a zoo name");
  } else if (is_model_file(src)) {
    if (a.classes > 0) throw UsageError("--classes applies to specs and zoo names, not to a model file");
    nn::LoadedModel loaded = nn::load_model(src);
    r.model = loaded.model;
    if (in != nullptr) {
      if (in->channels && *in->channels != r.model->in_channels())
        throw UsageError(detail::cat("--input has ", *in->channels, " channels but ", src, " takes ",
                                     r.model->in_channels()));
      // Check the architecture at the new size with the zoo's checks, which name the layer.
      json spec = r.model->spec();
      apply_overrides(spec, in, 0);
      nn::build_model(spec);
    }
    r.kind = "file";
    std::string classes;
    for (const std::string& c : loaded.info.class_names) classes += (classes.empty() ? "" : ", ") + c;
    r.label = "model file " + src + ", classes " + classes;
    r.info["class_names"] = loaded.info.class_names;
    r.info["engine_version"] = loaded.engine_version;
  } else {
    json spec;
    try {
      spec = json::parse(read_text(src));
    } catch (const json::parse_error& e) {
      throw FileError(src + ": not valid JSON: " + e.what());
    }
    apply_overrides(spec, in, a.classes);
    r.model = nn::build_model(spec);
    r.kind = "spec";
    r.label = "spec file " + src;
  }
  const json& spec = r.model->spec();
  const std::string arch = spec.contains("arch") && spec["arch"].is_string() ? spec["arch"].get<std::string>() : "custom";
  r.label = arch + " (" + r.label + ")";
  r.channels = r.model->in_channels();
  r.height = in != nullptr ? in->height : r.model->input_height();
  r.width = in != nullptr ? in->width : r.model->input_width();
  r.info["source"] = src;
  r.info["kind"] = r.kind;
  r.info["arch"] = arch;
  r.info["in_channels"] = r.model->in_channels();
  r.info["num_classes"] = r.model->num_classes();
  r.info["input_size"] = {r.height, r.width};
  if (r.kind == "file") r.info["file_input_size"] = {r.model->input_height(), r.model->input_width()};
  return r;
}

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<ValidateArgs>();
  app.add_option("model", a->source, "a model spec (.json), a model file (.safetensors) or a zoo name (" +
                                         known_archs() + ")")
      ->required();
  app.add_option("--input", a->input,
                 "input size CxHxW or HxW (default: the spec's in_channels and input_size; 1x224x224 for a zoo name)");
  app.add_option("-b,--batch", a->batch, "batch size")->check(CLI::Range(int64_t(1), kMaxBatch))->capture_default_str();
  app.add_option("--classes", a->classes, "number of classes (default: the spec's; 2 for a zoo name)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  app.add_flag("--json", a->json, "print the summary as JSON (every row; --depth does not apply)");
  app.add_option("--depth", a->depth, "show rows nested at most this deep in the table (0: top-level layers only)")
      ->check(CLI::Range(0, 64));
  app.footer(
      "FLOPs count a multiply-add as 2 (conv, linear); BatchNorm 4 per element; activations, pooling and\n"
      "residual sums 1 per output element. Activation memory is the layer outputs a training step keeps.");

  return [a] {
    std::optional<InputSize> in;
    if (!a->input.empty()) in = parse_input(a->input);
    const Resolved r = resolve(*a, in ? &*in : nullptr);
    const nn::Model& m = *r.model;
    const Shape shape{a->batch, r.channels, r.height, r.width};
    const nn::ModelSummary s = nn::summarize(*r.model, shape, {.one_sample = true});
    if (a->json) {
      json j = nn::summary_to_json(s);
      j["model"] = r.info;
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    std::printf("model: %s, %lld classes, input %lldx%lldx%lld, batch %lld\n\n", r.label.c_str(),
                static_cast<long long>(m.num_classes()), static_cast<long long>(r.channels),
                static_cast<long long>(r.height), static_cast<long long>(r.width),
                static_cast<long long>(a->batch));
    std::fputs(nn::format_summary(s, {.max_depth = a->depth}).c_str(), stdout);
    return 0;
  };
}

}  // namespace

Command validate_command() {
  return {"validate", "check a model spec or file and list its layers: shapes, parameters, FLOPs, memory", setup};
}

}  // namespace cxr::cli
