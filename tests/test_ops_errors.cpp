// Every error path of the functional ops (each throws cxr::Error naming the op), and the
// autograd engine's errors and behaviours (accumulation, retain_grad, NoGradGuard,
// detach, tensors used more than once).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "expect_error.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

// EXPECT_THROW for cxr::Error, plus the message check, with the statement in the trace.
#define EXPECT_CXR_ERROR(stmt, ...)                   \
  do {                                                \
    SCOPED_TRACE(#stmt);                              \
    EXPECT_THROW((void)(stmt), ::cxr::Error);         \
    expect_error([&] { (void)(stmt); }, {__VA_ARGS__}); \
  } while (0)

Tensor f32(const Shape& s) { return Tensor::ones(s, DType::f32); }
Tensor f64(const Shape& s) { return Tensor::ones(s, DType::f64); }
Tensor i64(const Shape& s) { return Tensor::zeros(s, DType::i64); }
Tensor targets(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

// ------------------------------------------------------------------ elementwise, shape

TEST(OpErrors, Elementwise) {
  EXPECT_CXR_ERROR(nn::add(f32({2, 3}), f32({4})), "add", "[2, 3]", "[4]", "cannot be broadcast");
  EXPECT_CXR_ERROR(nn::sub(f32({2, 3, 4}), f32({3, 2})), "sub", "cannot be broadcast");
  EXPECT_CXR_ERROR(nn::mul(f32({5}), f32({2, 3})), "mul", "cannot be broadcast");
  EXPECT_CXR_ERROR(nn::add(f32({2}), f64({2})), "add", "differ in dtype");
  EXPECT_CXR_ERROR(nn::mul(f64({2}), f32({2})), "mul", "differ in dtype");
  EXPECT_CXR_ERROR(nn::add(i64({2}), i64({2})), "add", "must be f32 or f64");
  EXPECT_CXR_ERROR(nn::add(f32({0, 3}), f32({0, 3})), "add", "empty");
  EXPECT_CXR_ERROR(nn::add(Tensor(), f32({2})), "add", "undefined");
  EXPECT_CXR_ERROR(nn::sub(f32({2}), Tensor()), "sub", "undefined");
  EXPECT_CXR_ERROR(nn::mul_scalar(Tensor(), 2.0), "mul_scalar", "undefined");
  EXPECT_CXR_ERROR(nn::mul_scalar(i64({3}), 2.0), "mul_scalar", "f32 or f64");
  EXPECT_CXR_ERROR(nn::mul_scalar(f32({0}), 2.0), "mul_scalar", "empty");
}

TEST(OpErrors, ShapeOps) {
  EXPECT_CXR_ERROR(nn::reshape(f32({2, 6}), {5, 3}), "cannot reshape", "12 elements");
  EXPECT_CXR_ERROR(nn::reshape(f32({2, 6}), {-1, -1}), "only one dimension may be -1");
  EXPECT_CXR_ERROR(nn::reshape(Tensor(), {2}), "reshape", "undefined");
  EXPECT_CXR_ERROR(nn::flatten(f32({2, 3}), 2), "flatten", "dim 2 out of range");
  EXPECT_CXR_ERROR(nn::flatten(f32({2, 3}), -3), "flatten", "out of range");
  EXPECT_CXR_ERROR(nn::flatten(Tensor()), "flatten", "undefined");

  EXPECT_CXR_ERROR(nn::concat({}, 0), "concat", "no tensors");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f32({3, 3})}, 1), "concat along dim 1", "does not match");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f32({2, 3, 1})}, 0), "concat", "different rank");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f64({2, 3})}, 0), "concat", "differ in dtype");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f32({2, 3})}, 2), "concat", "dim 2 out of range");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f32({2, 3})}, -3), "concat", "out of range");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), Tensor()}, 0), "concat", "undefined");
  EXPECT_CXR_ERROR(nn::concat({f32({2, 3}), f32({0, 3})}, 0), "concat", "empty");
  EXPECT_CXR_ERROR(nn::concat({i64({2})}, 0), "concat", "f32 or f64");
}

