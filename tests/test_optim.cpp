// Optimizers against PyTorch's update rules written out by hand, parameter groups,
// gradient clipping, EMA, state round trips and argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

using Vec = std::vector<double>;

Tensor param(const Vec& v, DType dt = DType::f64) {
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(dt);
  t.set_requires_grad(true);
  return t;
}

void set_grad(Tensor p, const Vec& g) {
  p.set_grad(Tensor::from_vector(g, {static_cast<int64_t>(g.size())}).to(p.dtype()));
}

// Three steps' gradients for a 4-element parameter: signs and sizes vary, one is 0.
const std::vector<Vec> kGrads = {{0.5, -1.0, 2.0, 0.0}, {-0.25, 0.75, 1.5, -3.0}, {1.0, 0.1, -2.0, 0.5}};
const Vec kInit = {1.0, -2.0, 0.5, 3.0};

// ---------------------------------------------------------------- references (PyTorch's docs)

struct SgdRef {
  double lr, momentum, dampening, wd;
  bool nesterov;
  Vec buf;
  void step(Vec& p, const Vec& grad, bool first) {
    if (buf.empty()) buf.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i] + wd * p[i];
      if (momentum != 0) {
        buf[i] = first ? g : momentum * buf[i] + (1 - dampening) * g;
        g = nesterov ? g + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * g;
    }
  }
};

