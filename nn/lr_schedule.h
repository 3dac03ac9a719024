// Learning-rate schedules. A schedule maps a step index (call step() once per
// optimizer step, or once per epoch for epoch-based use; the unit is the caller's) to
// a multiplier of each group's base lr and writes the result into the optimizer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/optim.h"

namespace cxr::nn {

class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& opt);
  virtual ~LRScheduler() = default;
  // Advances one step and applies the new lr.
  void step();
  // lr multiplier at step t (t = 0 is before the first step()).
  virtual double factor(int64_t t) const = 0;
  int64_t last_step() const { return t_; }
  // Restores the position (checkpoint resume) and applies its lr.
  void set_step(int64_t t);
  double lr() const;

 protected:
  void apply();
  Optimizer& opt_;
  std::vector<double> base_lr_;
  int64_t t_ = 0;
};

// lr * gamma^(t / step_size)
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);
  double factor(int64_t t) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr * gamma^(number of milestones <= t)
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& opt, std::vector<int64_t> milestones, double gamma = 0.1);
  double factor(int64_t t) const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

// Linear warmup from warmup_start (x lr) over warmup steps, then cosine from lr to
// min_factor*lr at total steps (held there after).
class CosineWarmupLR : public LRScheduler {
 public:
  CosineWarmupLR(Optimizer& opt, int64_t warmup, int64_t total, double min_factor = 0.0, double warmup_start = 0.0);
  double factor(int64_t t) const override;

 private:
  int64_t warmup_, total_;
  double min_factor_, warmup_start_;
};

// One-cycle (Smith 2018), as PyTorch's OneCycleLR with cosine annealing: from
// max_lr/div_factor up to max_lr (the optimizer's lr) over pct_start*total steps, then
// down to max_lr/(div_factor*final_div_factor).
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& opt, int64_t total, double pct_start = 0.3, double div_factor = 25.0,
             double final_div_factor = 1e4);
  double factor(int64_t t) const override;

 private:
  int64_t total_;
  double pct_start_, div_, final_div_;
};

// Multiplies lr by `factor` when a monitored metric has not improved (by more than
// threshold, relative) for `patience` consecutive reports. Call report(metric) instead
// of step().
class ReduceLROnPlateau {
 public:
  enum class Mode { min, max };
  ReduceLROnPlateau(Optimizer& opt, Mode mode = Mode::min, double factor = 0.1, int64_t patience = 10,
                    double threshold = 1e-4, double min_lr = 0.0);
  // Returns true when the lr was reduced.
  bool report(double metric);
  double best() const { return best_; }
  int64_t bad_epochs() const { return bad_; }
  bool has_best() const { return has_best_; }
  // Restores what report() has seen (checkpoint resume); the lr lives in the optimizer.
  void restore(double best, int64_t bad_epochs, bool has_best) {
    best_ = best;
    bad_ = bad_epochs;
    has_best_ = has_best;
  }

 private:
  Optimizer& opt_;
  Mode mode_;
  double factor_, threshold_, min_lr_;
  int64_t patience_, bad_ = 0;
  double best_;
  bool has_best_ = false;
};

}  // namespace cxr::nn
