// Convolution on the CPU: im2col + GEMM per (image block, group), with a direct loop
// for depthwise convolutions (one input channel per group), where a GEMM of depth
// R*S would waste most of its time on packing.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gemm.h"

namespace cxr::cpu {

namespace {

// col (Cg*R*S, P*Q) for channels [c0, c0+Cg) of one image.
template <typename T>
void im2col(const Conv2dShape& s, const T* x, int64_t c0, int64_t Cg, T* col) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t c = 0; c < Cg; ++c) {
    const T* xc = x + (c0 + c) * s.H * s.W;
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        T* row = col + ((c * s.R + r) * s.S + t) * P * Q;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
          T* out = row + p * Q;
          if (ih < 0 || ih >= s.H) {
            std::fill(out, out + Q, T(0));
            continue;
          }
          const T* xrow = xc + ih * s.W;
          const int64_t off = t * s.dil_w - s.pad_w;
          if (s.stride_w == 1) {
            // valid q range: 0 <= q + off < W
            const int64_t q0 = std::clamp<int64_t>(-off, 0, Q), q1 = std::clamp<int64_t>(s.W - off, 0, Q);
            std::fill(out, out + q0, T(0));
            if (q1 > q0) std::memcpy(out + q0, xrow + q0 + off, sizeof(T) * (q1 - q0));
            std::fill(out + std::max(q0, q1), out + Q, T(0));
          } else {
            for (int64_t q = 0; q < Q; ++q) {
              const int64_t iw = q * s.stride_w + off;
              out[q] = (iw >= 0 && iw < s.W) ? xrow[iw] : T(0);
            }
          }
        }
      }
  }
}

// dx[c0:c0+Cg] += col2im(col).
template <typename T>
void col2im_add(const Conv2dShape& s, const T* col, int64_t c0, int64_t Cg, T* dx) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t c = 0; c < Cg; ++c) {
    T* dxc = dx + (c0 + c) * s.H * s.W;
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        const T* row = col + ((c * s.R + r) * s.S + t) * P * Q;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          T* dxrow = dxc + ih * s.W;
          const T* in = row + p * Q;
          const int64_t off = t * s.dil_w - s.pad_w;
          for (int64_t q = 0; q < Q; ++q) {
            const int64_t iw = q * s.stride_w + off;
            if (iw >= 0 && iw < s.W) dxrow[iw] += in[q];
          }
        }
      }
  }
}

bool is_pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

bool is_depthwise(const Conv2dShape& s) { return s.groups == s.C && s.groups > 1; }

// ---- depthwise: channel c of x feeds outputs k = c*M .. c*M+M-1 (M = K/C).
template <typename T>
void dw_forward_plane(const Conv2dShape& s, const T* xc, const T* wk, T bias, T* yk) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t p = 0; p < P; ++p) {
    T* yrow = yk + p * Q;
    std::fill(yrow, yrow + Q, bias);
    for (int64_t r = 0; r < s.R; ++r) {
      const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
      if (ih < 0 || ih >= s.H) continue;
      const T* xrow = xc + ih * s.W;
      for (int64_t t = 0; t < s.S; ++t) {
        const T wv = wk[r * s.S + t];
        const int64_t off = t * s.dil_w - s.pad_w;
        // q range with 0 <= q*stride + off < W
        int64_t q0 = 0;
        if (off < 0) q0 = (-off + s.stride_w - 1) / s.stride_w;
        int64_t q1 = Q;
        if (s.W - off <= 0) q1 = 0;
        else q1 = std::min<int64_t>(Q, (s.W - off - 1) / s.stride_w + 1);
        if (s.stride_w == 1)
          for (int64_t q = q0; q < q1; ++q) yrow[q] += wv * xrow[q + off];
        else
          for (int64_t q = q0; q < q1; ++q) yrow[q] += wv * xrow[q * s.stride_w + off];
      }
    }
  }
}

}  // namespace

