// Files: safetensors tensors, whole-model files, and atomic writes.
//
// safetensors layout: 8-byte little-endian header length n, n bytes of JSON header
// ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "string value"}}), then the raw little-endian data; offsets are
// relative to the start of the data. Files written here load in Hugging Face's
// `safetensors` package.
//
// A model file is a safetensors file whose __metadata__ holds the architecture spec,
// class names, input size and channels, normalisation, a training summary and the
// engine version, so one file is the whole model.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/zoo.h"
#include "runtime/file_util.h"
#include "runtime/tensor.h"

namespace cxr::nn {

using cxr::write_file_atomic;  // runtime/file_util.h

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100ull << 20;  // 100 MiB of JSON is far beyond any real model
};

// The safetensors dtype string of a cxr dtype ("F32", "F64", "I64").
const char* safetensors_dtype(DType t);

// Serialises CPU tensors (f32, f64, i64) and string metadata to safetensors bytes.
std::string safetensors_encode(const std::map<std::string, Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
// Parses and validates (header length bound, JSON, dtypes, shapes, offsets within the
// data, sizes = numel x dtype size, no overlapping or out-of-order-overlapping ranges).
// `what` names the source in errors. Throws cxr::FileError.
SafetensorsFile safetensors_decode(const std::string& bytes, const std::string& what,
                                   const SafetensorsLimits& limits = {});
SafetensorsFile load_safetensors(const std::string& path, const SafetensorsLimits& limits = {});

// What a model file carries besides weights.
struct ModelInfo {
  std::vector<std::string> class_names;  // size num_classes; default "class_0", ...
  std::vector<double> mean{0.5}, stddev{0.5};  // per-channel normalisation of [0,1] pixels
  nlohmann::json training = nlohmann::json::object();  // free-form summary (epochs, metrics, data)
};

void save_model(const std::string& path, const Model& model, const ModelInfo& info = {});

struct LoadedModel {
  std::shared_ptr<Model> model;
  ModelInfo info;
  std::string engine_version;  // of the engine that wrote the file
};
// Rebuilds the architecture from the file's spec and loads the weights (eval mode).
LoadedModel load_model(const std::string& path);
// The same from the bytes of a model file in memory (e.g. a decrypted registry artifact);
// `what` names it in errors.
LoadedModel load_model_bytes(const std::string& bytes, const std::string& what);
// The same from an already decoded safetensors file.
LoadedModel load_model_from(SafetensorsFile file, const std::string& what);

}  // namespace cxr::nn
