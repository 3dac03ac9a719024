// Dense matrix multiply. Row-major storage throughout.
//
//   C[M, N] = alpha * op(A) * op(B) + beta * C
//   op(A) is A[M, K] (lda >= K) or, with trans_a, A stored as [K, M] (lda >= M);
//   op(B) is B[K, N] (ldb >= N) or, with trans_b, B stored as [N, K] (ldb >= K).
// beta == 0 overwrites C without reading it (C may hold NaN).
#pragma once

#include <cstdint>

#include "runtime/thread_pool.h"

namespace cxr::cpu {

enum class Trans : bool { no = false, yes = true };

// Single-threaded (Eigen's blocked GEMM); safe to call from inside a parallel region.
template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The AVX2/FMA single-precision path behind gemm<float>; returns false (doing nothing)
// on CPUs without AVX2 and FMA. Exposed for tests and benchmarks.
bool sgemm_avx2(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// A packed once and reused by many products with the same A (conv weights across
// tiles and calls): sgemm_pack_a fills sgemm_packed_a_floats(M, K) floats; only valid
// when sgemm_avx2_available().
bool sgemm_avx2_available();
size_t sgemm_packed_a_floats(int64_t M, int64_t K);
void sgemm_pack_a(Trans ta, int64_t M, int64_t K, const float* A, int64_t lda, float* dst);
// Both operands packed (AVX2/FMA only): C[m0:m1, 0:N] = A (M x K) * B (K x N), C
// overwritten. A from sgemm_pack_a; B written row by row with sgemm_pack_b_row into
// sgemm_packed_b_floats(K, N) floats (rows may be written in any order, by several
// threads). m0 must be a multiple of sgemm_panel_rows(), so threads can split M.
int64_t sgemm_panel_rows();
size_t sgemm_packed_b_floats(int64_t K, int64_t N);
void sgemm_pack_b_row(int64_t K, int64_t N, int64_t k, const float* row, float* dst);
void sgemm_avx2_packed_ab(int64_t M, int64_t N, int64_t K, const float* packed_a, const float* packed_b, int64_t m0,
                          int64_t m1, float* C, int64_t ldc);
// Eigen's GEMM, the portable path (and the double-precision one).
template <typename T>
void gemm_eigen(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Same contract, split over the pool's threads along M or N (whichever is larger).
template <typename T>
void gemm_parallel(ThreadPool& pool, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace cxr::cpu
