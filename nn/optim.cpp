#include "nn/optim.h"

#include <cmath>
#include <map>

#include "kernels/elementwise.h"
#include "nn/autograd.h"
#include "nn/op_util.h"

namespace cxr::nn {

using detail::run_cuda;

namespace {
void check_param(const Tensor& p, const char* opt) {
  CXR_CHECK(p.defined() && p.requires_grad() && p.is_leaf(), opt, ": parameters must be leaf tensors requiring grad");
  CXR_CHECK(p.device().is_cpu() || p.dtype() == DType::f32, opt, ": parameter ", p.str(),
            " is on a CUDA device, where only f32 is supported");
}

// Options' lr / weight_decay, when set, must match every group's.
void check_options(const char* opt, double lr, double wd, const std::vector<ParamGroup>& groups) {
  for (size_t i = 0; i < groups.size(); ++i) {
    CXR_CHECK(std::isnan(lr) || lr == groups[i].lr, opt, ": options.lr = ", lr, " disagrees with parameter group ",
              i, " ('", groups[i].name, "', lr ", groups[i].lr, "); set the learning rate in one place");
    CXR_CHECK(std::isnan(wd) || wd == groups[i].weight_decay, opt, ": options.weight_decay = ", wd,
              " disagrees with parameter group ", i, " ('", groups[i].name, "', weight_decay ",
              groups[i].weight_decay, "); set it in one place");
  }
}

double or_default(double v, double def) { return std::isnan(v) ? def : v; }

std::string slot(size_t g, size_t i, const char* s) {
  return std::to_string(g) + "." + std::to_string(i) + "." + s;
}
}  // namespace

std::vector<ParamGroup> make_param_groups(const Module& m, double lr, double weight_decay) {
  ParamGroup decay{{}, lr, weight_decay, "decay"}, no_decay{{}, lr, 0.0, "no_decay"};
  for (auto& [name, t] : m.named_parameters()) (t.dim() >= 2 ? decay : no_decay).params.push_back(t);
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(decay);
  if (!no_decay.params.empty()) out.push_back(no_decay);
  return out;
}

std::vector<ParamGroup> single_param_group(const Module& m, double lr, double weight_decay) {
  return {ParamGroup{m.parameters(), lr, weight_decay, "all"}};
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  CXR_CHECK(!groups_.empty(), "optimizer: no parameter groups");
  for (auto& g : groups_) {
    CXR_CHECK(g.lr >= 0 && std::isfinite(g.lr), "optimizer: learning rate ", g.lr, " must be finite and >= 0");
    CXR_CHECK(g.weight_decay >= 0, "optimizer: weight decay ", g.weight_decay, " must be >= 0");
    for (auto& p : g.params) check_param(p, "optimizer");
  }
}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) {
      Tensor t = p;
      t.set_grad(Tensor());
    }
}

void Optimizer::set_lr(double lr) {
  CXR_CHECK(lr >= 0 && std::isfinite(lr), "optimizer: learning rate ", lr, " must be finite and >= 0");
  for (auto& g : groups_) g.lr = lr;
}

SGD::SGD(const Module& m, const SgdOptions& o)
    : SGD(make_param_groups(m, or_default(o.lr, 0.01), or_default(o.weight_decay, 0.0)),
          SgdOptions{std::numeric_limits<double>::quiet_NaN(), o.momentum, o.dampening,
                     std::numeric_limits<double>::quiet_NaN(), o.nesterov}) {}

SGD::SGD(std::vector<ParamGroup> groups, const SgdOptions& o) : Optimizer(std::move(groups)), o_(o) {
  check_options("SGD", o.lr, o.weight_decay, groups_);
  CXR_CHECK(o.momentum >= 0 && o.dampening >= 0, "SGD: momentum and dampening must be >= 0");
  CXR_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: Nesterov needs momentum > 0 and dampening 0");
  for (auto& g : groups_) momentum_.emplace_back(g.params.size());
}

