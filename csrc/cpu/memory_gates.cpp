#include "memory_gates.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <memory>

#include "../nrnm_cell.h"
#include "loop_matmul.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// One slot's H units; gx is the element's row. The ATen chain this replaces was a dozen
// calls per update, each ~1-3 us here: more than the arithmetic at a few elements.
template <typename T>
NRNM_ALWAYS_INLINE void forward_slot_impl(int64_t H, T* __restrict pre, const T* __restrict gx,
                                          const T* __restrict mt, const T* __restrict memory,
                                          T* __restrict tanh_mt, T* __restrict new_mem) {
#pragma omp simd
  for (int64_t d = 0; d < H; ++d) {
    const T ig = sigmoid(pre[d] + gx[d]), fg = sigmoid(pre[H + d] + gx[H + d]), tm = gate_tanh(mt[d]);
    pre[d] = ig;
    pre[H + d] = fg;
    tanh_mt[d] = tm;
    new_mem[d] = ig * tm + fg * memory[d];
  }
}

template <typename T>
NRNM_ALWAYS_INLINE void backward_slot_impl(int64_t H, const T* __restrict gates, const T* __restrict tanh_mt,
                                           const T* __restrict memory, const T* __restrict grad,
                                           T* __restrict d_memory, T* __restrict d_mt, T* __restrict d_pre) {
#pragma omp simd
  for (int64_t d = 0; d < H; ++d) {
    const T ig = gates[d], fg = gates[H + d], tm = tanh_mt[d], g = grad[d];
    d_memory[d] = g * fg;
    d_mt[d] = g * ig * (T(1) - tm * tm);
    d_pre[d] = g * tm * ig * (T(1) - ig);
    d_pre[H + d] = g * memory[d] * fg * (T(1) - fg);
  }
}

NRNM_CPU_CLONES void forward_slot(int64_t H, float* pre, const float* gx, const float* mt, const float* memory,
                                  float* tanh_mt, float* new_mem) {
  forward_slot_impl(H, pre, gx, mt, memory, tanh_mt, new_mem);
}

void forward_slot(int64_t H, double* pre, const double* gx, const double* mt, const double* memory,
                  double* tanh_mt, double* new_mem) {
  forward_slot_impl(H, pre, gx, mt, memory, tanh_mt, new_mem);
}

NRNM_CPU_CLONES void backward_slot(int64_t H, const float* gates, const float* tanh_mt, const float* memory,
                                   const float* grad, float* d_memory, float* d_mt, float* d_pre) {
  backward_slot_impl(H, gates, tanh_mt, memory, grad, d_memory, d_mt, d_pre);
}

void backward_slot(int64_t H, const double* gates, const double* tanh_mt, const double* memory, const double* grad,
                   double* d_memory, double* d_mt, double* d_pre) {
  backward_slot_impl(H, gates, tanh_mt, memory, grad, d_memory, d_mt, d_pre);
}

template <typename T>
NRNM_ALWAYS_INLINE void tanh_impl(int64_t n, const T* __restrict x, T* __restrict out) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) out[e] = gate_tanh(x[e]);
}

NRNM_CPU_CLONES void tanh_elements(int64_t n, const float* x, float* out) { tanh_impl(n, x, out); }

void tanh_elements(int64_t n, const double* x, double* out) { tanh_impl(n, x, out); }

}  // namespace

void memory_tanh(const at::Tensor& x, at::Tensor& out) {
  const at::Tensor c = x.contiguous();
  out_tensor(out, c.sizes(), c.options());
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "nrnm_memory_tanh", [&] {
    tanh_elements(c.numel(), c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
}

void memory_gates_forward(at::Tensor& pre, const at::Tensor& gx, const at::Tensor& mt, const at::Tensor& memory,
                          at::Tensor& tanh_mt, at::Tensor& new_memory) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  TORCH_CHECK(pre.is_contiguous() && gx.is_contiguous() && pre.size(2) == 2 * H && gx.size(1) == 2 * H,
              "nrnm_fast: memory_gates_forward takes contiguous (u, N, 2H) and (u, 2H) gate inputs");
  const at::Tensor m = memory.contiguous(), t = mt.contiguous();
  out_tensor(tanh_mt, m.sizes(), m.options());
  out_tensor(new_memory, m.sizes(), m.options());
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "nrnm_memory_gates_forward", [&] {
    for (int64_t i = 0; i < u; ++i)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t row = i * N + n;
        forward_slot(H, pre.data_ptr<scalar_t>() + row * 2 * H, gx.data_ptr<scalar_t>() + i * 2 * H,
                     t.data_ptr<scalar_t>() + row * H, m.data_ptr<scalar_t>() + row * H,
                     tanh_mt.data_ptr<scalar_t>() + row * H, new_memory.data_ptr<scalar_t>() + row * H);
      }
  });
}

void memory_gates_backward(const at::Tensor& gates, const at::Tensor& tanh_mt, const at::Tensor& memory,
                           const at::Tensor& tanh_memory, const at::Tensor& grad_new, const LoopWeight& w_gm,
                           at::Tensor& d_memory, at::Tensor& d_mt, at::Tensor& d_pre, at::Tensor& d_xh_pre) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  TORCH_CHECK(gates.is_contiguous() && tanh_mt.is_contiguous() && tanh_memory.is_contiguous(),
              "nrnm_fast: memory_gates_backward takes the contiguous gates, tanh(Mt) and tanh(M) of the forward");
  const at::Tensor m = memory.contiguous(), g = grad_new.contiguous();
  out_tensor(d_memory, m.sizes(), m.options());
  out_tensor(d_mt, {u * N, H}, m.options());
  out_tensor(d_pre, {u, N, 2 * H}, m.options());
  out_tensor(d_xh_pre, {u, 2 * H}, m.options());
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "nrnm_memory_gates_backward", [&] {
    using T = scalar_t;
    T *dm = d_memory.data_ptr<T>(), *dp = d_pre.data_ptr<T>(), *dx = d_xh_pre.data_ptr<T>();
    for (int64_t row = 0; row < u * N; ++row)
      backward_slot(H, gates.data_ptr<T>() + row * 2 * H, tanh_mt.data_ptr<T>() + row * H,
                    m.data_ptr<T>() + row * H, g.data_ptr<T>() + row * H, dm + row * H,
                    d_mt.data_ptr<T>() + row * H, dp + row * 2 * H);
    for (int64_t i = 0; i < u; ++i) {  // xh is shared by the element's slots
      std::fill(dx + i * 2 * H, dx + (i + 1) * 2 * H, T(0));
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < 2 * H; ++c) dx[i * 2 * H + c] += dp[(i * N + n) * 2 * H + c];
    }
    const std::unique_ptr<T[]> through_tanh(new T[u * N * H]);  // d_pre W_gm, every element written
    if (!raw_matmul(u * N, 2 * H, H, static_cast<const T*>(dp), 2 * H, w_gm, static_cast<const T*>(nullptr),
                    through_tanh.get(), H))
      cpu_loop_matmul(d_pre.view({u * N, 2 * H}), w_gm, at::Tensor(),
                      at::from_blob(through_tanh.get(), {u * N, H}, m.options()));
    const T *tm = tanh_memory.data_ptr<T>(), *tt = through_tanh.get();
    for (int64_t e = 0; e < u * N * H; ++e) dm[e] += tt[e] * (T(1) - tm[e] * tm[e]);
  });
}

}  // namespace nrnm
