#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>
#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/elementwise.h"
#include "kernels/optim.h"
#include "kernels/pool.h"
#include "kernels/softmax.h"
#include "runtime/thread_pool.h"
using namespace cxr;
namespace cxr::cuda { Context& context(int) { static Context c; return c; } }
static cuda::Context& C() { return cuda::context(0); }
static ThreadPool& P() { static ThreadPool p(2); return p; }
static std::mt19937_64 rng(12345);
static int fails = 0, checks = 0;
static std::vector<float> randv(int64_t n, float lo = -2, float hi = 2) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
static int64_t ri(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
static double relerr(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    if (std::isnan(a[i]) != std::isnan(b[i])) return 1e30;
    if (std::isnan(a[i])) continue;
    num += d * d; den += double(b[i]) * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}
#define CHECK_REL(gpu, cpu, n, tol, ...) do { ++checks; const double e_ = relerr(gpu, cpu, n); \
  if (!(e_ <= tol)) { ++fails; printf("FAIL %s:%d rel %g: ", __FILE__, __LINE__, e_); printf(__VA_ARGS__); printf("\n"); } } while (0)
#define CHECK_EQ_BITS(gpu, cpu, n, ...) do { ++checks; for (int64_t i_ = 0; i_ < (int64_t)(n); ++i_) \
  if (std::memcmp(&(gpu)[i_], &(cpu)[i_], sizeof((gpu)[0])) != 0 && !(std::isnan((double)(gpu)[i_]) && std::isnan((double)(cpu)[i_]))) { ++fails; \
   printf("FAIL %s:%d idx %ld gpu %.9g cpu %.9g: ", __FILE__, __LINE__, (long)i_, (double)(gpu)[i_], (double)(cpu)[i_]); printf(__VA_ARGS__); printf("\n"); break; } } while (0)
#define PEND() do { if (emu::pending) { printf("FAIL pending launch without check at %d\n", __LINE__); ++fails; emu::pending = 0; } } while (0)

const int64_t kSizes[] = {1, 2, 3, 7, 33};

