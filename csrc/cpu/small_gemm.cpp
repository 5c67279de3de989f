#include "small_gemm.h"

#include <algorithm>
#include <atomic>
#include <cassert>

#include "lanes.h"
#include "target_clones.h"

#ifdef NRNM_CPU_AVX512
// GCC 12's unmasked AVX-512 shuffles pass an "undefined" vector that -Wuninitialized then reports
// where they are inlined (GCC bug 105593); the header's own lines carry the pragma's state.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace nrnm {
namespace {

// Where B's columns [n0, n0 + NB) are: row k of them at at(n0) + k * ldb(n0), and the next
// NB columns panel_stride further. The kernels take W columns at a time: three 32-byte
// registers' worth from a row-major B, a panel's from a packed one.
template <typename T>
struct RowMajor {
  static constexpr int64_t W = kNarrowPanel / sizeof(T);
  const T* B;
  int64_t row_stride;
  const T* at(int64_t n0) const { return B + n0; }
  int64_t ldb(int64_t) const { return row_stride; }
  int64_t panel_stride() const { return W; }
};

template <typename T, int64_t Bytes>
struct Panels {
  static constexpr int64_t W = Bytes / sizeof(T);
  const T* P;
  int64_t K, N;
  int64_t full_columns() const { return N / W * W; }
  const T* at(int64_t n0) const { return P + (n0 / W) * W * K + n0 % W; }
  int64_t ldb(int64_t n0) const { return n0 < full_columns() ? W : N - full_columns(); }
  int64_t panel_stride() const { return W * K; }
};

// A block of this many rows or fewer reads B's rows from L2 faster than the hardware's
// prefetchers bring them to L1 (each row of a panel feeds only M FMAs a lane), so it asks for
// the row kRowsAhead further on as it reads one: past a panel's last row that is the next
// panel's first rows (stopping at the last row lost most of the gain: 4 x 128 x 512 at 104
// GFLOP/s instead of 129), past the array's end whatever lies there (a prefetch does not
// fault). One thread, the weight in L2, on the Xeon of docs/cpu.md: 4 x 128 x 512 105 -> 130
// GFLOP/s, 4 x 256 x 1024 96 -> 117, 5 x 128 x 512 75 -> 100, 1 row 33 -> 42, 2 rows 45 -> 50.
// Blocks of 8 rows gained 0-8% alone but nothing measurable in the layer. With AVX2's 96-byte
// panels (blocks of 4 rows) it lost 5-10% at 4 and 8 rows, so they, and the row-major
// products, do without.
constexpr int kFewRows = 4;
constexpr int64_t kRowsAhead = 8;

// C[:, n0 : n0 + NP NB] of M rows: NP panels of NB columns, M x NP x NB accumulators in
// registers while each row k of B is read once.
// A product's form: C = A B + bias (A (M, K)), or C += A^T B (A (K, M): a weight gradient's D^T X).
enum class Form { kAB, kAddATB };

template <typename T, int M, int NB, int NP, typename Layout, Form F = Form::kAB>
NRNM_ALWAYS_INLINE void column_block(int64_t K, const T* __restrict A, int64_t lda, const Layout& layout,
                                            int64_t n0, const T* __restrict bias, T* __restrict C, int64_t ldc,
                                            const T* prefetch = nullptr) {
  const T* __restrict B = layout.at(n0);
  const int64_t ldb = layout.ldb(n0), panel_stride = layout.panel_stride();
  T acc[M][NP][NB];
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < NP; ++p) {
#pragma omp simd
      for (int j = 0; j < NB; ++j)
        acc[m][p][j] = F == Form::kAddATB ? C[m * ldc + n0 + p * NB + j] : bias ? bias[n0 + p * NB + j] : T(0);
    }
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t k = 0; k < K; ++k) {
    if (prefetch) {
      for (int64_t j = 0; j < NB; j += kLine) __builtin_prefetch(prefetch + k * ldb + j, 0, 2);
    }
    if constexpr (M <= kFewRows && NB * sizeof(T) >= 2 * 64) {
      for (int p = 0; p < NP; ++p)
        for (int64_t j = 0; j < NB; j += kLine)
          __builtin_prefetch(B + p * panel_stride + (k + kRowsAhead) * ldb + j, 0, 3);
    }
    for (int p = 0; p < NP; ++p) {
      const T* b = B + p * panel_stride + k * ldb;
      for (int m = 0; m < M; ++m) {
        const T a = F == Form::kAddATB ? A[k * lda + m] : A[m * lda + k];
#pragma omp simd
        for (int j = 0; j < NB; ++j) acc[m][p][j] += a * b[j];
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < NP; ++p) {
#pragma omp simd
      for (int j = 0; j < NB; ++j) C[m * ldc + n0 + p * NB + j] = acc[m][p][j];
    }
}

// Columns [n0, N) of M <= 8 rows: blocks of two panels' width for one or two rows (too few
// accumulators otherwise to keep the FMA units busy), then of one panel, two vectors, one
// vector, one column.
template <typename T, int M, typename Layout, Form F = Form::kAB>
NRNM_ALWAYS_INLINE void row_block(int64_t K, int64_t N, const T* A, int64_t lda, const Layout& layout,
                                         int64_t n0, const T* bias, T* C, int64_t ldc) {
  constexpr int W = Layout::W, V = W / 3, NP = M <= 2 ? 2 : 1;
  if constexpr (NP > 1) {
    for (; n0 + NP * W <= N; n0 += NP * W)
      column_block<T, M, W, NP, Layout, F>(K, A, lda, layout, n0, bias, C, ldc);
  }
  for (; n0 + W <= N; n0 += W) column_block<T, M, W, 1, Layout, F>(K, A, lda, layout, n0, bias, C, ldc);
  for (; n0 + 2 * V <= N; n0 += 2 * V) column_block<T, M, 2 * V, 1, Layout, F>(K, A, lda, layout, n0, bias, C, ldc);
  for (; n0 + V <= N; n0 += V) column_block<T, M, V, 1, Layout, F>(K, A, lda, layout, n0, bias, C, ldc);
  for (; n0 < N; ++n0) column_block<T, M, 1, 1, Layout, F>(K, A, lda, layout, n0, bias, C, ldc);
}

// Columns [n0, N) of `rows` rows as one block, 1 <= rows <= Rows.
template <typename T, int Rows, typename Layout, Form F = Form::kAB>
NRNM_ALWAYS_INLINE void row_block_of(int64_t rows, int64_t K, int64_t N, const T* A, int64_t lda,
                                     const Layout& layout, int64_t n0, const T* bias, T* C, int64_t ldc) {
  if (rows == Rows) {
    row_block<T, Rows, Layout, F>(K, N, A, lda, layout, n0, bias, C, ldc);
  } else if constexpr (Rows > 1) {
    row_block_of<T, Rows - 1, Layout, F>(rows, K, N, A, lda, layout, n0, bias, C, ldc);
  }
}

// One panel's columns of `rows` rows as one block, 1 <= rows <= Rows.
template <typename T, int Rows, typename Layout, Form F = Form::kAB>
NRNM_ALWAYS_INLINE void panel_block_of(int64_t rows, int64_t K, const T* A, int64_t lda, const Layout& layout,
                                       int64_t n0, const T* bias, T* C, int64_t ldc, const T* prefetch) {
  if (rows == Rows) {
    column_block<T, Rows, Layout::W, 1, Layout, F>(K, A, lda, layout, n0, bias, C, ldc, prefetch);
  } else if constexpr (Rows > 1) {
    panel_block_of<T, Rows - 1, Layout, F>(rows, K, A, lda, layout, n0, bias, C, ldc, prefetch);
  }
}

template <typename T>
NRNM_ALWAYS_INLINE void small_gemm_impl(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda,
                                               const T* B, int64_t ldb, const T* bias, T* C, int64_t ldc) {
  const RowMajor<T> layout{B, ldb};
  for (int64_t m0 = 0; m0 < M; m0 += 4)
    row_block_of<T, 4>(std::min<int64_t>(4, M - m0), K, N, A + m0 * lda, lda, layout, 0, bias, C + m0 * ldc, ldc);
}

// A weight from this size on (W_hh^T from H = 256, the memory's weights at H = 512) leaves L2
// between its uses, and its panels come from L3 each step. The blocks of rows read a panel
// again and again before the next one, a pattern the hardware's prefetchers did not follow
// past a panel's end (on the Xeon of docs/cpu.md), so the first block of each panel asks for
// the next panel's rows into L2 as it reads its own. A T128-B64-H512 layer on 2 threads, with
// and without alternating in one process (ratios to nn.LSTM's paired time, 6-10 rounds):
// forward 0.92-0.94x the time in three runs, fwd+bwd 0.94 and 0.96x in two. Where the weight
// stays in L2 (H = 128) the extra loads made the best of 10 rounds of a 4 x 128 x 512 product
// 4-8% slower (docs/cpu.md, "Small GEMMs").
constexpr int64_t kPrefetchedWeightBytes = int64_t(1) << 20;

// Panel by panel, every block of rows while the panel is in L1 or, where it is not (K of 256
// floats and more), while L2 streams it; one or two rows go as one block over all columns
// (row_block pairs their panels). 64-byte panels take blocks of 8 rows (24 of the 32 AVX-512
// registers): each panel row read from L2 feeds 24 FMAs instead of 12, and a panel streamed
// from L3 is read once instead of twice per 8 rows (1.05-1.25x at 8-64 rows, K = 512-2048,
// N = 512-2048 on the Xeon of docs/cpu.md; no change where the panel stays in L1). 32-byte
// panels keep blocks of 4: AVX2 has 16 registers. The rows left over go as one block: 5-7 rows
// as blocks of 4 and of 1-3 read each panel twice (one thread, the weight in L2 or L3: 5-7 x 128
// x 512 1.27-1.6x, 6 x 256 x 1024 1.67x, 7 x 512 x 2048 1.63x, 13 and 15 rows 1.14x and 1.34x).
template <typename T, int64_t Bytes, Form F = Form::kAB>
NRNM_ALWAYS_INLINE void packed_gemm_impl(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda,
                                                const T* P, const T* bias, T* C, int64_t ldc) {
  using Layout = Panels<T, Bytes>;
  const Layout layout{P, K, N};
  constexpr int64_t W = Layout::W;
  const int64_t row_step = F == Form::kAddATB ? 1 : lda;  // A's offset per row of C
  constexpr int64_t kTallRows = Bytes == kWidePanel ? 8 : 4;
  int64_t n0 = 0;
  const bool prefetch = K * N * static_cast<int64_t>(sizeof(T)) >= kPrefetchedWeightBytes;
  if (M > 2) {
    for (; n0 + W <= N; n0 += W) {
      const T* next = prefetch && n0 + 2 * W <= N ? layout.at(n0 + W) : nullptr;
      int64_t m0 = 0;
      for (; m0 + kTallRows <= M; m0 += kTallRows)
        column_block<T, kTallRows, W, 1, Layout, F>(K, A + m0 * row_step, lda, layout, n0, bias, C + m0 * ldc, ldc,
                                         m0 == 0 ? next : nullptr);
      if (m0 < M)
        panel_block_of<T, kTallRows - 1, Layout, F>(M - m0, K, A + m0 * row_step, lda, layout, n0, bias, C + m0 * ldc, ldc,
                                         m0 == 0 ? next : nullptr);
    }
  }
  // The last, narrower panel, in blocks of as many rows: at H = 128 it holds 32 of W_hh^T's 512
  // columns and 32 of the 128 of W_mc^T and of a memory update's products, which in blocks of
  // 4 rows by one vector (4 accumulators, FMA latency-bound) held a product of N = 128 at 113-118
  // GFLOP/s against 136-143 now (16-64 rows, K = 128-256; N = 512: 1.02-1.05x).
  int64_t m0 = 0;
  if (n0 < N && M > 2)
    for (; m0 + kTallRows <= M; m0 += kTallRows)
      row_block<T, kTallRows, Layout, F>(K, N, A + m0 * row_step, lda, layout, n0, bias, C + m0 * ldc, ldc);
  if (n0 < N && m0 < M)
    row_block_of<T, kTallRows - 1, Layout, F>(M - m0, K, N, A + m0 * row_step, lda, layout, n0, bias, C + m0 * ldc, ldc);
}

// C[m][n0 + j] for MB rows of A and NB rows of W: MB x NB dot products, each in the lanes of
// one vector along K and summed across them at the end (the last K % lanes terms scalar).
template <typename T, int MB, int NB>
NRNM_ALWAYS_INLINE void dot_block(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict W, int64_t ldw,
                                  int64_t n0, const T* __restrict bias, T* __restrict C, int64_t ldc) {
  using L = Lanes<T>;
  using Vec = typename L::type;
  constexpr int64_t n = L::kCount;
  Vec acc[MB][NB];
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < NB; ++j) acc[m][j] = Vec{};
  int64_t k = 0;
  for (; k + n <= K; k += n) {
    Vec w[NB];
    for (int j = 0; j < NB; ++j) w[j] = L::at(W + (n0 + j) * ldw + k);
    for (int m = 0; m < MB; ++m) {
      const Vec a = L::at(A + m * lda + k);
      for (int j = 0; j < NB; ++j) acc[m][j] += a * w[j];
    }
  }
  T sums[MB * NB];
  lane_sums<L, MB * NB>(&acc[0][0], sums);
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < NB; ++j) {
      T s = (bias ? bias[n0 + j] : T(0)) + sums[m * NB + j];
      for (int64_t t = k; t < K; ++t) s += A[m * lda + t] * W[(n0 + j) * ldw + t];
      C[m * ldc + n0 + j] = s;
    }
}

