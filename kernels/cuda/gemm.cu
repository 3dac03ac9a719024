// Row-major fp32 GEMM on the GPU through cuBLAS (same contract as cpu::gemm):
//   C[M, N] = alpha * op(A) * op(B) + beta * C.
// cuBLAS is column-major, and a row-major matrix with leading dimension ld is the
// column-major view of its transpose, so the call computes C^T = op(B)^T * op(A)^T
// (B first, A second, m = N, n = M) with the 64-bit-size API. The math mode is set on
// every call: TF32 tensor cores when the context allows them, full fp32 otherwise.
// K == 0 is handled by a small grid-stride kernel (C = beta * C; beta == 0 writes
// zeros without reading C).
#include "kernels/cuda/context.cuh"
#include "kernels/cuda/ops.h"

namespace cxr::cuda {

namespace {

// C[r, c] = beta * C[r, c] (0 when beta == 0, whatever C held) for an M x N block.
__global__ void scale_rows_kernel(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  const int64_t total = M * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / N, c = i - r * N;
    float* p = C + r * ldc + c;
    *p = beta == 0.0f ? 0.0f : beta * *p;
  }
}

}  // namespace

void gemm(Context& ctx, cpu::Trans ta, cpu::Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (beta == 1.0f) return;
    scale_rows_kernel<<<grid_for(ctx, M * N), 256, 0, ctx.stream>>>(M, N, beta, C, ldc);
    CXR_LAUNCH_CHECK(ctx, "gemm (K == 0) scale_rows_kernel");
    return;
  }
  CXR_CUBLAS_CHECK(cublasSetPointerMode(ctx.cublas, CUBLAS_POINTER_MODE_HOST));  // alpha, beta on the host
  CXR_CUBLAS_CHECK(cublasSetMathMode(ctx.cublas, ctx.use_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  const cublasOperation_t opb = tb == cpu::Trans::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opa = ta == cpu::Trans::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
  CXR_CUBLAS_CHECK(cublasSgemm_64(ctx.cublas, opb, opa, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

}  // namespace cxr::cuda
