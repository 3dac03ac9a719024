// Model summaries: the layers of a network with their output shapes, parameter counts,
// FLOPs and activation memory for one input size and batch, found by running a real
// forward pass (eval mode, no autograd) on a zero tensor. What `cxr validate` prints;
// native applications can call it the same way:
//
//   auto model = nn::build_model(nn::arch_spec("resnet18", 1, 2, 224, 224));
//   nn::ModelSummary s = nn::summarize(*model, {8, 1, 224, 224});
//   std::fputs(nn::format_summary(s).c_str(), stdout);
//
// Rows: one per module in the tree (pre-order, the model itself excluded), with its
// dotted path ("layer1.0.conv1"), nesting depth and output shape. Containers
// (Sequential) and the known blocks (BasicBlock, Bottleneck, InvertedResidual) get a row
// and so do their children: the block's wiring is followed child by child, so every
// convolution inside a block has its own row and output shape. A composite module of a
// type the summary does not know is one opaque row: its output shape and all of its
// parameters are reported, but the FLOPs of its inside are not counted (listed in
// `notes`).
//
// FLOP conventions (forward pass, whole batch; a multiply-add is 2 FLOPs):
//   Conv2d     2 * N*K*P*Q * (C/groups)*R*S, plus N*K*P*Q with a bias
//   Linear     2 * N*in*out, plus N*out with a bias
//   BatchNorm  4 per element (subtract the mean, scale by 1/std, multiply by gamma, add beta)
//   activations, max / average pooling, residual additions: 1 per output element
//   global average pooling: 1 per input element
//   Dropout (identity at inference), Flatten, Identity: 0
// These are the usual "FLOPs" of papers (fvcore counts a multiply-add as 1, so its
// numbers are half of these for convolutions and linear layers).
//
// Memory: activation_bytes of a row is the size of its output tensor. The model's
// activation_bytes estimates what a training step keeps for the backward pass: the
// outputs of every leaf layer (Flatten and Identity are views and cost nothing) plus the
// tensors the known blocks make themselves (their inner ReLUs and residual sums).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/module.h"

namespace cxr::nn {

struct LayerSummary {
  std::string name;      // dotted module path, e.g. "layer1.0.conv1" ("" for a model that is one layer)
  std::string type;      // Module::type_name()
  std::string describe;  // Module::describe()
  int depth = 0;         // nesting level: 0 for the model's direct children
  bool leaf = true;      // no child modules (or an opaque composite, see above)
  Shape output;          // with the batch dimension
  int64_t params = 0;    // this module's own parameters (not its children's)
  int64_t flops = 0;     // FLOPs this module does itself (a block's residual sum and ReLUs), whole batch
  int64_t activation_bytes = 0;  // bytes of the output tensor
  int64_t total_params = 0;      // this module and its descendants
  int64_t total_flops = 0;       // this module and its descendants
};

struct ModelSummary {
  std::vector<LayerSummary> layers;
  Shape input;                   // (N, C, H, W) as given
  Shape output;                  // the model's output shape
  int64_t total_params = 0;      // = Module::num_parameters()
  int64_t trainable_params = 0;  // parameters with requires_grad
  int64_t total_flops = 0;       // forward pass for the whole batch
  int64_t activation_bytes = 0;  // estimate of what training keeps, whole batch
  int64_t param_bytes = 0;       // parameters in their dtype
  int64_t buffer_bytes = 0;      // buffers (BatchNorm running statistics)
  std::vector<std::string> notes;  // what the numbers leave out, if anything

  int64_t batch() const { return input.empty() ? 0 : input[0]; }
  int64_t flops_per_sample() const { return batch() > 0 ? total_flops / batch() : 0; }
};

struct SummaryOptions {
  // Trace a batch of one and scale shapes, FLOPs and memory by N: the same numbers
  // (every inference-mode layer of the engine treats samples independently) in 1/N of
  // the time and memory. Falls back to the full batch if some output does not keep the
  // batch as its first dimension.
  bool one_sample = false;
};

// Runs one forward pass of `model` on zeros of `input_shape` (batch first, e.g.
// {N, C, H, W}) on the model's device and dtype, in eval mode under NoGradGuard; the
// training flag of every module is restored afterwards (also when it throws). A layer
// that rejects its input throws cxr::ValueError naming the layer's path, type and the
// input shape it got.
ModelSummary summarize(Module& model, const Shape& input_shape, const SummaryOptions& opts = {});

// The summary as JSON with stable keys:
//   {"input": [..], "output": [..], "batch": N,
//    "layers": [{"name", "type", "describe", "depth", "leaf", "output", "params", "flops",
//                "activation_bytes", "total_params", "total_flops"}, ...],
//    "totals": {"params", "trainable_params", "param_bytes", "buffer_bytes", "flops",
//               "flops_per_sample", "activation_bytes"},
//    "notes": [..]}
nlohmann::json summary_to_json(const ModelSummary& s);

struct SummaryFormat {
  int max_depth = -1;  // rows nested deeper than this are left out (-1: all)
};
// An aligned text table (name, type, configuration, output shape, params, FLOPs,
// activation memory; container and block rows show the totals of their subtree) and the
// totals below it.
std::string format_summary(const ModelSummary& s, const SummaryFormat& fmt = {});

// Human units: format_count(11689512) = "11.7M" (K, M, G, T; 1000s; below 1000 exact),
// format_bytes(3211264) = "3.06 MiB" (KiB, MiB, GiB; 1024s).
std::string format_count(int64_t n);
std::string format_bytes(int64_t bytes);

}  // namespace cxr::nn