// Rows of A in pairs (a single last one alone), against four rows of W at a time.
template <typename T, int MB>
NRNM_ALWAYS_INLINE void dot_rows(int64_t K, int64_t N, const T* A, int64_t lda, const T* W, int64_t ldw,
                                 const T* bias, T* C, int64_t ldc) {
  int64_t n0 = 0;
  for (; n0 + 4 <= N; n0 += 4) dot_block<T, MB, 4>(K, A, lda, W, ldw, n0, bias, C, ldc);
  for (; n0 < N; ++n0) dot_block<T, MB, 1>(K, A, lda, W, ldw, n0, bias, C, ldc);
}

template <typename T>
NRNM_ALWAYS_INLINE void small_gemm_nt_impl(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda, const T* W,
                                           int64_t ldw, const T* bias, T* C, int64_t ldc) {
  int64_t m0 = 0;
  for (; m0 + 2 <= M; m0 += 2) dot_rows<T, 2>(K, N, A + m0 * lda, lda, W, ldw, bias, C + m0 * ldc, ldc);
  if (m0 < M) dot_rows<T, 1>(K, N, A + m0 * lda, lda, W, ldw, bias, C + m0 * ldc, ldc);
}

template <typename T>
void pack_panels_impl(int64_t K, int64_t N, const T* B, int64_t stride_k, int64_t stride_n, T* P, int64_t bytes) {
  const int64_t W = panel_width<T>(bytes);
  for (int64_t n0 = 0; n0 < N; n0 += W) {
    const int64_t width = std::min(W, N - n0);
    for (int64_t k = 0; k < K; ++k, P += width) {
      const T* row = B + k * stride_k + n0 * stride_n;
      if (stride_n == 1) {  // the weight gradients pack their rows of X per GEMM: a copy per row
        std::copy(row, row + width, P);
      } else {
        for (int64_t j = 0; j < width; ++j) P[j] = row[j * stride_n];
      }
    }
  }
}

