// Elementwise, shape, reduction, activation and dropout ops.
#include <algorithm>
#include <string>

#include "kernels/elementwise.h"
#include "nn/functional.h"
#include "nn/op_util.h"

namespace cxr::nn {

using namespace detail;

namespace {

// Broadcast geometry of a and b padded to 5 dims.
struct BcastPlan {
  Shape out;
  cpu::Broadcast bc;
};

BcastPlan plan_broadcast(const char* op, const Shape& a, const Shape& b) {
  const size_t nd = std::max(a.size(), b.size());
  BcastPlan plan;
  plan.out.assign(nd, 1);
  for (size_t i = 0; i < nd; ++i) {
    const int64_t da = i < nd - a.size() ? 1 : a[i - (nd - a.size())];
    const int64_t db = i < nd - b.size() ? 1 : b[i - (nd - b.size())];
    CXR_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
              " cannot be broadcast together");
    plan.out[i] = std::max(da, db);
    if (da == 0 || db == 0) plan.out[i] = 0;
  }
  CXR_CHECK(nd <= static_cast<size_t>(cpu::kBcastDims), op, ": too many dims");
  // Pad on the left and compute strides (0 along broadcast dims).
  auto strides = [&](const Shape& s, int64_t* st) {
    int64_t acc = 1;
    for (int d = cpu::kBcastDims - 1; d >= 0; --d) {
      const int64_t k = static_cast<int64_t>(s.size()) - (cpu::kBcastDims - d);
      const int64_t dim = k >= 0 ? s[k] : 1;
      const int64_t od = d - (cpu::kBcastDims - static_cast<int64_t>(nd));
      const int64_t out_dim = od >= 0 ? plan.out[od] : 1;
      st[d] = (dim == 1 && out_dim != 1) ? 0 : acc;
      acc *= dim;
    }
  };
  for (int d = 0; d < cpu::kBcastDims; ++d) {
    const int64_t od = d - (cpu::kBcastDims - static_cast<int64_t>(nd));
    plan.bc.shape[d] = od >= 0 ? plan.out[od] : 1;
  }
  strides(a, plan.bc.a_stride);
  strides(b, plan.bc.b_stride);
  return plan;
}

// Sums g (shape `from`) down to `to` (a shape `from` was broadcast from).
Tensor sum_to(const Tensor& g, const Shape& to) {
  if (g.shape() == to) return g;
  const Shape& from = g.shape();
  int64_t in_shape[cpu::kBcastDims];
  bool reduce[cpu::kBcastDims];
  const int64_t off_from = cpu::kBcastDims - static_cast<int64_t>(from.size());
  const int64_t off_to = cpu::kBcastDims - static_cast<int64_t>(to.size());
  for (int d = 0; d < cpu::kBcastDims; ++d) {
    in_shape[d] = d >= off_from ? from[d - off_from] : 1;
    const int64_t td = d >= off_to ? to[d - off_to] : 1;
    reduce[d] = td == 1 && in_shape[d] != 1;
  }
  Tensor out = Tensor::empty(to, g.dtype(), g.device());
  on_device(g, "sum_to", [&]<typename T>() {
    cpu::reduce_sum<T>(in_shape, reduce, g.data<T>(), out.data<T>());
  }, [&](auto& c) { cuda::reduce_sum(c, in_shape, reduce, g.data<float>(), out.data<float>()); });
  return out;
}

Tensor binary(const char* op, cpu::BinOp kind, const Tensor& a, const Tensor& b) {
  check_input(op, a, "a");
  check_input(op, b, "b");
  check_same(op, a, "a", b, "b");
  BcastPlan plan = plan_broadcast(op, a.shape(), b.shape());
  Tensor y = Tensor::empty(plan.out, a.dtype(), a.device());
  const bool same = a.shape() == b.shape() && kind != cpu::BinOp::mul;
  on_device(a, op, [&]<typename T>() {
    if (same)
      cpu::axpby<T>(pool(), a.numel(), T(1), a.data<T>(), kind == cpu::BinOp::add ? T(1) : T(-1), b.data<T>(),
                    y.data<T>());
    else
      cpu::binary_broadcast<T>(pool(), kind, plan.bc, a.data<T>(), b.data<T>(), y.data<T>());
  }, [&](auto& c) {
    if (same)
      cuda::axpby(c, a.numel(), 1.0f, a.data<float>(), kind == cpu::BinOp::add ? 1.0f : -1.0f, b.data<float>(),
                  y.data<float>());
    else
      cuda::binary_broadcast(c, kind, plan.bc, a.data<float>(), b.data<float>(), y.data<float>());
  });
  if (needs_record({&a, &b})) {
    const Shape as = a.shape(), bs = b.shape();
    Tensor sa = kind == cpu::BinOp::mul ? a : Tensor(), sb = kind == cpu::BinOp::mul ? b : Tensor();
    record(y, op, {a, b}, [kind, as, bs, sa, sb](const Tensor& g, std::vector<Tensor>& gi) {
      if (kind == cpu::BinOp::mul) {
        gi[0] = sum_to(mul(g, sb), as);
        gi[1] = sum_to(mul(g, sa), bs);
        return;
      }
      gi[0] = sum_to(g, as);
      gi[1] = sum_to(kind == cpu::BinOp::sub ? mul_scalar(g, -1.0) : g, bs);
    });
  }
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", cpu::BinOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", cpu::BinOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", cpu::BinOp::mul, a, b); }

Tensor mul_scalar(const Tensor& x, double s) {
  check_input("mul_scalar", x, "x");
  Tensor y = empty_like(x);
  on_device(x, "mul_scalar", [&]<typename T>() {
    cpu::scale<T>(pool(), x.numel(), static_cast<T>(s), x.data<T>(), y.data<T>());
  }, [&](auto& c) { cuda::scale(c, x.numel(), static_cast<float>(s), x.data<float>(), y.data<float>()); });
  if (needs_record({&x}))
    record(y, "mul_scalar", {x}, [s](const Tensor& g, std::vector<Tensor>& gi) { gi[0] = mul_scalar(g, s); });
  return y;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  Tensor y;
  try {
    y = x.view(shape);
  } catch (const ValueError& e) {
    throw ValueError(std::string("reshape: ") + e.what());
  }
  if (needs_record({&x})) {
    const Shape in = x.shape();
    record(y, "reshape", {x}, [in](const Tensor& g, std::vector<Tensor>& gi) { gi[0] = g.view(in); });
  }
  return y;
}

Tensor flatten(const Tensor& x, int64_t start_dim) {
  check_defined("flatten", x, "x");
  const int64_t nd = x.dim();
  if (nd == 0) return reshape(x, {1});
  start_dim = wrap_dim("flatten", start_dim, nd);
  Shape s(x.shape().begin(), x.shape().begin() + start_dim);
  int64_t rest = 1;
  for (int64_t d = start_dim; d < nd; ++d) rest *= x.shape()[d];
  s.push_back(rest);
  return reshape(x, s);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  CXR_CHECK(!xs.empty(), "concat: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i) {
    check_input("concat", xs[i], "input");
    check_same("concat", xs[0], "input 0", xs[i], "another input");
    CXR_CHECK(xs[i].dim() == xs[0].dim(), "concat: input ", i, " ", xs[i].str(), " has a different rank from ",
              xs[0].str());
  }
  const int64_t nd = xs[0].dim();
  dim = wrap_dim("concat", dim, nd);
  Shape out = xs[0].shape();
  out[dim] = 0;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < xs.size(); ++i) {
    for (int64_t d = 0; d < nd; ++d)
      CXR_CHECK(d == dim || xs[i].shape()[d] == xs[0].shape()[d], "concat along dim ", dim, ": input ", i, " ",
                xs[i].str(), " does not match input 0 ", xs[0].str());
    out[dim] += xs[i].shape()[dim];
    sizes.push_back(xs[i].shape()[dim]);
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= out[d];
  for (int64_t d = dim + 1; d < nd; ++d) inner *= out[d];
  Tensor y = Tensor::empty(out, xs[0].dtype(), xs[0].device());
  on_device(y, "concat", [&]<typename T>() {
    std::vector<const T*> ptrs;
    for (const Tensor& t : xs) ptrs.push_back(t.data<T>());
    cpu::concat<T>(outer, inner, static_cast<int64_t>(xs.size()), ptrs.data(), sizes.data(), y.data<T>());
  }, [&](auto& c) {
    std::vector<const float*> ptrs;
    for (const Tensor& t : xs) ptrs.push_back(t.data<float>());
    cuda::concat(c, outer, inner, static_cast<int64_t>(xs.size()), ptrs.data(), sizes.data(), y.data<float>());
  });
  if (needs_record(xs)) {
    std::vector<Shape> shapes;
    for (const Tensor& t : xs) shapes.push_back(t.shape());
    record(y, "concat", xs, [outer, inner, sizes, shapes](const Tensor& g, std::vector<Tensor>& gi) {
      for (size_t i = 0; i < gi.size(); ++i) gi[i] = Tensor::empty(shapes[i], g.dtype(), g.device());
      on_device(g, "concat backward", [&]<typename T>() {
        std::vector<T*> ptrs;
        for (size_t i = 0; i < gi.size(); ++i) ptrs.push_back(gi[i].data<T>());
        cpu::concat_backward<T>(outer, inner, static_cast<int64_t>(gi.size()), g.data<T>(), sizes.data(),
                                ptrs.data());
      }, [&](auto& c) {
        std::vector<float*> ptrs;
        for (size_t i = 0; i < gi.size(); ++i) ptrs.push_back(gi[i].data<float>());
        cuda::concat_backward(c, outer, inner, static_cast<int64_t>(gi.size()), g.data<float>(), sizes.data(),
                              ptrs.data());
      });
    });
  }
  return y;
}

namespace {
// Output shape of a reduction, and the 5-dim padded plan.
struct ReducePlan {
  Shape keep_shape;  // reduced dims set to 1
  Shape out_shape;   // keepdim ? keep_shape : reduced dims removed
  int64_t count = 1; // elements summed into each output
  int64_t in_shape[cpu::kBcastDims];
  bool reduce[cpu::kBcastDims];
};

ReducePlan plan_reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t nd = x.dim();
  std::vector<bool> red(nd, dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(op, d, nd);
    CXR_CHECK(!red[w] || dims.empty(), op, ": dim ", d, " given twice");
    red[w] = true;
  }
  ReducePlan p;
  const int64_t off = cpu::kBcastDims - nd;
  for (int d = 0; d < cpu::kBcastDims; ++d) {
    p.in_shape[d] = d >= off ? x.shape()[d - off] : 1;
    p.reduce[d] = d >= off ? static_cast<bool>(red[d - off]) : false;
  }
  for (int64_t d = 0; d < nd; ++d) {
    p.keep_shape.push_back(red[d] ? 1 : x.shape()[d]);
    if (red[d]) p.count *= x.shape()[d];
    if (!red[d] || keepdim) p.out_shape.push_back(red[d] ? 1 : x.shape()[d]);
  }
  return p;
}

Tensor reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
  check_input(op, x, "x");
  ReducePlan p = plan_reduce(op, x, dims, keepdim);
  Tensor y = Tensor::empty(p.out_shape, x.dtype(), x.device());
  on_device(x, op, [&]<typename T>() {
    cpu::reduce_sum<T>(p.in_shape, p.reduce, x.data<T>(), y.data<T>());
    if (is_mean) cpu::scale<T>(pool(), y.numel(), T(1) / static_cast<T>(p.count), y.data<T>(), y.data<T>());
  }, [&](auto& c) {
    cuda::reduce_sum(c, p.in_shape, p.reduce, x.data<float>(), y.data<float>());
    if (is_mean) cuda::scale(c, y.numel(), 1.0f / static_cast<float>(p.count), y.data<float>(), y.data<float>());
  });
  if (needs_record({&x})) {
    const Shape in = x.shape(), keep = p.keep_shape;
    const double k = is_mean ? 1.0 / static_cast<double>(p.count) : 1.0;
    record(y, op, {x}, [in, keep, k](const Tensor& g, std::vector<Tensor>& gi) {
      // Broadcast g (keep shape) back over the reduced dims.
      Tensor ones = Tensor::full(in, k, g.dtype(), g.device());
      gi[0] = mul(ones, g.view(keep));
    });
  }
  return y;
}
}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce("sum", x, dims, keepdim, false);
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce("mean", x, dims, keepdim, true);
}

