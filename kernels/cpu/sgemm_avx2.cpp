// Single-precision GEMM for x86-64 CPUs with AVX2 and FMA, in the BLIS structure
// (Van Zee & van de Geijn 2015): B is packed into KC x NC panels that live in L3, A
// into MC x KC blocks that live in L2, and a 6x16 register-blocked micro-kernel keeps
// 12 accumulators in ymm registers (12 of 16), loading two B vectors and broadcasting
// one A element per FMA pair. Packing zero-pads ragged edges, so the micro-kernel has
// no bounds checks; edge tiles are written through a small buffer.
//
// Compiled with per-function target attributes, so the file builds into portable
// binaries too; sgemm_avx2 reports whether it ran (false on CPUs without AVX2/FMA).
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/cpu/scratch.h"
#include "kernels/gemm.h"

namespace cxr::cpu {

namespace {

constexpr int64_t MR = 6, NR = 16;
constexpr int64_t KC = 256, MC = 96, NC = 2048;

// op(A) rows [i0, i0+mc), cols [k0, k0+kc) -> panels of MR rows: dst[(p*kc + k)*MR + r].
void pack_a(Trans ta, const float* A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc, float* dst) {
  for (int64_t p = 0; p < mc; p += MR) {
    const int64_t rows = std::min(MR, mc - p);
    float* out = dst + p * kc;
    if (ta == Trans::no) {
      for (int64_t r = 0; r < MR; ++r) {
        if (r < rows) {
          const float* src = A + (i0 + p + r) * lda + k0;
          for (int64_t k = 0; k < kc; ++k) out[k * MR + r] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) out[k * MR + r] = 0.0f;
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + (k0 + k) * lda + i0 + p;
        for (int64_t r = 0; r < MR; ++r) out[k * MR + r] = r < rows ? src[r] : 0.0f;
      }
    }
  }
}

// op(B) rows [k0, k0+kc), cols [j0, j0+nc) -> panels of NR cols: dst[(p*kc + k)*NR + c].
// Untransposed B is read row by row (contiguous) and scattered to the panels: reading
// it panel by panel instead walks kc rows ldb apart, one page each for conv shapes.
void pack_b(Trans tb, const float* B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc, float* dst) {
  const int64_t full = nc / NR * NR;
  if (tb == Trans::no) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = B + (k0 + k) * ldb + j0;
      for (int64_t p = 0; p < full; p += NR) std::memcpy(dst + p * kc + k * NR, src + p, sizeof(float) * NR);
      if (full < nc) {
        float* out = dst + full * kc + k * NR;
        for (int64_t c = 0; c < NR; ++c) out[c] = full + c < nc ? src[full + c] : 0.0f;
      }
    }
    return;
  }
  for (int64_t p = 0; p < nc; p += NR) {
    const int64_t cols = std::min(NR, nc - p);
    float* out = dst + p * kc;
    for (int64_t c = 0; c < NR; ++c) {
      if (c < cols) {
        const float* src = B + (j0 + p + c) * ldb + k0;
        for (int64_t k = 0; k < kc; ++k) out[k * NR + c] = src[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) out[k * NR + c] = 0.0f;
      }
    }
  }
}

