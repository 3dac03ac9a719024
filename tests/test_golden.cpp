// End-to-end check against PyTorch: one training step of simple_cnn (forward in train
// mode, mean cross entropy, backward, then one Adam step and, from the same start, one
// Nesterov SGD step) on fixed inputs and weights, compared with values PyTorch computed.
//
// The golden files in tests/data come from tools/golden/make_simple_cnn_golden.py; the
// file carries the inputs, the initial state dict, the expected results and, in its
// metadata, the model spec and optimizer settings, so this test needs no torch. The f64
// file pins the math (both sides in double, agreement to ~1e-10); the f32 file checks
// the float path against PyTorch's own float run from the same f32-rounded weights.
// Regenerate (Debian's python3-torch): /usr/bin/python3 tools/golden/make_simple_cnn_golden.py tests/data
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

namespace cxr::nn {
namespace {

using json = nlohmann::json;

struct Precision {
  const char* suffix;  // file name suffix and golden.dtype metadata
  DType dtype;
  double tol;  // on max |got - want| / max |want| per tensor
};

std::ostream& operator<<(std::ostream& os, const Precision& p) { return os << p.suffix; }

// Error of `got` against `want` scaled by want's largest magnitude, so that elements
// near zero (a ReLU'd activation's gradient, a tiny bias) are judged on the tensor's
// scale rather than their own.
struct Mismatch {
  double rel = 0;  // max |got - want| / max |want|
  int64_t worst = -1;
  double got = 0, want = 0;
};

Mismatch compare(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = got.to_vector(), w = want.to_vector();
  double scale = 0;
  for (double v : w) scale = std::max(scale, std::abs(v));
  if (scale == 0) scale = 1;
  Mismatch m;
  for (size_t i = 0; i < w.size(); ++i) {
    const double e = std::abs(g[i] - w[i]) / scale;
    if (!(e <= m.rel)) {  // also catches NaN
      m.rel = std::isnan(e) ? INFINITY : e;
      m.worst = static_cast<int64_t>(i);
      m.got = g[i];
      m.want = w[i];
    }
  }
  return m;
}

class GoldenSimpleCnn : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override {
    const std::string path = std::string(CXR_TEST_DATA_DIR) + "/golden_simple_cnn_" + GetParam().suffix + ".safetensors";
    golden_ = load_safetensors(path);
    ASSERT_EQ(golden_.metadata.at("golden.dtype"), GetParam().suffix);
    spec_ = json::parse(golden_.metadata.at("golden.spec"));
  }

  const Tensor& want(const std::string& name) const {
    auto it = golden_.tensors.find(name);
    if (it == golden_.tensors.end()) throw Error("golden file has no tensor '" + name + "'");
    return it->second;
  }

  // Entries whose names start with `prefix`, with the prefix removed.
  std::map<std::string, Tensor> with_prefix(const std::string& prefix) const {
    std::map<std::string, Tensor> out;
    for (const auto& [name, t] : golden_.tensors)
      if (name.rfind(prefix, 0) == 0) out[name.substr(prefix.size())] = t;
    return out;
  }

  // A model at the test's precision holding the golden initial state, in train mode.
  std::shared_ptr<Model> fresh_model() const {
    auto model = build_model(spec_, 0);
    model->to(GetParam().dtype);
    const auto init = with_prefix("init.");
    std::vector<std::string> mine, theirs;
    for (const auto& [name, t] : model->state_dict()) mine.push_back(name);
    for (const auto& [name, t] : init) theirs.push_back(name);
    EXPECT_EQ(mine, theirs) << "state dict names differ from PyTorch's nn.Sequential";
    model->load_state_dict(init);
    model->train();
    return model;
  }

  // Forward, loss and backward; returns {logits, loss}.
  std::pair<Tensor, Tensor> step_grads(Model& model) const {
    const Tensor& x = want("input");
    EXPECT_EQ(x.dtype(), GetParam().dtype);
    Tensor logits = model(x);
    Tensor loss = cross_entropy(logits, want("target"));
    backward(loss);
    return {logits, loss};
  }

  // Compares and records the worst error of one group of tensors ("grad", "adam", ...).
  void expect_close(const std::string& group, const std::string& name, const Tensor& got, const Tensor& ref) {
    ASSERT_TRUE(got.defined()) << group << " " << name << " is undefined";
    ASSERT_EQ(got.shape(), ref.shape()) << group << " " << name;
    if (ref.dtype() == DType::i64) {
      EXPECT_EQ(got.to_vector(), ref.to_vector()) << group << " " << name;
      return;
    }
    EXPECT_EQ(got.dtype(), ref.dtype()) << group << " " << name;
    const Mismatch m = compare(got, ref);
    worst_[group] = std::max(worst_[group], m.rel);
    EXPECT_LE(m.rel, GetParam().tol) << group << " " << name << " " << got.str() << ": max relative error " << m.rel
                                     << " at element " << m.worst << " (got " << m.got << ", PyTorch " << m.want << ")";
  }

  void TearDown() override {
    for (const auto& [group, err] : worst_)
      std::printf("[ %s ] %-14s max relative error %.3g\n", GetParam().suffix, group.c_str(), err);
  }

  SafetensorsFile golden_;
  json spec_;
  std::map<std::string, double> worst_;
};

TEST_P(GoldenSimpleCnn, ForwardBackwardAndBatchNormStatistics) {
  auto model = fresh_model();
  auto [logits, loss] = step_grads(*model);
  expect_close("logits", "logits", logits, want("logits"));
  expect_close("loss", "loss", loss, want("loss"));
  for (const auto& [name, p] : model->named_parameters()) expect_close("grad", name, p.grad(), want("grad." + name));
  for (const auto& [name, b] : model->named_buffers()) expect_close("running_stats", name, b, want("after_forward." + name));
}

TEST_P(GoldenSimpleCnn, AdamStepWithL2WeightDecay) {
  const json h = json::parse(golden_.metadata.at("golden.adam"));
  auto model = fresh_model();
  step_grads(*model);
  AdamOptions o;
  o.lr = h["lr"];
  o.beta1 = h["beta1"];
  o.beta2 = h["beta2"];
  o.eps = h["eps"];
  o.weight_decay = h["weight_decay"];
  o.decoupled_weight_decay = false;  // PyTorch's Adam adds wd * p to the gradient
  Adam adam(single_param_group(*model, o.lr, o.weight_decay), o);
  adam.step();
  for (const auto& [name, p] : model->named_parameters()) expect_close("adam", name, p, want("adam." + name));
}

TEST_P(GoldenSimpleCnn, NesterovSgdStepWithWeightDecay) {
  const json h = json::parse(golden_.metadata.at("golden.sgd"));
  auto model = fresh_model();
  step_grads(*model);
  SgdOptions o;
  o.lr = h["lr"];
  o.momentum = h["momentum"];
  o.dampening = 0;
  o.nesterov = h["nesterov"];
  o.weight_decay = h["weight_decay"];
  SGD sgd(single_param_group(*model, o.lr, o.weight_decay), o);
  sgd.step();
  for (const auto& [name, p] : model->named_parameters()) expect_close("sgd", name, p, want("sgd." + name));
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenSimpleCnn,
                         ::testing::Values(Precision{"f64", DType::f64, 1e-10}, Precision{"f32", DType::f32, 2e-5}),
                         [](const ::testing::TestParamInfo<Precision>& i) { return std::string(i.param.suffix); });

}  // namespace
}  // namespace cxr::nn
