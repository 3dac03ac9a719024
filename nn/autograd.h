// Reverse-mode automatic differentiation.
//
// Every differentiable op that sees an input with requires_grad (while grad mode is on)
// gives its output a Node: the inputs, the tensors it saved, and a backward function
// mapping d loss / d output to d loss / d inputs. backward(loss) orders the recorded
// graph topologically (outputs before inputs) and walks it once, summing gradients that
// reach a tensor along several paths. Leaves that require grad (parameters) and tensors
// that called retain_grad() accumulate into grad() (+=, across backward calls, until
// zero_grad); other intermediates' gradients are freed as soon as they are consumed.
//
// By default backward frees each node's saved tensors after use (PyTorch's
// retain_graph = false); a second backward through the same graph then throws.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace cxr::nn {

// Is gradient recording on for the calling thread? (on by default)
bool grad_enabled();
void set_grad_enabled(bool on);

// Turns recording off for the current thread while in scope (inference, optimizer steps).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class Node {
 public:
  // grad_out: d loss / d output (same shape as the output). grad_inputs arrives sized
  // like inputs() with undefined entries; fill those with needs_grad(i) (entries left
  // undefined count as zero). Gradients are assigned, not accumulated.
  using BackwardFn = std::function<void(const Tensor& grad_out, std::vector<Tensor>& grad_inputs)>;

  Node(std::string name, std::vector<Tensor> inputs, BackwardFn fn);
  const std::string& name() const { return name_; }
  const std::vector<Tensor>& inputs() const { return inputs_; }
  bool needs_grad(size_t i) const { return i < inputs_.size() && inputs_[i].requires_grad(); }
  bool released() const { return !fn_; }
  void run(const Tensor& grad_out, std::vector<Tensor>& grad_inputs) const;
  // Drops the saved tensors and the inputs (called by backward unless retain_graph).
  void release();

 private:
  std::string name_;
  std::vector<Tensor> inputs_;
  BackwardFn fn_;
};

// True when an op on these inputs must be recorded.
bool needs_record(std::initializer_list<const Tensor*> inputs);
bool needs_record(const std::vector<Tensor>& inputs);

// Attaches a Node to `out` (which becomes a non-leaf requiring grad).
void record(Tensor& out, const char* name, std::vector<Tensor> inputs, Node::BackwardFn fn);

// Back-propagates from `root`. With grad_out undefined, root must have one element and
// the seed gradient is 1.
void backward(const Tensor& root, const Tensor& grad_out = Tensor(), bool retain_graph = false);

}  // namespace cxr::nn
