#include "kernels/gemm.h"

#include <type_traits>

#include <Eigen/Core>

namespace cxr::cpu {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    // Tiny products are dominated by packing; Eigen's unpacked paths do better there.
    const bool tiny = M < 8 || N < 8 || M * N * K < (1 << 18);
    if (!tiny && sgemm_avx2(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  }
  gemm_eigen(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm_eigen(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  MMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (beta == T(0)) c.setZero(); else c *= beta;
    return;
  }
  CMap<T> a(A, ta == Trans::yes ? K : M, ta == Trans::yes ? M : K, Eigen::OuterStride<>(lda));
  CMap<T> b(B, tb == Trans::yes ? N : K, tb == Trans::yes ? K : N, Eigen::OuterStride<>(ldb));
  if (beta == T(0)) c.setZero(); else if (beta != T(1)) c *= beta;
  // noalias(): C never aliases A or B here, which lets Eigen write C directly.
  if (ta == Trans::no && tb == Trans::no) c.noalias() += alpha * a * b;
  else if (ta == Trans::yes && tb == Trans::no) c.noalias() += alpha * a.transpose() * b;
  else if (ta == Trans::no && tb == Trans::yes) c.noalias() += alpha * a * b.transpose();
  else c.noalias() += alpha * a.transpose() * b.transpose();
}

template <typename T>
void gemm_parallel(ThreadPool& pool, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  // Below ~1 MFLOP per thread the split costs more than it saves.
  const int64_t flops = 2 * M * N * K;
  if (pool.num_threads() == 1 || flops < 2'000'000) {
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M >= N) {
    pool.parallel_for(M, 16, [&](int64_t m0, int64_t m1) {
      const T* a = ta == Trans::yes ? A + m0 : A + m0 * lda;
      gemm(ta, tb, m1 - m0, N, K, alpha, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
    });
  } else {
    pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
      const T* b = tb == Trans::yes ? B + n0 * ldb : B + n0;
      gemm(ta, tb, M, n1 - n0, K, alpha, A, lda, b, ldb, beta, C + n0, ldc);
    });
  }
}

#define CXR_INSTANTIATE(T)                                                                             \
  template void gemm<T>(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,       \
                        int64_t, T, T*, int64_t);                                                      \
  template void gemm_eigen<T>(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                              int64_t, T, T*, int64_t);                                                \
  template void gemm_parallel<T>(ThreadPool&, Trans, Trans, int64_t, int64_t, int64_t, T, const T*,    \
                                 int64_t, const T*, int64_t, T, T*, int64_t);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
