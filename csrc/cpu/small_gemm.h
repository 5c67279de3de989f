// C = A B (+ bias) for A of a few rows: the per-step GEMMs of a batch shard of a few
// elements. MKL runs these far below a core's peak (4 x 128 x 512: 21 us through
// at::addmm_out on the EPYC dev machine, 8 us here); a register-blocked loop over blocks of
// 4 rows that streams B without packing it is faster while B stays in cache (docs/cpu.md).
//
// Shapes: A (M, K) with row stride lda; B (K, N) row-major, contiguous; bias (N,) or null;
// C (M, N) with row stride ldc, overwritten. Any M >= 1; faster than MKL where
// small_gemm_pays(M).
#pragma once

#include <cstdint>

namespace nrnm {

// Up to 8 rows (two blocks): measured 1.2-2.6x faster than at::addmm_out there. At 16 rows
// each block reads B once more: 1.3-1.5x alone with a 256 KiB B, but no faster in the layer's
// step loop, and 0.7-0.8x with a 1 MB B.
inline bool small_gemm_pays(int64_t M) { return M >= 1 && M <= 8; }

void small_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* B, const float* bias,
                float* C, int64_t ldc);
void small_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* B, const double* bias,
                double* C, int64_t ldc);

}  // namespace nrnm