NRNM_CPU_CLONES void packed_gemm_narrow(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda,
                                        const float* P, const float* bias, float* C, int64_t ldc) {
  packed_gemm_impl<float, kNarrowPanel>(M, K, N, A, lda, P, bias, C, ldc);
}

NRNM_CPU_CLONES void packed_gemm_narrow(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda,
                                        const double* P, const double* bias, double* C, int64_t ldc) {
  packed_gemm_impl<double, kNarrowPanel>(M, K, N, A, lda, P, bias, C, ldc);
}

NRNM_CPU_CLONES void packed_add_at_narrow(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda,
                                          const float* P, float* C, int64_t ldc) {
  packed_gemm_impl<float, kNarrowPanel, Form::kAddATB>(M, K, N, A, lda, P, nullptr, C, ldc);
}

NRNM_CPU_CLONES void packed_add_at_narrow(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda,
                                          const double* P, double* C, int64_t ldc) {
  packed_gemm_impl<double, kNarrowPanel, Form::kAddATB>(M, K, N, A, lda, P, nullptr, C, ldc);
}

#ifdef NRNM_CPU_AVX512
// p[k ldp + j] = w[j ldw + k] for j, k < 16: a 16 x 16 block transposed in registers (pairs of
// rows interleaved, then pairs of pairs, then 128-bit lanes across quarters and halves).
NRNM_CPU_AVX512 void transpose_16x16(const float* w, int64_t ldw, float* p, int64_t ldp) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(w + i * ldw);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]),
                  c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
  }
  for (int c = 0; c < 4; ++c) {
    _mm512_storeu_ps(p + c * ldp, _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88));
    _mm512_storeu_ps(p + (8 + c) * ldp, _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd));
    _mm512_storeu_ps(p + (4 + c) * ldp, _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88));
    _mm512_storeu_ps(p + (12 + c) * ldp, _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd));
  }
}