TEST(OpErrors, Reductions) {
  EXPECT_CXR_ERROR(nn::sum(f32({2, 3}), {2}), "sum", "dim 2 out of range");
  EXPECT_CXR_ERROR(nn::sum(f32({2, 3}), {-3}), "sum", "out of range");
  EXPECT_CXR_ERROR(nn::sum(f32({2, 3}), {1, -1}), "sum", "given twice");
  EXPECT_CXR_ERROR(nn::mean(f32({2, 3}), {5}), "mean", "out of range");
  EXPECT_CXR_ERROR(nn::mean(f32({2, 3}), {0, 0}), "mean", "given twice");
  EXPECT_CXR_ERROR(nn::mean(f32({0, 3})), "mean", "empty");
  EXPECT_CXR_ERROR(nn::sum(Tensor()), "sum", "undefined");
  EXPECT_CXR_ERROR(nn::sum(i64({3})), "sum", "f32 or f64");
  EXPECT_CXR_ERROR(nn::sum(Tensor::scalar(1.0), {0}), "sum", "out of range");
}

TEST(OpErrors, Activations) {
  for (cpu::Act a : {cpu::Act::relu, cpu::Act::leaky_relu, cpu::Act::relu6, cpu::Act::sigmoid, cpu::Act::tanh,
                     cpu::Act::gelu, cpu::Act::silu}) {
    const char* name = cpu::act_name(a);
    EXPECT_CXR_ERROR(nn::activation(i64({3}), a), name, "f32 or f64");
    EXPECT_CXR_ERROR(nn::activation(f32({0}), a), name, "empty");
    EXPECT_CXR_ERROR(nn::activation(Tensor(), a), name, "undefined");
  }
}

TEST(OpErrors, Dropout) {
  Generator g(1);
  EXPECT_CXR_ERROR(nn::dropout(f32({4}), 1.0, true, g), "dropout", "p = 1", "[0, 1)");
  EXPECT_CXR_ERROR(nn::dropout(f32({4}), 1.5, true, g), "dropout", "[0, 1)");
  EXPECT_CXR_ERROR(nn::dropout(f32({4}), -0.1, true, g), "dropout", "[0, 1)");
  EXPECT_CXR_ERROR(nn::dropout(f32({4}), 1.0, false, g), "dropout", "[0, 1)");  // bad p even in eval
  EXPECT_CXR_ERROR(nn::dropout(f32({4}), std::nan(""), true, g), "dropout");
  EXPECT_CXR_ERROR(nn::dropout(i64({4}), 0.5, true, g), "dropout", "f32 or f64");
  EXPECT_CXR_ERROR(nn::dropout(Tensor(), 0.5, true, g), "dropout", "undefined");
}

// ------------------------------------------------------------------ conv, linear, matmul

