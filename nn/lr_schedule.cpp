#include "nn/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace cxr::nn {

namespace {
constexpr double kPi = 3.14159265358979323846;
double cosine(double from, double to, double frac) { return to + (from - to) * 0.5 * (1.0 + std::cos(kPi * frac)); }
}  // namespace

LRScheduler::LRScheduler(Optimizer& opt) : opt_(opt) {
  for (auto& g : opt.groups()) base_lr_.push_back(g.lr);
}

void LRScheduler::apply() {
  const double f = factor(t_);
  for (size_t i = 0; i < opt_.groups().size(); ++i) opt_.groups()[i].lr = base_lr_[i] * f;
}

void LRScheduler::step() {
  ++t_;
  apply();
}

void LRScheduler::set_step(int64_t t) {
  CXR_CHECK(t >= 0, "LRScheduler::set_step: step ", t, " must be >= 0");
  t_ = t;
  apply();
}

double LRScheduler::lr() const { return opt_.groups().empty() ? 0.0 : opt_.groups()[0].lr; }

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma) : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
  CXR_CHECK(step_size > 0, "StepLR: step_size ", step_size, " must be > 0");
  CXR_CHECK(gamma > 0, "StepLR: gamma ", gamma, " must be > 0");
}

double StepLR::factor(int64_t t) const { return std::pow(gamma_, static_cast<double>(t / step_size_)); }

MultiStepLR::MultiStepLR(Optimizer& opt, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(opt), milestones_(std::move(milestones)), gamma_(gamma) {
  CXR_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()), "MultiStepLR: milestones must be increasing");
  CXR_CHECK(gamma > 0, "MultiStepLR: gamma ", gamma, " must be > 0");
}

double MultiStepLR::factor(int64_t t) const {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), t) - milestones_.begin();
  return std::pow(gamma_, static_cast<double>(passed));
}

CosineWarmupLR::CosineWarmupLR(Optimizer& opt, int64_t warmup, int64_t total, double min_factor, double warmup_start)
    : LRScheduler(opt), warmup_(warmup), total_(total), min_factor_(min_factor), warmup_start_(warmup_start) {
  CXR_CHECK(warmup >= 0 && total > warmup, "CosineWarmupLR: need 0 <= warmup (", warmup, ") < total (", total, ")");
  CXR_CHECK(min_factor >= 0 && min_factor <= 1, "CosineWarmupLR: min_factor must be in [0, 1]");
  apply();
}

double CosineWarmupLR::factor(int64_t t) const {
  if (t < warmup_) return warmup_start_ + (1.0 - warmup_start_) * static_cast<double>(t) / static_cast<double>(warmup_);
  if (t >= total_) return min_factor_;
  const double frac = static_cast<double>(t - warmup_) / static_cast<double>(total_ - warmup_);
  return cosine(1.0, min_factor_, frac);
}

OneCycleLR::OneCycleLR(Optimizer& opt, int64_t total, double pct_start, double div_factor, double final_div_factor)
    : LRScheduler(opt), total_(total), pct_start_(pct_start), div_(div_factor), final_div_(final_div_factor) {
  CXR_CHECK(total > 1, "OneCycleLR: total steps ", total, " must be > 1");
  CXR_CHECK(pct_start > 0 && pct_start < 1, "OneCycleLR: pct_start ", pct_start, " must be in (0, 1)");
  CXR_CHECK(div_factor > 0 && final_div_factor > 0, "OneCycleLR: division factors must be > 0");
  apply();
}

double OneCycleLR::factor(int64_t t) const {
  // PyTorch's phase boundaries: warm-up ends at step pct*total - 1, the last step is total - 1.
  const double up_end = pct_start_ * static_cast<double>(total_) - 1.0;
  const double last = static_cast<double>(total_ - 1);
  const double start = 1.0 / div_, end = start / final_div_;
  const double s = static_cast<double>(std::min<int64_t>(t, total_ - 1));
  if (s <= up_end) return cosine(start, 1.0, s / up_end);
  return cosine(1.0, end, (s - up_end) / (last - up_end));
}

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& opt, Mode mode, double factor, int64_t patience, double threshold,
                                     double min_lr)
    : opt_(opt), mode_(mode), factor_(factor), threshold_(threshold), min_lr_(min_lr), patience_(patience), best_(0) {
  CXR_CHECK(factor > 0 && factor < 1, "ReduceLROnPlateau: factor ", factor, " must be in (0, 1)");
  CXR_CHECK(patience >= 0, "ReduceLROnPlateau: patience must be >= 0");
}

bool ReduceLROnPlateau::report(double metric) {
  CXR_CHECK(std::isfinite(metric), "ReduceLROnPlateau: metric ", metric, " is not finite");
  const bool better = !has_best_ || (mode_ == Mode::min ? metric < best_ * (1.0 - threshold_)
                                                       : metric > best_ * (1.0 + threshold_));
  if (better) {
    best_ = metric;
    has_best_ = true;
    bad_ = 0;
    return false;
  }
  if (++bad_ <= patience_) return false;
  bad_ = 0;
  bool reduced = false;
  for (auto& g : opt_.groups()) {
    const double next = std::max(g.lr * factor_, min_lr_);
    if (g.lr - next > 1e-12) {
      g.lr = next;
      reduced = true;
    }
  }
  return reduced;
}

}  // namespace cxr::nn