template <typename T>
void conv2d_forward(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* w, const T* b, T* y) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Cg = s.C / G, Kg = s.K / G;
  const int64_t CRS = Cg * s.R * s.S, PQ = P * Q;
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C;
    pool.parallel_for(s.N * s.K, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.K, k = i % s.K, c = k / M;
        dw_forward_plane(s, x + (n * s.C + c) * s.H * s.W, w + k * s.R * s.S, b ? b[k] : T(0), y + i * PQ);
      }
    });
    return;
  }
  const bool pw = is_pointwise(s);
  // With fewer images than threads, parallelise inside each GEMM instead.
  const bool per_image = s.N >= pool.num_threads();
  auto one_image = [&](int64_t n, std::vector<T>& col, bool threaded) {
    for (int64_t g = 0; g < G; ++g) {
      const T* src;
      if (pw) {
        src = x + (n * s.C + g * Cg) * PQ;
      } else {
        im2col(s, x + n * s.C * s.H * s.W, g * Cg, Cg, col.data());
        src = col.data();
      }
      T* yg = y + (n * s.K + g * Kg) * PQ;
      if (threaded)
        gemm_parallel(pool, Trans::no, Trans::no, Kg, PQ, CRS, T(1), w + g * Kg * CRS, CRS, src, PQ, T(0), yg, PQ);
      else
        gemm(Trans::no, Trans::no, Kg, PQ, CRS, T(1), w + g * Kg * CRS, CRS, src, PQ, T(0), yg, PQ);
      if (b)
        for (int64_t k = 0; k < Kg; ++k) {
          const T bv = b[g * Kg + k];
          T* row = yg + k * PQ;
          for (int64_t i = 0; i < PQ; ++i) row[i] += bv;
        }
    }
  };
  if (per_image) {
    pool.parallel_for(s.N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> col(pw ? 0 : CRS * PQ);
      for (int64_t n = n0; n < n1; ++n) one_image(n, col, false);
    });
  } else {
    std::vector<T> col(pw ? 0 : CRS * PQ);
    for (int64_t n = 0; n < s.N; ++n) one_image(n, col, true);
  }
}

template <typename T>
void conv2d_backward_data(ThreadPool& pool, const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Cg = s.C / G, Kg = s.K / G;
  const int64_t CRS = Cg * s.R * s.S, PQ = P * Q, HW = s.H * s.W;
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C;
    pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.C, c = i % s.C;
        T* dxc = dx + i * HW;
        std::fill(dxc, dxc + HW, T(0));
        for (int64_t m = 0; m < M; ++m) {
          const int64_t k = c * M + m;
          const T* dyk = dy + (n * s.K + k) * PQ;
          const T* wk = w + k * s.R * s.S;
          for (int64_t p = 0; p < P; ++p)
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
              if (ih < 0 || ih >= s.H) continue;
              for (int64_t t = 0; t < s.S; ++t) {
                const T wv = wk[r * s.S + t];
                const int64_t off = t * s.dil_w - s.pad_w;
                for (int64_t q = 0; q < Q; ++q) {
                  const int64_t iw = q * s.stride_w + off;
                  if (iw >= 0 && iw < s.W) dxc[ih * s.W + iw] += wv * dyk[p * Q + q];
                }
              }
            }
        }
      }
    });
    return;
  }
  const bool pw = is_pointwise(s);
  const bool per_image = s.N >= pool.num_threads();
  auto one_image = [&](int64_t n, std::vector<T>& col, bool threaded) {
    T* dxn = dx + n * s.C * HW;
    if (!pw) std::fill(dxn, dxn + s.C * HW, T(0));
    for (int64_t g = 0; g < G; ++g) {
      const T* dyg = dy + (n * s.K + g * Kg) * PQ;
      T* dst = pw ? dxn + g * Cg * HW : col.data();
      // col (CRS, PQ) = W_g^T (CRS, Kg) * dy_g (Kg, PQ)
      if (threaded)
        gemm_parallel(pool, Trans::yes, Trans::no, CRS, PQ, Kg, T(1), w + g * Kg * CRS, CRS, dyg, PQ, T(0), dst, PQ);
      else
        gemm(Trans::yes, Trans::no, CRS, PQ, Kg, T(1), w + g * Kg * CRS, CRS, dyg, PQ, T(0), dst, PQ);
      if (!pw) col2im_add(s, col.data(), g * Cg, Cg, dxn);
    }
  };
  if (per_image) {
    pool.parallel_for(s.N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> col(pw ? 0 : CRS * PQ);
      for (int64_t n = n0; n < n1; ++n) one_image(n, col, false);
    });
  } else {
    std::vector<T> col(pw ? 0 : CRS * PQ);
    for (int64_t n = 0; n < s.N; ++n) one_image(n, col, true);
  }
}