void test_elementwise() {
  // binary broadcast
  for (int it = 0; it < 150; ++it) {
    cpu::Broadcast bc;
    int64_t sa = 1, sb = 1;
    int64_t ash[5], bsh[5];
    for (int d = 4; d >= 0; --d) {
      bc.shape[d] = kSizes[ri(0, 4)];
      if (ri(0, 3) == 0) bc.shape[d] = 1;
      const bool abr = ri(0, 2) == 0, bbr = ri(0, 3) == 0;
      ash[d] = abr ? 1 : bc.shape[d];
      bsh[d] = bbr ? 1 : bc.shape[d];
      bc.a_stride[d] = ash[d] == 1 ? 0 : sa;
      bc.b_stride[d] = bsh[d] == 1 ? 0 : sb;
      sa *= ash[d]; sb *= bsh[d];
    }
    const int64_t n = bc.numel();
    auto a = randv(sa), b = randv(sb);
    std::vector<float> y1(n), y2(n);
    auto op = static_cast<cpu::BinOp>(ri(0, 2));
    cpu::binary_broadcast<float>(P(), op, bc, a.data(), b.data(), y1.data());
    cuda::binary_broadcast(C(), op, bc, a.data(), b.data(), y2.data());
    PEND();
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "binary_broadcast it %d", it);
  }
  for (int64_t n : {1, 7, 33, 255, 256, 257, 1000, 5000, 70001}) {
    auto a = randv(n), b = randv(n);
    std::vector<float> y1(n), y2(n);
    cpu::axpby<float>(P(), n, 1.5f, a.data(), -0.5f, b.data(), y1.data());
    cuda::axpby(C(), n, 1.5f, a.data(), -0.5f, b.data(), y2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "axpby %ld", n);
    cpu::mul<float>(P(), n, a.data(), b.data(), y1.data());
    cuda::mul(C(), n, a.data(), b.data(), y2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "mul %ld", n);
    cpu::add_inplace<float>(P(), n, a.data(), y1.data());
    cuda::add_inplace(C(), n, a.data(), y2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "add_inplace %ld", n);
    cpu::scale<float>(P(), n, 0.3f, a.data(), y1.data());
    cuda::scale(C(), n, 0.3f, a.data(), y2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "scale %ld", n);
    float g = 1.7f;
    std::vector<float> z = a;
    cuda::scale_by_device_scalar(C(), n, &g, z.data());
    for (int64_t i = 0; i < n; ++i) y1[i] = a[i] * g;
    CHECK_EQ_BITS(z.data(), y1.data(), n, "scale_by_device_scalar %ld", n);
    // dropout
    std::vector<float> m1(n), m2(n);
    cpu::dropout_forward<float>(P(), n, 0.3, 77, 5, a.data(), y1.data(), m1.data());
    cuda::dropout_forward(C(), n, 0.3, 77, 5, a.data(), y2.data(), m2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "dropout y %ld", n);
    CHECK_EQ_BITS(m2.data(), m1.data(), n, "dropout m %ld", n);
    // convert f32 -> f64 -> i64 -> f32
    std::vector<double> d(n);
    std::vector<int64_t> l(n);
    cuda::convert(C(), n, 0, a.data(), 1, d.data());
    cuda::convert(C(), n, 1, d.data(), 2, l.data());
    cuda::convert(C(), n, 2, l.data(), 0, y2.data());
    for (int64_t i = 0; i < n; ++i) y1[i] = float(int64_t(double(a[i])));
    CHECK_EQ_BITS(y2.data(), y1.data(), n, "convert %ld", n);
    PEND();
  }
  // channel bias
  for (int it = 0; it < 20; ++it) {
    const int64_t outer = kSizes[ri(0, 4)], Cc = kSizes[ri(0, 4)], inner = kSizes[ri(0, 4)];
    const int64_t n = outer * Cc * inner;
    auto y = randv(n), b = randv(Cc);
    std::vector<float> r = y;
    for (int64_t i = 0; i < n; ++i) r[i] += b[(i / inner) % Cc];
    cuda::add_channel_bias(C(), n, Cc, inner, b.data(), y.data());
    CHECK_EQ_BITS(y.data(), r.data(), n, "channel_bias");
  }
  // reduce_sum
  for (int it = 0; it < 160; ++it) {
    int64_t sh[5];
    bool red[5];
    for (int d = 0; d < 5; ++d) {
      sh[d] = kSizes[ri(0, 4)];
      if (ri(0, 2) == 0) sh[d] = 1;
      red[d] = ri(0, 1);
    }
    if (it % 10 == 0) { int d = ri(0, 4); sh[d] = ri(3000, 20000); }
    if (it % 37 == 0) { int d = ri(0, 4); sh[d] = 0; }
    int64_t in_n = 1, out_n = 1;
    for (int d = 0; d < 5; ++d) { in_n *= sh[d]; if (!red[d]) out_n *= sh[d]; }
    if (in_n > 400000) continue;
    auto x = randv(in_n);
    std::vector<float> y1(out_n), y2(out_n, -777.f);
    // double reference
    std::vector<double> yd(out_n, 0.0);
    {
      int64_t os[5], on = 1;
      for (int d = 4; d >= 0; --d) { os[d] = red[d] ? 0 : on; if (!red[d]) on *= sh[d]; }
      for (int64_t i = 0; i < in_n; ++i) {
        int64_t rem = i, o = 0;
        for (int d = 4; d >= 0; --d) { o += (rem % sh[d]) * os[d]; rem /= sh[d]; }
        yd[o] += x[i];
      }
      for (int64_t o = 0; o < out_n; ++o) y1[o] = float(yd[o]);
    }
    cuda::reduce_sum(C(), sh, red, x.data(), y2.data());
    PEND();
    CHECK_REL(y2.data(), y1.data(), out_n, 1e-6, "reduce_sum it %d shape %ld %ld %ld %ld %ld red %d%d%d%d%d", it, sh[0], sh[1], sh[2], sh[3], sh[4], red[0], red[1], red[2], red[3], red[4]);
  }
  // concat
  for (int it = 0; it < 30; ++it) {
    const int64_t outer = kSizes[ri(0, 4)], inner = kSizes[ri(0, 4)], k = ri(1, 4);
    std::vector<int64_t> sizes(k);
    std::vector<std::vector<float>> xs(k);
    std::vector<const float*> ptrs(k);
    int64_t total = 0;
    for (int64_t i = 0; i < k; ++i) { sizes[i] = ri(0, 5); total += sizes[i]; xs[i] = randv(outer * sizes[i] * inner); xs[i].reserve(1); ptrs[i] = xs[i].data(); }
    std::vector<float> y1(outer * total * inner), y2(outer * total * inner);
    cpu::concat<float>(outer, inner, k, ptrs.data(), sizes.data(), y1.data());
    cuda::concat(C(), outer, inner, k, ptrs.data(), sizes.data(), y2.data());
    PEND();
    CHECK_EQ_BITS(y2.data(), y1.data(), y1.size(), "concat");
    std::vector<std::vector<float>> d1(k), d2(k);
    std::vector<float*> p1(k), p2(k);
    for (int64_t i = 0; i < k; ++i) { d1[i].assign(outer * sizes[i] * inner, 0); d2[i] = d1[i]; d1[i].reserve(1); d2[i].reserve(1); p1[i] = i == 1 ? nullptr : d1[i].data(); p2[i] = i == 1 ? nullptr : d2[i].data(); }
    cpu::concat_backward<float>(outer, inner, k, y1.data(), sizes.data(), p1.data());
    cuda::concat_backward(C(), outer, inner, k, y1.data(), sizes.data(), p2.data());
    PEND();
    for (int64_t i = 0; i < k; ++i) CHECK_EQ_BITS(d2[i].data(), d1[i].data(), d1[i].size(), "concat_backward");
  }
}

