// Differentiable tensor operations. Each checks its arguments (naming the op and the
// shapes on failure), runs the kernel for the tensors' device, and records a graph node
// when an input requires grad (see nn/autograd.h). Floating-point ops accept f32 and
// f64 (f64 is for gradient checks); all inputs of an op share one dtype and device.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/activation.h"
#include "kernels/conv.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace cxr::nn {

// ---- elementwise, with NumPy broadcasting (shapes aligned on the right) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul_scalar(const Tensor& x, double s);

// ---- shape ----
// Same data, new shape (one dim may be -1). Differentiable.
Tensor reshape(const Tensor& x, const Shape& shape);
// Merges dims [start_dim, end) into one: (N, C, H, W) -> (N, C*H*W) for start_dim 1.
Tensor flatten(const Tensor& x, int64_t start_dim = 1);
// Concatenates along `dim`; all other dims must agree.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);

// ---- reductions (negative dims count from the end; empty dims = all) ----
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);

// ---- activations ----
Tensor activation(const Tensor& x, cpu::Act act, double alpha = 0.0);
inline Tensor relu(const Tensor& x) { return activation(x, cpu::Act::relu); }
inline Tensor leaky_relu(const Tensor& x, double slope = 0.01) { return activation(x, cpu::Act::leaky_relu, slope); }
inline Tensor relu6(const Tensor& x) { return activation(x, cpu::Act::relu6); }
inline Tensor sigmoid(const Tensor& x) { return activation(x, cpu::Act::sigmoid); }
inline Tensor tanh(const Tensor& x) { return activation(x, cpu::Act::tanh); }
inline Tensor gelu(const Tensor& x) { return activation(x, cpu::Act::gelu); }
inline Tensor silu(const Tensor& x) { return activation(x, cpu::Act::silu); }

// Inverted dropout with probability p in [0, 1); identity when !training or p == 0.
// The mask is drawn from gen (counter-based: the same for any thread count).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- convolution, dense, pooling, normalisation ----
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  static Conv2dOptions make(int64_t stride, int64_t padding, int64_t dilation = 1, int64_t groups = 1) {
    return {stride, stride, padding, padding, dilation, dilation, groups};
  }
};
// x (N, C, H, W), w (K, C/groups, R, S), b (K) or undefined -> (N, K, P, Q)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o = {});
// The same with w already packed for the CPU GEMM (see cpu::conv2d_pack_weights); used
// by forwards that record no gradient (nn::Conv2d keeps the packing between calls).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o,
              const cpu::PackedConvWeights* packed);
// x (N, in), w (out, in), b (out) or undefined -> (N, out) = x w^T + b
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// a (M, K), b (K, N) -> (M, N)
Tensor matmul(const Tensor& a, const Tensor& b);

struct Pool2dOptions {
  int64_t kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  static Pool2dOptions make(int64_t kernel, int64_t stride, int64_t padding = 0) {
    return {kernel, kernel, stride, stride, padding, padding};
  }
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& o);
// Padding counted in the divisor (PyTorch's count_include_pad = true), floor output size.
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& o);
// (N, C, H, W) -> (N, C, 1, 1)
Tensor global_avg_pool2d(const Tensor& x);

// x (N, C, H, W) or (N, C). weight/bias (C) or undefined (no affine). In training the
// batch statistics normalise and running_mean/var (C, updated in place, no grad) move
// by `momentum` (running = (1-m)*running + m*batch, unbiased var); in eval the running
// statistics normalise.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);

// ---- softmax and losses (losses are means over the batch, scalar outputs) ----
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

struct CrossEntropyOptions {
  Tensor class_weight;           // (C) or undefined
  double label_smoothing = 0.0;  // in [0, 1)
};
// logits (N, C), target i64 (N) with values in [0, C). Class weights (and pos_weight
// below) are constants: no gradient flows to them.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o = {});
// logits and target of one shape; pos_weight (last dim size, or 1 element) or undefined.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        const Tensor& pos_weight = Tensor());
Tensor mse_loss(const Tensor& a, const Tensor& b);

}  // namespace cxr::nn
