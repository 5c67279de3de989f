// The CPU's LayerKernels::loop_matmul and its raw-pointer core, shared by the table's loops.
//
// Shapes: a (M, K) with row stride lda; b (K, N); bias (N,) or null; out (M, N) with row
// stride ldo.
#pragma once

#include "../layer_kernels.h"
#include "small_gemm.h"

namespace nrnm {

// out = a @ b + bias on raw rows where b is packed, or is contiguous and small_gemm pays, or is
// a row-major W's transpose and small_gemm_nt pays; false elsewhere (the caller falls back to ATen).
template <typename T>
bool raw_matmul(int64_t M, int64_t K, int64_t N, const T* a, int64_t lda, const LoopWeight& b, const T* bias, T* out,
                int64_t ldo) {
  if (b.packed.defined()) {
    TORCH_CHECK(b.packed.numel() == K * N, "nrnm_fast: a packed weight of ", b.packed.numel(), " elements for a (",
                K, ", ", N, ") product");
    packed_gemm(M, K, N, a, lda, b.packed.data_ptr<T>(), bias, out, ldo);
    return true;
  }
  if (small_gemm_pays(M) && b.b.is_contiguous()) {
    small_gemm(M, K, N, a, lda, b.b.data_ptr<T>(), bias, out, ldo);
    return true;
  }
  if (small_gemm_nt_pays(M) && b.b.stride(0) == 1) {  // b = W^T, W (N, K) row-major
    small_gemm_nt(M, K, N, a, lda, b.b.data_ptr<T>(), b.b.stride(1), bias, out, ldo);
    return true;
  }
  return false;
}

// out (M, N) = a (M, K) @ b + bias (N,) (undefined: none); a, out row-strided views.
void cpu_loop_matmul(const at::Tensor& a, const LoopWeight& b, const at::Tensor& bias, const at::Tensor& out);

}  // namespace nrnm