// pack_panels of B = W^T, B's element (k, n) at W[n ldw + k]: the weights as a module holds
// them. Read a row of k at a time, a panel's 48 columns are 48 rows of W, ldw apart: at ldw = 512
// floats they share two L1 sets, and packing W_hh^T at H = 512 took 0.62 ns an element; in 16 x
// 16 blocks transposed in registers each read is a whole cache line (the blocks' leftover
// columns and rows element by element).
NRNM_CPU_AVX512 void pack_transposed_wide(int64_t K, int64_t N, const float* W, int64_t ldw, float* P,
                                          int64_t bytes) {
  const int64_t panel = panel_width<float>(bytes);
  for (int64_t n0 = 0; n0 < N; n0 += panel) {
    const int64_t width = std::min(panel, N - n0);
    const float* w = W + n0 * ldw;
    int64_t k0 = 0;
    for (; k0 + 16 <= K; k0 += 16) {
      int64_t j0 = 0;
      for (; j0 + 16 <= width; j0 += 16) transpose_16x16(w + j0 * ldw + k0, ldw, P + k0 * width + j0, width);
      for (int64_t j = j0; j < width; ++j)
        for (int64_t k = k0; k < k0 + 16; ++k) P[k * width + j] = w[j * ldw + k];
    }
    for (int64_t k = k0; k < K; ++k)
      for (int64_t j = 0; j < width; ++j) P[k * width + j] = w[j * ldw + k];
    P += K * width;
  }
}