void test_activation() {
  for (int ai = 0; ai < 7; ++ai)
    for (int64_t n : {1, 7, 33, 300, 70001}) {
      auto act = static_cast<cpu::Act>(ai);
      auto x = randv(n, -8, 8), dy = randv(n);
      x[0] = 0.0f;
      if (n > 3) { x[1] = 6.0f; x[2] = NAN; x[3] = -100.f; }
      std::vector<float> y1(n), y2(n), d1(n), d2(n);
      cpu::act_forward<float>(P(), act, 0.1, n, x.data(), y1.data());
      cuda::act_forward(C(), act, 0.1, n, x.data(), y2.data());
      CHECK_REL(y2.data(), y1.data(), n, 1e-6, "act fwd %d %ld", ai, n);
      cpu::act_backward<float>(P(), act, 0.1, n, x.data(), y1.data(), dy.data(), d1.data());
      cuda::act_backward(C(), act, 0.1, n, x.data(), y1.data(), dy.data(), d2.data());
      CHECK_REL(d2.data(), d1.data(), n, 1e-6, "act bwd %d %ld", ai, n);
      PEND();
    }
}

void test_optim() {
  for (int nslots : {1, 3, 50, 100}) {
    std::vector<int64_t> ns(nslots);
    for (auto& n : ns) n = ri(0, 3) == 0 ? 0 : ri(1, 40000);
    if (nslots == 1) ns[0] = 16384 * 3 + 1;
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<std::vector<float>> p1, p2, g, b1, b2, m1, m2, v1, v2;
      for (auto n : ns) {
        p1.push_back(randv(n)); p2.push_back(p1.back()); g.push_back(randv(n));
        b1.push_back(randv(n)); b2.push_back(b1.back());
        m1.push_back(randv(n)); m2.push_back(m1.back());
        v1.push_back(randv(n, 0, 1)); v2.push_back(v1.back());
      }
      if (variant < 2) {
        cpu::SgdHyper h; h.lr = 0.1; h.momentum = variant ? 0.9 : 0; h.dampening = 0.1; h.weight_decay = 0.01; h.nesterov = variant == 1;
        std::vector<cuda::SgdSlot> slots;
        for (int i = 0; i < nslots; ++i) {
          cpu::sgd_update<float>(P(), ns[i], h, false, p1[i].data(), g[i].data(), h.momentum ? b1[i].data() : nullptr);
          slots.push_back({p2[i].data(), g[i].data(), h.momentum ? b2[i].data() : nullptr, ns[i]});
        }
        cuda::sgd_update_multi(C(), h, false, slots);
        PEND();
        for (int i = 0; i < nslots; ++i) { CHECK_REL(p2[i].data(), p1[i].data(), ns[i], 1e-6, "sgd p"); CHECK_REL(b2[i].data(), b1[i].data(), ns[i], 1e-6, "sgd b"); }
      } else {
        cpu::AdamHyper h; h.weight_decay = 0.01; h.decoupled = variant == 3;
        std::vector<cuda::AdamSlot> slots;
        for (int i = 0; i < nslots; ++i) {
          cpu::adam_update<float>(P(), ns[i], h, 3, p1[i].data(), g[i].data(), m1[i].data(), v1[i].data());
          slots.push_back({p2[i].data(), g[i].data(), m2[i].data(), v2[i].data(), ns[i]});
        }
        cuda::adam_update_multi(C(), h, 3, slots);
        PEND();
        for (int i = 0; i < nslots; ++i) { CHECK_REL(p2[i].data(), p1[i].data(), ns[i], 1e-6, "adam p"); CHECK_REL(m2[i].data(), m1[i].data(), ns[i], 1e-6, "adam m"); CHECK_REL(v2[i].data(), v1[i].data(), ns[i], 1e-6, "adam v"); }
      }
    }
    // ema + sumsq
    std::vector<std::vector<float>> p, e1, e2;
    std::vector<cuda::EmaSlot> slots;
    std::vector<std::pair<const float*, int64_t>> ts;
    double ref = 0;
    for (auto n : ns) { p.push_back(randv(n)); e1.push_back(randv(n)); e2.push_back(e1.back()); }
    for (int i = 0; i < nslots; ++i) {
      cpu::ema_update<float>(P(), ns[i], 0.99, p[i].data(), e1[i].data());
      slots.push_back({p[i].data(), e2[i].data(), ns[i]});
      ts.push_back({p[i].data(), ns[i]});
      for (float v : p[i]) ref += double(v) * v;
    }
    cuda::ema_update_multi(C(), 0.99, slots);
    for (int i = 0; i < nslots; ++i) CHECK_REL(e2[i].data(), e1[i].data(), ns[i], 1e-6, "ema");
    const double s = cuda::sum_of_squares_multi(C(), ts);
    ++checks;
    if (std::fabs(s - ref) > 1e-9 * std::max(1.0, ref)) { ++fails; printf("FAIL sumsq %g vs %g\n", s, ref); }
    PEND();
  }
}

