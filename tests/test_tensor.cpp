// Tensor: creation, shapes, views, copies, dtype conversion, autograd flags, errors,
// Device parsing.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "expect_error.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "runtime/tensor.h"

namespace cxr {
namespace {

TEST(Tensor, DefaultIsUndefined) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_EQ(t.str(), "undefined");
  EXPECT_FALSE(t.requires_grad());
  EXPECT_TRUE(t.is_leaf());
  EXPECT_EQ(t.grad_fn(), nullptr);
}

TEST(Tensor, ZerosOnesFull) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(z.nbytes(), 24u);
  for (double v : z.to_vector()) EXPECT_EQ(v, 0.0);

  Tensor o = Tensor::ones({4}, DType::f64);
  EXPECT_EQ(o.dtype(), DType::f64);
  EXPECT_EQ(o.nbytes(), 32u);
  for (double v : o.to_vector()) EXPECT_EQ(v, 1.0);

  Tensor f = Tensor::full({2, 1, 3}, -2.5, DType::f32);
  for (double v : f.to_vector()) EXPECT_EQ(v, -2.5);

  Tensor i = Tensor::full({3}, 7, DType::i64);
  EXPECT_EQ(i.dtype(), DType::i64);
  EXPECT_EQ(i.data<int64_t>()[2], 7);
}

TEST(Tensor, ScalarAndItem) {
  Tensor s = Tensor::scalar(3.25);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.shape(), Shape{});
  EXPECT_EQ(s.item(), 3.25);
  EXPECT_EQ(Tensor::scalar(-1.5, DType::f64).item(), -1.5);
  EXPECT_EQ(Tensor::from_vector(std::vector<int64_t>{42}, {1, 1}).item(), 42.0);
  expect_error([] { Tensor::zeros({2}).item(); }, {"item()", "2 elements"});
}

TEST(Tensor, FromVectorAndToVector) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(a.dtype(), DType::f32);
  EXPECT_EQ(a.to_vector(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(a.data<float>()[4], 5.0f);

  Tensor b = Tensor::from_vector(std::vector<double>{0.1, 0.2}, {2});
  EXPECT_EQ(b.dtype(), DType::f64);
  EXPECT_EQ(b.to_vector()[0], 0.1);

  Tensor c = Tensor::from_vector(std::vector<int64_t>{-3, 9}, {2, 1});
  EXPECT_EQ(c.dtype(), DType::i64);
  EXPECT_EQ(c.to_vector(), (std::vector<double>{-3, 9}));

  expect_error([] { Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}); }, {"from_vector", "3 values"});
  // The copy is independent of the source vector.
  std::vector<double> src = {1, 2};
  Tensor d = Tensor::from_vector(src, {2});
  src[0] = 100;
  EXPECT_EQ(d.to_vector()[0], 1.0);
}

TEST(Tensor, EmptyTensorsWithZeroDims) {
  Tensor e = Tensor::zeros({0, 3});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.nbytes(), 0u);
  EXPECT_TRUE(e.to_vector().empty());
  Tensor c = e.clone();
  EXPECT_EQ(c.shape(), (Shape{0, 3}));
}

TEST(Tensor, SizeWithNegativeDims) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(2), 4);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(-3), 2);
  expect_error([&] { t.size(3); }, {"size(3)", "out of range"});
  expect_error([&] { t.size(-4); }, {"size(-4)", "out of range"});
}

TEST(Tensor, StrDescribesDtypeShapeDevice) {
  EXPECT_EQ(Tensor::zeros({64, 1, 28, 28}).str(), "f32[64, 1, 28, 28] on cpu");
  EXPECT_EQ(Tensor::zeros({}, DType::f64).str(), "f64[] on cpu");
  EXPECT_EQ(shape_str({2, 3}), "[2, 3]");
  EXPECT_EQ(shape_numel({2, 3, 4}), 24);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_STREQ(dtype_name(DType::i64), "i64");
}

TEST(Tensor, ViewSharesStorageAndInfersMinusOne) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {2, 6});
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 4}));
  EXPECT_TRUE(v.same_storage(t));
  v.data<float>()[5] = 100;
  EXPECT_EQ(t.data<float>()[5], 100.0f);  // a view, not a copy

  EXPECT_EQ(t.view({-1}).shape(), (Shape{12}));
  EXPECT_EQ(t.view({2, -1, 3}).shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(t.view({1, 1, 12, 1, 1}).shape(), (Shape{1, 1, 12, 1, 1}));
  EXPECT_EQ(Tensor::scalar(1).view({1, 1}).shape(), (Shape{1, 1}));
}

