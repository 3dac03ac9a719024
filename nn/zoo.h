// Models built from a JSON architecture spec, so a user can define a network without
// writing C++. A spec is either a named architecture with its options:
//
//   {"arch": "resnet18", "in_channels": 1, "num_classes": 2, "input_size": [224, 224]}
//   {"arch": "simple_cnn", "channels": [32, 64, 128], "hidden": 128, "dropout": 0.25, ...}
//   {"arch": "mobilenet_v2", "width_mult": 1.0, ...}      also "resnet34", "resnet50"
//
// or an explicit layer list (what a named architecture expands to; when a spec has
// both, the layer list is used and "arch" is only a label):
//
//   {"in_channels": 1, "num_classes": 2, "input_size": [28, 28], "layers": [
//      {"type": "conv", "out": 32, "kernel": 3, "stride": 1, "padding": 1, "bias": false},
//      {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool", "kernel": 2},
//      {"type": "global_avgpool"}, {"type": "flatten"},
//      {"type": "linear", "out": "num_classes"}]}
//
// Layer types: conv, batchnorm, relu, leaky_relu (slope), relu6, sigmoid, tanh, gelu,
// silu, maxpool / avgpool (kernel, stride = kernel, padding), global_avgpool, flatten,
// linear (out, bias), dropout (p), basic_block / bottleneck (out, stride),
// inverted_residual (out, stride, expand), sequential (layers). Any layer may carry a
// "name" (children are otherwise numbered). "out": "num_classes" refers to the spec's
// class count. ResNets use the ImageNet stem (7x7/2 conv + 3x3/2 max pool) for inputs
// larger than 64 px and a small-image stem (3x3/1 conv, no pool) otherwise; "stem":
// "imagenet" | "small" overrides.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/layers.h"

namespace cxr::nn {

// The whole network: a Sequential plus the spec it was built from.
class Model : public Sequential {
 public:
  const nlohmann::json& spec() const { return spec_; }  // expanded layer-list form
  int64_t in_channels() const { return in_channels_; }
  int64_t num_classes() const { return num_classes_; }
  int64_t input_height() const { return input_h_; }
  int64_t input_width() const { return input_w_; }
  std::string type_name() const override { return "Model"; }

 private:
  friend std::shared_ptr<Model> build_model(const nlohmann::json& spec, uint64_t seed);
  nlohmann::json spec_;
  int64_t in_channels_ = 1, num_classes_ = 2, input_h_ = 224, input_w_ = 224;
};

// Names accepted in "arch".
std::vector<std::string> zoo_architectures();
// A named architecture's spec, expanded to the layer-list form; layer-list specs are
// validated and returned with defaults filled in.
nlohmann::json expand_spec(const nlohmann::json& spec);
// Builds and initialises (He init, zero-init of residual blocks' last BN) a model.
// Throws cxr::ValueError naming the offending layer for an inconsistent spec.
std::shared_ptr<Model> build_model(const nlohmann::json& spec, uint64_t seed = 0);
// Convenience: {"arch": arch, "in_channels": c, "num_classes": k, "input_size": [h, w]}.
nlohmann::json arch_spec(const std::string& arch, int64_t in_channels, int64_t num_classes, int64_t height,
                         int64_t width);
// What a command line's --model names: a zoo architecture, or a JSON spec file (a path
// ending in .json, or any existing file), with the input channels, class count and a
// square input size filled in. Throws FileError for an unreadable file, ValueError for
// invalid JSON, a non-object spec or an unknown architecture name (listing the zoo).
nlohmann::json model_spec_for(const std::string& model, int64_t in_channels, int64_t num_classes, int64_t size);

}  // namespace cxr::nn