NRNM_CPU_AVX512 void packed_gemm_wide(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P,
                                      const float* bias, float* C, int64_t ldc) {
  packed_gemm_impl<float, kWidePanel>(M, K, N, A, lda, P, bias, C, ldc);
}

NRNM_CPU_AVX512 void packed_gemm_wide(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda,
                                      const double* P, const double* bias, double* C, int64_t ldc) {
  packed_gemm_impl<double, kWidePanel>(M, K, N, A, lda, P, bias, C, ldc);
}

NRNM_CPU_AVX512 void packed_add_at_wide(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P,
                                        float* C, int64_t ldc) {
  packed_gemm_impl<float, kWidePanel, Form::kAddATB>(M, K, N, A, lda, P, nullptr, C, ldc);
}

NRNM_CPU_AVX512 void packed_add_at_wide(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda,
                                        const double* P, double* C, int64_t ldc) {
  packed_gemm_impl<double, kWidePanel, Form::kAddATB>(M, K, N, A, lda, P, nullptr, C, ldc);
}
#endif

// The clone for P's panel width.
template <typename T>
void packed_gemm_at(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda, const T* P, const T* bias, T* C,
                    int64_t ldc, int64_t bytes) {
#ifdef NRNM_CPU_AVX512
  if (bytes == kWidePanel) {
    assert(avx512_kernels_enabled());
    packed_gemm_wide(M, K, N, A, lda, P, bias, C, ldc);
    return;
  }
#endif
  assert(bytes == kNarrowPanel);
  packed_gemm_narrow(M, K, N, A, lda, P, bias, C, ldc);
}