struct AdamRef {
  double lr, b1, b2, eps, wd;
  bool decoupled;
  Vec m, v;
  int t = 0;
  void step(Vec& p, const Vec& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (decoupled)
        p[i] *= 1 - lr * wd;
      else
        g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / bc1, vhat = v[i] / bc2;
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

void expect_close(const Vec& got, const Vec& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " element " << i;
}

// ---------------------------------------------------------------- SGD

TEST(SGD, MatchesPyTorchFormulasOverThreeSteps) {
  struct Case {
    const char* name;
    nn::SgdOptions o;
  };
  const std::vector<Case> cases = {
      {"plain", {0.1, 0.0, 0.0, 0.0, false}},
      {"momentum", {0.1, 0.9, 0.0, 0.0, false}},
      {"dampening", {0.1, 0.9, 0.5, 0.0, false}},
      {"nesterov", {0.05, 0.8, 0.0, 0.0, true}},
      {"weight decay", {0.1, 0.0, 0.0, 0.01, false}},
      {"everything", {0.2, 0.7, 0.3, 0.05, false}},
      {"nesterov + weight decay", {0.2, 0.7, 0.0, 0.05, true}},
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(std::string(c.name) + (dt == DType::f64 ? " f64" : " f32"));
      Tensor p = param(kInit, dt);
      nn::SGD opt({nn::ParamGroup{{p}, c.o.lr, c.o.weight_decay, "g"}}, c.o);
      SgdRef ref{c.o.lr, c.o.momentum, c.o.dampening, c.o.weight_decay, c.o.nesterov, {}};
      Vec want = kInit;
      for (size_t s = 0; s < kGrads.size(); ++s) {
        set_grad(p, kGrads[s]);
        opt.step();
        ref.step(want, kGrads[s], s == 0);
        expect_close(p.to_vector(), want, dt == DType::f64 ? 1e-14 : 1e-6, "step " + std::to_string(s));
      }
      EXPECT_EQ(opt.steps(), 3);
      EXPECT_EQ(p.dtype(), dt);
    }
  }
  // One value worked out by hand: momentum 0.9, lr 0.1, grads 1 then 1:
  // step 1: buf = 1, p = 1 - 0.1; step 2: buf = 0.9 + 1 = 1.9, p = 0.9 - 0.19 = 0.71.
  Tensor p = param({1.0});
  nn::SGD opt({nn::ParamGroup{{p}, 0.1, 0.0, ""}}, nn::SgdOptions{0.1, 0.9, 0.0, 0.0, false});
  for (int i = 0; i < 2; ++i) {
    set_grad(p, {1.0});
    opt.step();
  }
  EXPECT_NEAR(p.item(), 0.71, 1e-15);
}

TEST(SGD, GroupLearningRatesAndDecayAreUsed) {
  Tensor a = param(kInit), b = param(kInit);
  nn::SgdOptions o;  // lr and weight decay come from the groups
  o.momentum = 0.0;
  nn::SGD opt({nn::ParamGroup{{a}, 0.1, 0.0, "a"}, nn::ParamGroup{{b}, 0.01, 0.5, "b"}}, o);
  set_grad(a, kGrads[0]);
  set_grad(b, kGrads[0]);
  opt.step();
  for (size_t i = 0; i < kInit.size(); ++i) {
    EXPECT_NEAR(a.to_vector()[i], kInit[i] - 0.1 * kGrads[0][i], 1e-15);
    EXPECT_NEAR(b.to_vector()[i], kInit[i] - 0.01 * (kGrads[0][i] + 0.5 * kInit[i]), 1e-15);
  }
  opt.set_lr(0.5);
  EXPECT_EQ(opt.groups()[0].lr, 0.5);
  EXPECT_EQ(opt.groups()[1].lr, 0.5);
  EXPECT_EQ(opt.lr(), 0.5);
}

TEST(SGD, OptionsThatDisagreeWithTheGroupsAreRejected) {
  Tensor a = param(kInit), b = param(kInit);
  std::vector<nn::ParamGroup> groups = {nn::ParamGroup{{a}, 0.1, 0.0, "a"}, nn::ParamGroup{{b}, 0.01, 0.5, "b"}};
  nn::SgdOptions lr_set;
  lr_set.lr = 0.1;  // matches group a, not group b
  EXPECT_THROW(nn::SGD(groups, lr_set), Error);
  nn::AdamOptions wd_set;
  wd_set.weight_decay = 0.0;
  EXPECT_THROW(nn::Adam(groups, wd_set), Error);
  nn::SgdOptions agree;
  agree.lr = 0.1;
  agree.weight_decay = 0.0;
  EXPECT_NO_THROW(nn::SGD({groups[0]}, agree));
}

TEST(SGD, ModuleConstructorBuildsDecayAndNoDecayGroups) {
  nn::Sequential m;
  Generator gen(3);
  m.push_back(std::make_shared<nn::Linear>(4, 3, true, gen));
  nn::SgdOptions o;
  o.lr = 0.2;
  o.weight_decay = 1e-3;
  nn::SGD opt(m, o);
  ASSERT_EQ(opt.groups().size(), 2u);
  EXPECT_EQ(opt.groups()[0].lr, 0.2);
  EXPECT_EQ(opt.groups()[0].weight_decay, 1e-3);  // weight (2-D)
  EXPECT_EQ(opt.groups()[1].weight_decay, 0.0);   // bias
  nn::Adam adam(m, nn::AdamOptions{});
  EXPECT_EQ(adam.groups()[0].lr, 1e-3);
}

TEST(SGD, ParametersWithoutGradientAreSkipped) {
  Tensor a = param(kInit), b = param(kInit);
  nn::SGD opt({nn::ParamGroup{{a, b}, 0.1, 0.1, ""}}, nn::SgdOptions{0.1, 0.9, 0.0, 0.1, false});
  SgdRef ra{0.1, 0.9, 0.0, 0.1, false, {}}, rb{0.1, 0.9, 0.0, 0.1, false, {}};
  Vec wa = kInit, wb = kInit;
  for (size_t s = 0; s < 2; ++s) {
    set_grad(a, kGrads[s]);
    opt.step();
    ra.step(wa, kGrads[s], s == 0);
  }
  // Weight decay alone does not move a parameter that has no gradient.
  EXPECT_EQ(b.to_vector(), kInit);
  EXPECT_EQ(opt.state().count("0.1.momentum"), 0u);
  EXPECT_EQ(opt.state().count("0.0.momentum"), 1u);
  // b's first gradient starts its momentum buffer afresh.
  set_grad(a, kGrads[2]);
  set_grad(b, kGrads[2]);
  opt.step();
  ra.step(wa, kGrads[2], false);
  rb.step(wb, kGrads[2], true);
  expect_close(a.to_vector(), wa, 1e-14, "a");
  expect_close(b.to_vector(), wb, 1e-14, "b");
}

// ---------------------------------------------------------------- Adam / AdamW

TEST(Adam, MatchesPyTorchFormulasOverThreeSteps) {
  struct Case {
    const char* name;
    nn::AdamOptions o;
  };
  const std::vector<Case> cases = {
      {"default", {1e-3, 0.9, 0.999, 1e-8, 0.0, false}}, {"large lr, small betas", {0.1, 0.5, 0.75, 1e-8, 0.0, false}},
      {"large eps", {0.1, 0.9, 0.999, 0.5, 0.0, false}}, {"L2 weight decay", {0.1, 0.9, 0.99, 1e-8, 0.1, false}},
      {"AdamW", {0.1, 0.9, 0.99, 1e-8, 0.1, true}},      {"AdamW, large eps", {0.05, 0.8, 0.9, 0.3, 0.5, true}},
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(std::string(c.name) + (dt == DType::f64 ? " f64" : " f32"));
      Tensor p = param(kInit, dt);
      nn::Adam opt({nn::ParamGroup{{p}, c.o.lr, c.o.weight_decay, ""}}, c.o);
      EXPECT_EQ(opt.name(), c.o.decoupled_weight_decay ? "adamw" : "adam");
      AdamRef ref{c.o.lr, c.o.beta1, c.o.beta2, c.o.eps, c.o.weight_decay, c.o.decoupled_weight_decay, {}, {}};
      Vec want = kInit;
      for (size_t s = 0; s < kGrads.size(); ++s) {
        set_grad(p, kGrads[s]);
        opt.step();
        ref.step(want, kGrads[s]);
        expect_close(p.to_vector(), want, dt == DType::f64 ? 1e-13 : 2e-6, "step " + std::to_string(s));
      }
    }
  }
  // By hand: the first Adam step moves each element by lr * g / (|g| + eps).
  Tensor p = param({1.0, 1.0});
  nn::Adam opt({nn::ParamGroup{{p}, 0.1, 0.0, ""}}, nn::AdamOptions{0.1, 0.9, 0.999, 1e-8, 0.0, false});
  set_grad(p, {4.0, -0.5});
  opt.step();
  EXPECT_NEAR(p.to_vector()[0], 1.0 - 0.1 * 4.0 / (4.0 + 1e-8), 1e-15);
  EXPECT_NEAR(p.to_vector()[1], 1.0 + 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
}

TEST(Adam, MakeAdamwSetsDecoupledDecay) {
  Tensor p = param({2.0});
  auto opt = nn::make_adamw({nn::ParamGroup{{p}, 0.1, 0.5, ""}}, nn::AdamOptions{});
  EXPECT_EQ(opt->name(), "adamw");
  set_grad(p, {0.0});  // zero gradient: only the decay moves p
  opt->step();
  EXPECT_NEAR(p.item(), 2.0 * (1 - 0.1 * 0.5), 1e-15);
}

TEST(Adam, ParametersWithoutGradientKeepTheirOwnStepCount) {
  Tensor a = param(kInit), b = param(kInit);
  const nn::AdamOptions o{0.1, 0.5, 0.75, 1e-8, 0.0, false};
  nn::Adam opt({nn::ParamGroup{{a, b}, 0.1, 0.0, ""}}, o);
  AdamRef ra{0.1, 0.5, 0.75, 1e-8, 0.0, false, {}, {}}, rb = ra;
  Vec wa = kInit, wb = kInit;
  for (size_t s = 0; s < 2; ++s) {
    set_grad(a, kGrads[s]);
    opt.step();
    ra.step(wa, kGrads[s]);
  }
  EXPECT_EQ(b.to_vector(), kInit);
  auto st = opt.state();
  EXPECT_EQ(st.count("0.1.exp_avg"), 0u);
  ASSERT_EQ(st.count("0.0.step"), 1u);
  EXPECT_EQ(st.at("0.0.step").item(), 2.0);
  // b's first update uses bias correction for t = 1, not the optimizer's step count.
  set_grad(a, kGrads[2]);
  set_grad(b, kGrads[2]);
  opt.step();
  ra.step(wa, kGrads[2]);
  rb.step(wb, kGrads[2]);
  expect_close(a.to_vector(), wa, 1e-13, "a");
  expect_close(b.to_vector(), wb, 1e-13, "b");
  EXPECT_EQ(opt.state().at("0.1.step").item(), 1.0);
  EXPECT_EQ(opt.steps(), 3);
}

// ---------------------------------------------------------------- parameter groups

TEST(ParamGroups, LowDimensionalParametersGoWithoutDecay) {
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4, 8}}, {"hidden", 6}, {"input_size", 16}}, 0);
  const auto groups = nn::make_param_groups(*m, 0.01, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "decay");
  EXPECT_EQ(groups[1].name, "no_decay");
  EXPECT_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  EXPECT_EQ(groups[0].lr, 0.01);
  EXPECT_EQ(groups[1].lr, 0.01);
  size_t n_decay = 0, n_other = 0;
  for (const auto& [name, t] : m->named_parameters()) {
    const bool is_weight_matrix = t.dim() >= 2;
    (is_weight_matrix ? n_decay : n_other)++;
    const auto& g = groups[is_weight_matrix ? 0 : 1].params;
    bool found = false;
    for (const Tensor& q : g) found |= q.same_storage(t);
    EXPECT_TRUE(found) << name;
  }
  EXPECT_EQ(groups[0].params.size(), n_decay);
  EXPECT_EQ(groups[1].params.size(), n_other);
  EXPECT_EQ(n_decay, 4u);  // two convs, two linears
  EXPECT_EQ(n_other, 6u);  // two BNs x (weight, bias), two linear biases

  // A module with only 1-d parameters gets just the no-decay group.
  nn::BatchNorm2d bn(3);
  const auto only = nn::make_param_groups(bn, 0.1, 0.1);
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only[0].name, "no_decay");
  const auto single = nn::single_param_group(*m, 0.2, 0.3);
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0].params.size(), n_decay + n_other);
  EXPECT_EQ(single[0].weight_decay, 0.3);

  // With AdamW and zero gradients only the decay group shrinks.
  nn::AdamOptions o;
  o.lr = 0.1;
  auto opt = nn::make_adamw(nn::make_param_groups(*m, 0.1, 0.5), o);
  std::map<std::string, std::vector<double>> before;
  for (const auto& [name, t] : m->named_parameters()) {
    before[name] = t.to_vector();
    Tensor(t).set_grad(Tensor::zeros(t.shape()));
  }
  opt->step();
  for (const auto& [name, t] : m->named_parameters()) {
    const auto now = t.to_vector();
    const double k = t.dim() >= 2 ? 1 - 0.1 * 0.5 : 1.0;
    for (size_t i = 0; i < now.size(); ++i) ASSERT_NEAR(now[i], before[name][i] * k, 1e-6) << name;
  }
}