template <typename T>
void conv2d_backward_weight(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* dy, T* dw, T* db) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Cg = s.C / G, Kg = s.K / G;
  const int64_t CRS = Cg * s.R * s.S, PQ = P * Q, HW = s.H * s.W;
  const int64_t wsize = s.K * CRS;
  if (db) {
    // Per channel, images summed in order: deterministic whatever the thread count.
    pool.parallel_for(s.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        T acc = 0;
        for (int64_t n = 0; n < s.N; ++n) {
          const T* row = dy + (n * s.K + k) * PQ;
          for (int64_t i = 0; i < PQ; ++i) acc += row[i];
        }
        db[k] = acc;
      }
    });
  }
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C, RS = s.R * s.S;
    pool.parallel_for(s.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = k / M;
        T* dwk = dw + k * RS;
        std::fill(dwk, dwk + RS, T(0));
        for (int64_t n = 0; n < s.N; ++n) {
          const T* xc = x + (n * s.C + c) * HW;
          const T* dyk = dy + (n * s.K + k) * PQ;
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t t = 0; t < s.S; ++t) {
              T acc = 0;
              const int64_t off = t * s.dil_w - s.pad_w;
              for (int64_t p = 0; p < P; ++p) {
                const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
                if (ih < 0 || ih >= s.H) continue;
                const T* xrow = xc + ih * s.W;
                const T* dyrow = dyk + p * Q;
                for (int64_t q = 0; q < Q; ++q) {
                  const int64_t iw = q * s.stride_w + off;
                  if (iw >= 0 && iw < s.W) acc += dyrow[q] * xrow[iw];
                }
              }
              dwk[r * s.S + t] += acc;
            }
        }
      }
    });
    return;
  }
  const bool pw = is_pointwise(s);
  // Each chunk of images accumulates into its own dw; chunks are summed in order.
  const int64_t chunks = pool.num_chunks(s.N, 1);
  std::vector<std::vector<T>> partial(chunks);
  pool.parallel_chunks(s.N, 1, [&](int64_t ci, int64_t n0, int64_t n1) {
    std::vector<T>& acc = partial[ci];
    acc.assign(wsize, T(0));
    std::vector<T> col(pw ? 0 : CRS * PQ);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t g = 0; g < G; ++g) {
        const T* src;
        if (pw) {
          src = x + (n * s.C + g * Cg) * HW;
        } else {
          im2col(s, x + n * s.C * HW, g * Cg, Cg, col.data());
          src = col.data();
        }
        // dw_g (Kg, CRS) += dy_g (Kg, PQ) * col^T (PQ, CRS)
        gemm(Trans::no, Trans::yes, Kg, CRS, PQ, T(1), dy + (n * s.K + g * Kg) * PQ, PQ, src, PQ, T(1),
             acc.data() + g * Kg * CRS, CRS);
      }
  });
  std::copy(partial[0].begin(), partial[0].end(), dw);
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t i = 0; i < wsize; ++i) dw[i] += partial[c][i];
}

#define CXR_INSTANTIATE(T)                                                                          \
  template void conv2d_forward<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, const T*, T*); \
  template void conv2d_backward_data<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, T*);    \
  template void conv2d_backward_weight<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