// C[0:MR, 0:NR] (ldc) = alpha * Apanel (kc x MR) * Bpanel (kc x NR) + beta * C, for the
// rows x cols valid part; beta == 0 stores without reading C.
__attribute__((target("avx2,fma"))) void micro_kernel(int64_t kc, const float* a, const float* b, float* C,
                                                      int64_t ldc, float alpha, float beta, int64_t rows,
                                                      int64_t cols) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
         c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
         c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
    a += MR;
    b += NR;
  }
  const __m256 al = _mm256_set1_ps(alpha), be = _mm256_set1_ps(beta);
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (rows == MR && cols == NR) {
    for (int64_t r = 0; r < MR; ++r) {
      float* cr = C + r * ldc;
      if (beta == 0.0f) {
        _mm256_storeu_ps(cr, _mm256_mul_ps(al, acc[r][0]));
        _mm256_storeu_ps(cr + 8, _mm256_mul_ps(al, acc[r][1]));
      } else if (beta == 1.0f) {
        _mm256_storeu_ps(cr, _mm256_fmadd_ps(al, acc[r][0], _mm256_loadu_ps(cr)));
        _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(al, acc[r][1], _mm256_loadu_ps(cr + 8)));
      } else {
        _mm256_storeu_ps(cr, _mm256_fmadd_ps(al, acc[r][0], _mm256_mul_ps(be, _mm256_loadu_ps(cr))));
        _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(al, acc[r][1], _mm256_mul_ps(be, _mm256_loadu_ps(cr + 8))));
      }
    }
    return;
  }
  alignas(32) float tile[MR][NR];
  for (int64_t r = 0; r < MR; ++r) {
    _mm256_store_ps(tile[r], acc[r][0]);
    _mm256_store_ps(tile[r] + 8, acc[r][1]);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      C[r * ldc + c] = alpha * tile[r][c] + (beta == 0.0f ? 0.0f : beta * C[r * ldc + c]);
}

// The same for a last panel with at most 8 valid columns (N = 49 or 196 of late conv
// stages leaves 1 or 4): half the FMAs of the 16-wide kernel, reading the panel's first
// 8 columns.
__attribute__((target("avx2,fma"))) void micro_kernel_n8(int64_t kc, const float* a, const float* b, float* C,
                                                         int64_t ldc, float alpha, float beta, int64_t rows,
                                                         int64_t cols) {
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps(),
         c4 = _mm256_setzero_ps(), c5 = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b);
    c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 0), b0, c0);
    c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 1), b0, c1);
    c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2), b0, c2);
    c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3), b0, c3);
    c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 4), b0, c4);
    c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 5), b0, c5);
    a += MR;
    b += NR;
  }
  alignas(32) float tile[MR][8];
  _mm256_store_ps(tile[0], c0);
  _mm256_store_ps(tile[1], c1);
  _mm256_store_ps(tile[2], c2);
  _mm256_store_ps(tile[3], c3);
  _mm256_store_ps(tile[4], c4);
  _mm256_store_ps(tile[5], c5);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      C[r * ldc + c] = alpha * tile[r][c] + (beta == 0.0f ? 0.0f : beta * C[r * ldc + c]);
}

// One MR x NR tile, through the narrow kernel when few columns are valid.
inline void tile_kernel(int64_t kc, const float* a, const float* b, float* C, int64_t ldc, float alpha, float beta,
                        int64_t rows, int64_t cols) {
  if (cols <= 8) micro_kernel_n8(kc, a, b, C, ldc, alpha, beta, rows, cols);
  else micro_kernel(kc, a, b, C, ldc, alpha, beta, rows, cols);
}

bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

}  // namespace

namespace {

// Prepacked A layout: K block b (k0 = b*KC) starts at b * roundup(M, MR) * KC; inside
// it, the M block starting at row ic starts at ic * kc, holding pack_a's panels.
int64_t padded_m(int64_t M) { return (M + MR - 1) / MR * MR; }

void gemm_blocked(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    // beta == 0 must not read C: it may hold NaN.
    for (int64_t i = 0; i < M; ++i) {
      float* row = C + i * ldc;
      if (beta == 0.0f) std::fill(row, row + N, 0.0f);
      else if (beta != 1.0f) for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
    return;
  }
  float* bpack = thread_scratch(kScratchGemmB, static_cast<size_t>(KC * ((std::min(N, NC) + NR - 1) / NR * NR)));
  float* abuf = thread_scratch(kScratchGemmA, static_cast<size_t>(KC * padded_m(std::min(M, MC))));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float beta_k = pc == 0 ? beta : 1.0f;  // the first K block applies beta, later ones accumulate
      pack_b(tb, B, ldb, pc, jc, kc, nc, bpack);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        pack_a(ta, A, lda, ic, pc, mc, kc, abuf);
        const float* apack = abuf;
        for (int64_t jr = 0; jr < nc; jr += NR)
          for (int64_t ir = 0; ir < mc; ir += MR)
            tile_kernel(kc, apack + ir * kc, bpack + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc, alpha, beta_k,
                        std::min(MR, mc - ir), std::min(NR, nc - jr));
      }
    }
  }
}

}  // namespace

