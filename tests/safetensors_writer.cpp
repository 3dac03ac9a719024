// The C++ half of the safetensors interoperability check (tests/check_safetensors.py
// drives it): files written here must load in Hugging Face's `safetensors` package, and
// files that package writes must load here.
//
//   safetensors_writer write DIR
//       DIR/model.safetensors     save_model of a small simple_cnn (after one training-mode
//                                 forward, so BatchNorm buffers are not at their defaults)
//       DIR/tensors.safetensors   save_safetensors of F64, I64 and F32 tensors + metadata
//       DIR/<name>.expected.json  what each file must contain, for the Python side
//   safetensors_writer check FILE EXPECTED_JSON
//       load_safetensors(FILE) must hold exactly the tensors and metadata in EXPECTED_JSON
//   safetensors_writer check-model FILE EXPECTED_JSON
//       load_model(FILE) must give a model whose state dict is the expected tensors and
//       whose class names are EXPECTED_JSON's "class_names"
//
// Expected JSON: {"tensors": {name: {"dtype": "F32"|"F64"|"I64", "shape": [..],
// "values": [..]}}, "metadata": {key: value}, "class_names": [..]}. Values compare
// exactly: both JSON writers print doubles so that they read back bit for bit.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/autograd.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

namespace {

using cxr::DType;
using cxr::Tensor;
using nlohmann::json;

json describe(const Tensor& t) {
  json values = json::array();
  if (t.dtype() == DType::i64) {
    const int64_t* p = t.data<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i) values.push_back(p[i]);
  } else {
    for (double v : t.to_vector()) values.push_back(v);
  }
  return {{"dtype", cxr::nn::safetensors_dtype(t.dtype())}, {"shape", t.shape()}, {"values", values}};
}

json describe_all(const std::map<std::string, Tensor>& tensors) {
  json out = json::object();
  for (const auto& [name, t] : tensors) out[name] = describe(t);
  return out;
}

void write_json(const std::string& path, const json& j) {
  std::ofstream f(path);
  f << j.dump(1) << "\n";
  if (!f) throw std::runtime_error("cannot write " + path);
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read " + path);
  return json::parse(f);
}

void write_files(const std::string& dir) {
  const json spec = {{"arch", "simple_cnn"}, {"in_channels", 1}, {"num_classes", 3}, {"input_size", {16, 16}},
                     {"channels", {4, 8}}, {"hidden", 8}, {"dropout", 0}};
  auto model = cxr::nn::build_model(spec, 7);
  {
    // One training-mode forward moves the running statistics and num_batches_tracked.
    cxr::nn::NoGradGuard ng;
    std::vector<float> x(2 * 16 * 16);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    model->train();
    (*model)(Tensor::from_vector(x, {2, 1, 16, 16}));
  }
  cxr::nn::ModelInfo info;
  info.class_names = {"normal", "pneumonia", "\xc3\xb6" "dema \"quoted\""};  // non-ASCII and quotes survive JSON
  info.mean = {0.25};
  info.stddev = {0.5};
  info.training = {{"epochs", 3}, {"best_val_accuracy", 0.875}};
  const std::string model_path = dir + "/model.safetensors";
  cxr::nn::save_model(model_path, *model, info);
  write_json(model_path + ".expected.json", {{"tensors", describe_all(model->state_dict())},
                                             {"class_names", info.class_names},
                                             {"architecture", model->spec()},
                                             {"mean", info.mean},
                                             {"std", info.stddev},
                                             {"training", info.training}});

  std::vector<double> f64(24);
  for (size_t i = 0; i < f64.size(); ++i) f64[i] = (static_cast<double>(i) - 7.0) / 3.0;
  std::vector<int64_t> i64 = {-(int64_t{1} << 40), -1, 0, 1, (int64_t{1} << 62) + 5, 123456789012345};
  std::map<std::string, Tensor> tensors = {
      {"f64.ramp", Tensor::from_vector(f64, {2, 3, 4})},
      {"i64.big", Tensor::from_vector(i64, {3, 2})},
      {"f32.scalar", Tensor::from_vector(std::vector<float>{-0.1f}, {})},
      {"f32.row", Tensor::from_vector(std::vector<float>{1e-30f, 3.5f, -2.25e20f}, {1, 3})},
      {"f32.empty", Tensor::zeros({2, 0}, DType::f32)},
  };
  const std::map<std::string, std::string> meta = {{"note", "written by cxr"}, {"nested", "{\"a\": [1, 2]}"}};
  const std::string tensors_path = dir + "/tensors.safetensors";
  cxr::nn::save_safetensors(tensors_path, tensors, meta);
  write_json(tensors_path + ".expected.json", {{"tensors", describe_all(tensors)}, {"metadata", meta}});
}

