#include "nn/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "kernels/elementwise.h"
#include "nn/op_util.h"

namespace cxr::nn {

namespace {
thread_local bool t_grad_enabled = true;

// g_sum = a + b in a new tensor (neither input is modified: either may be shared).
Tensor add_new(const Tensor& a, const Tensor& b) {
  CXR_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), "autograd: gradients ", a.str(), " and ", b.str(),
            " for the same tensor do not match");
  CXR_CHECK(a.device() == b.device(), "autograd: gradients ", a.str(), " and ", b.str(),
            " for the same tensor are on different devices");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  detail::on_device(a, "autograd accumulate", [&]<typename T>() {
    cpu::axpby<T>(default_thread_pool(), a.numel(), T(1), a.data<T>(), T(1), b.data<T>(), out.data<T>());
  }, [&](auto& c) { cuda::axpby(c, a.numel(), 1.0f, a.data<float>(), 1.0f, b.data<float>(), out.data<float>()); });
  return out;
}

void add_into(Tensor& dst, const Tensor& g) {
  CXR_CHECK(dst.device() == g.device(), "autograd: gradient ", g.str(), " arrives for a tensor whose gradient is on ",
            dst.device().str());
  detail::on_device(dst, "autograd accumulate", [&]<typename T>() {
    cpu::add_inplace<T>(default_thread_pool(), dst.numel(), g.data<T>(), dst.data<T>());
  }, [&](auto& c) { cuda::add_inplace(c, dst.numel(), g.data<float>(), dst.data<float>()); });
}

// True when t is the only handle to its data (no other tensor, view or pending
// gradient shares it), so it may be kept or updated in place.
bool exclusive(const Tensor& t) { return t.impl_ptr().use_count() == 1 && t.impl()->storage.use_count() == 1; }

// Accumulates g into a tensor's .grad. A gradient nobody else holds is adopted as is;
// a shared one (add hands the same gradient to both inputs) is copied first.
void accumulate_into_grad(TensorImpl* t, Tensor g) {
  if (!t->grad.defined()) t->grad = exclusive(g) ? std::move(g) : g.clone();
  else add_into(t->grad, g);
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

Node::Node(std::string name, std::vector<Tensor> inputs, BackwardFn fn)
    : name_(std::move(name)), inputs_(std::move(inputs)), fn_(std::move(fn)) {}

void Node::run(const Tensor& grad_out, std::vector<Tensor>& grad_inputs) const {
  if (!fn_)
    throw Error("backward through '" + name_ +
                "' a second time: its saved tensors were freed by the first backward (pass retain_graph = true)");
  fn_(grad_out, grad_inputs);
}

void Node::release() {
  fn_ = nullptr;
  inputs_.clear();
}

bool needs_record(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->requires_grad()) return true;
  return false;
}

bool needs_record(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* name, std::vector<Tensor> inputs, Node::BackwardFn fn) {
  out.set_grad_fn(std::make_shared<Node>(name, std::move(inputs), std::move(fn)));
}

void backward(const Tensor& root, const Tensor& grad_out, bool retain_graph) {
  CXR_CHECK(root.defined(), "backward: root tensor is undefined");
  CXR_CHECK(root.requires_grad(), "backward: ", root.str(),
            " does not require grad (no input of the graph has requires_grad set, or it was built under NoGradGuard)");
  Tensor seed = grad_out;
  if (!seed.defined()) {
    CXR_CHECK(root.numel() == 1, "backward: root ", root.str(),
              " is not a scalar; pass the gradient of the loss with respect to it");
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  if (seed.device() != root.device()) seed = seed.to(root.device());
  CXR_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype(), "backward: gradient ", seed.str(),
            " does not match root ", root.str());
  // Gradient mode off while running backward functions: they call kernels directly,
  // but any helper op they use must not extend the graph.
  NoGradGuard no_grad;

  // Post-order DFS over tensors (inputs before the tensors computed from them).
  std::vector<TensorImpl*> order;
  std::vector<std::shared_ptr<TensorImpl>> keep_alive;  // release() may drop the last other owner
  std::unordered_set<TensorImpl*> visited;
  std::vector<std::pair<TensorImpl*, size_t>> stack;
  stack.emplace_back(root.impl(), 0);
  visited.insert(root.impl());
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    const Node* node = t->grad_fn.get();
    if (node && next < node->inputs().size()) {
      const Tensor& in = node->inputs()[next++];
      if (in.requires_grad() && visited.insert(in.impl()).second) {
        keep_alive.push_back(in.impl_ptr());
        stack.emplace_back(in.impl(), 0);
      }
      continue;
    }
    order.push_back(t);
    stack.pop_back();
  }

  std::unordered_map<TensorImpl*, Tensor> pending;
  pending[root.impl()] = seed;
  seed = Tensor();  // the map holds the seed's only reference from here
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImpl* t = *it;
    auto p = pending.find(t);
    if (p == pending.end()) continue;  // no gradient flowed here
    Tensor g = std::move(p->second);
    pending.erase(p);
    if (!t->grad_fn) {
      accumulate_into_grad(t, std::move(g));
      continue;
    }
    if (t->retains_grad) accumulate_into_grad(t, g);
    Node& node = *t->grad_fn;
    std::vector<Tensor> grads(node.inputs().size());
    node.run(g, grads);
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined() || !node.needs_grad(i)) continue;
      const Tensor& in = node.inputs()[i];
      CXR_CHECK(grads[i].shape() == in.shape(), "backward of '", node.name(), "': gradient ", grads[i].str(),
                " for input ", i, " does not match its shape ", in.str());
      auto [slot, fresh] = pending.try_emplace(in.impl(), grads[i]);
      if (fresh) continue;
      if (exclusive(slot->second)) add_into(slot->second, grads[i]);
      else slot->second = add_new(slot->second, grads[i]);
    }
    if (!retain_graph) node.release();
  }
}

}  // namespace cxr::nn
