// Finite-difference gradient checking for differentiable ops, modules and models.
//
// Usage:
//   std::vector<Tensor> in = {x, w};            // f64 CPU tensors; set_requires_grad(true)
//                                               // on the ones whose gradient is checked
//   expect_gradcheck([](const std::vector<Tensor>& v) { return nn::matmul(v[0], v[1]); }, in);
//
// What it does:
//   1. out = fn(inputs). The output is reduced to the scalar L = sum(out * R) with a fixed
//      random R (uniform in [-1, 1), from opts.seed), so that every output element
//      contributes with a distinct weight; a plain sum would hide errors that cancel.
//      The backward runs as cxr::nn::backward(out, R), which is exactly dL/d(out) = R.
//   2. For each input with requires_grad, each checked element x_j is compared with the
//      central difference (L(x_j + h) - L(x_j - h)) / 2h, computed under NoGradGuard
//      with the same fn. The check passes when
//          |analytic - numeric| <= atol + rtol * |numeric|   for every checked element.
//   3. Inputs whose numel exceeds opts.max_checks (when > 0) are checked on a random
//      subset of max_checks elements (the same subset for the same seed).
//
// fn must be deterministic: it is called 1 + 2*(checked elements) times, so any random
// state it uses (dropout's Generator, for instance) must be recreated inside fn with a
// fixed seed. Inputs are perturbed in place and restored afterwards, so fn must read
// them on every call (no copies cached across calls). Inputs not requiring grad are
// treated as constants (they may be of any dtype, e.g. i64 targets); undefined entries
// are skipped. An input whose grad() stays undefined after backward counts as a zero
// gradient. The grad() of every input requiring grad is cleared before the check and
// again after it. Module parameters can be passed as inputs: they are the same tensors
// the module uses, so perturbing them perturbs the module.
//
// Double precision is required: with h = 1e-6 the rounding error of the difference is
// about 1e-16 * |L| / h ~ 1e-10 * |L|, far under the default tolerances. Inputs must be
// further than h from any kink of fn (relu at 0, max-pool ties).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace cxr::testing {

struct GradcheckOptions {
  double h = 1e-6;         // finite-difference step
  double atol = 1e-6;      // absolute tolerance
  double rtol = 1e-5;      // relative tolerance (to |numeric|)
  int64_t max_checks = 0;  // per input; 0 = check every element
  uint64_t seed = 20240611;  // for R and for the element subset
};

struct GradcheckResult {
  bool ok = true;
  int64_t checked = 0;        // elements compared, over all inputs
  double max_abs_error = 0;   // max |analytic - numeric|
  std::string message;        // the worst mismatches, empty when ok
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

namespace gradcheck_detail {

inline double weighted_sum(const Tensor& out, const Tensor& r) {
  const double* o = out.data<double>();
  const double* w = r.data<double>();
  double acc = 0;
  for (int64_t i = 0; i < out.numel(); ++i) acc += o[i] * w[i];
  return acc;
}

// Indices of the elements to check: all, or a reproducible random subset.
inline std::vector<int64_t> pick_elements(int64_t numel, int64_t max_checks, Generator& gen) {
  std::vector<int64_t> idx(static_cast<size_t>(numel));
  std::iota(idx.begin(), idx.end(), 0);
  if (max_checks <= 0 || numel <= max_checks) return idx;
  for (int64_t i = 0; i < max_checks; ++i) {  // partial Fisher-Yates
    const int64_t j = i + static_cast<int64_t>(gen.next_below(static_cast<uint64_t>(numel - i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(max_checks));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace gradcheck_detail

// Runs the check and reports; does not touch the gtest result (see expect_gradcheck).
inline GradcheckResult gradcheck(const GradFn& fn, const std::vector<Tensor>& inputs,
                                 const GradcheckOptions& opts = {}) {
  namespace gd = gradcheck_detail;
  GradcheckResult res;
  std::ostringstream msg;
  auto fail = [&](const std::string& why) {
    res.ok = false;
    msg << why << "\n";
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;  // an optional argument left out
    if (inputs[i].dtype() != DType::f64 && inputs[i].requires_grad()) {
      fail("input " + std::to_string(i) + " " + inputs[i].str() + " must be f64 for a gradient check");
      res.message = msg.str();
      return res;
    }
    if (inputs[i].requires_grad()) Tensor(inputs[i]).set_grad(Tensor());  // handles share the impl
  }

  Tensor out = fn(inputs);
  if (!out.defined() || out.dtype() != DType::f64) {
    fail("fn must return a defined f64 tensor, got " + out.str());
    res.message = msg.str();
    return res;
  }
  Generator gen(opts.seed);
  const Tensor r = rand_uniform(out.shape(), gen, -1.0, 1.0, DType::f64);
  nn::backward(out, r);

  struct Bad {
    size_t input;
    int64_t elem;
    double analytic, numeric, err;
  };
  std::vector<Bad> bad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor g = x.grad();
    if (g.defined() && (g.shape() != x.shape() || g.dtype() != x.dtype())) {
      fail("input " + std::to_string(i) + ": gradient " + g.str() + " does not match " + x.str());
      continue;
    }
    const std::vector<int64_t> elems = gd::pick_elements(x.numel(), opts.max_checks, gen);
    double* p = x.data<double>();
    for (int64_t j : elems) {
      const double v = p[j];
      double fp, fm;
      {
        nn::NoGradGuard no_grad;
        p[j] = v + opts.h;
        fp = gd::weighted_sum(fn(inputs), r);
        p[j] = v - opts.h;
        fm = gd::weighted_sum(fn(inputs), r);
        p[j] = v;
      }
      const double numeric = (fp - fm) / (2 * opts.h);
      const double analytic = g.defined() ? g.data<double>()[j] : 0.0;
      const double err = std::abs(analytic - numeric);
      ++res.checked;
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (!(err <= opts.atol + opts.rtol * std::abs(numeric))) bad.push_back({i, j, analytic, numeric, err});
    }
  }
  if (!bad.empty()) {
    res.ok = false;
    std::sort(bad.begin(), bad.end(), [](const Bad& a, const Bad& b) { return a.err > b.err; });
    msg << bad.size() << " of " << res.checked << " gradient elements differ from finite differences "
        << "(atol " << opts.atol << ", rtol " << opts.rtol << "); worst:\n";
    msg.precision(10);
    for (size_t k = 0; k < std::min<size_t>(bad.size(), 8); ++k)
      msg << "  input " << bad[k].input << " " << inputs[bad[k].input].str() << " element " << bad[k].elem
          << ": analytic " << bad[k].analytic << ", numeric " << bad[k].numeric << "\n";
  }
  for (const Tensor& x : inputs)
    if (x.defined() && x.requires_grad()) Tensor(x).set_grad(Tensor());
  res.message = msg.str();
  return res;
}

// gradcheck() as a non-fatal gtest expectation; wrap the call in SCOPED_TRACE to say
// which case failed.
inline void expect_gradcheck(const GradFn& fn, const std::vector<Tensor>& inputs,
                             const GradcheckOptions& opts = {}) {
  const GradcheckResult res = gradcheck(fn, inputs, opts);
  EXPECT_TRUE(res.ok) << res.message;
  EXPECT_GT(res.checked, 0) << "gradcheck compared no elements: no input requires grad";
}

}  // namespace cxr::testing
