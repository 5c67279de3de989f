#include "memory_term.h"

#include <ATen/Dispatch.h>

#include "../nrnm_cell.h"
#include "loop_matmul.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// One (step, element) row of NH units: rm = r * m with r = sigma(rx + mr), also written to r
// unless it is null.
template <typename T>
NRNM_ALWAYS_INLINE void forward_row_impl(int64_t NH, const T* __restrict rx, const T* __restrict mr,
                                         const T* __restrict m, T* __restrict rm, T* __restrict r) {
  if (r) {
#pragma omp simd
    for (int64_t d = 0; d < NH; ++d) {
      const T g = sigmoid(rx[d] + mr[d]);
      r[d] = g;
      rm[d] = g * m[d];
    }
  } else {
#pragma omp simd
    for (int64_t d = 0; d < NH; ++d) rm[d] = sigmoid(rx[d] + mr[d]) * m[d];
  }
}

// Its backward given d_rm: d_rx = d_rm m r (1 - r), added to d_mr too; d_m gets d_rm r; rm
// gets r m.
template <typename T>
NRNM_ALWAYS_INLINE void backward_row_impl(int64_t NH, const T* __restrict r, const T* __restrict m,
                                          const T* __restrict d_rm, T* __restrict d_rx, T* __restrict rm,
                                          T* __restrict d_m, T* __restrict d_mr) {
#pragma omp simd
  for (int64_t d = 0; d < NH; ++d) {
    const T g = d_rm[d] * m[d] * r[d] * (T(1) - r[d]);
    rm[d] = r[d] * m[d];
    d_m[d] += d_rm[d] * r[d];
    d_mr[d] += g;
    d_rx[d] = g;
  }
}

NRNM_CPU_CLONES void forward_row(int64_t NH, const float* rx, const float* mr, const float* m, float* rm, float* r) {
  forward_row_impl(NH, rx, mr, m, rm, r);
}

void forward_row(int64_t NH, const double* rx, const double* mr, const double* m, double* rm, double* r) {
  forward_row_impl(NH, rx, mr, m, rm, r);
}

NRNM_CPU_CLONES void backward_row(int64_t NH, const float* r, const float* m, const float* d_rm, float* d_rx,
                                  float* rm, float* d_m, float* d_mr) {
  backward_row_impl(NH, r, m, d_rm, d_rx, rm, d_m, d_mr);
}

void backward_row(int64_t NH, const double* r, const double* m, const double* d_rm, double* d_rx, double* rm,
                  double* d_m, double* d_mr) {
  backward_row_impl(NH, r, m, d_rm, d_rx, rm, d_m, d_mr);
}

// Step rows (j, B, NH) with unit stride along NH (undefined ones pass).
void check_rows(const char* what, std::initializer_list<const at::Tensor*> rows,
                std::initializer_list<const at::Tensor*> contiguous) {
  for (const at::Tensor* t : rows)
    TORCH_CHECK(!t->defined() || (t->dim() == 3 && t->stride(2) == 1), "nrnm_fast: ", what,
                " takes step rows with unit stride, got strides ", t->strides());
  for (const at::Tensor* t : contiguous)
    TORCH_CHECK(t->is_contiguous(), "nrnm_fast: ", what, " takes contiguous state rows, got strides ",
                t->strides(), " for sizes ", t->sizes());
}

}  // namespace

void memory_term_forward(const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m, const LoopWeight& w_mc_t,
                         at::Tensor& mc, const at::Tensor& r) {
  check_rows("memory_term_forward", {&rx, &r}, {&mr, &m});
  const int64_t j = rx.size(0), B = rx.size(1), NH = rx.size(2), H = w_mc_t.b.size(1);
  const at::Tensor rm = at::empty({j * B, NH}, rx.options());
  AT_DISPATCH_FLOATING_TYPES(rx.scalar_type(), "nrnm_memory_term_forward", [&] {
    const scalar_t *x = rx.data_ptr<scalar_t>(), *pmr = mr.data_ptr<scalar_t>(), *pm = m.data_ptr<scalar_t>();
    scalar_t* out = rm.data_ptr<scalar_t>();
    scalar_t* pr = r.defined() ? r.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = 0; t < j; ++t)
      for (int64_t b = 0; b < B; ++b)
        forward_row(NH, x + t * rx.stride(0) + b * rx.stride(1), pmr + b * NH, pm + b * NH, out + (t * B + b) * NH,
                    pr ? pr + t * r.stride(0) + b * r.stride(1) : nullptr);
  });
  cpu_loop_matmul(rm, w_mc_t, at::Tensor(), out_tensor(mc, {j, B, H}, rx.options()).view({j * B, H}));
}

void memory_term_backward(const at::Tensor& d_mc, const at::Tensor& r, const at::Tensor& m, const LoopWeight& w_mc,
                          const at::Tensor& d_rx, const at::Tensor& d_m, const at::Tensor& d_mr, at::Tensor& rm) {
  check_rows("memory_term_backward", {&r, &d_rx}, {&d_mc, &m, &d_m, &d_mr});
  const int64_t j = r.size(0), B = r.size(1), NH = r.size(2), H = d_mc.size(2);
  const at::Tensor d_rm = at::empty({j * B, NH}, r.options());
  out_tensor(rm, {j * B, NH}, r.options());
  cpu_loop_matmul(d_mc.view({j * B, H}), w_mc, at::Tensor(), d_rm);
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "nrnm_memory_term_backward", [&] {
    const scalar_t *pr = r.data_ptr<scalar_t>(), *pm = m.data_ptr<scalar_t>(), *g = d_rm.data_ptr<scalar_t>();
    scalar_t *dx = d_rx.data_ptr<scalar_t>(), *out = rm.data_ptr<scalar_t>();
    scalar_t *pdm = d_m.data_ptr<scalar_t>(), *pdmr = d_mr.data_ptr<scalar_t>();
    for (int64_t t = 0; t < j; ++t)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = (t * B + b) * NH;
        backward_row(NH, pr + t * r.stride(0) + b * r.stride(1), pm + b * NH, g + row,
                     dx + t * d_rx.stride(0) + b * d_rx.stride(1), out + row, pdm + b * NH, pdmr + b * NH);
      }
  });
}

}  // namespace nrnm
