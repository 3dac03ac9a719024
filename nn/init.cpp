#include "nn/init.h"

#include <cmath>

namespace cxr::nn::init {

int64_t fan_in(const Tensor& w) {
  CXR_CHECK(w.dim() >= 2, "fan_in: weight ", w.str(), " needs at least 2 dims");
  int64_t rf = 1;
  for (int64_t d = 2; d < w.dim(); ++d) rf *= w.size(d);
  return w.size(1) * rf;
}

int64_t fan_out(const Tensor& w) {
  CXR_CHECK(w.dim() >= 2, "fan_out: weight ", w.str(), " needs at least 2 dims");
  int64_t rf = 1;
  for (int64_t d = 2; d < w.dim(); ++d) rf *= w.size(d);
  return w.size(0) * rf;
}

void kaiming_normal(Tensor& w, Generator& gen, FanMode mode) {
  const double fan = static_cast<double>(mode == FanMode::fan_in ? fan_in(w) : fan_out(w));
  gen.fill_normal(w, 0.0, std::sqrt(2.0 / fan));
}

void uniform(Tensor& w, Generator& gen, double bound) { gen.fill_uniform(w, -bound, bound); }

}  // namespace cxr::nn::init
