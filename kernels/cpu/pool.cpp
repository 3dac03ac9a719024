#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/pool.h"

namespace cxr::cpu {

namespace {
// 2x2 window, stride 2, no padding: the pooling of every small CNN. Same results as
// the general loop (first maximum wins, NaN propagates).
template <typename T>
void max_pool_2x2(const Pool2dShape& s, int64_t plane, const T* x, T* y, int64_t* argmax) {
  const int64_t P = s.P(), Q = s.Q();
  const T* xp = x + plane * s.H * s.W;
  T* yp = y + plane * P * Q;
  int64_t* ap = argmax + plane * P * Q;
  for (int64_t p = 0; p < P; ++p) {
    const T* r0 = xp + 2 * p * s.W;
    const T* r1 = r0 + s.W;
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t w = 2 * q;
      T best = r0[w];
      int64_t bi = 2 * p * s.W + w;
      const T c[3] = {r0[w + 1], r1[w], r1[w + 1]};
      const int64_t ci[3] = {bi + 1, bi + s.W, bi + s.W + 1};
      // Which element wins is data-dependent and unpredictable, so the common
      // NaN-free case uses selects without branches; NaN takes the careful path.
      const bool nan = (best != best) | (c[0] != c[0]) | (c[1] != c[1]) | (c[2] != c[2]);
      if (!nan) [[likely]] {
        for (int j = 0; j < 3; ++j) {
          const bool take = c[j] > best;
          best = take ? c[j] : best;
          bi = take ? ci[j] : bi;
        }
      } else {
        for (int j = 0; j < 3 && best == best; ++j)
          if (c[j] > best || c[j] != c[j]) {
            best = c[j];
            bi = ci[j];
          }
      }
      yp[p * Q + q] = best;
      ap[p * Q + q] = bi;
    }
  }
}
}  // namespace

// max(a, b) with NaN winning, b replacing a only when larger: the first maximum wins.
template <typename T>
inline T max_nan(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// Without argmax (inference): the window maximum is separable, a horizontal pass over
// the input rows the plane's windows touch and a vertical pass over those row maxima.
// The result equals the general loop's (the first maximum in row-major order, NaN
// propagating), since a maximum is exact.
template <typename T>
void max_pool_plane_values(const Pool2dShape& s, const T* xp, T* yp, std::vector<T>& rows) {
  const int64_t P = s.P(), Q = s.Q();
  rows.resize(static_cast<size_t>(s.H * Q));
  // Output columns whose window lies wholly inside the row.
  const int64_t qa = std::min(Q, (s.pw + s.sw - 1) / s.sw);
  int64_t qb = s.W - s.kw + s.pw < 0 ? 0 : (s.W - s.kw + s.pw) / s.sw + 1;
  qb = std::clamp<int64_t>(qb, qa, Q);
  for (int64_t h = 0; h < s.H; ++h) {
    const T* xr = xp + h * s.W;
    T* out = rows.data() + h * Q;
    auto clamped = [&](int64_t q) {
      const int64_t w0 = q * s.sw - s.pw;
      const int64_t a = std::max<int64_t>(w0, 0), b = std::min(w0 + s.kw, s.W);
      if (a >= b) {  // only padding: -inf, as the general loop
        out[q] = -std::numeric_limits<T>::infinity();
        return;
      }
      T m = xr[a];
      for (int64_t w = a + 1; w < b; ++w) m = max_nan(m, xr[w]);
      out[q] = m;
    };
    for (int64_t q = 0; q < qa; ++q) clamped(q);
    if (s.kw == 3) {
      for (int64_t q = qa; q < qb; ++q) {
        const T* v = xr + q * s.sw - s.pw;
        out[q] = max_nan(max_nan(v[0], v[1]), v[2]);
      }
    } else {
      for (int64_t q = qa; q < qb; ++q) {
        const T* v = xr + q * s.sw - s.pw;
        T m = v[0];
        for (int64_t w = 1; w < s.kw; ++w) m = max_nan(m, v[w]);
        out[q] = m;
      }
    }
    for (int64_t q = qb; q < Q; ++q) clamped(q);
  }
  for (int64_t p = 0; p < P; ++p) {
    const int64_t h0 = p * s.sh - s.ph;
    const int64_t a = std::max<int64_t>(h0, 0), b = std::min(h0 + s.kh, s.H);
    T* yr = yp + p * Q;
    if (a >= b) {
      std::fill(yr, yr + Q, -std::numeric_limits<T>::infinity());
      continue;
    }
    const T* r0 = rows.data() + a * Q;
    for (int64_t q = 0; q < Q; ++q) yr[q] = r0[q];
    for (int64_t h = a + 1; h < b; ++h) {
      const T* rh = rows.data() + h * Q;
      for (int64_t q = 0; q < Q; ++q) yr[q] = max_nan(yr[q], rh[q]);
    }
  }
}

template <typename T>
void max_pool2d_forward(ThreadPool& pool, const Pool2dShape& s, const T* x, T* y, int64_t* argmax) {
  const int64_t P = s.P(), Q = s.Q();
  if (!argmax) {
    pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
      std::vector<T> rows;
      for (int64_t i = i0; i < i1; ++i) max_pool_plane_values(s, x + i * s.H * s.W, y + i * P * Q, rows);
    });
    return;
  }
  if (s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0) {
    pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) max_pool_2x2(s, i, x, y, argmax);
    });
    return;
  }
  pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* xp = x + i * s.H * s.W;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
          T best = -std::numeric_limits<T>::infinity();
          int64_t best_i = -1;
          for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h0 + s.kh, s.H); ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w0 + s.kw, s.W); ++w) {
              const T v = xp[h * s.W + w];
              // NaN propagates, as in PyTorch.
              if (best_i < 0 || v > best || v != v) {
                best = v;
                best_i = h * s.W + w;
                if (v != v) goto done;
              }
            }
        done:
          y[(i * P + p) * Q + q] = best;
          argmax[(i * P + p) * Q + q] = best_i;
        }
    }
  });
}