TEST(OpErrors, Conv2d) {
  const Tensor x = f32({1, 3, 5, 5}), w = f32({4, 3, 3, 3}), b = f32({4});
  EXPECT_NO_THROW(nn::conv2d(x, w, b));
  EXPECT_CXR_ERROR(nn::conv2d(x, f32({4, 2, 3, 3}), b), "conv2d", "input channels", "has 3");
  EXPECT_CXR_ERROR(nn::conv2d(f32({1, 4, 5, 5}), w, b), "conv2d", "has 4");
  EXPECT_CXR_ERROR(nn::conv2d(x, f32({4, 1, 3, 3}), b, nn::Conv2dOptions::make(1, 0, 1, 2)), "conv2d",
                   "divisible by groups 2");
  EXPECT_CXR_ERROR(nn::conv2d(f32({1, 4, 5, 5}), f32({3, 2, 3, 3}), Tensor(), nn::Conv2dOptions::make(1, 0, 1, 2)),
                   "conv2d", "divisible by groups");
  EXPECT_CXR_ERROR(nn::conv2d(f32({3, 5, 5}), w, b), "conv2d", "must be 4-D");
  EXPECT_CXR_ERROR(nn::conv2d(x, f32({4, 3, 9}), b), "conv2d", "weight", "4-D");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, f32({3})), "conv2d", "bias", "must be (4)");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, f32({4, 1})), "conv2d", "bias");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, f64({4})), "conv2d", "bias", "differ in dtype");
  EXPECT_CXR_ERROR(nn::conv2d(i64({1, 3, 5, 5}), w, b), "conv2d", "input", "f32 or f64");
  EXPECT_CXR_ERROR(nn::conv2d(x, f64({4, 3, 3, 3}), Tensor()), "conv2d", "differ in dtype");
  EXPECT_CXR_ERROR(nn::conv2d(f32({0, 3, 5, 5}), w, b), "conv2d", "empty");
  EXPECT_CXR_ERROR(nn::conv2d(Tensor(), w, b), "conv2d", "input is undefined");
  EXPECT_CXR_ERROR(nn::conv2d(x, Tensor(), b), "conv2d", "weight is undefined");
  // Kernel larger than the (padded, dilated) input.
  EXPECT_CXR_ERROR(nn::conv2d(f32({1, 3, 2, 2}), w, b), "conv2d", "smaller than the dilated kernel");
  EXPECT_CXR_ERROR(nn::conv2d(f32({1, 3, 4, 4}), w, b, nn::Conv2dOptions::make(1, 0, 2)), "conv2d", "smaller");
  EXPECT_NO_THROW(nn::conv2d(f32({1, 3, 2, 2}), w, b, nn::Conv2dOptions::make(1, 1)));
  // Bad options.
  EXPECT_CXR_ERROR(nn::conv2d(x, w, b, nn::Conv2dOptions::make(0, 0)), "conv2d", "stride");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, b, nn::Conv2dOptions::make(1, -1)), "conv2d", "padding");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, b, nn::Conv2dOptions::make(1, 0, 0)), "conv2d", "dilation");
  EXPECT_CXR_ERROR(nn::conv2d(x, w, b, nn::Conv2dOptions::make(1, 0, 1, 0)), "conv2d", "groups");
}

TEST(OpErrors, LinearAndMatmul) {
  const Tensor x = f32({2, 5}), w = f32({3, 5}), b = f32({3});
  EXPECT_NO_THROW(nn::linear(x, w, b));
  EXPECT_CXR_ERROR(nn::linear(f32({2, 4}), w, b), "linear", "weight", "(out_features, 4)");
  EXPECT_CXR_ERROR(nn::linear(f32({2, 5, 1}), w, b), "linear", "must be 2-D");
  EXPECT_CXR_ERROR(nn::linear(x, f32({15}), b), "linear", "weight");
  EXPECT_CXR_ERROR(nn::linear(x, w, f32({4})), "linear", "bias", "must be (3)");
  EXPECT_CXR_ERROR(nn::linear(x, f64({3, 5}), Tensor()), "linear", "differ in dtype");
  EXPECT_CXR_ERROR(nn::linear(x, w, f64({3})), "linear", "differ in dtype");
  EXPECT_CXR_ERROR(nn::linear(i64({2, 5}), w, b), "linear", "f32 or f64");
  EXPECT_CXR_ERROR(nn::linear(f32({0, 5}), w, b), "linear", "empty");
  EXPECT_CXR_ERROR(nn::linear(Tensor(), w, b), "linear", "undefined");

  EXPECT_NO_THROW(nn::matmul(f32({2, 3}), f32({3, 4})));
  EXPECT_CXR_ERROR(nn::matmul(f32({2, 3}), f32({4, 3})), "matmul", "cannot multiply", "(M, K) x (K, N)");
  EXPECT_CXR_ERROR(nn::matmul(f32({3}), f32({3, 4})), "matmul", "cannot multiply");
  EXPECT_CXR_ERROR(nn::matmul(f32({2, 3}), f32({1, 3, 4})), "matmul");
  EXPECT_CXR_ERROR(nn::matmul(f32({2, 3}), f64({3, 4})), "matmul", "differ in dtype");
  EXPECT_CXR_ERROR(nn::matmul(i64({2, 3}), i64({3, 4})), "matmul", "f32 or f64");
  EXPECT_CXR_ERROR(nn::matmul(f32({2, 0}), f32({0, 4})), "matmul", "empty");
  EXPECT_CXR_ERROR(nn::matmul(f32({2, 3}), Tensor()), "matmul", "undefined");
}