void SGD::step() {
  NoGradGuard ng;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    cpu::SgdHyper h{g.lr, o_.momentum, o_.dampening, g.weight_decay, o_.nesterov};
    // CUDA parameters are updated together, one fused launch per (device, first step or not).
    std::map<std::pair<int, bool>, std::vector<cuda::SgdSlot>> fused;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      Tensor& buf = momentum_[gi][i];
      const bool first = !buf.defined();
      if (first && o_.momentum != 0) buf = Tensor::empty(p.shape(), p.dtype(), p.device());
      p.bump_version();
      if (p.device().is_cuda()) {
        fused[{p.device().index, first}].push_back(
            {p.data<float>(), grad.data<float>(), buf.defined() ? buf.data<float>() : nullptr, p.numel()});
        continue;
      }
      dispatch_float(p.dtype(), "SGD", [&]<typename T>() {
        cpu::sgd_update<T>(default_thread_pool(), p.numel(), h, first, p.data<T>(), grad.data<T>(),
                           buf.defined() ? buf.data<T>() : nullptr);
      });
    }
    for (auto& [key, slots] : fused)
      run_cuda("SGD", key.first, [&](auto& c) { cuda::sgd_update_multi(c, h, key.second, slots); });
  }
  ++steps_;
}

std::map<std::string, Tensor> SGD::state() const {
  std::map<std::string, Tensor> s;
  for (size_t g = 0; g < momentum_.size(); ++g)
    for (size_t i = 0; i < momentum_[g].size(); ++i)
      if (momentum_[g][i].defined()) s[slot(g, i, "momentum")] = momentum_[g][i];
  return s;
}

void SGD::load_state(const std::map<std::string, Tensor>& s, int64_t steps) {
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      auto it = s.find(slot(g, i, "momentum"));
      if (it == s.end()) { momentum_[g][i] = Tensor(); continue; }
      CXR_CHECK(it->second.shape() == groups_[g].params[i].shape(), "SGD::load_state: ", it->first, " has shape ",
                shape_str(it->second.shape()), ", parameter has ", shape_str(groups_[g].params[i].shape()));
      momentum_[g][i] = it->second.to(groups_[g].params[i].dtype()).to(groups_[g].params[i].device()).clone();
    }
  steps_ = steps;
}

Adam::Adam(const Module& m, const AdamOptions& o)
    : Adam(make_param_groups(m, or_default(o.lr, 1e-3), or_default(o.weight_decay, 0.0)),
           AdamOptions{std::numeric_limits<double>::quiet_NaN(), o.beta1, o.beta2, o.eps,
                       std::numeric_limits<double>::quiet_NaN(), o.decoupled_weight_decay}) {}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& o) : Optimizer(std::move(groups)), o_(o) {
  check_options(o.decoupled_weight_decay ? "AdamW" : "Adam", o.lr, o.weight_decay, groups_);
  CXR_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "Adam: betas (", o.beta1, ", ", o.beta2,
            ") must be in [0, 1)");
  CXR_CHECK(o.eps > 0, "Adam: eps must be > 0");
  for (auto& g : groups_) {
    m_.emplace_back(g.params.size());
    v_.emplace_back(g.params.size());
    t_.emplace_back(g.params.size(), 0);
  }
}

void Adam::step() {
  NoGradGuard ng;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    cpu::AdamHyper h{g.lr, o_.beta1, o_.beta2, o_.eps, g.weight_decay, o_.decoupled_weight_decay};
    // CUDA parameters sharing a device and a step count are updated in one fused launch.
    std::map<std::pair<int, int64_t>, std::vector<cuda::AdamSlot>> fused;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      if (!m_[gi][i].defined()) {
        m_[gi][i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
        v_[gi][i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      }
      const int64_t t = ++t_[gi][i];
      p.bump_version();
      if (p.device().is_cuda()) {
        fused[{p.device().index, t}].push_back(
            {p.data<float>(), grad.data<float>(), m_[gi][i].data<float>(), v_[gi][i].data<float>(), p.numel()});
        continue;
      }
      dispatch_float(p.dtype(), "Adam", [&]<typename T>() {
        cpu::adam_update<T>(default_thread_pool(), p.numel(), h, t, p.data<T>(), grad.data<T>(), m_[gi][i].data<T>(),
                            v_[gi][i].data<T>());
      });
    }  for (auto& [key, slots] : fused)
      run_cuda("Adam", key.first, [&](auto& c) { cuda::adam_update_multi(c, h, key.second, slots); });
  }
  ++steps_;
}

