// ctest: csrc/weight_grad_rows.h against the direct sum of D^T X per add, float64: row counts
// that fill the buffer exactly, overflow it mid-way and exceed it in one add; one and three
// heads; with and without a bias; strided rows of D and X, and strided columns of X; through
// ATen's addmm_ and through the CPU's packed GEMM (where the CPU has AVX-512).

#include <ATen/ATen.h>

#include <cstdio>
#include <vector>

#include "../cpu/loop_matmul.h"
#include "../cpu/small_gemm.h"
#include "../cpu/target_clones.h"
#include "../weight_grad_rows.h"

namespace {

bool check(int64_t heads, bool with_bias, const std::vector<int64_t>& adds, nrnm::WeightGradMatmul matmul) {
  const int64_t a = 5, b = 7;
  const at::TensorOptions opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor grad0 = at::randn({heads * a, b}, opts), bias0 = at::randn({heads * a}, opts);
  at::Tensor grad = grad0.clone(), bias = with_bias ? bias0.clone() : at::Tensor();
  at::Tensor expected = grad0.clone(), expected_bias = bias0.clone();
  {
    nrnm::WeightGradRows rows(grad, bias, heads, matmul);
    bool transposed = false;
    for (int64_t r : adds) {
      // column slices of wider matrices: strided rows (copied row by row); x of every other add
      // transposed: strided columns (copied by ATen)
      const at::Tensor d = at::randn({r, heads * a + 2}, opts).narrow(1, 1, heads * a);
      const at::Tensor x = transposed ? at::randn({heads * b, r}, opts).t()
                                      : at::randn({r, heads * b + 3}, opts).narrow(1, 2, heads * b);
      transposed = !transposed;
      rows.add(d, x);
      for (int64_t h = 0; h < heads; ++h)
        expected.narrow(0, h * a, a).add_(at::mm(d.narrow(1, h * a, a).t(), x.narrow(1, h * b, b)));
      expected_bias.add_(d.sum(0));
    }
    rows.flush();
  }
  bool ok = at::allclose(grad, expected, 1e-12, 1e-12);
  if (with_bias) ok = ok && at::allclose(bias, expected_bias, 1e-12, 1e-12);
  if (!ok)
    std::printf("FAIL: heads %ld, bias %d, %zu adds, %s\n", static_cast<long>(heads), with_bias, adds.size(),
                matmul ? "packed GEMM" : "addmm_");
  return ok;
}

}  // namespace

int main() {
  at::manual_seed(0);
  bool ok = true;
  // The buffer holds 256 rows at these widths (kTargetRows): 64 x 4 fills it exactly, then 3
  // rows start a new one; 100 x 3 overflows it mid-way; 300 after 10 exceeds it in one add.
  const std::vector<std::vector<int64_t>> sequences = {{64, 64, 64, 64, 3}, {100, 100, 100}, {10, 300, 7}, {1}};
  std::vector<nrnm::WeightGradMatmul> matmuls{nullptr};
  if (nrnm::avx512_kernels_enabled()) {
    nrnm::set_packed_large_products(true);
    matmuls.push_back(nrnm::cpu_weight_grad_matmul);
  }
  for (nrnm::WeightGradMatmul matmul : matmuls)
    for (int64_t heads : {1, 3})
      for (bool with_bias : {false, true})
        for (const auto& adds : sequences) ok = check(heads, with_bias, adds, matmul) && ok;
  std::printf(ok ? "weight_grad_rows: all passed\n" : "weight_grad_rows: FAILED\n");
  return ok ? 0 : 1;
}
