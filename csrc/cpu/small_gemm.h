// C = A B (+ bias) for the time loop's GEMMs: a few to a few dozen rows of A against a weight
// B that every step or memory update reads again. A register-blocked loop over blocks of 4
// rows (8 on 64-byte panels) keeps a block of C, three vectors wide, in registers while it
// streams B.
//
// B comes in one of two layouts:
// - row-major (K, N), row k at B + k ldb (small_gemm): fast while B stays in L2; used up to
//   8 rows for weights made on the fly (MKL: 4 x 128 x 512 takes 21 us through at::addmm_out on the EPYC
//   dev machine, this loop 8 us);
// - packed into column panels (packed_gemm, made once per layer call by pack_panels): panel p
//   holds columns [p W, p W + W) of every row k contiguously, W = panel_width<T>() (the last
//   panel may be narrower and holds what is left), so B streams sequentially and each panel
//   stays in L1 while every block of rows reads it. A panel is three vector registers wide:
//   of 32 bytes (AVX2, and baseline x86-64), or of 64 bytes where the CPU has AVX-512 (there
//   the 32-byte panels left half of each FMA unused: 100 GFLOP/s a core against 155 with
//   64-byte ones and MKL's 165, at 4-64 rows, K = 128-256, on a Xeon core; docs/cpu.md).
//
// Shapes: A (M, K) with row stride lda; bias (N,) or null; C (M, N) with row stride ldc,
// overwritten. Any M >= 1.
#pragma once

#include <cstdint>

namespace nrnm {

// Whether packed_gemm also runs the layer's large products (the hoisted input product and its
// gradient, the weight gradients: hundreds of rows) in place of the BLAS under at::mm: on a CPU
// with AVX-512 that is not Intel's. MKL takes its AVX-512 kernels on Intel CPUs only and runs its
// AVX2 ones elsewhere: on a Zen 5 EPYC core MKL's sgemm ran 256 x 128 x 896 to 1024 x 512 x 3584
// at 97-99 GFLOP/s, packed_gemm with 64-byte panels at 226-235. On Intel's CPUs MKL's own
// packing and blocking keep the large products (docs/cpu.md, "The large products").
// There every product by an unpacked weight (one of fewer than 16 rows in all in a call) runs in
// small_gemm or small_gemm_nt up to 16 rows: MKL is not the same on one thread and on two there
// (a product of 9 x 5 by 5 x 1024 differed by 4.8e-7), and these loops give each column the same
// sum however the columns are split. set_packed_large_products overrides the choice for the
// process (tests, A/B measurements); it must not change while a layer call runs.
bool packed_large_products();
void set_packed_large_products(bool on);

// Up to 8 rows (two blocks) the row-major loop beats at::addmm_out by 1.2-2.6x; at 16 rows each
// block reads B once more (0.7-0.8x with a 1 MB B).
inline bool small_gemm_pays(int64_t M) { return M >= 1 && M <= (packed_large_products() ? 16 : 8); }

void small_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* B, int64_t ldb,
                const float* bias, float* C, int64_t ldc);
void small_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* B, int64_t ldb,
                const double* bias, double* C, int64_t ldc);

// C = A W^T (+ bias) reading W (N, K) in place, row-major with row stride ldw (the weight as a
// module holds it): each entry a dot product along K. For the one or two rows of a call that
// packs nothing (streaming a step of one element, its memory update's rows), where MKL took
// 4-9 us a product through at::addmm_out at H = 128 and the row-major loop needs W^T copied.
// Two rows read W once; more would read it once per pair.
inline bool small_gemm_nt_pays(int64_t M) { return M >= 1 && M <= (packed_large_products() ? 16 : 2); }

void small_gemm_nt(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* W, int64_t ldw,
                   const float* bias, float* C, int64_t ldc);
void small_gemm_nt(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* W, int64_t ldw,
                   const double* bias, double* C, int64_t ldc);

// Bytes per panel row: kNarrowPanel (three 32-byte registers) or kWidePanel (three 64-byte
// ones, only where avx512_kernels_enabled(), csrc/cpu/target_clones.h). panel_bytes() is this
// process's choice.
constexpr int64_t kNarrowPanel = 3 * 32;
constexpr int64_t kWidePanel = 3 * 64;
int64_t panel_bytes();

// Columns per panel.
template <typename T>
int64_t panel_width(int64_t bytes = panel_bytes()) {
  return bytes / static_cast<int64_t>(sizeof(T));
}

// Packing a weight pays where a layer call multiplies at most 64 rows (128 on 64-byte panels)
// by it at a time (a step of a shard, a memory update's rows, a chunk's memory term): 1.2-4x
// MKL's sgemm from 1 to 16 rows on the dev machine, 1.1-1.3x alone at 32 rows, and more in the layer, where
// MKL packs B again for every call and two shards' threads share the bandwidth that this costs
// (T128-B64-H512, shards of 32 rows, 2 threads: forward 8-13% faster). With 32-byte panels MKL's
// own packing is amortized above 64 rows; the 8-row blocks of 64-byte panels still beat it by
// 1.1x at 128 rows (K, N = 512-1024; even at 256). The one packed copy of each weight is shared
// by the shards (csrc/loop_weights.h). And the packing itself (a pass over the weight) must pay:
// where a call multiplies fewer than 16 rows by the weight in all (a few steps of a small batch,
// as in streaming), it costs more than it saves (packing W_mc^T for a streamed step's memory term
// made a step at H = 512 2.8x slower). Where packed_large_products(), at any number of rows.
inline bool packed_gemm_pays(int64_t max_rows, int64_t uses, int64_t bytes = panel_bytes()) {
  constexpr int64_t kMinPackedRows = 16;
  const int64_t max_packed_rows =
      bytes == kWidePanel ? (packed_large_products() ? INT64_MAX : 128) : 64;
  return max_rows >= 1 && max_rows <= max_packed_rows && uses * max_rows >= kMinPackedRows;
}

// P (K * N,) = B (K, N) in panels of `bytes`; B's element (k, n) at B[k * stride_k + n * stride_n].
void pack_panels(int64_t K, int64_t N, const float* B, int64_t stride_k, int64_t stride_n, float* P,
                 int64_t bytes = panel_bytes());
void pack_panels(int64_t K, int64_t N, const double* B, int64_t stride_k, int64_t stride_n, double* P,
                 int64_t bytes = panel_bytes());

// P packed by pack_panels with the same `bytes`.
void packed_gemm(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P, const float* bias,
                 float* C, int64_t ldc, int64_t bytes = panel_bytes());
void packed_gemm(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* P,
                 const double* bias, double* C, int64_t ldc, int64_t bytes = panel_bytes());

// C (M, N) += A^T P for A (K, M) with row stride lda (a weight gradient's D^T X: K rows of D
// and of X, X packed), P packed by pack_panels with the same `bytes`.
void packed_gemm_add_at(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* P, float* C,
                        int64_t ldc, int64_t bytes = panel_bytes());
void packed_gemm_add_at(int64_t M, int64_t K, int64_t N, const double* A, int64_t lda, const double* P, double* C,
                        int64_t ldc, int64_t bytes = panel_bytes());

}  // namespace nrnm