// ---------------------------------------------------------------- clipping, EMA

TEST(ClipGradNorm, ScalesOnlyAboveTheLimit) {
  Tensor a = param({0, 0}), b = param({0}), c = param({5});
  set_grad(a, {3.0, 4.0});
  set_grad(b, {12.0});  // global norm sqrt(9 + 16 + 144) = 13; c has no gradient
  EXPECT_NEAR(nn::clip_grad_norm({a, b, c}, 20.0), 13.0, 1e-12);
  EXPECT_EQ(a.grad().to_vector(), (Vec{3.0, 4.0}));
  EXPECT_NEAR(nn::clip_grad_norm({a, b, c}, 13.0), 13.0, 1e-12);  // at the limit: unchanged
  EXPECT_EQ(b.grad().to_vector(), (Vec{12.0}));

  EXPECT_NEAR(nn::clip_grad_norm({a, b, c}, 6.5), 13.0, 1e-12);
  const double k = 6.5 / (13.0 + 1e-6);  // PyTorch's clip coefficient
  EXPECT_NEAR(a.grad().to_vector()[0], 3.0 * k, 1e-12);
  EXPECT_NEAR(a.grad().to_vector()[1], 4.0 * k, 1e-12);
  EXPECT_NEAR(b.grad().to_vector()[0], 12.0 * k, 1e-12);
  EXPECT_FALSE(c.grad().defined());
  EXPECT_NEAR(nn::clip_grad_norm({a, b}, 100.0), 6.5, 1e-5);

  // f32 gradients, and a single tensor.
  Tensor f = param({0, 0, 0}, DType::f32);
  set_grad(f, {2.0, 2.0, 1.0});
  EXPECT_NEAR(nn::clip_grad_norm({f}, 1.5), 3.0, 1e-6);
  EXPECT_NEAR(f.grad().to_vector()[0], 1.0, 1e-6);

  // Non-finite norms are reported and nothing is scaled.
  Tensor inf = param({0, 0});
  set_grad(inf, {std::numeric_limits<double>::infinity(), 1.0});
  EXPECT_TRUE(std::isinf(nn::clip_grad_norm({inf}, 1.0)));
  EXPECT_EQ(inf.grad().to_vector()[1], 1.0);
  set_grad(inf, {std::nan(""), 1.0});
  EXPECT_TRUE(std::isnan(nn::clip_grad_norm({inf}, 1.0)));
  EXPECT_EQ(inf.grad().to_vector()[1], 1.0);

  EXPECT_EQ(nn::clip_grad_norm({c}, 1.0), 0.0);  // no gradients at all
  EXPECT_THROW(nn::clip_grad_norm({a}, 0.0), Error);
  EXPECT_THROW(nn::clip_grad_norm({a}, -1.0), Error);
}

