// Softmax, log-softmax and the losses.
#include "kernels/elementwise.h"
#include "kernels/softmax.h"
#include "nn/functional.h"
#include "nn/op_util.h"

namespace cxr::nn {

using namespace detail;

namespace {
Tensor softmax_impl(const char* op, bool log, const Tensor& x, int64_t dim) {
  check_input(op, x, "input");
  CXR_CHECK(x.dim() >= 1, op, ": input ", x.str(), " must have at least one dim");
  dim = wrap_dim(op, dim, x.dim());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  const int64_t D = x.size(dim);
  Tensor y = empty_like(x);
  on_device(x, op, [&]<typename T>() {
    cpu::softmax_forward<T>(pool(), log, outer, D, inner, x.data<T>(), y.data<T>());
  }, [&](auto& c) { cuda::softmax_forward(c, log, outer, D, inner, x.data<float>(), y.data<float>()); });
  if (needs_record({&x})) {
    Tensor ys = y.detach();
    record(y, op, {x}, [ys, log, outer, D, inner](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = empty_like(g);
      on_device(g, "softmax backward", [&]<typename T>() {
        cpu::softmax_backward<T>(pool(), log, outer, D, inner, ys.data<T>(), g.data<T>(), gi[0].data<T>());
      }, [&](auto& c) {
        cuda::softmax_backward(c, log, outer, D, inner, ys.data<float>(), g.data<float>(), gi[0].data<float>());
      });
    });
  }
  return y;
}

// Scales a precomputed local gradient by the upstream scalar gradient.
Tensor scaled(const Tensor& local, const Tensor& g) {
  Tensor out = empty_like(local);
  on_device(local, "loss backward", [&]<typename T>() {
    cpu::scale<T>(pool(), local.numel(), static_cast<T>(g.item()), local.data<T>(), out.data<T>());
  }, [&](auto& c) {
    out.copy_(local);
    cuda::scale_by_device_scalar(c, out.numel(), g.data<float>(), out.data<float>());
  });
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", false, x, dim); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", true, x, dim); }

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o) {
  const char* op = "cross_entropy";
  check_input(op, logits, "logits");
  CXR_CHECK(logits.dim() == 2, "cross_entropy: logits ", logits.str(), " must be (N, C)");
  check_defined(op, target, "target");
  CXR_CHECK(target.dtype() == DType::i64 && (target.device().is_cpu() || target.device() == logits.device()),
            "cross_entropy: target ", target.str(), " must be an i64 tensor of class indices on the CPU or on ",
            logits.device().str());
  const int64_t N = logits.size(0), C = logits.size(1);
  CXR_CHECK(target.dim() == 1 && target.size(0) == N, "cross_entropy: target ", target.str(), " must be (", N,
            ") for logits ", logits.str());
  CXR_CHECK(o.label_smoothing >= 0.0 && o.label_smoothing < 1.0, "cross_entropy: label_smoothing ",
            o.label_smoothing, " must be in [0, 1)");
  const Tensor& w = o.class_weight;
  if (w.defined()) {
    check_input(op, w, "class_weight");
    check_same(op, logits, "logits", w, "class_weight");
    CXR_CHECK(w.dim() == 1 && w.size(0) == C, "cross_entropy: class_weight ", w.str(), " must be (", C, ")");
  }
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  const bool grad = needs_record({&logits});
  Tensor dlogits = grad ? empty_like(logits) : Tensor();
  // Names the first out-of-range target (reading it on the host) and throws.
  auto bad_target = [&]() {
    const Tensor t = target.to(Device::cpu());
    int64_t bad = 0;
    for (int64_t i = 0; i < N; ++i)
      if (t.data<int64_t>()[i] < 0 || t.data<int64_t>()[i] >= C) { bad = t.data<int64_t>()[i]; break; }
    throw ValueError(cxr::detail::cat("cross_entropy: target value ", bad, " is outside [0, ", C, ") for logits ",
                                      logits.str()));
  };
  // Class weights of the batch's targets must not sum to zero (the loss divides by it).
  auto check_weight_sum = [&]() {
    if (!w.defined()) return;
    const Tensor t = target.to(Device::cpu());
    const std::vector<double> wv = w.to_vector();
    double wsum = 0;
    for (int64_t i = 0; i < N; ++i) wsum += wv[static_cast<size_t>(t.data<int64_t>()[i])];
    CXR_CHECK(wsum > 0, "cross_entropy: the class weights of this batch's targets sum to ", wsum,
              "; the loss is undefined");
  };
  on_device(logits, op, [&]<typename T>() {
    const bool ok = cpu::cross_entropy<T>(N, C, logits.data<T>(), target.data<int64_t>(),
                                          w.defined() ? w.data<T>() : nullptr, o.label_smoothing, loss.data<T>(),
                                          grad ? dlogits.data<T>() : nullptr, T(1));
    if (!ok) bad_target();
    check_weight_sum();
  }, [&](auto& c) {
    const Tensor t = target.to(logits.device());
    const bool ok = cuda::cross_entropy(c, N, C, logits.data<float>(), t.data<int64_t>(),
                                        w.defined() ? w.data<float>() : nullptr, o.label_smoothing,
                                        loss.data<float>(), grad ? dlogits.data<float>() : nullptr, 1.0f);
    if (!ok) bad_target();
    check_weight_sum();
  });
  if (grad)
    record(loss, op, {logits}, [dlogits](const Tensor& g, std::vector<Tensor>& gi) { gi[0] = scaled(dlogits, g); });
  return loss;
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const Tensor& pos_weight) {
  const char* op = "binary_cross_entropy_with_logits";
  check_input(op, logits, "logits");
  check_input(op, target, "target");
  check_same(op, logits, "logits", target, "target");
  CXR_CHECK(logits.shape() == target.shape(), op, ": logits ", logits.str(), " and target ", target.str(),
            " must have the same shape");
  const int64_t L = logits.dim() ? logits.size(-1) : 1;
  if (pos_weight.defined()) {
    check_input(op, pos_weight, "pos_weight");
    check_same(op, logits, "logits", pos_weight, "pos_weight");
    CXR_CHECK(pos_weight.numel() == L || pos_weight.numel() == 1, op, ": pos_weight ", pos_weight.str(),
              " must have 1 or ", L, " elements (the last dim of logits ", logits.str(), ")");
  }
  const int64_t PL = pos_weight.defined() ? pos_weight.numel() : 1;
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  const bool grad = needs_record({&logits, &target});
  Tensor dx = grad ? empty_like(logits) : Tensor(), dy = grad ? empty_like(target) : Tensor();
  on_device(logits, op, [&]<typename T>() {
    cpu::bce_with_logits<T>(logits.numel(), PL, logits.data<T>(), target.data<T>(),
                            pos_weight.defined() ? pos_weight.data<T>() : nullptr, loss.data<T>(),
                            grad ? dx.data<T>() : nullptr, grad ? dy.data<T>() : nullptr, T(1));
  }, [&](auto& c) {
    cuda::bce_with_logits(c, logits.numel(), PL, logits.data<float>(), target.data<float>(),
                          pos_weight.defined() ? pos_weight.data<float>() : nullptr, loss.data<float>(),
                          grad ? dx.data<float>() : nullptr, grad ? dy.data<float>() : nullptr, 1.0f);
  });
  if (grad)
    record(loss, op, {logits, target}, [dx, dy](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = scaled(dx, g);
      gi[1] = scaled(dy, g);
    });
  return loss;
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  const char* op = "mse_loss";
  check_input(op, a, "input");
  check_input(op, b, "target");
  check_same(op, a, "input", b, "target");
  CXR_CHECK(a.shape() == b.shape(), "mse_loss: input ", a.str(), " and target ", b.str(),
            " must have the same shape");
  Tensor loss = Tensor::empty({}, a.dtype(), a.device());
  const bool grad = needs_record({&a, &b});
  Tensor da = grad ? empty_like(a) : Tensor(), db = grad ? empty_like(b) : Tensor();
  on_device(a, op, [&]<typename T>() {
    cpu::mse<T>(a.numel(), a.data<T>(), b.data<T>(), loss.data<T>(), grad ? da.data<T>() : nullptr,
                grad ? db.data<T>() : nullptr, T(1));
  }, [&](auto& c) {
    cuda::mse(c, a.numel(), a.data<float>(), b.data<float>(), loss.data<float>(), grad ? da.data<float>() : nullptr,
              grad ? db.data<float>() : nullptr, 1.0f);
  });
  if (grad)
    record(loss, op, {a, b}, [da, db](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = scaled(da, g);
      gi[1] = scaled(db, g);
    });
  return loss;
}

}  // namespace cxr::nn