// ------------------------------------------------------------------ pooling, batch norm

TEST(OpErrors, Pooling) {
  const auto k3 = nn::Pool2dOptions::make(3, 1);
  EXPECT_CXR_ERROR(nn::max_pool2d(f32({1, 1, 2, 5}), k3), "max_pool2d", "smaller than the 3x3 window");
  EXPECT_CXR_ERROR(nn::avg_pool2d(f32({1, 1, 5, 2}), k3), "avg_pool2d", "smaller than the 3x3 window");
  EXPECT_NO_THROW(nn::max_pool2d(f32({1, 1, 2, 2}), nn::Pool2dOptions::make(3, 1, 1)));
  EXPECT_CXR_ERROR(nn::max_pool2d(f32({1, 1, 4, 4}), nn::Pool2dOptions::make(2, 2, 2)), "max_pool2d", "padding");
  EXPECT_CXR_ERROR(nn::avg_pool2d(f32({1, 1, 4, 4}), nn::Pool2dOptions::make(2, 2, -1)), "avg_pool2d", "padding");
  EXPECT_CXR_ERROR(nn::max_pool2d(f32({1, 1, 4, 4}), nn::Pool2dOptions::make(2, 0)), "max_pool2d", "stride");
  EXPECT_CXR_ERROR(nn::avg_pool2d(f32({1, 1, 4, 4}), nn::Pool2dOptions::make(0, 1)), "avg_pool2d", "kernel");
  EXPECT_CXR_ERROR(nn::max_pool2d(f32({1, 4, 4}), k3), "max_pool2d", "must be 4-D");
  EXPECT_CXR_ERROR(nn::avg_pool2d(i64({1, 1, 4, 4}), k3), "avg_pool2d", "f32 or f64");
  EXPECT_CXR_ERROR(nn::max_pool2d(f32({1, 0, 4, 4}), k3), "max_pool2d", "empty");
  EXPECT_CXR_ERROR(nn::max_pool2d(Tensor(), k3), "max_pool2d", "undefined");
  EXPECT_CXR_ERROR(nn::global_avg_pool2d(f32({2, 3})), "global_avg_pool2d", "must be 4-D");
  EXPECT_CXR_ERROR(nn::global_avg_pool2d(f32({2, 3, 0, 4})), "global_avg_pool2d", "empty");
  EXPECT_CXR_ERROR(nn::global_avg_pool2d(Tensor()), "global_avg_pool2d", "undefined");
}

