// Modules: layers with named parameters (trainable, requires_grad) and buffers
// (state such as BatchNorm running statistics), arranged in a tree. Names are dotted
// paths ("layer1.0.conv1.weight"), the same as PyTorch's for the same architecture,
// so state dicts map one to one.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace cxr::nn {

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
  // Short type name, e.g. "Conv2d".
  virtual std::string type_name() const = 0;
  // One-line description of the layer's configuration, e.g. "1->32, k=3, s=1, p=1".
  virtual std::string describe() const { return ""; }

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  // Parameters and buffers by name (tensors share storage with the module).
  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the module's tensors. strict: names must match exactly
  // (missing or unexpected names throw). Shapes must always match.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // Recursively switches training mode (BatchNorm statistics, Dropout).
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Converts every floating-point parameter and buffer to `dtype` in place (f64 for
  // gradient checks); handles held elsewhere see the change.
  void to(DType dtype);
  // Moves every floating-point parameter and buffer to `device` in place (gradients are
  // dropped; handles held elsewhere see the move). Integer buffers such as BatchNorm's
  // num_batches_tracked stay on the CPU, where the host updates them without a device
  // round trip. Build optimizers after moving the module.
  void to(Device device);
  // Drops every parameter's gradient.
  void zero_grad();
  int64_t num_parameters() const;

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  // This module and every descendant with its dotted path ("" for this one).
  std::vector<std::pair<std::string, Module*>> named_modules();
  // Module at a dotted path, or nullptr.
  Module* find(const std::string& path);

 protected:
  Tensor register_parameter(const std::string& name, Tensor t);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  void add_child(const std::string& name, std::shared_ptr<Module> m);

 private:
  void collect(const std::string& prefix, bool params, std::vector<std::pair<std::string, Tensor>>& out) const;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace cxr::nn