TEST(EMA, TracksParametersAndBuffers) {
  nn::BatchNorm2d bn(2);
  nn::EMA ema(bn, 0.9);
  EXPECT_EQ(ema.decay(), 0.9);
  EXPECT_EQ(ema.shadow().size(), 5u);
  // The shadow is a copy: changing the module alone does not move it.
  bn.weight.fill_(2.0);
  bn.running_mean.fill_(-1.0);
  bn.num_batches_tracked.fill_(5);
  EXPECT_EQ(ema.shadow().at("weight").to_vector(), (Vec{1.0, 1.0}));
  ema.update(bn);
  EXPECT_NEAR(ema.shadow().at("weight").to_vector()[0], 0.9 * 1 + 0.1 * 2, 1e-6);
  EXPECT_NEAR(ema.shadow().at("running_mean").to_vector()[1], 0.1 * -1, 1e-6);
  EXPECT_EQ(ema.shadow().at("bias").to_vector(), (Vec{0.0, 0.0}));
  EXPECT_EQ(ema.shadow().at("num_batches_tracked").item(), 5.0);  // copied, not averaged
  ema.update(bn);
  EXPECT_NEAR(ema.shadow().at("weight").to_vector()[0], 0.9 * 1.1 + 0.1 * 2, 1e-6);

  nn::BatchNorm2d other(2);
  ema.copy_to(other);
  EXPECT_NEAR(other.weight.to_vector()[1], 1.19, 1e-6);
  EXPECT_NEAR(other.running_mean.to_vector()[0], 0.9 * -0.1 + 0.1 * -1, 1e-6);
  EXPECT_EQ(other.num_batches_tracked.item(), 5.0);
  EXPECT_FALSE(other.weight.same_storage(ema.shadow().at("weight")));

  nn::BatchNorm2d wrong(3);
  EXPECT_THROW(ema.copy_to(wrong), Error);
  nn::Sequential seq;
  seq.push_back(std::make_shared<nn::BatchNorm2d>(2));
  EXPECT_THROW(ema.update(seq), Error);  // names differ ("0.weight")
  EXPECT_THROW(nn::EMA(bn, 1.0), Error);
  EXPECT_THROW(nn::EMA(bn, 0.0), Error);
}

