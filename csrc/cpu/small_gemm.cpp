#include "small_gemm.h"

#include <algorithm>

// Compiled for AVX2 + FMA and baseline x86-64, picked at load time (as csrc/cpu/cell_rows.cpp).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NRNM_GEMM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NRNM_GEMM_CLONES
#endif

namespace nrnm {
namespace {

// Columns n0 .. n0 + NB - 1 of C for M rows: M x NB accumulators stay in registers while
// each row k of B is read once (AVX2: 12 of the 16 vector registers for M = 4, NB = 3 vectors).
template <typename T, int M, int NB>
__attribute__((always_inline)) inline void column_block(int64_t K, int64_t N, const T* __restrict A, int64_t lda,
                                                         const T* __restrict B, const T* __restrict bias,
                                                         T* __restrict C, int64_t ldc, int64_t n0) {
  T acc[M][NB];
  for (int m = 0; m < M; ++m) {
#pragma omp simd
    for (int j = 0; j < NB; ++j) acc[m][j] = bias ? bias[n0 + j] : T(0);
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* b = B + k * N + n0;
    for (int m = 0; m < M; ++m) {
      const T a = A[m * lda + k];
#pragma omp simd
      for (int j = 0; j < NB; ++j) acc[m][j] += a * b[j];
    }
  }
  for (int m = 0; m < M; ++m) {
#pragma omp simd
    for (int j = 0; j < NB; ++j) C[m * ldc + n0 + j] = acc[m][j];
  }
}

// M <= 4 rows: column blocks of three vectors' width, then one vector's, then single columns.
template <typename T, int M>
__attribute__((always_inline)) inline void rows(int64_t K, int64_t N, const T* A, int64_t lda, const T* B,
                                                const T* bias, T* C, int64_t ldc) {
  constexpr int kVector = 32 / sizeof(T);  // one AVX2 register
  constexpr int NB = (M <= 2 ? 6 : 3) * kVector;
  int64_t n0 = 0;
  for (; n0 + NB <= N; n0 += NB) column_block<T, M, NB>(K, N, A, lda, B, bias, C, ldc, n0);
  for (; n0 + kVector <= N; n0 += kVector) column_block<T, M, kVector>(K, N, A, lda, B, bias, C, ldc, n0);
  for (; n0 < N; ++n0) column_block<T, M, 1>(K, N, A, lda, B, bias, C, ldc, n0);
}

template <typename T>
__attribute__((always_inline)) inline void small_gemm_impl(int64_t M, int64_t K, int64_t N, const T* A,
                                                           int64_t lda, const T* B, const T* bias, T* C,
                                                           int64_t ldc) {
  for (int64_t m0 = 0; m0 < M; m0 += 4) {  // blocks of 4 rows: 8 rows would not fit the registers
    const T* a = A + m0 * lda;
    T* c = C + m0 * ldc;
    switch (std::min<int64_t>(4, M - m0)) {
      case 4: rows<T, 4>(K, N, a, lda, B, bias, c, ldc); break;
      case 3: rows<T, 3>(K, N, a, lda, B, bias, c, ldc); break;
      case 2: rows<T, 2>(K, N, a, lda, B, bias, c, ldc); break;
      default: rows<T, 1>(K, N, a, lda, B, bias, c, ldc); break;
    }
  }
}

}  // namespace

NRNM_GEMM_CLONES void small_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* B,
                                 const float* bias, float* C, int64_t ldc) {
  small_gemm_impl(M, K, N, A, lda, B, bias, C, ldc);
}

NRNM_GEMM_CLONES void small_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* B,
                                 const double* bias, double* C, int64_t ldc) {
  small_gemm_impl(M, K, N, A, lda, B, bias, C, ldc);
}

}  // namespace nrnm
