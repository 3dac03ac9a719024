// Learning-rate schedules against their formulas (PyTorch's for OneCycleLR and
// ReduceLROnPlateau), per-group base rates and resuming with set_step.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "nn/lr_schedule.h"
#include "nn/optim.h"

namespace cxr {
namespace {

constexpr double kPi = 3.14159265358979323846;

// An optimizer with two groups, base lrs 0.1 and 0.01 (schedules scale each group).
struct Fixture {
  Tensor a = Tensor::zeros({2}).set_requires_grad(true);
  Tensor b = Tensor::zeros({2}).set_requires_grad(true);
  nn::SGD opt{{nn::ParamGroup{{a}, 0.1, 0.0, "a"}, nn::ParamGroup{{b}, 0.01, 0.0, "b"}}, nn::SgdOptions{}};
  double lr0() { return opt.groups()[0].lr; }
  double lr1() { return opt.groups()[1].lr; }
};

// Checks both groups against base * factor.
void expect_lr(Fixture& f, double factor, const std::string& what) {
  EXPECT_NEAR(f.lr0(), 0.1 * factor, 1e-15) << what;
  EXPECT_NEAR(f.lr1(), 0.01 * factor, 1e-16) << what;
}

TEST(StepLR, DecaysEveryStepSize) {
  Fixture f;
  nn::StepLR s(f.opt, 3, 0.5);
  expect_lr(f, 1.0, "t=0");
  const std::vector<double> want = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125};
  for (int64_t t = 0; t < 10; ++t) EXPECT_NEAR(s.factor(t), want[t], 1e-15) << t;
  for (int64_t t = 1; t < 10; ++t) {
    s.step();
    EXPECT_EQ(s.last_step(), t);
    expect_lr(f, want[t], "t=" + std::to_string(t));
    EXPECT_EQ(s.lr(), f.lr0());
  }
  EXPECT_THROW(nn::StepLR(f.opt, 0, 0.5), Error);
  EXPECT_THROW(nn::StepLR(f.opt, 3, 0.0), Error);
}

TEST(MultiStepLR, DecaysAtEachMilestone) {
  Fixture f;
  nn::MultiStepLR s(f.opt, {2, 5}, 0.1);
  const std::vector<double> want = {1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01};
  for (int64_t t = 0; t < 8; ++t) EXPECT_NEAR(s.factor(t), want[t], 1e-15) << t;
  for (int64_t t = 1; t < 8; ++t) {
    s.step();
    expect_lr(f, want[t], "t=" + std::to_string(t));
  }
  // A repeated milestone counts twice, as in PyTorch.
  Fixture g;
  nn::MultiStepLR twice(g.opt, {3, 3}, 0.5);
  EXPECT_NEAR(twice.factor(2), 1.0, 1e-15);
  EXPECT_NEAR(twice.factor(3), 0.25, 1e-15);
  EXPECT_THROW(nn::MultiStepLR(f.opt, {5, 2}, 0.1), Error);
  EXPECT_THROW(nn::MultiStepLR(f.opt, {2}, -0.1), Error);
}

TEST(CosineWarmupLR, LinearWarmupCosineDecayThenHeld) {
  Fixture f;
  const int64_t warmup = 4, total = 12;
  const double min_f = 0.1, start = 0.2;
  nn::CosineWarmupLR s(f.opt, warmup, total, min_f, start);
  expect_lr(f, start, "applied on construction");
  auto want = [&](int64_t t) {
    if (t < warmup) return start + (1 - start) * static_cast<double>(t) / warmup;
    if (t >= total) return min_f;
    const double frac = static_cast<double>(t - warmup) / (total - warmup);
    return min_f + (1 - min_f) * 0.5 * (1 + std::cos(kPi * frac));
  };
  EXPECT_NEAR(s.factor(2), 0.6, 1e-15);     // half way through warm-up
  EXPECT_NEAR(s.factor(4), 1.0, 1e-15);     // peak
  EXPECT_NEAR(s.factor(8), 0.55, 1e-15);    // half way down: (1 + 0.1) / 2
  EXPECT_NEAR(s.factor(12), 0.1, 1e-15);    // end value
  EXPECT_NEAR(s.factor(1000), 0.1, 1e-15);  // held after total
  for (int64_t t = 1; t <= 20; ++t) {
    s.step();
    expect_lr(f, want(t), "t=" + std::to_string(t));
  }
  // Decreasing after the warm-up.
  for (int64_t t = warmup; t < total; ++t) EXPECT_GT(s.factor(t), s.factor(t + 1)) << t;

  Fixture g;
  nn::CosineWarmupLR no_warmup(g.opt, 0, 10);
  expect_lr(g, 1.0, "no warm-up starts at the peak");
  EXPECT_NEAR(no_warmup.factor(10), 0.0, 1e-15);
  EXPECT_NEAR(no_warmup.factor(5), 0.5, 1e-15);
  EXPECT_THROW(nn::CosineWarmupLR(g.opt, 10, 10), Error);
  EXPECT_THROW(nn::CosineWarmupLR(g.opt, -1, 10), Error);
  EXPECT_THROW(nn::CosineWarmupLR(g.opt, 2, 10, 1.5), Error);
}

// PyTorch's OneCycleLR.get_lr (cosine annealing, two phases), written out independently.
double torch_one_cycle(int64_t step, int64_t total, double max_lr, double pct_start, double div, double final_div) {
  const double initial = max_lr / div, min_lr = initial / final_div;
  struct Phase {
    double end_step, start_lr, end_lr;
  };
  const Phase phases[2] = {{pct_start * static_cast<double>(total) - 1, initial, max_lr},
                           {static_cast<double>(total) - 1, max_lr, min_lr}};
  auto anneal_cos = [](double start, double end, double pct) {
    return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1);
  };
  double start_step = 0;
  for (int i = 0; i < 2; ++i) {
    const double end_step = phases[i].end_step;
    if (static_cast<double>(step) <= end_step || i == 1)
      return anneal_cos(phases[i].start_lr, phases[i].end_lr,
                        (static_cast<double>(step) - start_step) / (end_step - start_step));
    start_step = end_step;
  }
  return 0;
}