// ---------------------------------------------------------------- state round trip

std::shared_ptr<nn::Model> tiny_model() {
  return nn::build_model({{"arch", "simple_cnn"}, {"channels", {3, 4}}, {"hidden", 5}, {"input_size", 8}}, 7);
}

// Gradients that depend only on (step, parameter index).
void synthetic_grads(nn::Module& m, int step) {
  int i = 0;
  for (const auto& [name, t] : m.named_parameters()) {
    Generator gen(static_cast<uint64_t>(step * 1000 + i++));
    Tensor(t).set_grad(rand_normal(t.shape(), gen));
  }
}

bool same_weights(const nn::Module& a, const nn::Module& b) {
  const auto sa = a.state_dict(), sb = b.state_dict();
  for (const auto& [n, t] : sa)
    if (std::memcmp(t.raw_data(), sb.at(n).raw_data(), t.nbytes()) != 0) return false;
  return true;
}

template <typename MakeOpt>
void check_state_round_trip(MakeOpt make_opt, bool via_file) {
  auto a = tiny_model(), b = tiny_model(), c = tiny_model();
  auto opt_a = make_opt(*a), opt_b = make_opt(*b), opt_c = make_opt(*c);
  for (int s = 0; s < 3; ++s) {
    synthetic_grads(*a, s);
    opt_a->step();
  }
  // b resumes from a's weights and optimizer state; c gets the weights only.
  std::map<std::string, Tensor> state = opt_a->state();
  ASSERT_FALSE(state.empty());
  if (via_file) state = nn::safetensors_decode(nn::safetensors_encode(state), "optimizer state").tensors;
  b->load_state_dict(a->state_dict());
  c->load_state_dict(a->state_dict());
  opt_b->load_state(state, opt_a->steps());
  EXPECT_EQ(opt_b->steps(), 3);
  for (int s = 3; s < 6; ++s) {
    for (auto* m : {a.get(), b.get(), c.get()}) synthetic_grads(*m, s);
    opt_a->step();
    opt_b->step();
    opt_c->step();
  }
  EXPECT_TRUE(same_weights(*a, *b));
  EXPECT_FALSE(same_weights(*a, *c)) << "the optimizer state should matter";
}