TEST(OpErrors, BatchNorm) {
  const Tensor x = f32({2, 3, 4, 4});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3}), none;
  EXPECT_NO_THROW(nn::batch_norm(x, f32({3}), f32({3}), rm, rv, true));
  EXPECT_CXR_ERROR(nn::batch_norm(x, f32({4}), f32({3}), rm, rv, true), "batch_norm", "weight", "must be (3)");
  EXPECT_CXR_ERROR(nn::batch_norm(x, f32({3}), f32({2}), rm, rv, true), "batch_norm", "bias", "must be (3)");
  Tensor rm4 = Tensor::zeros({4}), rv4 = Tensor::ones({4});
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm4, rv, true), "batch_norm", "running_mean", "must be (3)");
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm, rv4, false), "batch_norm", "running_var", "must be (3)");
  EXPECT_CXR_ERROR(nn::batch_norm(f32({2, 4}), none, none, rm, rv, true), "batch_norm", "must be (4)");
  EXPECT_CXR_ERROR(nn::batch_norm(f32({2, 3, 4}), none, none, rm, rv, true), "batch_norm", "(N, C, H, W) or (N, C)");
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, none, none, false), "batch_norm", "running_mean is required");
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm, none, false), "batch_norm", "running_var is required");
  // Training updates both running statistics or neither: one alone is a caller bug.
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm, none, true), "batch_norm", "running_var");
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, none, rv, true), "batch_norm", "running_mean");
  EXPECT_CXR_ERROR(nn::batch_norm(f32({1, 3}), none, none, rm, rv, true), "batch_norm", "more than one value");
  EXPECT_CXR_ERROR(nn::batch_norm(f32({1, 3, 1, 1}), none, none, rm, rv, true), "batch_norm", "more than one value");
  EXPECT_NO_THROW(nn::batch_norm(f32({1, 3}), none, none, rm, rv, false));  // eval: one sample is fine
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm, rv, true, 0.1, 0.0), "batch_norm", "eps");
  EXPECT_CXR_ERROR(nn::batch_norm(x, f64({3}), none, rm, rv, true), "batch_norm", "differ in dtype");
  Tensor rm64 = Tensor::zeros({3}, DType::f64);
  EXPECT_CXR_ERROR(nn::batch_norm(x, none, none, rm64, rv, true), "batch_norm", "differ in dtype");
  EXPECT_CXR_ERROR(nn::batch_norm(i64({2, 3}), none, none, rm, rv, true), "batch_norm", "f32 or f64");
  EXPECT_CXR_ERROR(nn::batch_norm(f32({0, 3}), none, none, rm, rv, true), "batch_norm", "empty");
  EXPECT_CXR_ERROR(nn::batch_norm(Tensor(), none, none, rm, rv, true), "batch_norm", "undefined");
  // The failed calls above left the running statistics alone.
  Tensor rm_check = Tensor::zeros({3}), rv_check = Tensor::ones({3});
  EXPECT_THROW(nn::batch_norm(x, f32({4}), none, rm_check, rv_check, true), Error);
  EXPECT_EQ(rm_check.to_vector(), (std::vector<double>(3, 0.0)));
  EXPECT_EQ(rv_check.to_vector(), (std::vector<double>(3, 1.0)));
}

// ------------------------------------------------------------------ softmax and losses

TEST(OpErrors, Softmax) {
  EXPECT_CXR_ERROR(nn::softmax(f32({2, 3}), 2), "softmax", "dim 2 out of range");
  EXPECT_CXR_ERROR(nn::softmax(f32({2, 3}), -3), "softmax", "out of range");
  EXPECT_CXR_ERROR(nn::log_softmax(f32({2, 3}), 5), "log_softmax", "out of range");
  EXPECT_CXR_ERROR(nn::softmax(Tensor::scalar(1.0)), "softmax", "at least one dim");
  EXPECT_CXR_ERROR(nn::softmax(i64({3})), "softmax", "f32 or f64");
  EXPECT_CXR_ERROR(nn::log_softmax(f32({0, 3})), "log_softmax", "empty");
  EXPECT_CXR_ERROR(nn::softmax(Tensor()), "softmax", "undefined");
}