template <typename T>
void max_pool2d_backward(ThreadPool& pool, const Pool2dShape& s, const T* dy, const int64_t* argmax, T* dx) {
  const int64_t PQ = s.P() * s.Q(), HW = s.H * s.W;
  pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* dxp = dx + i * HW;
      std::fill(dxp, dxp + HW, T(0));
      for (int64_t j = 0; j < PQ; ++j) {
        const int64_t a = argmax[i * PQ + j];
        if (a >= 0) dxp[a] += dy[i * PQ + j];
      }
    }
  });
}

template <typename T>
void avg_pool2d_forward(ThreadPool& pool, const Pool2dShape& s, const T* x, T* y) {
  const int64_t P = s.P(), Q = s.Q();
  const T inv = T(1) / static_cast<T>(s.kh * s.kw);
  pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* xp = x + i * s.H * s.W;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
          T acc = 0;
          for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h0 + s.kh, s.H); ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w0 + s.kw, s.W); ++w) acc += xp[h * s.W + w];
          y[(i * P + p) * Q + q] = acc * inv;
        }
    }
  });
}

template <typename T>
void avg_pool2d_backward(ThreadPool& pool, const Pool2dShape& s, const T* dy, T* dx) {
  const int64_t P = s.P(), Q = s.Q(), HW = s.H * s.W;
  const T inv = T(1) / static_cast<T>(s.kh * s.kw);
  pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* dxp = dx + i * HW;
      std::fill(dxp, dxp + HW, T(0));
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
          const T g = dy[(i * P + p) * Q + q] * inv;
          for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h0 + s.kh, s.H); ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w0 + s.kw, s.W); ++w) dxp[h * s.W + w] += g;
        }
    }
  });
}

template <typename T>
void global_avg_pool_forward(ThreadPool& pool, int64_t NC, int64_t HW, const T* x, T* y) {
  pool.parallel_for(NC, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T acc = 0;
      for (int64_t j = 0; j < HW; ++j) acc += x[i * HW + j];
      y[i] = acc / static_cast<T>(HW);
    }
  });
}

template <typename T>
void global_avg_pool_backward(ThreadPool& pool, int64_t NC, int64_t HW, const T* dy, T* dx) {
  pool.parallel_for(NC, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T g = dy[i] / static_cast<T>(HW);
      for (int64_t j = 0; j < HW; ++j) dx[i * HW + j] = g;
    }
  });
}

#define CXR_INSTANTIATE(T)                                                                                 \
  template void max_pool2d_forward<T>(ThreadPool&, const Pool2dShape&, const T*, T*, int64_t*);            \
  template void max_pool2d_backward<T>(ThreadPool&, const Pool2dShape&, const T*, const int64_t*, T*);     \
  template void avg_pool2d_forward<T>(ThreadPool&, const Pool2dShape&, const T*, T*);                      \
  template void avg_pool2d_backward<T>(ThreadPool&, const Pool2dShape&, const T*, T*);                     \
  template void global_avg_pool_forward<T>(ThreadPool&, int64_t, int64_t, const T*, T*);                   \
  template void global_avg_pool_backward<T>(ThreadPool&, int64_t, int64_t, const T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
