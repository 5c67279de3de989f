// A weight gradient G += D^T X summed over the rows of many memory updates (or chunks) in one
// GEMM per full buffer. One update has only u x N rows (the GEMM's inner size), so its own
// GEMM would read and write all of G for little arithmetic; the rows are copied into a
// buffer instead, and the GEMM runs when the buffer is full and at flush().
//
// Shapes: r rows per add; a, b the per-head block sizes; heads >= 1.
#pragma once

#include <ATen/ATen.h>

namespace nrnm {

// grad (M, N) += d^T x for d (K, M) and x (K, N), row-strided views (LayerKernels::weight_grad_matmul).
using WeightGradMatmul = void (*)(const at::Tensor& grad, const at::Tensor& d, const at::Tensor& x);

// Through `matmul`, or ATen's addmm_ where it is null.
inline void add_weight_grad(WeightGradMatmul matmul, const at::Tensor& grad, const at::Tensor& d,
                            const at::Tensor& x) {
  if (matmul) {
    matmul(grad, d, x);
  } else {
    grad.addmm_(d.t(), x);
  }
}

class WeightGradRows {
 public:
  // grad (heads * a, b): head h's block, rows [h a, (h + 1) a), gets D[:, h a : (h + 1) a]^T @
  // X[:, h b : (h + 1) b], through `matmul` (null: ATen's addmm_). bias (heads * a,) or
  // undefined: gets the column sums of D.
  WeightGradRows(at::Tensor grad, at::Tensor bias = at::Tensor(), int64_t heads = 1,
                 WeightGradMatmul matmul = nullptr);
  // d (r, heads * a), x (r, heads * b); strided views are fine.
  void add(const at::Tensor& d, const at::Tensor& x);
  // Adds the buffered rows to the gradients; call once the last add is done.
  void flush();

 private:
  void accumulate(const at::Tensor& d, const at::Tensor& x);

  at::Tensor grad_, bias_;
  int64_t heads_;
  WeightGradMatmul matmul_;
  at::Tensor d_rows_, x_rows_;  // (capacity, heads * a), (capacity, heads * b), made at the first add
  int64_t used_ = 0;
};

}  // namespace nrnm