TEST(OpErrors, CrossEntropy) {
  const Tensor z = f32({3, 4});
  const Tensor t = targets({0, 3, 1});
  EXPECT_NO_THROW(nn::cross_entropy(z, t));
  EXPECT_CXR_ERROR(nn::cross_entropy(z, targets({0, 1})), "cross_entropy", "target", "must be (3)");
  EXPECT_CXR_ERROR(nn::cross_entropy(z, i64({3, 1})), "cross_entropy", "target", "must be (3)");
  EXPECT_CXR_ERROR(nn::cross_entropy(z, f32({3})), "cross_entropy", "target", "i64");
  EXPECT_CXR_ERROR(nn::cross_entropy(z, targets({0, 4, 1})), "cross_entropy", "target value 4", "[0, 4)");
  EXPECT_CXR_ERROR(nn::cross_entropy(z, targets({-1, 0, 1})), "cross_entropy", "target value -1");
  EXPECT_CXR_ERROR(nn::cross_entropy(z, Tensor()), "cross_entropy", "target is undefined");
  EXPECT_CXR_ERROR(nn::cross_entropy(Tensor(), t), "cross_entropy", "logits is undefined");
  EXPECT_CXR_ERROR(nn::cross_entropy(f32({12}), t), "cross_entropy", "must be (N, C)");
  EXPECT_CXR_ERROR(nn::cross_entropy(f32({3, 4, 1}), t), "cross_entropy", "must be (N, C)");
  EXPECT_CXR_ERROR(nn::cross_entropy(i64({3, 4}), t), "cross_entropy", "f32 or f64");
  EXPECT_CXR_ERROR(nn::cross_entropy(f32({0, 4}), targets({})), "cross_entropy", "empty");
  nn::CrossEntropyOptions o;
  for (double eps : {1.0, -0.1, 1.5}) {
    o.label_smoothing = eps;
    EXPECT_CXR_ERROR(nn::cross_entropy(z, t, o), "cross_entropy", "label_smoothing", "[0, 1)");
  }
  o.label_smoothing = 0;
  o.class_weight = f32({3});
  EXPECT_CXR_ERROR(nn::cross_entropy(z, t, o), "cross_entropy", "class_weight", "must be (4)");
  o.class_weight = f64({4});
  EXPECT_CXR_ERROR(nn::cross_entropy(z, t, o), "cross_entropy", "differ in dtype");
  o.class_weight = Tensor::from_vector(std::vector<float>{0, 1, 1, 0}, {4});
  EXPECT_CXR_ERROR(nn::cross_entropy(z, targets({0, 3, 0}), o), "cross_entropy", "sum to 0");
  EXPECT_NO_THROW(nn::cross_entropy(z, targets({0, 3, 1}), o));
}

TEST(OpErrors, BceAndMse) {
  const char* bce = "binary_cross_entropy_with_logits";
  EXPECT_NO_THROW(nn::binary_cross_entropy_with_logits(f32({2, 3}), f32({2, 3}), f32({3})));
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({2, 3}), f32({3, 2})), bce, "same shape");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({6}), f32({2, 3})), bce, "same shape");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({2, 3}), f32({2, 3}), f32({2})), bce, "pos_weight",
                   "1 or 3 elements");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({2, 3}), f64({2, 3})), bce, "differ in dtype");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({2, 3}), f32({2, 3}), f64({3})), bce, "differ in dtype");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({2, 3}), i64({2, 3})), bce, "f32 or f64");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(f32({0}), f32({0})), bce, "empty");
  EXPECT_CXR_ERROR(nn::binary_cross_entropy_with_logits(Tensor(), f32({2})), bce, "undefined");

  EXPECT_CXR_ERROR(nn::mse_loss(f32({2, 3}), f32({3, 2})), "mse_loss", "same shape");
  EXPECT_CXR_ERROR(nn::mse_loss(f32({2}), f64({2})), "mse_loss", "differ in dtype");
  EXPECT_CXR_ERROR(nn::mse_loss(f32({0}), f32({0})), "mse_loss", "empty");
  EXPECT_CXR_ERROR(nn::mse_loss(f32({2}), Tensor()), "mse_loss", "undefined");
}

// ------------------------------------------------------------------ autograd errors

Tensor leaf(const Shape& s, double v = 1.0) {
  Tensor t = Tensor::full(s, v, DType::f64);
  t.set_requires_grad(true);
  return t;
}

TEST(AutogradErrors, NonScalarRootNeedsGradOut) {
  Tensor x = leaf({3});
  Tensor y = nn::mul_scalar(x, 2.0);
  EXPECT_CXR_ERROR(nn::backward(y), "backward", "not a scalar");
  // With an explicit gradient it works.
  nn::backward(y, Tensor::full({3}, 0.5, DType::f64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(3, 1.0)));
}

TEST(AutogradErrors, GradOutMustMatchRoot) {
  Tensor x = leaf({3});
  Tensor y = nn::mul_scalar(x, 2.0);
  EXPECT_CXR_ERROR(nn::backward(y, Tensor::ones({4}, DType::f64)), "backward", "does not match root");
  EXPECT_CXR_ERROR(nn::backward(y, Tensor::ones({3}, DType::f32)), "backward", "does not match root");
}