std::map<std::string, Tensor> Adam::state() const {
  std::map<std::string, Tensor> s;
  for (size_t g = 0; g < m_.size(); ++g)
    for (size_t i = 0; i < m_[g].size(); ++i)
      if (m_[g][i].defined()) {
        s[slot(g, i, "exp_avg")] = m_[g][i];
        s[slot(g, i, "exp_avg_sq")] = v_[g][i];
        s[slot(g, i, "step")] = Tensor::from_vector(std::vector<int64_t>{t_[g][i]}, {});
      }
  return s;
}

void Adam::load_state(const std::map<std::string, Tensor>& s, int64_t steps) {
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      auto m = s.find(slot(g, i, "exp_avg")), v = s.find(slot(g, i, "exp_avg_sq")), t = s.find(slot(g, i, "step"));
      if (m == s.end() || v == s.end() || t == s.end()) {
        m_[g][i] = v_[g][i] = Tensor();
        t_[g][i] = 0;
        continue;
      }
      CXR_CHECK(m->second.shape() == p.shape() && v->second.shape() == p.shape(), "Adam::load_state: state for ",
                slot(g, i, ""), " does not match parameter ", p.str());
      m_[g][i] = m->second.to(p.dtype()).to(p.device()).clone();
      v_[g][i] = v->second.to(p.dtype()).to(p.device()).clone();
      t_[g][i] = static_cast<int64_t>(t->second.item());
    }
  steps_ = steps;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  CXR_CHECK(max_norm > 0, "clip_grad_norm: max_norm ", max_norm, " must be > 0");
  double sq = 0;
  std::map<int, std::vector<std::pair<const float*, int64_t>>> on_gpu;  // by device
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      on_gpu[g.device().index].push_back({g.data<float>(), g.numel()});
      continue;
    }
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      const T* d = g.data<T>();
      for (int64_t i = 0; i < g.numel(); ++i) sq += static_cast<double>(d[i]) * d[i];
    });
  }
  for (auto& [dev, list] : on_gpu)
    run_cuda("clip_grad_norm", dev, [&](auto& c) { sq += cuda::sum_of_squares_multi(c, list); });
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double k = max_norm / (norm + 1e-6);
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      run_cuda("clip_grad_norm", g.device().index, [&](auto& c) {
        cuda::scale(c, g.numel(), static_cast<float>(k), g.data<float>(), g.data<float>());
      });
      continue;
    }
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      cpu::scale<T>(default_thread_pool(), g.numel(), static_cast<T>(k), g.data<T>(), g.data<T>());
    });
  }
  return norm;
}

EMA::EMA(const Module& m, double decay) : decay_(decay) {
  CXR_CHECK(decay > 0 && decay < 1, "EMA: decay ", decay, " must be in (0, 1)");
  for (auto& [name, t] : m.state_dict()) shadow_[name] = t.clone();  // on the module's devices
}

void EMA::update(const Module& m) {
  for (auto& [name, t] : m.state_dict()) {
    auto it = shadow_.find(name);
    CXR_CHECK(it != shadow_.end(), "EMA::update: module has an entry '", name, "' the EMA was not built with");
    if (t.dtype() == DType::i64) {
      it->second.copy_(t);  // counters are copied, not averaged
      continue;
    }
    CXR_CHECK(it->second.device() == t.device(), "EMA::update: '", name, "' is on ", t.device().str(),
              " but its average is on ", it->second.device().str(), "; build the EMA after moving the module");
    if (t.device().is_cuda()) {
      run_cuda("EMA", t.device().index, [&](auto& c) {
        cuda::ema_update_multi(c, decay_, {{t.data<float>(), it->second.data<float>(), t.numel()}});
      });
      continue;
    }
    dispatch_float(t.dtype(), "EMA", [&]<typename T>() {
      cpu::ema_update<T>(default_thread_pool(), t.numel(), decay_, t.data<T>(), it->second.data<T>());
    });
  }
}

void EMA::copy_to(Module& m) const { m.load_state_dict(shadow_, true); }

}  // namespace cxr::nn