float* thread_scratch(ScratchSlot slot, size_t floats) {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<float, Free> bufs[kScratchSlots];
  thread_local size_t sizes[kScratchSlots] = {};
  if (sizes[slot] < floats) {
    bufs[slot].reset(static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64)));
    sizes[slot] = bufs[slot] ? floats : 0;
    if (!bufs[slot]) throw std::bad_alloc();
  }
  return bufs[slot].get();
}

bool sgemm_avx2(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!cpu_has_avx2_fma()) return false;
  gemm_blocked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return true;
}

bool sgemm_avx2_available() { return cpu_has_avx2_fma(); }

size_t sgemm_packed_a_floats(int64_t M, int64_t K) {
  return static_cast<size_t>(padded_m(M) * KC * ((K + KC - 1) / KC));
}

void sgemm_pack_a(Trans ta, int64_t M, int64_t K, const float* A, int64_t lda, float* dst) {
  for (int64_t pc = 0; pc < K; pc += KC) {
    const int64_t kc = std::min(KC, K - pc);
    for (int64_t ic = 0; ic < M; ic += MC)
      pack_a(ta, A, lda, ic, pc, std::min(MC, M - ic), kc, dst + (pc / KC) * padded_m(M) * KC + ic * kc);
  }
}

int64_t sgemm_panel_rows() { return MR; }

size_t sgemm_packed_b_floats(int64_t K, int64_t N) { return static_cast<size_t>(K * ((N + NR - 1) / NR * NR)); }

// Packed B: K block b (rows [b*KC, b*KC+kc)) starts at b*KC*Npad; inside it the panel of
// columns [j0, j0+NR) starts at j0*kc and holds element (k, c) at k*NR + c: pack_b's
// layout for the whole matrix at once (no NC split; callers keep N to a cache-sized tile).
void sgemm_pack_b_row(int64_t K, int64_t N, int64_t k, const float* row, float* dst) {
  const int64_t npad = (N + NR - 1) / NR * NR, blk = k / KC, kk = k % KC, kc = std::min(KC, K - blk * KC);
  float* base = dst + blk * KC * npad + kk * NR;
  const int64_t full = N / NR * NR;
  for (int64_t j0 = 0; j0 < full; j0 += NR) std::memcpy(base + j0 * kc, row + j0, sizeof(float) * NR);
  if (full < N) {
    float* out = base + full * kc;
    for (int64_t c = 0; c < NR; ++c) out[c] = full + c < N ? row[full + c] : 0.0f;
  }
}

void sgemm_avx2_packed_ab(int64_t M, int64_t N, int64_t K, const float* packed_a, const float* packed_b, int64_t m0,
                          int64_t m1, float* C, int64_t ldc) {
  const int64_t npad = (N + NR - 1) / NR * NR, mpad = padded_m(M);
  m1 = std::min(m1, M);
  for (int64_t pc = 0; pc < K; pc += KC) {
    const int64_t kc = std::min(KC, K - pc);
    const float beta = pc == 0 ? 0.0f : 1.0f;
    const float* ablk = packed_a + (pc / KC) * mpad * KC;
    const float* bblk = packed_b + pc * npad;
    for (int64_t ic = m0; ic < m1; ic += MC) {
      const int64_t mc = std::min(MC, m1 - ic);
      for (int64_t jr = 0; jr < N; jr += NR)
        for (int64_t ir = 0; ir < mc; ir += MR)
          tile_kernel(kc, ablk + (ic + ir) * kc, bblk + jr * kc, C + (ic + ir) * ldc + jr, ldc, 1.0f, beta,
                      std::min(MR, m1 - ic - ir), std::min(NR, N - jr));
    }
  }
}

}  // namespace cxr::cpu
