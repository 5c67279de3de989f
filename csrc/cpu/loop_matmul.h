// The CPU's LayerKernels::loop_matmul and its raw-pointer core, shared by the table's loops.
//
// Shapes: a (M, K) with row stride lda; b (K, N); bias (N,) or null; out (M, N) with row
// stride ldo.
#pragma once

#include "../layer_kernels.h"
#include "../shard_team.h"
#include "small_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace nrnm {

// f(n0, n1) over column ranges of b (K, N) that together cover 0..N, each a multiple of `unit`
// columns but the last, for a product of M rows. The few rows of a batch of one (one shard:
// csrc/batch_shards.h) by a weight that no cache holds (streaming at H = 512 reads 13 MB of
// weights a step) run at one core's memory bandwidth; every thread reads a share of the weight's
// columns instead. Inside a batch shard the ranges go through for_units (csrc/shard_team.h),
// where a thread done with its own shard may take some.
template <typename F>
void for_column_shares(int64_t M, int64_t K, int64_t N, int64_t element_bytes, int64_t unit, const F& f) {
  constexpr int64_t kSharedWeightBytes = int64_t(1) << 20, kShareBytes = int64_t(256) << 10;
  const int64_t unit_bytes = K * unit * element_bytes, units = (N + unit - 1) / unit;
  if (K * N * element_bytes < kSharedWeightBytes || at::in_parallel_region() || at::get_num_threads() < 2) {
    for_units(units, M * K * unit, [&](int64_t u0, int64_t u1) { f(u0 * unit, std::min(N, u1 * unit)); });
    return;
  }
  at::parallel_for(0, units, (kShareBytes + unit_bytes - 1) / unit_bytes,
                   [&](int64_t u0, int64_t u1) { f(u0 * unit, std::min(N, u1 * unit)); });
}

// f(m0, m1) over ranges of M rows, each a multiple of 8 but the last, shared by the threads
// outside a parallel region where each thread gets at least 2^20 multiply-adds at row_work
// each (a call of one shard: the batch shards run in a parallel region of their own), and
// inside a batch shard through for_units.
template <typename F>
void for_row_shares(int64_t M, int64_t row_work, const F& f) {
  constexpr int64_t kRows = 8, kMinWork = int64_t(1) << 20;
  const int64_t blocks = (M + kRows - 1) / kRows, block_work = kRows * row_work;
  const auto rows = [&](int64_t b0, int64_t b1) { f(b0 * kRows, std::min(M, b1 * kRows)); };
  if (at::in_parallel_region() || at::get_num_threads() < 2 || M * row_work < 2 * kMinWork) {
    for_units(blocks, block_work, rows);
    return;
  }
  at::parallel_for(0, blocks, (kMinWork + block_work - 1) / block_work, rows);
}

// out = a @ b + bias on raw rows where b is packed, or is contiguous and small_gemm pays, or is
// a row-major W's transpose and small_gemm_nt pays; false elsewhere (the caller falls back to ATen).
template <typename T>
bool raw_matmul(int64_t M, int64_t K, int64_t N, const T* a, int64_t lda, const LoopWeight& b, const T* bias, T* out,
                int64_t ldo) {
  if (b.packed.defined()) {
    TORCH_CHECK(b.packed.numel() == K * N, "nrnm_fast: a packed weight of ", b.packed.numel(), " elements for a (",
                K, ", ", N, ") product");
    const T* packed = b.packed.data_ptr<T>();
    // a whole panel's columns a share: panel j (of W columns) is W * K elements from the start
    for_column_shares(M, K, N, sizeof(T), panel_width<T>(), [&](int64_t n0, int64_t n1) {
      packed_gemm(M, K, n1 - n0, a, lda, packed + n0 * K, bias ? bias + n0 : nullptr, out + n0, ldo);
    });
    return true;
  }
  if (small_gemm_pays(M) && b.b.is_contiguous()) {
    const T* w = b.b.data_ptr<T>();
    for_column_shares(M, K, N, sizeof(T), 1, [&](int64_t n0, int64_t n1) {
      small_gemm(M, K, n1 - n0, a, lda, w + n0, N, bias ? bias + n0 : nullptr, out + n0, ldo);
    });
    return true;
  }
  if (small_gemm_nt_pays(M) && b.b.stride(0) == 1) {  // b = W^T, W (N, K) row-major
    const T* w = b.b.data_ptr<T>();
    const int64_t ldw = b.b.stride(1);
    for_column_shares(M, K, N, sizeof(T), 1, [&](int64_t n0, int64_t n1) {
      small_gemm_nt(M, K, n1 - n0, a, lda, w + n0 * ldw, ldw, bias ? bias + n0 : nullptr, out + n0, ldo);
    });
    return true;
  }
  return false;
}

// out (M, N) = a (M, K) @ b + bias (N,) (undefined: none); a, out row-strided views.
void cpu_loop_matmul(const at::Tensor& a, const LoopWeight& b, const at::Tensor& bias, const at::Tensor& out);

// LayerKernels::weight_grad_matmul: grad (M, N) += d^T x for d (K, M), x (K, N), through
// packed_gemm_add_at with x packed (a pass over it per call) where packed_large_products(),
// else ATen's addmm_.
void cpu_weight_grad_matmul(const at::Tensor& grad, const at::Tensor& d, const at::Tensor& x);

}  // namespace nrnm