TEST(AutogradErrors, BackwardTwiceWithoutRetainGraph) {
  Tensor x = leaf({2}, 3.0);
  Tensor y = nn::sum(nn::mul(x, x));
  nn::backward(y);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(2, 6.0)));
  EXPECT_CXR_ERROR(nn::backward(y), "second time", "retain_graph");
  // The failed second backward left the gradient alone.
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(2, 6.0)));
}

TEST(AutogradErrors, BackwardTwiceWithRetainGraphAccumulates) {
  Tensor x = leaf({2}, 3.0);
  Tensor y = nn::sum(nn::mul(x, x));
  nn::backward(y, Tensor(), /*retain_graph=*/true);
  nn::backward(y, Tensor(), /*retain_graph=*/true);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(2, 12.0)));
  nn::backward(y);  // the last one may free the graph
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(2, 18.0)));
  EXPECT_THROW(nn::backward(y), Error);
}

TEST(AutogradErrors, RootNotRequiringGrad) {
  Tensor x = Tensor::ones({2}, DType::f64);
  Tensor y = nn::sum(nn::mul(x, x));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_CXR_ERROR(nn::backward(y), "backward", "does not require grad");
  EXPECT_CXR_ERROR(nn::backward(Tensor()), "backward", "undefined");
  Tensor l = leaf({2});
  Tensor z;
  {
    nn::NoGradGuard guard;
    z = nn::sum(nn::mul(l, l));
  }
  EXPECT_CXR_ERROR(nn::backward(z), "backward", "does not require grad", "NoGradGuard");
}

// ------------------------------------------------------------------ autograd behaviours

TEST(Autograd, LeafGradientAccumulatesAcrossBackwardCalls) {
  Tensor x = leaf({3}, 2.0);
  nn::backward(nn::sum(nn::mul_scalar(x, 3.0)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(3, 3.0)));
  nn::backward(nn::sum(nn::mul(x, x)));  // a second, separate graph: += 2x
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(3, 7.0)));
  // Clearing the gradient (zero_grad) restarts accumulation.
  x.set_grad(Tensor());
  nn::backward(nn::sum(x));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(3, 1.0)));
}

TEST(Autograd, LeafGradientsDoNotAlias) {
  // add hands the same upstream gradient to both inputs; the leaves' .grad must be
  // separate tensors, and the caller's grad_out must not be modified by accumulation.
  Tensor a = leaf({2}), b = leaf({2});
  const Tensor g = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2});
  nn::backward(nn::add(a, b), g);
  nn::backward(nn::add(a, b), g);
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{2, 4}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<double>{2, 4}));
  EXPECT_FALSE(a.grad().same_storage(b.grad()));
  EXPECT_FALSE(a.grad().same_storage(g));
  EXPECT_EQ(g.to_vector(), (std::vector<double>{1, 2}));
  // A leaf as the root: its gradient is a copy of grad_out.
  Tensor c = leaf({2});
  nn::backward(c, g);
  nn::backward(c, g);
  EXPECT_EQ(c.grad().to_vector(), (std::vector<double>{2, 4}));
  EXPECT_EQ(g.to_vector(), (std::vector<double>{1, 2}));
}

TEST(Autograd, TensorUsedTwiceGetsSummedGradient) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.5, -2.0, 0.25}, {3});
  x.set_requires_grad(true);
  nn::backward(nn::sum(nn::mul(x, x)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3.0, -4.0, 0.5}));
  // x + x, and x reaching the loss along three paths: y = 2x, L = sum(y + y*x).
  Tensor w = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2});
  w.set_requires_grad(true);
  nn::backward(nn::sum(nn::add(w, w)));
  EXPECT_EQ(w.grad().to_vector(), (std::vector<double>{2, 2}));
  w.set_grad(Tensor());
  Tensor y = nn::mul_scalar(w, 2.0);
  nn::backward(nn::sum(nn::add(y, nn::mul(y, w))));  // L = sum(2w + 2w^2), dL/dw = 2 + 4w
  EXPECT_EQ(w.grad().to_vector(), (std::vector<double>{6, 10}));
}

