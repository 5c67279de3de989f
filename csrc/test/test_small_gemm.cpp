// ctest: csrc/cpu/small_gemm.h against at::mm, float and double, every layout of B (row-major
// with a row stride past N; packed from a row-major or a transposed B, in each panel width
// this CPU runs; B = W^T read in place from a row-major W with a row stride past K): every row
// count 1..17, column counts around the kernels' block and panel widths, strided A and C, with
// and without a bias; and packed_gemm_add_at's C += A^T B.

#include <ATen/ATen.h>

#include <cstdio>
#include <vector>

#include "../cpu/small_gemm.h"
#include "../cpu/target_clones.h"

namespace {

template <typename T>
bool check(at::ScalarType dtype, double tol, int layout, int64_t panel_bytes) {
  bool ok = true;
  at::manual_seed(0);
  const at::TensorOptions opts = at::TensorOptions().dtype(dtype);
  for (int64_t M = 1; M <= 17; ++M)
    for (int64_t K : {1, 7, 128, 2048})  // 2048 x 130 floats: a weight that packed_gemm prefetches
      for (int64_t N : {1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 47, 48, 49, 50, 71, 72, 73, 95, 96, 97, 130})
        for (bool with_bias : {false, true}) {
          // A and C are column slices of wider matrices: row strides K + 3 and N + 5.
          const at::Tensor A = at::randn({M, K + 3}, opts).narrow(1, 1, K);
          // layout 0: row-major, rows N + 4 apart; 1: packed from row-major; 2: packed from B = W^T,
          // W (N, K) row-major; 3: B = W^T in place, W's rows K + 2 apart
          const at::Tensor B = layout == 3   ? at::randn({N, K + 2}, opts).narrow(1, 1, K).t()
                               : layout == 2 ? at::randn({N, K}, opts).t()
                               : layout == 0 ? at::randn({K, N + 4}, opts).narrow(1, 1, N)
                                             : at::randn({K, N}, opts);
          const at::Tensor bias = at::randn({N}, opts);
          at::Tensor C_wide = at::full({M, N + 5}, 7.0, opts);
          at::Tensor C = C_wide.narrow(1, 2, N);
          const T* b = with_bias ? bias.data_ptr<T>() : nullptr;
          if (layout == 0) {
            nrnm::small_gemm(M, K, N, A.data_ptr<T>(), A.stride(0), B.data_ptr<T>(), B.stride(0), b,
                             C.data_ptr<T>(), C.stride(0));
          } else if (layout == 3) {
            nrnm::small_gemm_nt(M, K, N, A.data_ptr<T>(), A.stride(0), B.data_ptr<T>(), B.stride(1), b,
                                C.data_ptr<T>(), C.stride(0));
          } else {
            at::Tensor P = at::empty({K * N}, opts);
            nrnm::pack_panels(K, N, B.data_ptr<T>(), B.stride(0), B.stride(1), P.data_ptr<T>(), panel_bytes);
            nrnm::packed_gemm(M, K, N, A.data_ptr<T>(), A.stride(0), P.data_ptr<T>(), b, C.data_ptr<T>(),
                              C.stride(0), panel_bytes);
          }
          at::Tensor expected = at::mm(A.to(at::kDouble), B.to(at::kDouble));
          if (with_bias) expected += bias.to(at::kDouble);
          const double err = (C.to(at::kDouble) - expected).abs().max().item<double>() /
                             std::max(1.0, expected.abs().max().item<double>());
          // Columns outside C must be untouched.
          const bool kept = (C_wide.narrow(1, 0, 2) == 7.0).all().item<bool>() &&
                            (C_wide.narrow(1, N + 2, 3) == 7.0).all().item<bool>();
          if (!(err <= tol) || !kept) {
            std::printf(
                "FAIL %s layout %d (panels of %lld bytes) M=%lld K=%lld N=%lld bias=%d: error %.3e, outside columns "
                "kept %d\n",
                at::toString(dtype), layout, (long long)panel_bytes, (long long)M, (long long)K, (long long)N,
                (int)with_bias, err, (int)kept);
            ok = false;
          }
        }
  return ok;
}

// packed_gemm_add_at: C += A^T B with A (K, M) a column slice (row stride M + 3), C a column
// slice holding random values, B packed from row-major.
template <typename T>
bool check_add_at(at::ScalarType dtype, double tol, int64_t panel_bytes) {
  bool ok = true;
  at::manual_seed(1);
  const at::TensorOptions opts = at::TensorOptions().dtype(dtype);
  for (int64_t M : {1, 2, 3, 7, 8, 9, 15, 16, 17, 40})
    for (int64_t K : {1, 7, 256})
      for (int64_t N : {1, 7, 16, 17, 47, 48, 49, 97, 130}) {
        const at::Tensor A = at::randn({K, M + 3}, opts).narrow(1, 2, M);
        const at::Tensor B = at::randn({K, N}, opts);
        at::Tensor C_wide = at::full({M, N + 5}, 7.0, opts);
        at::Tensor C = C_wide.narrow(1, 2, N);
        C.copy_(at::randn({M, N}, opts));
        const at::Tensor expected = C.to(at::kDouble) + at::mm(A.t().to(at::kDouble), B.to(at::kDouble));
        at::Tensor P = at::empty({K * N}, opts);
        nrnm::pack_panels(K, N, B.data_ptr<T>(), B.stride(0), B.stride(1), P.data_ptr<T>(), panel_bytes);
        nrnm::packed_gemm_add_at(M, K, N, A.data_ptr<T>(), A.stride(0), P.data_ptr<T>(), C.data_ptr<T>(),
                                 C.stride(0), panel_bytes);
        const double err = (C.to(at::kDouble) - expected).abs().max().item<double>() /
                           std::max(1.0, expected.abs().max().item<double>());
        const bool kept = (C_wide.narrow(1, 0, 2) == 7.0).all().item<bool>() &&
                          (C_wide.narrow(1, N + 2, 3) == 7.0).all().item<bool>();
        if (!(err <= tol) || !kept) {
          std::printf("FAIL %s packed_gemm_add_at (panels of %lld bytes) M=%lld K=%lld N=%lld: error %.3e, "
                      "outside columns kept %d\n",
                      at::toString(dtype), (long long)panel_bytes, (long long)M, (long long)K, (long long)N, err,
                      (int)kept);
          ok = false;
        }
      }
  return ok;
}

}  // namespace

int main() {
  bool ok = true;
  std::vector<int64_t> widths{nrnm::kNarrowPanel};
  if (nrnm::avx512_kernels_enabled()) widths.push_back(nrnm::kWidePanel);
  std::printf("panel widths tested: %s\n", widths.size() == 2 ? "32- and 64-byte registers" : "32-byte registers");
  for (int layout : {0, 1, 2, 3}) {
    const bool packed = layout == 1 || layout == 2;  // only packed B has panels
    for (int64_t bytes : packed ? widths : std::vector<int64_t>{nrnm::kNarrowPanel})
      ok = check<float>(at::kFloat, 1e-5, layout, bytes) && check<double>(at::kDouble, 1e-13, layout, bytes) && ok;
  }
  for (int64_t bytes : widths)
    ok = check_add_at<float>(at::kFloat, 1e-5, bytes) && check_add_at<double>(at::kDouble, 1e-13, bytes) && ok;
  std::printf("%s\n", ok ? "small_gemm matches at::mm" : "small_gemm differs from at::mm");
  return ok ? 0 : 1;
}