void test_pool() {
  for (int it = 0; it < 120; ++it) {
    cpu::Pool2dShape s;
    s.N = ri(1, 2); s.C = ri(1, 3); s.H = kSizes[ri(0, 4)]; s.W = kSizes[ri(0, 4)];
    s.kh = ri(1, 4); s.kw = ri(1, 4); s.sh = ri(1, 3); s.sw = ri(1, 3);
    s.ph = ri(0, s.kh / 2); s.pw = ri(0, s.kw / 2);
    if (it % 5 == 0) { s.kh = s.kw = s.sh = s.sw = 2; s.ph = s.pw = 0; }
    if (s.H + 2 * s.ph < s.kh || s.W + 2 * s.pw < s.kw) continue;
    const int64_t P_ = s.P(), Q_ = s.Q(), nin = s.N * s.C * s.H * s.W, nout = s.N * s.C * P_ * Q_;
    auto x = randv(nin);
    // ties
    for (int64_t i = 0; i < nin; ++i) if (ri(0, 3) == 0) x[i] = 1.0f;
    if (it % 7 == 0) x[ri(0, nin - 1)] = NAN;
    auto dy = randv(nout);
    std::vector<float> y1(nout), y2(nout), dx1(nin), dx2(nin);
    std::vector<int64_t> a1(nout), a2(nout);
    cpu::max_pool2d_forward<float>(P(), s, x.data(), y1.data(), a1.data());
    cuda::max_pool2d_forward(C(), s, x.data(), y2.data(), a2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), nout, "maxpool y it %d", it);
    CHECK_EQ_BITS(a2.data(), a1.data(), nout, "maxpool argmax it %d", it);
    cpu::max_pool2d_backward<float>(P(), s, dy.data(), a1.data(), dx1.data());
    cuda::max_pool2d_backward(C(), s, dy.data(), a1.data(), dx2.data());
    CHECK_EQ_BITS(dx2.data(), dx1.data(), nin, "maxpool bwd it %d", it);
    cpu::avg_pool2d_forward<float>(P(), s, x.data(), y1.data());
    cuda::avg_pool2d_forward(C(), s, x.data(), y2.data());
    CHECK_EQ_BITS(y2.data(), y1.data(), nout, "avgpool fwd it %d", it);
    cpu::avg_pool2d_backward<float>(P(), s, dy.data(), dx1.data());
    cuda::avg_pool2d_backward(C(), s, dy.data(), dx2.data());
    CHECK_EQ_BITS(dx2.data(), dx1.data(), nin, "avgpool bwd it %d", it);
    PEND();
  }
  for (int64_t NC : {1, 7, 33}) for (int64_t HW : {1, 7, 33, 2048, 2049, 5000}) {
    auto x = randv(NC * HW), dy = randv(NC);
    std::vector<float> y1(NC), y2(NC), d1(NC * HW), d2(NC * HW);
    cpu::global_avg_pool_forward<float>(P(), NC, HW, x.data(), y1.data());
    cuda::global_avg_pool_forward(C(), NC, HW, x.data(), y2.data());
    CHECK_REL(y2.data(), y1.data(), NC, 1e-5, "gap fwd %ld %ld", NC, HW);
    cpu::global_avg_pool_backward<float>(P(), NC, HW, dy.data(), d1.data());
    cuda::global_avg_pool_backward(C(), NC, HW, dy.data(), d2.data());
    CHECK_EQ_BITS(d2.data(), d1.data(), NC * HW, "gap bwd");
    PEND();
  }
}