TEST(Autograd, RetainGradOnIntermediate) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  x.set_requires_grad(true);
  Tensor y = nn::mul_scalar(x, 2.0);  // y = 2x
  y.retain_grad();
  Tensor z = nn::mul(y, y);  // not retained
  // L = sum(y^2): dL/dy = 2y = 4x, dL/dx = 8x. The graph is kept for a second pass.
  nn::backward(nn::sum(z), Tensor(), /*retain_graph=*/true);
  ASSERT_TRUE(y.grad().defined());
  EXPECT_EQ(y.grad().to_vector(), (std::vector<double>{4, 8, 12}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{8, 16, 24}));
  EXPECT_FALSE(z.grad().defined()) << "intermediates without retain_grad keep no gradient";
  // A retained intermediate accumulates over backward calls like a leaf: += dsum(y)/dy.
  nn::backward(nn::sum(y));
  EXPECT_EQ(y.grad().to_vector(), (std::vector<double>{5, 9, 13}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{10, 18, 26}));
}

TEST(Autograd, RetainGradFeatureMapThroughConv) {
  // The Grad-CAM pattern: the gradient of a score with respect to a feature map.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor w = Tensor::from_vector(std::vector<double>{0.5}, {1, 1, 1, 1});
  w.set_requires_grad(true);
  Tensor fmap = nn::conv2d(x, w, Tensor());
  fmap.retain_grad();
  Tensor score = nn::sum(nn::mul(fmap, fmap));
  nn::backward(score);
  EXPECT_EQ(fmap.grad().to_vector(), (std::vector<double>{1, 2, 3, 4}));  // 2 * fmap
  EXPECT_FALSE(x.grad().defined());  // x does not require grad
}

TEST(Autograd, NoGradGuardStopsRecording) {
  Tensor x = leaf({2});
  EXPECT_TRUE(nn::grad_enabled());
  {
    nn::NoGradGuard guard;
    EXPECT_FALSE(nn::grad_enabled());
    Tensor y = nn::mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    {
      nn::NoGradGuard nested;
      EXPECT_FALSE(nn::grad_enabled());
    }
    EXPECT_FALSE(nn::grad_enabled()) << "an inner guard restores the outer state";
  }
  EXPECT_TRUE(nn::grad_enabled());
  Tensor y = nn::mul(x, x);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_NE(y.grad_fn(), nullptr);
  // Grad mode is per thread.
  nn::NoGradGuard guard;
  bool other_thread_enabled = false;
  std::thread t([&] { other_thread_enabled = nn::grad_enabled(); });
  t.join();
  EXPECT_TRUE(other_thread_enabled);
  EXPECT_FALSE(nn::grad_enabled());
}

TEST(Autograd, DetachCutsTheGraph) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  x.set_requires_grad(true);
  Tensor y = nn::mul(x, x.detach());  // d/dx = x.detach(), not 2x
  nn::backward(nn::sum(y));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{1, 2}));
  // A graph made only of detached tensors cannot be back-propagated.
  Tensor d = nn::mul(x, x).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_THROW(nn::backward(nn::sum(d)), Error);
}

TEST(Autograd, ConstantsGetNoGradient) {
  Tensor x = leaf({2}), c = Tensor::ones({2}, DType::f64);
  nn::backward(nn::sum(nn::mul(x, c)));
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, GraphNodesNameTheirOps) {
  Tensor x = leaf({1, 1, 3, 3});
  Tensor w = leaf({1, 1, 1, 1});
  EXPECT_EQ(nn::conv2d(x, w, Tensor()).grad_fn()->name(), "conv2d");
  EXPECT_EQ(nn::relu(x).grad_fn()->name(), "relu");
  EXPECT_EQ(nn::add(x, x).grad_fn()->name(), "add");
  EXPECT_EQ(nn::sum(x).grad_fn()->name(), "sum");
  EXPECT_EQ(nn::max_pool2d(x, nn::Pool2dOptions::make(2, 1)).grad_fn()->name(), "max_pool2d");
}

}  // namespace
}  // namespace cxr