TEST(OptimizerState, SgdRoundTripGivesIdenticalSteps) {
  auto make = [](nn::Module& m) {
    return std::make_unique<nn::SGD>(m, nn::SgdOptions{0.05, 0.9, 0.0, 1e-3, true});
  };
  check_state_round_trip(make, false);
  check_state_round_trip(make, true);
}

TEST(OptimizerState, AdamRoundTripGivesIdenticalSteps) {
  auto make = [](nn::Module& m) {
    nn::AdamOptions o;
    o.lr = 1e-2;
    return nn::make_adamw(nn::make_param_groups(m, 1e-2, 0.05), o);
  };
  check_state_round_trip(make, false);
  check_state_round_trip(make, true);
}

TEST(OptimizerState, NamesAndShapeChecks) {
  Tensor a = param(kInit), b = param({1.0, 2.0});
  nn::Adam adam({nn::ParamGroup{{a}, 0.1, 0.0, ""}, nn::ParamGroup{{b}, 0.1, 0.0, ""}}, nn::AdamOptions{});
  set_grad(a, kGrads[0]);
  set_grad(b, {1.0, 1.0});
  adam.step();
  const auto st = adam.state();
  for (const char* k : {"0.0.exp_avg", "0.0.exp_avg_sq", "0.0.step", "1.0.exp_avg", "1.0.exp_avg_sq", "1.0.step"})
    EXPECT_TRUE(st.count(k)) << k;
  EXPECT_EQ(st.size(), 6u);
  auto bad = st;
  bad["0.0.exp_avg"] = Tensor::zeros({3}, DType::f64);
  EXPECT_THROW(adam.load_state(bad, 1), Error);

  nn::SGD sgd({nn::ParamGroup{{a}, 0.1, 0.0, ""}}, nn::SgdOptions{});
  set_grad(a, kGrads[0]);
  sgd.step();
  ASSERT_TRUE(sgd.state().count("0.0.momentum"));
  EXPECT_THROW(sgd.load_state({{"0.0.momentum", Tensor::zeros({2}, DType::f64)}}, 1), Error);
  // A missing entry means "no state yet": the next step starts the buffer afresh.
  sgd.load_state({}, 0);
  EXPECT_TRUE(sgd.state().empty());
  EXPECT_EQ(sgd.steps(), 0);
}

