// C = A B (+ bias) for A of a few rows: the per-step GEMMs of a batch shard of a few
// elements. MKL runs these far below a core's peak (4 x 128 x 512: 21 us through
// at::addmm_out on the EPYC dev machine, 8 us here); a register-blocked loop over blocks of
// 4 rows that streams B without packing it is faster while B stays in cache (docs/cpu.md).
//
// Shapes: A (M, K) with row stride lda; B (K, N) row-major, contiguous; bias (N,) or null;
// C (M, N) with row stride ldc, overwritten. Any M >= 1; faster than MKL where
// small_gemm_pays(M, K, N, sizeof element).
#pragma once

#include <cstdint>

namespace nrnm {

// Up to 8 rows; up to 16 while B fits a core's L2 (each block of 4 rows reads all of B):
// measured 1.2-2.6x faster than at::addmm_out there, 0.7-0.8x at 16 rows with a 1 MB B.
inline bool small_gemm_pays(int64_t M, int64_t K, int64_t N, int64_t element_size) {
  return M >= 1 && (M <= 8 || (M <= 16 && K * N * element_size <= 256 * 1024));
}

void small_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* B, const float* bias,
                float* C, int64_t ldc);
void small_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* B, const double* bias,
                double* C, int64_t ldc);

}  // namespace nrnm