// Compares loaded tensors with the expected description; returns the number of problems.
int compare_tensors(const std::map<std::string, Tensor>& got, const json& expected) {
  int bad = 0;
  auto problem = [&](const std::string& msg) {
    std::fprintf(stderr, "mismatch: %s\n", msg.c_str());
    ++bad;
  };
  for (const auto& [name, t] : got)
    if (!expected.contains(name)) problem("unexpected tensor '" + name + "'");
  for (const auto& [name, e] : expected.items()) {
    auto it = got.find(name);
    if (it == got.end()) {
      problem("missing tensor '" + name + "'");
      continue;
    }
    const Tensor& t = it->second;
    if (e["dtype"] != cxr::nn::safetensors_dtype(t.dtype())) problem(name + ": dtype " + cxr::nn::safetensors_dtype(t.dtype()) + ", expected " + e["dtype"].dump());
    if (e["shape"].get<cxr::Shape>() != t.shape())
      problem(name + ": shape " + cxr::shape_str(t.shape()) + ", expected " + e["shape"].dump());
    if (bad) continue;
    const json& values = e["values"];
    if (values.size() != static_cast<size_t>(t.numel())) {
      problem(name + ": expected JSON lists " + std::to_string(values.size()) + " values");
      continue;
    }
    for (int64_t i = 0; i < t.numel(); ++i) {
      json have;
      if (t.dtype() == DType::i64) have = t.data<int64_t>()[i];
      else if (t.dtype() == DType::f32) have = static_cast<double>(t.data<float>()[i]);
      else have = t.data<double>()[i];
      // Integers compare as integers (int64 values beyond 2^53 must stay exact).
      const bool same = t.dtype() == DType::i64 ? have.get<int64_t>() == values[i].get<int64_t>()
                                                : have.get<double>() == values[i].get<double>();
      if (!same) {
        problem(name + ": element " + std::to_string(i) + " is " + have.dump() + ", expected " + values[i].dump());
        break;
      }
    }
  }
  return bad;
}

int check_file(const std::string& path, const std::string& expected_path) {
  const json expected = read_json(expected_path);
  const cxr::nn::SafetensorsFile f = cxr::nn::load_safetensors(path);
  int bad = compare_tensors(f.tensors, expected["tensors"]);
  const auto meta = expected.value("metadata", json::object()).get<std::map<std::string, std::string>>();
  if (f.metadata != meta) {
    std::fprintf(stderr, "mismatch: metadata %s, expected %s\n", json(f.metadata).dump().c_str(), json(meta).dump().c_str());
    ++bad;
  }
  return bad;
}

int check_model(const std::string& path, const std::string& expected_path) {
  const json expected = read_json(expected_path);
  const cxr::nn::LoadedModel m = cxr::nn::load_model(path);
  int bad = compare_tensors(m.model->state_dict(), expected["tensors"]);
  if (m.info.class_names != expected["class_names"].get<std::vector<std::string>>()) {
    std::fprintf(stderr, "mismatch: class names %s\n", json(m.info.class_names).dump().c_str());
    ++bad;
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "write" && argc == 3) {
      write_files(argv[2]);
      return 0;
    }
    if ((mode == "check" || mode == "check-model") && argc == 4) {
      const int bad = mode == "check" ? check_file(argv[2], argv[3]) : check_model(argv[2], argv[3]);
      if (bad == 0) std::printf("%s: %s matches %s\n", mode.c_str(), argv[2], argv[3]);
      return bad == 0 ? 0 : 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: %s write DIR | check FILE EXPECTED_JSON | check-model FILE EXPECTED_JSON\n", argv[0]);
  return 2;
}
