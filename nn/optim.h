// Optimizers over parameter groups, gradient clipping and an EMA of weights.
//
// Each group has its own lr and weight decay (make_param_groups puts biases and
// BatchNorm parameters, i.e. every parameter with fewer than 2 dims, in a group
// without weight decay). Updates follow PyTorch's formulas (kernels/optim.h), so the
// same hyper-parameters train the same way. step() skips parameters without a gradient.
#pragma once

#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/optim.h"
#include "nn/module.h"

namespace cxr::nn {

struct ParamGroup {
  std::vector<Tensor> params;
  double lr = 1e-3;
  double weight_decay = 0.0;
  std::string name;
};

// Two groups: "decay" (weights with >= 2 dims) and "no_decay" (biases, BN parameters).
std::vector<ParamGroup> make_param_groups(const Module& m, double lr, double weight_decay);
// One group with every parameter.
std::vector<ParamGroup> single_param_group(const Module& m, double lr, double weight_decay = 0.0);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  virtual std::string name() const = 0;
  void zero_grad();
  std::vector<ParamGroup>& groups() { return groups_; }
  // Sets the lr of every group (schedules call this with lr factors applied to
  // each group's base lr).
  void set_lr(double lr);
  double lr() const { return groups_.empty() ? 0.0 : groups_[0].lr; }
  int64_t steps() const { return steps_; }
  // Optimizer state tensors by name ("<group>.<index>.<slot>"), for checkpoints.
  virtual std::map<std::string, Tensor> state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& s, int64_t steps) = 0;

 protected:
  std::vector<ParamGroup> groups_;
  int64_t steps_ = 0;
};

// lr and weight_decay live in the parameter groups. In the options they are optional
// (NaN = unset): the Module constructors use them to build the groups, and the group
// constructors reject options that disagree with a group, so a value set in one place
// is never silently ignored.
struct SgdOptions {
  double lr = std::numeric_limits<double>::quiet_NaN(), momentum = 0.9, dampening = 0.0,
         weight_decay = std::numeric_limits<double>::quiet_NaN();
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, const SgdOptions& o);
  // Groups from make_param_groups(m, o.lr (default 0.01), o.weight_decay (default 0)).
  SGD(const Module& m, const SgdOptions& o);
  void step() override;
  std::string name() const override { return "sgd"; }
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& s, int64_t steps) override;

 private:
  SgdOptions o_;
  std::vector<std::vector<Tensor>> momentum_;  // per group, per param (undefined until used)
};

struct AdamOptions {
  double lr = std::numeric_limits<double>::quiet_NaN(), beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
         weight_decay = std::numeric_limits<double>::quiet_NaN();
  bool decoupled_weight_decay = false;  // true: AdamW
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& o);
  // Groups from make_param_groups(m, o.lr (default 1e-3), o.weight_decay (default 0)).
  Adam(const Module& m, const AdamOptions& o);
  void step() override;
  std::string name() const override { return o_.decoupled_weight_decay ? "adamw" : "adam"; }
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& s, int64_t steps) override;

 private:
  AdamOptions o_;
  std::vector<std::vector<Tensor>> m_, v_;
  std::vector<std::vector<int64_t>> t_;  // per-parameter step count (params may skip steps)
};

// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.
inline std::unique_ptr<Adam> make_adamw(std::vector<ParamGroup> groups, AdamOptions o) {
  o.decoupled_weight_decay = true;
  return std::make_unique<Adam>(std::move(groups), o);
}

// Scales all gradients so that their global L2 norm is at most max_norm; returns the
// norm before clipping (non-finite norms are returned without scaling).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Exponential moving average of a module's parameters and buffers:
// shadow = decay * shadow + (1 - decay) * current, after each update().
class EMA {
 public:
  EMA(const Module& m, double decay);
  void update(const Module& m);
  // Copies the averaged weights into m (e.g. before evaluation or saving).
  void copy_to(Module& m) const;
  const std::map<std::string, Tensor>& shadow() const { return shadow_; }
  double decay() const { return decay_; }

 private:
  double decay_;
  std::map<std::string, Tensor> shadow_;
};

}  // namespace cxr::nn