TEST(Tensor, ViewRejectsBadShapes) {
  Tensor t = Tensor::zeros({2, 6});
  expect_error([&] { t.view({5, 3}); }, {"view", "12 elements", "15 elements"});
  expect_error([&] { t.view({5, -1}); }, {"view", "cannot reshape"});
  expect_error([&] { t.view({-1, -1}); }, {"only one dimension may be -1"});
  expect_error([&] { t.view({-2, 6}); }, {"negative dimension"});
  expect_error([&] { t.view({1, 1, 1, 1, 2, 6}); }, {"6 dims", "at most 5"});
  expect_error([] { Tensor().view({1}); }, {"view(): tensor is undefined"});
}

TEST(Tensor, CloneIsDeep) {
  Tensor t = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  Tensor c = t.clone();
  EXPECT_FALSE(c.same_storage(t));
  EXPECT_EQ(c.shape(), t.shape());
  EXPECT_EQ(c.dtype(), t.dtype());
  c.data<double>()[0] = -1;
  EXPECT_EQ(t.data<double>()[0], 1.0);

  Tensor copy = t;  // handle copy shares storage
  EXPECT_TRUE(copy.same_storage(t));
  copy.data<double>()[1] = 20;
  EXPECT_EQ(t.data<double>()[1], 20.0);
  EXPECT_FALSE(t.same_storage(Tensor()));
}

TEST(Tensor, CopyAndFill) {
  Tensor a = Tensor::zeros({2, 2}, DType::f64);
  Tensor b = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {4});
  a.copy_(b);  // same numel, any shape
  EXPECT_EQ(a.to_vector(), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_FALSE(a.same_storage(b));
  a.fill_(0.5);
  EXPECT_EQ(a.to_vector(), (std::vector<double>(4, 0.5)));
  expect_error([&] { a.copy_(Tensor::zeros({3}, DType::f64)); }, {"copy_", "cannot copy"});
  expect_error([&] { a.copy_(Tensor::zeros({4}, DType::f32)); }, {"copy_", "cannot copy"});
}

TEST(Tensor, ToDTypeConverts) {
  Tensor f = Tensor::from_vector(std::vector<float>{1.5f, -2.75f, 3.0f}, {3});
  Tensor d = f.to(DType::f64);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_FALSE(d.same_storage(f));
  EXPECT_EQ(d.to_vector(), (std::vector<double>{1.5, -2.75, 3.0}));
  Tensor i = f.to(DType::i64);
  EXPECT_EQ(i.dtype(), DType::i64);
  EXPECT_EQ(i.to_vector(), (std::vector<double>{1, -2, 3}));  // truncation toward zero
  Tensor back = d.to(DType::f32);
  EXPECT_EQ(back.to_vector(), f.to_vector());
  // Same dtype: the same tensor.
  EXPECT_TRUE(f.to(DType::f32).same_storage(f));
  // f64 -> f32 rounds.
  Tensor precise = Tensor::from_vector(std::vector<double>{0.1}, {1});
  EXPECT_EQ(precise.to(DType::f32).to_vector()[0], static_cast<double>(0.1f));
}

TEST(Tensor, ToDeviceCpuIsIdentityAndCudaThrowsInCpuBuild) {
  Tensor t = Tensor::ones({2});
  EXPECT_TRUE(t.to(Device::cpu()).same_storage(t));
#ifndef CXR_WITH_CUDA
  expect_error([&] { t.to(Device::cuda(0)); }, {"cuda:0"});
  expect_error([] { Tensor::zeros({2}, DType::f32, Device::cuda()); }, {"cuda:0"});
#endif
}

TEST(Tensor, DataChecksDtype) {
  Tensor t = Tensor::zeros({2});
  EXPECT_NO_THROW(t.data<float>());
  expect_error([&] { t.data<double>(); }, {"data<f64>()", "dtype f32"});
  expect_error([&] { t.data<int64_t>(); }, {"data<i64>()", "dtype f32"});
  expect_error([] { Tensor().data<float>(); }, {"undefined"});
}

TEST(Tensor, UndefinedTensorErrors) {
  Tensor u;
  expect_error([&] { (void)u.shape(); }, {"shape(): tensor is undefined"});
  expect_error([&] { (void)u.dtype(); }, {"dtype(): tensor is undefined"});
  expect_error([&] { (void)u.device(); }, {"device(): tensor is undefined"});
  expect_error([&] { (void)u.numel(); }, {"undefined"});
  expect_error([&] { (void)u.raw_data(); }, {"raw_data(): tensor is undefined"});
  expect_error([&] { (void)u.clone(); }, {"clone(): tensor is undefined"});
  expect_error([&] { (void)u.to(DType::f64); }, {"undefined"});
  expect_error([&] { (void)u.item(); }, {"undefined"});
  expect_error([&] { (void)u.detach(); }, {"detach(): tensor is undefined"});
  expect_error([&] { u.set_requires_grad(true); }, {"set_requires_grad", "undefined"});
  expect_error([&] { (void)u.grad(); }, {"grad(): tensor is undefined"});
}