void test_batchnorm() {
  struct Sh { int64_t N, Cc, HW; };
  for (Sh sh : {Sh{1, 1, 2}, Sh{2, 3, 1}, Sh{7, 5, 33}, Sh{3, 2, 257}, Sh{33, 3, 7}, Sh{2, 2, 9000}, Sh{5, 1, 300}, Sh{1, 70, 1}, Sh{40, 2, 300}}) {
    const int64_t N = sh.N, Cc = sh.Cc, HW = sh.HW, n = N * Cc * HW;
    for (int aff = 0; aff < 2; ++aff) {
      auto x = randv(n, -1, 3), g = randv(Cc), b = randv(Cc), dy = randv(n);
      const float* gp = aff ? g.data() : nullptr;
      const float* bp = aff ? b.data() : nullptr;
      std::vector<float> y1(n), y2(n), m1(Cc), m2(Cc), s1(Cc), s2(Cc);
      cpu::batchnorm_forward_train<float>(P(), N, Cc, HW, x.data(), gp, bp, 1e-5, y1.data(), m1.data(), s1.data());
      cuda::batchnorm_forward_train(C(), N, Cc, HW, x.data(), gp, bp, 1e-5, y2.data(), m2.data(), s2.data());
      CHECK_REL(y2.data(), y1.data(), n, 1e-6, "bn train y");
      CHECK_REL(m2.data(), m1.data(), Cc, 1e-6, "bn mean");
      CHECK_REL(s2.data(), s1.data(), Cc, 1e-6, "bn invstd");
      for (int training = 0; training < 2; ++training) {
        std::vector<float> dx1(n), dx2(n), dg1(Cc), dg2(Cc), db1(Cc), db2(Cc);
        cpu::batchnorm_backward<float>(P(), training, N, Cc, HW, x.data(), dy.data(), gp, m1.data(), s1.data(), dx1.data(), aff ? dg1.data() : nullptr, aff ? db1.data() : nullptr);
        cuda::batchnorm_backward(C(), training, N, Cc, HW, x.data(), dy.data(), gp, m1.data(), s1.data(), dx2.data(), aff ? dg2.data() : nullptr, aff ? db2.data() : nullptr);
        CHECK_REL(dx2.data(), dx1.data(), n, 1e-5, "bn bwd dx tr %d", training);
        CHECK_REL(dg2.data(), dg1.data(), Cc, 1e-5, "bn bwd dg");
        CHECK_REL(db2.data(), db1.data(), Cc, 1e-5, "bn bwd db");
        // only dgamma
        std::fill(dg2.begin(), dg2.end(), 0.f);
        cuda::batchnorm_backward(C(), training, N, Cc, HW, x.data(), dy.data(), gp, m1.data(), s1.data(), nullptr, dg2.data(), nullptr);
        if (aff) CHECK_REL(dg2.data(), dg1.data(), Cc, 1e-5, "bn bwd dg only");
        PEND();
      }
      auto rm = randv(Cc), rv = randv(Cc, 0.5, 2);
      cpu::batchnorm_forward_eval<float>(P(), N, Cc, HW, x.data(), gp, bp, rm.data(), rv.data(), 1e-5, y1.data());
      cuda::batchnorm_forward_eval(C(), N, Cc, HW, x.data(), gp, bp, rm.data(), rv.data(), 1e-5, y2.data());
      CHECK_REL(y2.data(), y1.data(), n, 1e-6, "bn eval y");
      std::vector<float> em(Cc), es(Cc);
      cuda::batchnorm_eval_stats(C(), Cc, 1e-5, rm.data(), rv.data(), em.data(), es.data());
      for (int64_t c = 0; c < Cc; ++c) { m1[c] = rm[c]; s1[c] = float(1.0 / std::sqrt(double(rv[c]) + 1e-5)); }
      CHECK_EQ_BITS(em.data(), m1.data(), Cc, "eval stats m");
      CHECK_EQ_BITS(es.data(), s1.data(), Cc, "eval stats s");
      auto rm2 = rm, rv2 = rv;
      cuda::batchnorm_update_running(C(), Cc, 0.1, N * HW, 1e-5, m2.data(), s2.data(), rm2.data(), rv2.data());
      const double unbias = N * HW > 1 ? double(N * HW) / double(N * HW - 1) : 1.0;
      for (int64_t c = 0; c < Cc; ++c) {
        const double var = 1.0 / (double(s2[c]) * s2[c]) - 1e-5;
        rm[c] = float((1 - 0.1) * rm[c] + 0.1 * m2[c]);
        rv[c] = float((1 - 0.1) * rv[c] + 0.1 * var * unbias);
      }
      CHECK_EQ_BITS(rm2.data(), rm.data(), Cc, "running mean");
      CHECK_REL(rv2.data(), rv.data(), Cc, 1e-6, "running var");
      PEND();
    }
  }
}