TEST(OneCycleLR, MatchesPyTorch) {
  for (const auto& [total, pct, div, final_div] : std::vector<std::tuple<int64_t, double, double, double>>{
           {100, 0.3, 25.0, 1e4}, {10, 0.25, 10.0, 100.0}, {37, 0.5, 5.0, 1e3}}) {
    SCOPED_TRACE("total " + std::to_string(total) + " pct " + std::to_string(pct));
    Fixture f;
    nn::OneCycleLR s(f.opt, total, pct, div, final_div);
    // Starts at max/div (applied on construction).
    EXPECT_NEAR(f.lr0(), 0.1 / div, 1e-15);
    for (int64_t t = 0; t < total; ++t) {
      const double want = torch_one_cycle(t, total, 0.1, pct, div, final_div);
      EXPECT_NEAR(s.factor(t) * 0.1, want, 1e-14 * (1 + want)) << "t=" << t;
    }
    for (int64_t t = 1; t < total; ++t) {
      s.step();
      EXPECT_NEAR(f.lr0(), torch_one_cycle(t, total, 0.1, pct, div, final_div), 1e-14) << t;
      EXPECT_NEAR(f.lr1(), torch_one_cycle(t, total, 0.01, pct, div, final_div), 1e-15) << t;
    }
    // Ends at max / (div * final_div) and holds there past the last step.
    EXPECT_NEAR(s.factor(total - 1), 1.0 / (div * final_div), 1e-15);
    EXPECT_NEAR(s.factor(total + 50), 1.0 / (div * final_div), 1e-15);
  }
  // Hand-checked points for (100, 0.3, 25, 1e4), max 0.1: the warm-up ends at step 29.
  Fixture f;
  nn::OneCycleLR s(f.opt, 100, 0.3, 25.0, 1e4);
  EXPECT_NEAR(s.factor(29), 1.0, 1e-15);
  EXPECT_LT(s.factor(28), 1.0);
  EXPECT_LT(s.factor(30), 1.0);
  // Step 64 is half way down: (0.1 + 4e-7) / 2.
  EXPECT_NEAR(0.1 * s.factor(64), (0.1 + 4e-7) / 2, 1e-15);
  // Step 10: 0.1 + (0.004 - 0.1) / 2 * (cos(pi * 10 / 29) + 1).
  EXPECT_NEAR(0.1 * s.factor(10), 0.1 - 0.048 * (std::cos(kPi * 10.0 / 29.0) + 1), 1e-15);
  EXPECT_NEAR(0.1 * s.factor(99), 4e-7, 1e-18);

  EXPECT_THROW(nn::OneCycleLR(f.opt, 1), Error);
  EXPECT_THROW(nn::OneCycleLR(f.opt, 100, 0.0), Error);
  EXPECT_THROW(nn::OneCycleLR(f.opt, 100, 1.0), Error);
  EXPECT_THROW(nn::OneCycleLR(f.opt, 100, 0.3, 0.0), Error);
  EXPECT_THROW(nn::OneCycleLR(f.opt, 100, 0.3, 25.0, -1.0), Error);
}

