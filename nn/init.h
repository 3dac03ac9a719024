// Parameter initialisers (in place, CPU tensors).
#pragma once

#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace cxr::nn::init {

// fan_in = in_channels/groups * R * S (or in_features); fan_out = out_channels * R * S.
int64_t fan_in(const Tensor& w);
int64_t fan_out(const Tensor& w);

enum class FanMode { fan_in, fan_out };
// He/Kaiming normal for ReLU nets: N(0, gain^2 / fan), gain = sqrt(2).
void kaiming_normal(Tensor& w, Generator& gen, FanMode mode = FanMode::fan_out);
// U(-bound, bound)
void uniform(Tensor& w, Generator& gen, double bound);

}  // namespace cxr::nn::init
