// Convolution, dense layers, pooling and batch normalisation.
#include <cmath>

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "nn/functional.h"
#include "nn/op_util.h"

namespace cxr::nn {

using namespace detail;

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  return conv2d(x, w, b, o, nullptr);
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o,
              const cpu::PackedConvWeights* packed) {
  const char* op = "conv2d";
  check_input(op, x, "input");
  check_input(op, w, "weight");
  check_same(op, x, "input", w, "weight");
  CXR_CHECK(x.dim() == 4, "conv2d: input ", x.str(), " must be 4-D (N, C, H, W)");
  CXR_CHECK(w.dim() == 4, "conv2d: weight ", w.str(), " must be 4-D (K, C/groups, R, S)");
  CXR_CHECK(o.groups >= 1 && o.stride_h >= 1 && o.stride_w >= 1 && o.dil_h >= 1 && o.dil_w >= 1 && o.pad_h >= 0 &&
                o.pad_w >= 0,
            "conv2d: stride (", o.stride_h, ", ", o.stride_w, ") and dilation (", o.dil_h, ", ", o.dil_w,
            ") must be >= 1, padding (", o.pad_h, ", ", o.pad_w, ") >= 0, groups ", o.groups, " >= 1");
  cpu::Conv2dShape s;
  s.N = x.size(0); s.C = x.size(1); s.H = x.size(2); s.W = x.size(3);
  s.K = w.size(0); s.R = w.size(2); s.S = w.size(3);
  s.stride_h = o.stride_h; s.stride_w = o.stride_w; s.pad_h = o.pad_h; s.pad_w = o.pad_w;
  s.dil_h = o.dil_h; s.dil_w = o.dil_w; s.groups = o.groups;
  CXR_CHECK(s.C % s.groups == 0 && s.K % s.groups == 0, "conv2d: input channels ", s.C, " and output channels ",
            s.K, " must both be divisible by groups ", s.groups);
  CXR_CHECK(w.size(1) == s.C / s.groups, "conv2d: weight ", w.str(), " expects ", w.size(1) * s.groups,
            " input channels (groups ", s.groups, ") but input ", x.str(), " has ", s.C);
  CXR_CHECK(s.P() >= 1 && s.Q() >= 1, "conv2d: input ", x.str(), " is smaller than the dilated kernel ",
            w.str(), " with padding (", s.pad_h, ", ", s.pad_w, ")");
  if (b.defined()) {
    check_input(op, b, "bias");
    check_same(op, x, "input", b, "bias");
    CXR_CHECK(b.dim() == 1 && b.size(0) == s.K, "conv2d: bias ", b.str(), " must be (", s.K, ")");
  }
  Tensor y = Tensor::empty({s.N, s.K, s.P(), s.Q()}, x.dtype(), x.device());
  on_device(x, op, [&]<typename T>() {
    cpu::conv2d_forward<T>(pool(), s, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, y.data<T>(),
                           packed);
  }, [&](auto& c) {
    cuda::conv2d_forward(c, s, x.data<float>(), w.data<float>(), b.defined() ? b.data<float>() : nullptr,
                         y.data<float>());
  });
  if (needs_record({&x, &w, &b})) {
    std::vector<Tensor> inputs = {x, w};
    if (b.defined()) inputs.push_back(b);
    record(y, op, inputs, [s, x, w, has_b = b.defined()](const Tensor& g, std::vector<Tensor>& gi) {
      if (x.requires_grad()) gi[0] = empty_like(x);
      const bool need_w = w.requires_grad(), need_b = has_b && gi.size() > 2;
      Tensor dw = need_w || need_b ? empty_like(w) : Tensor();
      Tensor db = (need_w || need_b) && has_b ? Tensor::empty({s.K}, g.dtype(), g.device()) : Tensor();
      on_device(g, "conv2d backward", [&]<typename T>() {
        if (x.requires_grad()) cpu::conv2d_backward_data<T>(pool(), s, g.data<T>(), w.data<T>(), gi[0].data<T>());
        if (dw.defined())
          cpu::conv2d_backward_weight<T>(pool(), s, x.data<T>(), g.data<T>(), dw.data<T>(),
                                         db.defined() ? db.data<T>() : nullptr);
      }, [&](auto& c) {
        if (x.requires_grad()) cuda::conv2d_backward_data(c, s, g.data<float>(), w.data<float>(), gi[0].data<float>());
        if (dw.defined())
          cuda::conv2d_backward_weight(c, s, x.data<float>(), g.data<float>(), dw.data<float>(),
                                       db.defined() ? db.data<float>() : nullptr);
      });
      if (dw.defined()) {
        gi[1] = dw;
        if (has_b) gi[2] = db;
      }
    });
  }
  return y;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_input("matmul", a, "a");
  check_input("matmul", b, "b");
  check_same("matmul", a, "a", b, "b");
  CXR_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "matmul: cannot multiply ", a.str(), " by ",
            b.str(), " (expected (M, K) x (K, N))");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Tensor y = Tensor::empty({M, N}, a.dtype(), a.device());
  on_device(a, "matmul", [&]<typename T>() {
    cpu::gemm_parallel<T>(pool(), cpu::Trans::no, cpu::Trans::no, M, N, K, T(1), a.data<T>(), K, b.data<T>(), N,
                          T(0), y.data<T>(), N);
  }, [&](auto& c) {
    cuda::gemm(c, cpu::Trans::no, cpu::Trans::no, M, N, K, 1.0f, a.data<float>(), K, b.data<float>(), N, 0.0f,
               y.data<float>(), N);
  });
  if (needs_record({&a, &b}))
    record(y, "matmul", {a, b}, [a, b, M, N, K](const Tensor& g, std::vector<Tensor>& gi) {
      if (a.requires_grad()) gi[0] = empty_like(a);
      if (b.requires_grad()) gi[1] = empty_like(b);
      on_device(g, "matmul backward", [&]<typename T>() {
        if (a.requires_grad())  // da = g b^T
          cpu::gemm_parallel<T>(pool(), cpu::Trans::no, cpu::Trans::yes, M, K, N, T(1), g.data<T>(), N, b.data<T>(),
                                N, T(0), gi[0].data<T>(), K);
        if (b.requires_grad())  // db = a^T g
          cpu::gemm_parallel<T>(pool(), cpu::Trans::yes, cpu::Trans::no, K, N, M, T(1), a.data<T>(), K, g.data<T>(),
                                N, T(0), gi[1].data<T>(), N);
      }, [&](auto& c) {
        if (a.requires_grad())
          cuda::gemm(c, cpu::Trans::no, cpu::Trans::yes, M, K, N, 1.0f, g.data<float>(), N, b.data<float>(), N, 0.0f,
                     gi[0].data<float>(), K);
        if (b.requires_grad())
          cuda::gemm(c, cpu::Trans::yes, cpu::Trans::no, K, N, M, 1.0f, a.data<float>(), K, g.data<float>(), N, 0.0f,
                     gi[1].data<float>(), N);
      });
    });
  return y;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const char* op = "linear";
  check_input(op, x, "input");
  check_input(op, w, "weight");
  check_same(op, x, "input", w, "weight");
  CXR_CHECK(x.dim() == 2, "linear: input ", x.str(), " must be 2-D (N, in_features); flatten it first");
  CXR_CHECK(w.dim() == 2 && w.size(1) == x.size(1), "linear: weight ", w.str(), " must be (out_features, ",
            x.size(1), ") for input ", x.str());
  const int64_t N = x.size(0), I = x.size(1), O = w.size(0);
  if (b.defined()) {
    check_input(op, b, "bias");
    check_same(op, x, "input", b, "bias");
    CXR_CHECK(b.dim() == 1 && b.size(0) == O, "linear: bias ", b.str(), " must be (", O, ")");
  }
  Tensor y = Tensor::empty({N, O}, x.dtype(), x.device());
  on_device(x, op, [&]<typename T>() {
    T* yp = y.data<T>();
    if (b.defined()) {
      const T* bp = b.data<T>();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < O; ++o) yp[n * O + o] = bp[o];
    }
    cpu::gemm_parallel<T>(pool(), cpu::Trans::no, cpu::Trans::yes, N, O, I, T(1), x.data<T>(), I, w.data<T>(), I,
                          b.defined() ? T(1) : T(0), yp, O);
  }, [&](auto& c) {
    cuda::gemm(c, cpu::Trans::no, cpu::Trans::yes, N, O, I, 1.0f, x.data<float>(), I, w.data<float>(), I, 0.0f,
               y.data<float>(), O);
    if (b.defined()) cuda::add_channel_bias(c, N * O, O, 1, b.data<float>(), y.data<float>());
  });
  if (needs_record({&x, &w, &b})) {
    std::vector<Tensor> inputs = {x, w};
    if (b.defined()) inputs.push_back(b);
    record(y, op, inputs, [x, w, N, I, O](const Tensor& g, std::vector<Tensor>& gi) {
      if (x.requires_grad()) gi[0] = empty_like(x);
      if (w.requires_grad()) gi[1] = empty_like(w);
      if (gi.size() > 2) gi[2] = Tensor::empty({O}, g.dtype(), g.device());
      on_device(g, "linear backward", [&]<typename T>() {
        if (x.requires_grad())  // dx = g w
          cpu::gemm_parallel<T>(pool(), cpu::Trans::no, cpu::Trans::no, N, I, O, T(1), g.data<T>(), O, w.data<T>(),
                                I, T(0), gi[0].data<T>(), I);
        if (w.requires_grad())  // dw = g^T x
          cpu::gemm_parallel<T>(pool(), cpu::Trans::yes, cpu::Trans::no, O, I, N, T(1), g.data<T>(), O, x.data<T>(),
                                I, T(0), gi[1].data<T>(), I);
        if (gi.size() > 2) {  // db = sum over rows of g
          T* db = gi[2].data<T>();
          const T* gp = g.data<T>();
          for (int64_t o = 0; o < O; ++o) db[o] = 0;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t o = 0; o < O; ++o) db[o] += gp[n * O + o];
        }
      }, [&](auto& c) {
        if (x.requires_grad())
          cuda::gemm(c, cpu::Trans::no, cpu::Trans::no, N, I, O, 1.0f, g.data<float>(), O, w.data<float>(), I, 0.0f,
                     gi[0].data<float>(), I);
        if (w.requires_grad())
          cuda::gemm(c, cpu::Trans::yes, cpu::Trans::no, O, I, N, 1.0f, g.data<float>(), O, x.data<float>(), I, 0.0f,
                     gi[1].data<float>(), I);
        if (gi.size() > 2) {
          const int64_t in_shape[cpu::kBcastDims] = {1, 1, 1, N, O};
          const bool red[cpu::kBcastDims] = {false, false, false, true, false};
          cuda::reduce_sum(c, in_shape, red, g.data<float>(), gi[2].data<float>());
        }
      });
    });
  }
  return y;
}