template <typename T>
void packed_add_at(int64_t M, int64_t K, int64_t N, const T* A, int64_t lda, const T* P, T* C, int64_t ldc,
                   int64_t bytes) {
#ifdef NRNM_CPU_AVX512
  if (bytes == kWidePanel) {
    assert(avx512_kernels_enabled());
    packed_add_at_wide(M, K, N, A, lda, P, C, ldc);
    return;
  }
#endif
  assert(bytes == kNarrowPanel);
  packed_add_at_narrow(M, K, N, A, lda, P, C, ldc);
}

}  // namespace

NRNM_CPU_CLONES void small_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* B,
                                int64_t ldb, const float* bias, float* C, int64_t ldc) {
  small_gemm_impl(M, K, N, A, lda, B, ldb, bias, C, ldc);
}

NRNM_CPU_CLONES void small_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* B,
                                int64_t ldb, const double* bias, double* C, int64_t ldc) {
  small_gemm_impl(M, K, N, A, lda, B, ldb, bias, C, ldc);
}

int64_t panel_bytes() { return avx512_kernels_enabled() ? kWidePanel : kNarrowPanel; }

namespace {
// set_packed_large_products' choice: -1 none (the CPU decides), 0 off, 1 on.
std::atomic<int> packed_large_products_set{-1};
}  // namespace

bool packed_large_products() {
#ifdef NRNM_CPU_AVX512
  static const bool not_intel = !__builtin_cpu_is("intel");
  const int set = packed_large_products_set.load(std::memory_order_relaxed);
  return avx512_kernels_enabled() && (set < 0 ? not_intel : set == 1);
#else
  return false;
#endif
}

void set_packed_large_products(bool on) { packed_large_products_set.store(on ? 1 : 0, std::memory_order_relaxed); }

void packed_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P, const float* bias,
                 float* C, int64_t ldc, int64_t bytes) {
  packed_gemm_at(M, K, N, A, lda, P, bias, C, ldc, bytes);
}

void packed_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* P,
                 const double* bias, double* C, int64_t ldc, int64_t bytes) {
  packed_gemm_at(M, K, N, A, lda, P, bias, C, ldc, bytes);
}

NRNM_CPU_CLONES void small_gemm_nt(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* W,
                                   int64_t ldw, const float* bias, float* C, int64_t ldc) {
  small_gemm_nt_impl(M, K, N, A, lda, W, ldw, bias, C, ldc);
}

NRNM_CPU_CLONES void small_gemm_nt(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* W,
                                   int64_t ldw, const double* bias, double* C, int64_t ldc) {
  small_gemm_nt_impl(M, K, N, A, lda, W, ldw, bias, C, ldc);
}

void packed_gemm_add_at(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P, float* C,
                        int64_t ldc, int64_t bytes) {
  packed_add_at(M, K, N, A, lda, P, C, ldc, bytes);
}

void packed_gemm_add_at(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* P, double* C,
                        int64_t ldc, int64_t bytes) {
  packed_add_at(M, K, N, A, lda, P, C, ldc, bytes);
}

void pack_panels(int64_t K, int64_t N, const float* B, int64_t stride_k, int64_t stride_n, float* P,
                 int64_t bytes) {
#ifdef NRNM_CPU_AVX512
  if (stride_k == 1 && stride_n != 1 && avx512_kernels_enabled()) {
    pack_transposed_wide(K, N, B, stride_n, P, bytes);
    return;
  }
#endif
  pack_panels_impl(K, N, B, stride_k, stride_n, P, bytes);
}

void pack_panels(int64_t K, int64_t N, const double* B, int64_t stride_k, int64_t stride_n, double* P,
                 int64_t bytes) {
  pack_panels_impl(K, N, B, stride_k, stride_n, P, bytes);
}

}  // namespace nrnm
