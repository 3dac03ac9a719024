// Basic layers. Parameter and buffer names follow PyTorch's (weight, bias,
// running_mean, running_var, num_batches_tracked) so state dicts correspond.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/functional.h"
#include "nn/module.h"

namespace cxr::nn {

struct Conv2dConfig {
  int64_t in_channels = 1, out_channels = 1, kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};

// weight (out, in/groups, k, k), bias (out). Init: Kaiming normal (fan_out), bias 0.
class Conv2d : public Module {
 public:
  Conv2d(const Conv2dConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string describe() const override;
  const Conv2dConfig& config() const { return cfg_; }
  Tensor weight, bias;  // bias undefined when cfg.bias is false

 private:
  // Forwards that record no gradient (inference, validation) on the CPU reuse the
  // weights packed for the GEMM while weight.version() is unchanged; a recording
  // forward (training) drops them. Safe for concurrent forwards.
  struct PackCache;
  std::shared_ptr<const cpu::PackedConvWeights> packed_weights();
  Conv2dConfig cfg_;
  std::shared_ptr<PackCache> pack_;
};

// weight/bias (C) = 1/0; running_mean/var (C) = 0/1; num_batches_tracked i64 scalar.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string describe() const override;
  int64_t channels() const { return channels_; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  int64_t channels_;
  double eps_, momentum_;
};

// weight (out, in), bias (out). Init as PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Linear"; }
  std::string describe() const override;
  Tensor weight, bias;

 private:
  int64_t in_, out_;
};

// Inverted dropout; its own generator so masks are reproducible from the model seed.
class Dropout : public Module {
 public:
  Dropout(double p, uint64_t seed);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string describe() const override;
  Generator& generator() { return gen_; }

 private:
  double p_;
  Generator gen_;
};

class Activation : public Module {
 public:
  explicit Activation(cpu::Act act, double alpha = 0.0) : act_(act), alpha_(alpha) {}
  Tensor forward(const Tensor& x) override { return activation(x, act_, alpha_); }
  std::string type_name() const override;
  std::string describe() const override;
  cpu::Act act() const { return act_; }

 private:
  cpu::Act act_;
  double alpha_;
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding = 0) : o_(Pool2dOptions::make(kernel, stride, padding)) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, o_); }
  std::string type_name() const override { return "MaxPool2d"; }
  std::string describe() const override;

 private:
  Pool2dOptions o_;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int64_t kernel, int64_t stride, int64_t padding = 0) : o_(Pool2dOptions::make(kernel, stride, padding)) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, o_); }
  std::string type_name() const override { return "AvgPool2d"; }
  std::string describe() const override;

 private:
  Pool2dOptions o_;
};

// (N, C, H, W) -> (N, C, 1, 1)
class GlobalAvgPool2d : public Module {
 public:
  Tensor forward(const Tensor& x) override { return global_avg_pool2d(x); }
  std::string type_name() const override { return "GlobalAvgPool2d"; }
};

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return flatten(x, 1); }
  std::string type_name() const override { return "Flatten"; }
};

class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

// Runs its children in order. Children are named "0", "1", ... by push_back, or
// explicitly by add (as torchvision's ResNet names conv1, layer1, fc ...).
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<ModulePtr> layers);
  void push_back(ModulePtr m);
  void add(const std::string& name, ModulePtr m);
  Tensor forward(const Tensor& x) override;
  // Runs the children and also returns the output of the child named `capture`
  // (a direct child's name) in *captured; used to reach feature maps (Grad-CAM).
  Tensor forward_capture(const Tensor& x, const std::string& capture, Tensor* captured);
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const { return *children()[i].second; }
};

}  // namespace cxr::nn