Tensor activation(const Tensor& x, cpu::Act act, double alpha) {
  const char* op = cpu::act_name(act);
  check_input(op, x, "x");
  Tensor y = empty_like(x);
  on_device(x, op, [&]<typename T>() {
    cpu::act_forward<T>(pool(), act, alpha, x.numel(), x.data<T>(), y.data<T>());
  }, [&](auto& c) { cuda::act_forward(c, act, alpha, x.numel(), x.data<float>(), y.data<float>()); });
  if (needs_record({&x})) {
    // Save y without its graph to avoid a reference cycle y -> node -> y.
    Tensor ys = y.detach();
    record(y, op, {x}, [act, alpha, x, ys](const Tensor& g, std::vector<Tensor>& gi) {
      Tensor dx = empty_like(g);
      on_device(g, "activation backward", [&]<typename T>() {
        cpu::act_backward<T>(pool(), act, alpha, g.numel(), x.data<T>(), ys.data<T>(), g.data<T>(), dx.data<T>());
      }, [&](auto& c) {
        cuda::act_backward(c, act, alpha, g.numel(), x.data<float>(), ys.data<float>(), g.data<float>(),
                           dx.data<float>());
      });
      gi[0] = dx;
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_input("dropout", x, "x");
  CXR_CHECK(p >= 0.0 && p < 1.0, "dropout: p = ", p, " must be in [0, 1)");
  if (!training || p == 0.0) return x;
  Tensor y = empty_like(x), mask = empty_like(x);
  const uint64_t base = gen.reserve(x.numel());
  on_device(x, "dropout", [&]<typename T>() {
    cpu::dropout_forward<T>(pool(), x.numel(), p, gen.seed(), base, x.data<T>(), y.data<T>(), mask.data<T>());
  }, [&](auto& c) {
    cuda::dropout_forward(c, x.numel(), p, gen.seed(), base, x.data<float>(), y.data<float>(), mask.data<float>());
  });
  if (needs_record({&x}))
    record(y, "dropout", {x}, [mask](const Tensor& g, std::vector<Tensor>& gi) {
      Tensor dx = empty_like(g);
      on_device(g, "dropout backward", [&]<typename T>() {
        cpu::mul<T>(pool(), g.numel(), g.data<T>(), mask.data<T>(), dx.data<T>());
      }, [&](auto& c) { cuda::mul(c, g.numel(), g.data<float>(), mask.data<float>(), dx.data<float>()); });
      gi[0] = dx;
    });
  return y;
}

}  // namespace cxr::nn
