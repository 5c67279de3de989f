#include "memory_term.h"

#include <ATen/Dispatch.h>

#include "../nrnm_cell.h"
#include "loop_matmul.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// One (step, element) row of NH units: rm = sigma(rx + mr) * m.
template <typename T>
NRNM_ALWAYS_INLINE void forward_row_impl(int64_t NH, const T* __restrict rx, const T* __restrict mr,
                                         const T* __restrict m, T* __restrict rm) {
#pragma omp simd
  for (int64_t d = 0; d < NH; ++d) rm[d] = sigmoid(rx[d] + mr[d]) * m[d];
}

// Its backward given d_rm: rx becomes d(rx) = d_rm m r (1 - r), added to d_mr too; d_m gets
// d_rm r; rm gets r m.
template <typename T>
NRNM_ALWAYS_INLINE void backward_row_impl(int64_t NH, T* __restrict rx, const T* __restrict mr,
                                          const T* __restrict m, const T* __restrict d_rm, T* __restrict rm,
                                          T* __restrict d_m, T* __restrict d_mr) {
#pragma omp simd
  for (int64_t d = 0; d < NH; ++d) {
    const T r = sigmoid(rx[d] + mr[d]), d_rx = d_rm[d] * m[d] * r * (T(1) - r);
    rm[d] = r * m[d];
    d_m[d] += d_rm[d] * r;
    d_mr[d] += d_rx;
    rx[d] = d_rx;
  }
}

NRNM_CPU_CLONES void forward_row(int64_t NH, const float* rx, const float* mr, const float* m, float* rm) {
  forward_row_impl(NH, rx, mr, m, rm);
}

void forward_row(int64_t NH, const double* rx, const double* mr, const double* m, double* rm) {
  forward_row_impl(NH, rx, mr, m, rm);
}

NRNM_CPU_CLONES void backward_row(int64_t NH, float* rx, const float* mr, const float* m, const float* d_rm,
                                  float* rm, float* d_m, float* d_mr) {
  backward_row_impl(NH, rx, mr, m, d_rm, rm, d_m, d_mr);
}

void backward_row(int64_t NH, double* rx, const double* mr, const double* m, const double* d_rm, double* rm,
                  double* d_m, double* d_mr) {
  backward_row_impl(NH, rx, mr, m, d_rm, rm, d_m, d_mr);
}

void check_rows(const char* what, const at::Tensor& rx, std::initializer_list<const at::Tensor*> contiguous) {
  TORCH_CHECK(rx.dim() == 3 && rx.stride(2) == 1, "nrnm_fast: ", what, " takes rx rows with unit stride, got ",
              rx.strides());
  for (const at::Tensor* t : contiguous)
    TORCH_CHECK(t->is_contiguous(), "nrnm_fast: ", what, " takes contiguous state rows, got strides ",
                t->strides(), " for sizes ", t->sizes());
}

}  // namespace

void memory_term_forward(const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m, const LoopWeight& w_mc_t,
                         at::Tensor& mc) {
  check_rows("memory_term_forward", rx, {&mr, &m});
  const int64_t j = rx.size(0), B = rx.size(1), NH = rx.size(2), H = w_mc_t.b.size(1);
  const at::Tensor rm = at::empty({j * B, NH}, rx.options());
  AT_DISPATCH_FLOATING_TYPES(rx.scalar_type(), "nrnm_memory_term_forward", [&] {
    const scalar_t *x = rx.data_ptr<scalar_t>(), *pmr = mr.data_ptr<scalar_t>(), *pm = m.data_ptr<scalar_t>();
    scalar_t* out = rm.data_ptr<scalar_t>();
    for (int64_t t = 0; t < j; ++t)
      for (int64_t b = 0; b < B; ++b)
        forward_row(NH, x + t * rx.stride(0) + b * rx.stride(1), pmr + b * NH, pm + b * NH, out + (t * B + b) * NH);
  });
  cpu_loop_matmul(rm, w_mc_t, at::Tensor(), out_tensor(mc, {j, B, H}, rx.options()).view({j * B, H}));
}

void memory_term_backward(const at::Tensor& d_mc, const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m,
                          const LoopWeight& w_mc, const at::Tensor& d_m, const at::Tensor& d_mr, at::Tensor& rm) {
  check_rows("memory_term_backward", rx, {&d_mc, &mr, &m, &d_m, &d_mr});
  const int64_t j = rx.size(0), B = rx.size(1), NH = rx.size(2), H = d_mc.size(2);
  const at::Tensor d_rm = at::empty({j * B, NH}, rx.options());
  out_tensor(rm, {j * B, NH}, rx.options());
  cpu_loop_matmul(d_mc.view({j * B, H}), w_mc, at::Tensor(), d_rm);
  AT_DISPATCH_FLOATING_TYPES(rx.scalar_type(), "nrnm_memory_term_backward", [&] {
    scalar_t* x = rx.data_ptr<scalar_t>();
    const scalar_t *pmr = mr.data_ptr<scalar_t>(), *pm = m.data_ptr<scalar_t>(), *g = d_rm.data_ptr<scalar_t>();
    scalar_t *out = rm.data_ptr<scalar_t>(), *pdm = d_m.data_ptr<scalar_t>(), *pdmr = d_mr.data_ptr<scalar_t>();
    for (int64_t t = 0; t < j; ++t)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = (t * B + b) * NH;
        backward_row(NH, x + t * rx.stride(0) + b * rx.stride(1), pmr + b * NH, pm + b * NH, g + row, out + row,
                     pdm + b * NH, pdmr + b * NH);
      }
  });
}

}  // namespace nrnm