TEST(ReduceLROnPlateau, MinModeWithPatienceAndThreshold) {
  Fixture f;
  nn::ReduceLROnPlateau s(f.opt, nn::ReduceLROnPlateau::Mode::min, 0.5, 2, 1e-4, 0.0);
  EXPECT_FALSE(s.report(1.0));  // first value is the best
  EXPECT_EQ(s.best(), 1.0);
  EXPECT_FALSE(s.report(0.99995));  // better, but by less than the relative threshold
  EXPECT_EQ(s.bad_epochs(), 1);
  EXPECT_EQ(s.best(), 1.0);
  EXPECT_FALSE(s.report(1.0));
  EXPECT_EQ(s.bad_epochs(), 2);
  expect_lr(f, 1.0, "patience not yet exceeded");
  EXPECT_TRUE(s.report(1.1));  // third bad report in a row: reduce
  expect_lr(f, 0.5, "reduced once");
  EXPECT_EQ(s.bad_epochs(), 0);
  EXPECT_FALSE(s.report(0.9));  // a real improvement resets the count
  EXPECT_EQ(s.best(), 0.9);
  EXPECT_EQ(s.bad_epochs(), 0);
  EXPECT_FALSE(s.report(0.95));
  EXPECT_FALSE(s.report(0.95));
  EXPECT_TRUE(s.report(0.95));
  expect_lr(f, 0.25, "reduced twice");
}

TEST(ReduceLROnPlateau, MaxModeAndMinLrFloor) {
  Fixture f;
  nn::ReduceLROnPlateau s(f.opt, nn::ReduceLROnPlateau::Mode::max, 0.1, 0, 0.01, 0.005);
  EXPECT_FALSE(s.report(0.5));
  EXPECT_FALSE(s.report(0.6));  // higher is better
  EXPECT_EQ(s.best(), 0.6);
  EXPECT_TRUE(s.report(0.605));  // within the 1% threshold: not better; patience 0 reduces at once
  // Group 0: 0.1 -> 0.01; group 1: 0.01 -> max(0.001, 0.005) = 0.005.
  EXPECT_NEAR(f.lr0(), 0.01, 1e-15);
  EXPECT_NEAR(f.lr1(), 0.005, 1e-15);
  EXPECT_TRUE(s.report(0.4));  // group 0 still moves: 0.01 -> 0.005
  EXPECT_NEAR(f.lr0(), 0.005, 1e-15);
  EXPECT_NEAR(f.lr1(), 0.005, 1e-15);
  EXPECT_FALSE(s.report(0.4));  // both at the floor: nothing reduced
  EXPECT_NEAR(f.lr0(), 0.005, 1e-15);
  EXPECT_NEAR(f.lr1(), 0.005, 1e-15);
  EXPECT_FALSE(s.report(0.7));
  EXPECT_EQ(s.best(), 0.7);
}

TEST(ReduceLROnPlateau, RejectsBadArguments) {
  Fixture f;
  using M = nn::ReduceLROnPlateau::Mode;
  EXPECT_THROW(nn::ReduceLROnPlateau(f.opt, M::min, 1.0), Error);
  EXPECT_THROW(nn::ReduceLROnPlateau(f.opt, M::min, 0.0), Error);
  EXPECT_THROW(nn::ReduceLROnPlateau(f.opt, M::min, 0.5, -1), Error);
  nn::ReduceLROnPlateau s(f.opt);
  EXPECT_THROW(s.report(std::nan("")), Error);
  EXPECT_THROW(s.report(INFINITY), Error);
}

TEST(LRScheduler, SetStepResumesWhereTheRunLeftOff) {
  auto check = [](auto make, const char* name) {
    SCOPED_TRACE(name);
    Fixture a, b;
    auto sa = make(a.opt);
    for (int i = 0; i < 7; ++i) sa->step();
    auto sb = make(b.opt);  // a fresh run on a fresh optimizer, as after loading a checkpoint
    sb->set_step(7);
    EXPECT_EQ(sb->last_step(), 7);
    EXPECT_EQ(b.lr0(), a.lr0());
    EXPECT_EQ(b.lr1(), a.lr1());
    for (int i = 0; i < 5; ++i) {
      sa->step();
      sb->step();
      EXPECT_EQ(b.lr0(), a.lr0());
      EXPECT_EQ(b.lr1(), a.lr1());
    }
    // Going back is possible too (set_step is absolute).
    sb->set_step(0);
    EXPECT_NEAR(b.lr0(), 0.1 * sb->factor(0), 1e-15);
    EXPECT_THROW(sb->set_step(-1), Error);
  };
  check([](nn::Optimizer& o) { return std::make_unique<nn::StepLR>(o, 3, 0.5); }, "StepLR");
  check(
      [](nn::Optimizer& o) {
        return std::make_unique<nn::MultiStepLR>(o, std::vector<int64_t>{4, 9}, 0.1);
      },
      "MultiStepLR");
  check([](nn::Optimizer& o) { return std::make_unique<nn::CosineWarmupLR>(o, 3, 20, 0.05, 0.1); }, "CosineWarmupLR");
  check([](nn::Optimizer& o) { return std::make_unique<nn::OneCycleLR>(o, 20); }, "OneCycleLR");
}

}  // namespace
}  // namespace cxr
