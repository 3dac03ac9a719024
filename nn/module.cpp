#include "nn/module.h"

#include <set>

namespace cxr::nn {

void Module::collect(const std::string& prefix, bool params,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, t] : params ? params_ : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", false, out);
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : named_parameters()) out[n] = t;
  for (auto& [n, t] : named_buffers()) out[n] = t;
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  const auto mine = state_dict();
  if (strict) {
    for (const auto& [name, t] : mine)
      CXR_CHECK(state.count(name), "load_state_dict: missing entry '", name, "' (", t.str(), ")");
    for (const auto& [name, t] : state)
      CXR_CHECK(mine.count(name), "load_state_dict: unexpected entry '", name, "' (", t.str(),
                ") not in this ", type_name());
  }
  // Every entry is checked before any is copied, so a rejected load leaves the module
  // as it was instead of half old and half new.
  for (const auto& [name, dst] : mine) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    const Tensor& src = it->second;
    CXR_CHECK(src.defined() && src.shape() == dst.shape(), "load_state_dict: '", name, "' has shape ",
              src.defined() ? shape_str(src.shape()) : "undefined", ", the module expects ", shape_str(dst.shape()));
  }
  for (const auto& [name, dst] : mine) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    const Tensor& src = it->second;
    Tensor value = src.dtype() == dst.dtype() ? src : src.to(dst.dtype());
    Tensor d = dst;  // shares storage with the module's tensor
    d.copy_(value.device() == d.device() ? value : value.to(d.device()));
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

// Converts every floating-point parameter and buffer in place with `convert` (a new
// tensor), so that handles held elsewhere see the result; gradients are dropped.
template <typename F>
static void replace_floating(const Module& m, F&& convert) {
  auto replace = [&](const Tensor& t) {
    if (t.dtype() == DType::i64) return;
    const Tensor c = convert(t);
    if (c.same_storage(t)) return;
    TensorImpl* impl = t.impl();
    impl->storage = c.impl()->storage;
    impl->offset = 0;
    impl->dtype = c.dtype();
    impl->grad = Tensor();
  };
  for (auto& [n, t] : m.named_parameters()) replace(t);
  for (auto& [n, t] : m.named_buffers()) replace(t);
}

void Module::to(DType dtype) {
  CXR_CHECK(dtype == DType::f32 || dtype == DType::f64, "Module::to: dtype must be f32 or f64");
  replace_floating(*this, [&](const Tensor& t) { return t.to(dtype); });
}

void Module::to(Device device) {
  replace_floating(*this, [&](const Tensor& t) { return t.to(device); });
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) {
    Tensor p = t;
    p.set_grad(Tensor());
  }
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [name, child] : children_)
    for (auto& [sub, m] : child->named_modules()) out.emplace_back(sub.empty() ? name : name + "." + sub, m);
  return out;
}

Module* Module::find(const std::string& path) {
  for (auto& [name, m] : named_modules())
    if (name == path) return m;
  return nullptr;
}

static void check_name(const std::string& name, const std::string& type) {
  CXR_CHECK(!name.empty() && name.find('.') == std::string::npos, type, ": invalid member name '", name,
            "' (must be non-empty without '.')");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_name(name, type_name());
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name(name, type_name());
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_name(name, type_name());
  CXR_CHECK(m != nullptr, type_name(), ": child '", name, "' is null");
  for (auto& [n, c] : children_) CXR_CHECK(n != name, type_name(), ": child '", name, "' registered twice");
  children_.emplace_back(name, std::move(m));
}

}  // namespace cxr::nn