void test_softmax() {
  for (int64_t D : {1, 7, 64, 65, 300, 3000}) for (int64_t inner : {1, 3}) for (int64_t outer : {1, 5}) for (int lg = 0; lg < 2; ++lg) {
    const int64_t n = outer * D * inner;
    auto x = randv(n, -5, 5), dy = randv(n);
    std::vector<float> y1(n), y2(n), d1(n), d2(n);
    cpu::softmax_forward<float>(P(), lg, outer, D, inner, x.data(), y1.data());
    cuda::softmax_forward(C(), lg, outer, D, inner, x.data(), y2.data());
    CHECK_REL(y2.data(), y1.data(), n, 1e-5, "softmax fwd D %ld inner %ld log %d", D, inner, lg);
    cpu::softmax_backward<float>(P(), lg, outer, D, inner, y1.data(), dy.data(), d1.data());
    cuda::softmax_backward(C(), lg, outer, D, inner, y1.data(), dy.data(), d2.data());
    CHECK_REL(d2.data(), d1.data(), n, 1e-5, "softmax bwd D %ld inner %ld log %d", D, inner, lg);
    PEND();
  }
  for (int64_t N : {1, 7, 33}) for (int64_t Cc : {1, 7, 300, 3000}) for (int w = 0; w < 2; ++w) for (double eps : {0.0, 0.1}) {
    auto z = randv(N * Cc, -5, 5), wt = randv(Cc, 0.5, 2);
    std::vector<int64_t> t(N);
    for (auto& v : t) v = ri(0, Cc - 1);
    std::vector<float> d1(N * Cc), d2(N * Cc);
    float l1 = 0, l2 = 0;
    const bool ok1 = cpu::cross_entropy<float>(N, Cc, z.data(), t.data(), w ? wt.data() : nullptr, eps, &l1, d1.data(), 0.5f);
    const bool ok2 = cuda::cross_entropy(C(), N, Cc, z.data(), t.data(), w ? wt.data() : nullptr, eps, &l2, d2.data(), 0.5f);
    ++checks;
    if (ok1 != ok2) { ++fails; printf("FAIL ce ok\n"); }
    CHECK_REL(&l2, &l1, 1, 1e-6, "ce loss N %ld C %ld", N, Cc);
    CHECK_REL(d2.data(), d1.data(), N * Cc, 1e-6, "ce grad N %ld C %ld", N, Cc);
    t[N - 1] = Cc;
    const bool ok3 = cuda::cross_entropy(C(), N, Cc, z.data(), t.data(), nullptr, eps, &l2, nullptr, 1.0f);
    ++checks;
    if (ok3) { ++fails; printf("FAIL ce bad target accepted\n"); }
    PEND();
  }
  for (int64_t n : {1, 7, 33, 3000, 70001}) for (int64_t L : {1, 7}) {
    if (n % L) continue;
    auto x = randv(n, -30, 30), y = randv(n, 0, 1), pw = randv(L, 0.5, 2);
    std::vector<float> dx1(n), dx2(n), dy1(n), dy2(n);
    float l1, l2;
    cpu::bce_with_logits<float>(n, L, x.data(), y.data(), pw.data(), &l1, dx1.data(), dy1.data(), 0.7f);
    cuda::bce_with_logits(C(), n, L, x.data(), y.data(), pw.data(), &l2, dx2.data(), dy2.data(), 0.7f);
    CHECK_REL(&l2, &l1, 1, 1e-6, "bce loss");
    CHECK_REL(dx2.data(), dx1.data(), n, 1e-6, "bce dx");
    CHECK_REL(dy2.data(), dy1.data(), n, 1e-6, "bce dy");
    cpu::mse<float>(n, x.data(), y.data(), &l1, dx1.data(), dy1.data(), 0.7f);
    cuda::mse(C(), n, x.data(), y.data(), &l2, dx2.data(), dy2.data(), 0.7f);
    CHECK_REL(&l2, &l1, 1, 1e-6, "mse loss");
    CHECK_REL(dx2.data(), dx1.data(), n, 1e-6, "mse da");
    CHECK_REL(dy2.data(), dy1.data(), n, 1e-6, "mse db");
    PEND();
  }
}

int main(int argc, char** argv) {
  const char* which = argc > 1 ? argv[1] : "all";
  if (getenv("EMU_SMS")) C().prop.multiProcessorCount = atoi(getenv("EMU_SMS"));
  auto run = [&](const char* name, void (*f)()) {
    if (strcmp(which, "all") && strcmp(which, name)) return;
    const long l0 = emu::launches;
    f();
    printf("%s: %ld launches, checks %d, fails %d\n", name, emu::launches - l0, checks, fails);
    fflush(stdout);
  };
  run("elementwise", test_elementwise);
  run("activation", test_activation);
  run("optim", test_optim);
  run("pool", test_pool);
  run("batchnorm", test_batchnorm);
  run("softmax", test_softmax);
  printf("TOTAL checks %d fails %d\n", checks, fails);
  return fails != 0;
}