TEST(Tensor, TooManyDimsOrNegativeDimsThrow) {
  expect_error([] { Tensor::zeros({1, 1, 1, 1, 1, 1}); }, {"6 dims", "at most 5"});
  expect_error([] { Tensor::empty({2, -1}); }, {"negative dimension", "[2, -1]"});
  expect_error([] { Tensor::full({-3}, 1.0); }, {"negative dimension"});
  expect_error([] { Tensor::from_vector(std::vector<float>{}, {0, -1}); }, {"negative dimension"});
  EXPECT_NO_THROW(Tensor::zeros({1, 2, 3, 4, 5}));
}

TEST(Tensor, SetRequiresGradRules) {
  Tensor x = Tensor::ones({2}, DType::f64);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_TRUE(x.is_leaf());
  x.set_requires_grad(true);
  EXPECT_TRUE(x.requires_grad());
  x.set_requires_grad(false);
  EXPECT_FALSE(x.requires_grad());
  x.set_requires_grad(true);

  // Integer tensors cannot require grad.
  expect_error([] { Tensor::zeros({2}, DType::i64).set_requires_grad(true); }, {"integer tensor"});
  EXPECT_NO_THROW(Tensor::zeros({2}, DType::i64).set_requires_grad(false));

  // A non-leaf (output of a recorded op) cannot be switched off; it may be switched on.
  Tensor y = nn::mul_scalar(x, 2.0);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.requires_grad());
  EXPECT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "mul_scalar");
  expect_error([&] { y.set_requires_grad(false); }, {"non-leaf", "detach()"});
  EXPECT_NO_THROW(y.set_requires_grad(true));
}

TEST(Tensor, GradAndRetainGradFlags) {
  Tensor x = Tensor::ones({3}, DType::f64);
  EXPECT_FALSE(x.grad().defined());
  expect_error([&] { x.retain_grad(); }, {"retain_grad", "does not require grad"});
  x.set_requires_grad(true);
  x.retain_grad();
  EXPECT_TRUE(x.retains_grad());
  x.set_grad(Tensor::full({3}, 2.0, DType::f64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(3, 2.0)));
  x.set_grad(Tensor());
  EXPECT_FALSE(x.grad().defined());
  expect_error([&] { x.set_grad(Tensor::ones({2}, DType::f64)); }, {"set_grad", "does not match"});
  expect_error([&] { x.set_grad(Tensor::ones({3}, DType::f32)); }, {"set_grad", "does not match"});
}

TEST(Tensor, DetachSharesDataButDropsGraph) {
  Tensor x = Tensor::ones({2, 2}, DType::f64);
  x.set_requires_grad(true);
  Tensor y = nn::mul_scalar(x, 3.0);
  Tensor d = y.detach();
  EXPECT_TRUE(d.same_storage(y));
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.grad_fn(), nullptr);
  EXPECT_EQ(d.shape(), y.shape());
  d.data<double>()[0] = -7;
  EXPECT_EQ(y.data<double>()[0], -7.0);
  // The original keeps its graph.
  EXPECT_NE(y.grad_fn(), nullptr);
}

TEST(Device, ParseAndStr) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:0"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
  EXPECT_TRUE(Device::parse("cuda:1").is_cuda());
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  EXPECT_FALSE(Device::cuda(0) == Device::cuda(1));
  EXPECT_FALSE(Device::cpu() == Device::cuda(0));
}

TEST(Device, ParseRejectsBadStrings) {
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:1a", "cuda1", " cpu"})
    expect_error([&] { Device::parse(bad); }, {"expected cpu, cuda or cuda:<index>"});
  // An index that does not fit an int is bad input too, reported as cxr::Error.
  expect_error([] { Device::parse("cuda:99999999999999999999"); }, {"cuda:99999999999999999999"});
}

TEST(Tensor, VersionChangesWithEveryWriteAndIsUniqueAcrossStorages) {
  Tensor a = Tensor::zeros({4}), b = Tensor::zeros({4});
  EXPECT_NE(a.version(), 0u);
  EXPECT_NE(a.version(), b.version());
  const Tensor view = a.view({2, 2});
  EXPECT_EQ(view.version(), a.version());  // one storage, one version
  const uint64_t v0 = a.version();
  a.copy_(Tensor::ones({4}));
  const uint64_t v1 = a.version();
  EXPECT_NE(v1, v0);
  EXPECT_EQ(view.version(), v1);
  a.fill_(2.0);
  EXPECT_NE(a.version(), v1);
  const uint64_t v2 = a.version();
  a.bump_version();
  EXPECT_NE(a.version(), v2);
  EXPECT_EQ(b.version(), b.version());
  EXPECT_EQ(Tensor().version(), 0u);
}

}  // namespace
}  // namespace cxr