namespace {
cpu::Pool2dShape pool_shape(const char* op, const Tensor& x, const Pool2dOptions& o) {
  check_input(op, x, "input");
  CXR_CHECK(x.dim() == 4, op, ": input ", x.str(), " must be 4-D (N, C, H, W)");
  CXR_CHECK(o.kernel_h >= 1 && o.kernel_w >= 1 && o.stride_h >= 1 && o.stride_w >= 1, op, ": kernel (",
            o.kernel_h, ", ", o.kernel_w, ") and stride (", o.stride_h, ", ", o.stride_w, ") must be >= 1");
  CXR_CHECK(o.pad_h >= 0 && o.pad_w >= 0 && 2 * o.pad_h <= o.kernel_h && 2 * o.pad_w <= o.kernel_w, op,
            ": padding (", o.pad_h, ", ", o.pad_w, ") must be between 0 and half the kernel (", o.kernel_h, ", ",
            o.kernel_w, ")");
  cpu::Pool2dShape s{x.size(0), x.size(1), x.size(2), x.size(3), o.kernel_h, o.kernel_w,
                     o.stride_h, o.stride_w, o.pad_h, o.pad_w};
  CXR_CHECK(s.P() >= 1 && s.Q() >= 1, op, ": input ", x.str(), " is smaller than the ", o.kernel_h, "x", o.kernel_w,
            " window");
  return s;
}
}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& o) {
  const cpu::Pool2dShape s = pool_shape("max_pool2d", x, o);
  Tensor y = Tensor::empty({s.N, s.C, s.P(), s.Q()}, x.dtype(), x.device());
  // The winners' indices are kept only for a backward.
  const bool record_grad = needs_record({&x});
  Tensor idx = record_grad ? Tensor::empty(y.shape(), DType::i64, x.device()) : Tensor();
  int64_t* ip = record_grad ? idx.data<int64_t>() : nullptr;
  on_device(x, "max_pool2d", [&]<typename T>() {
    cpu::max_pool2d_forward<T>(pool(), s, x.data<T>(), y.data<T>(), ip);
  }, [&](auto& c) { cuda::max_pool2d_forward(c, s, x.data<float>(), y.data<float>(), ip); });
  if (record_grad) {
    const Shape in = x.shape();
    record(y, "max_pool2d", {x}, [s, idx, in](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = Tensor::empty(in, g.dtype(), g.device());
      on_device(g, "max_pool2d backward", [&]<typename T>() {
        cpu::max_pool2d_backward<T>(pool(), s, g.data<T>(), idx.data<int64_t>(), gi[0].data<T>());
      }, [&](auto& c) {
        cuda::max_pool2d_backward(c, s, g.data<float>(), idx.data<int64_t>(), gi[0].data<float>());
      });
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& o) {
  const cpu::Pool2dShape s = pool_shape("avg_pool2d", x, o);
  Tensor y = Tensor::empty({s.N, s.C, s.P(), s.Q()}, x.dtype(), x.device());
  on_device(x, "avg_pool2d", [&]<typename T>() {
    cpu::avg_pool2d_forward<T>(pool(), s, x.data<T>(), y.data<T>());
  }, [&](auto& c) { cuda::avg_pool2d_forward(c, s, x.data<float>(), y.data<float>()); });
  if (needs_record({&x})) {
    const Shape in = x.shape();
    record(y, "avg_pool2d", {x}, [s, in](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = Tensor::empty(in, g.dtype(), g.device());
      on_device(g, "avg_pool2d backward", [&]<typename T>() {
        cpu::avg_pool2d_backward<T>(pool(), s, g.data<T>(), gi[0].data<T>());
      }, [&](auto& c) { cuda::avg_pool2d_backward(c, s, g.data<float>(), gi[0].data<float>()); });
    });
  }
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  check_input("global_avg_pool2d", x, "input");
  CXR_CHECK(x.dim() == 4, "global_avg_pool2d: input ", x.str(), " must be 4-D (N, C, H, W)");
  const int64_t NC = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1}, x.dtype(), x.device());
  on_device(x, "global_avg_pool2d", [&]<typename T>() {
    cpu::global_avg_pool_forward<T>(pool(), NC, HW, x.data<T>(), y.data<T>());
  }, [&](auto& c) { cuda::global_avg_pool_forward(c, NC, HW, x.data<float>(), y.data<float>()); });
  if (needs_record({&x})) {
    const Shape in = x.shape();
    record(y, "global_avg_pool2d", {x}, [NC, HW, in](const Tensor& g, std::vector<Tensor>& gi) {
      gi[0] = Tensor::empty(in, g.dtype(), g.device());
      on_device(g, "global_avg_pool2d backward", [&]<typename T>() {
        cpu::global_avg_pool_backward<T>(pool(), NC, HW, g.data<T>(), gi[0].data<T>());
      }, [&](auto& c) { cuda::global_avg_pool_backward(c, NC, HW, g.data<float>(), gi[0].data<float>()); });
    });
  }
  return y;
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, bool training, double momentum, double eps) {
  const char* op = "batch_norm";
  check_input(op, x, "input");
  CXR_CHECK(x.dim() == 4 || x.dim() == 2, "batch_norm: input ", x.str(), " must be (N, C, H, W) or (N, C)");
  const int64_t N = x.size(0), C = x.size(1), HW = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  auto check_vec = [&](const Tensor& t, const char* what, bool required) {
    if (!t.defined()) {
      CXR_CHECK(!required, "batch_norm: ", what, " is required");
      return;
    }
    check_input(op, t, what);
    check_same(op, x, "input", t, what);
    CXR_CHECK(t.dim() == 1 && t.size(0) == C, "batch_norm: ", what, " ", t.str(), " must be (", C, ") for input ",
              x.str());
  };
  check_vec(weight, "weight", false);
  check_vec(bias, "bias", false);
  check_vec(running_mean, "running_mean", !training);
  check_vec(running_var, "running_var", !training);
  // The update below writes both; one without the other is a caller bug, not a request
  // to update half the statistics.
  CXR_CHECK(running_mean.defined() == running_var.defined(),
            "batch_norm: running_mean and running_var must be given together, got running_mean ",
            running_mean.str(), " and running_var ", running_var.str());
  CXR_CHECK(eps > 0, "batch_norm: eps must be > 0");
  if (training) CXR_CHECK(N * HW > 1, "batch_norm: training needs more than one value per channel, got input ", x.str());
  Tensor y = empty_like(x);
  Tensor mean = Tensor::empty({C}, x.dtype(), x.device()), invstd = Tensor::empty({C}, x.dtype(), x.device());
  on_device(x, op, [&]<typename T>() {
    const T* g = weight.defined() ? weight.data<T>() : nullptr;
    const T* b = bias.defined() ? bias.data<T>() : nullptr;
    if (training) {
      cpu::batchnorm_forward_train<T>(pool(), N, C, HW, x.data<T>(), g, b, eps, y.data<T>(), mean.data<T>(),
                                      invstd.data<T>());
      if (running_mean.defined()) {
        const double unbias = static_cast<double>(N * HW) / static_cast<double>(N * HW - 1);
        T* rm = running_mean.data<T>();
        T* rv = running_var.data<T>();
        for (int64_t c = 0; c < C; ++c) {
          const double var = 1.0 / (static_cast<double>(invstd.data<T>()[c]) * invstd.data<T>()[c]) - eps;
          rm[c] = static_cast<T>((1 - momentum) * rm[c] + momentum * mean.data<T>()[c]);
          rv[c] = static_cast<T>((1 - momentum) * rv[c] + momentum * var * unbias);
        }
      }
    } else {
      cpu::batchnorm_forward_eval<T>(pool(), N, C, HW, x.data<T>(), g, b, running_mean.data<T>(),
                                     running_var.data<T>(), eps, y.data<T>());
      for (int64_t c = 0; c < C; ++c) {
        mean.data<T>()[c] = running_mean.data<T>()[c];
        invstd.data<T>()[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var.data<T>()[c]) + eps));
      }
    }
  }, [&](auto& c) {
    const float* g = weight.defined() ? weight.data<float>() : nullptr;
    const float* b = bias.defined() ? bias.data<float>() : nullptr;
    if (training) {
      cuda::batchnorm_forward_train(c, N, C, HW, x.data<float>(), g, b, eps, y.data<float>(), mean.data<float>(),
                                    invstd.data<float>());
      if (running_mean.defined())
        cuda::batchnorm_update_running(c, C, momentum, N * HW, eps, mean.data<float>(), invstd.data<float>(),
                                       running_mean.data<float>(), running_var.data<float>());
    } else {
      cuda::batchnorm_forward_eval(c, N, C, HW, x.data<float>(), g, b, running_mean.data<float>(),
                                   running_var.data<float>(), eps, y.data<float>());
      cuda::batchnorm_eval_stats(c, C, eps, running_mean.data<float>(), running_var.data<float>(), mean.data<float>(),
                                 invstd.data<float>());
    }
  });
  if (training && running_mean.defined()) {
    running_mean.bump_version();
    running_var.bump_version();
  }
  if (needs_record({&x, &weight, &bias})) {
    std::vector<Tensor> inputs = {x};
    const int wi = weight.defined() ? static_cast<int>(inputs.size()) : -1;
    if (weight.defined()) inputs.push_back(weight);
    const int bi = bias.defined() ? static_cast<int>(inputs.size()) : -1;
    if (bias.defined()) inputs.push_back(bias);
    record(y, op, inputs,
           [x, weight, mean, invstd, training, N, C, HW, wi, bi](const Tensor& g, std::vector<Tensor>& gi) {
             Tensor dx = x.requires_grad() ? empty_like(x) : Tensor();
             Tensor dgamma = wi >= 0 ? Tensor::empty({C}, g.dtype(), g.device()) : Tensor();
             Tensor dbeta = bi >= 0 ? Tensor::empty({C}, g.dtype(), g.device()) : Tensor();
             on_device(g, "batch_norm backward", [&]<typename T>() {
               cpu::batchnorm_backward<T>(pool(), training, N, C, HW, x.data<T>(), g.data<T>(),
                                          weight.defined() ? weight.data<T>() : nullptr, mean.data<T>(),
                                          invstd.data<T>(), dx.defined() ? dx.data<T>() : nullptr,
                                          dgamma.defined() ? dgamma.data<T>() : nullptr,
                                          dbeta.defined() ? dbeta.data<T>() : nullptr);
             }, [&](auto& c) {
               cuda::batchnorm_backward(c, training, N, C, HW, x.data<float>(), g.data<float>(),
                                        weight.defined() ? weight.data<float>() : nullptr, mean.data<float>(),
                                        invstd.data<float>(), dx.defined() ? dx.data<float>() : nullptr,
                                        dgamma.defined() ? dgamma.data<float>() : nullptr,
                                        dbeta.defined() ? dbeta.data<float>() : nullptr);
             });
             gi[0] = dx;
             if (wi >= 0) gi[wi] = dgamma;
             if (bi >= 0) gi[bi] = dbeta;
           });
  }
  return y;
}

}  // namespace cxr::nn