TEST(Optimizer, ZeroGradClearsEveryGroup) {
  Tensor a = param(kInit), b = param(kInit);
  nn::SGD opt({nn::ParamGroup{{a}, 0.1, 0.0, ""}, nn::ParamGroup{{b}, 0.1, 0.0, ""}}, nn::SgdOptions{});
  set_grad(a, kGrads[0]);
  set_grad(b, kGrads[0]);
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  opt.step();  // nothing to do
  EXPECT_EQ(a.to_vector(), kInit);
}

// ---------------------------------------------------------------- argument errors

TEST(Optimizer, RejectsBadArguments) {
  Tensor p = param(kInit);
  auto group = [&](double lr, double wd = 0.0) { return std::vector<nn::ParamGroup>{nn::ParamGroup{{p}, lr, wd, ""}}; };
  EXPECT_THROW(nn::SGD(group(-0.1), nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD(group(std::nan("")), nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD(group(std::numeric_limits<double>::infinity()), nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD(group(0.1, -1e-4), nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD({}, nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD(group(0.1), (nn::SgdOptions{0.1, 0.0, 0.0, 0.0, true})), Error);  // nesterov, no momentum
  EXPECT_THROW(nn::SGD(group(0.1), (nn::SgdOptions{0.1, 0.9, 0.1, 0.0, true})), Error);  // nesterov, dampening
  EXPECT_THROW(nn::SGD(group(0.1), (nn::SgdOptions{0.1, -0.9, 0.0, 0.0, false})), Error);
  EXPECT_THROW(nn::SGD(group(0.1), (nn::SgdOptions{0.1, 0.9, -0.1, 0.0, false})), Error);
  EXPECT_NO_THROW(nn::SGD(group(0.0), nn::SgdOptions{}));  // lr 0 is allowed (warm-up start)

  auto adam = [&](double b1, double b2, double eps = 1e-8) {
    return nn::Adam(group(0.1), nn::AdamOptions{0.1, b1, b2, eps, 0.0, false});
  };
  EXPECT_THROW(adam(1.0, 0.999), Error);
  EXPECT_THROW(adam(0.9, 1.0), Error);
  EXPECT_THROW(adam(-0.1, 0.999), Error);
  EXPECT_THROW(adam(0.9, -0.5), Error);
  EXPECT_THROW(adam(0.9, 0.999, 0.0), Error);
  EXPECT_THROW(nn::Adam(group(-1.0), nn::AdamOptions{}), Error);
  EXPECT_NO_THROW(adam(0.0, 0.0));

  nn::SGD ok(group(0.1), nn::SgdOptions{});
  EXPECT_THROW(ok.set_lr(-1.0), Error);
  EXPECT_THROW(ok.set_lr(std::nan("")), Error);
  EXPECT_EQ(ok.lr(), 0.1);

  // Parameters must be leaves that require grad.
  Tensor frozen = Tensor::from_vector(Vec{1.0}, {1});
  EXPECT_THROW(nn::SGD({nn::ParamGroup{{frozen}, 0.1, 0.0, ""}}, nn::SgdOptions{}), Error);
  EXPECT_THROW(nn::SGD({nn::ParamGroup{{Tensor()}, 0.1, 0.0, ""}}, nn::SgdOptions{}), Error);
}

}  // namespace
}  // namespace cxr
