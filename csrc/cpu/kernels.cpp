#include "kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>

#include "../block_rows.h"
#include "../triton_attention.h"
#include "cell_rows.h"
#include "folded_attention.h"
#include "loop_matmul.h"
#include "memory_gates.h"
#include "memory_term.h"
#include "row_chain.h"

namespace nrnm {

void cpu_loop_matmul(const at::Tensor& a, const LoopWeight& b, const at::Tensor& bias, const at::Tensor& out) {
  const int64_t M = a.size(0), K = a.size(1), N = b.b.size(1);
  bool done = false;
  if (a.stride(1) == 1 && out.stride(1) == 1 && (!bias.defined() || bias.is_contiguous())) {
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "nrnm_loop_matmul", [&] {
      done = raw_matmul(M, K, N, a.data_ptr<scalar_t>(), a.stride(0), b,
                        bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), out.stride(0));
    });
  }
  if (!done) aten_matmul(a, b, bias, out);
}

void cpu_weight_grad_matmul(const at::Tensor& grad, const at::Tensor& d, const at::Tensor& x) {
  const int64_t K = d.size(0), M = d.size(1), N = x.size(1);
  if (!packed_large_products() || d.stride(1) != 1 || grad.stride(1) != 1 || K == 0) {
    grad.addmm_(d.t(), x);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "nrnm_weight_grad_matmul", [&] {
    at::Tensor packed = at::empty({K * N}, x.options());
    scalar_t* p = packed.data_ptr<scalar_t>();
    pack_panels(K, N, x.data_ptr<scalar_t>(), x.stride(0), x.stride(1), p);
    const scalar_t* a = d.data_ptr<scalar_t>();
    scalar_t* c = grad.data_ptr<scalar_t>();
    for_row_shares(M, K * N, [&](int64_t m0, int64_t m1) {
      packed_gemm_add_at(m1 - m0, K, N, a + m0, d.stride(0), p, c + m0 * grad.stride(0), grad.stride(0));
    });
  });
}

namespace {

// Element-wise work on fewer units than this per thread costs more in threading than it saves.
constexpr int64_t kGrain = 8192;

int64_t row_grain(int64_t H) { return std::max<int64_t>(1, kGrain / H); }

// One step's rows: active elements (t < len[b]) through csrc/nrnm_cell.h; inactive ones keep
// h and c, get zero gates, the old cell and the old h. Pointers to step t's rows.
template <typename T>
void forward_rows(int64_t t, int64_t B, int64_t H, const int64_t* len, const T* xw, int64_t xw_stride, const T* rec,
                  const T* mc, T* h, T* c, T* gates, T* cells, T* out, T* h_row) {
  at::parallel_for(0, B, row_grain(H), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t o = b * H;
      if (t < len[b]) {
        forward_row(H, xw + b * xw_stride, rec + 4 * o, mc + o, h + o, c + o, gates + 4 * o, cells + o, out + o,
                    h_row + o);
      } else {
        std::fill(gates + 4 * o, gates + 4 * o + 4 * H, T(0));
        std::copy(c + o, c + o + H, cells + o);
        std::copy(h + o, h + o + H, h_row + o);
      }
    }
  });
}

template <typename T>
void backward_rows(int64_t t, int64_t B, int64_t H, const int64_t* len, const T* gates, const T* c_prev,
                   const T* cells, const T* dh, const T* d_out, const T* d_h_row, T* dc, T* da, int64_t da_stride,
                   T* dmc) {
  at::parallel_for(0, B, row_grain(H), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t o = b * H;
      if (t < len[b]) {
        backward_row(H, gates + 4 * o, c_prev + o, cells + o, dh + o, d_out + o, d_h_row + o, dc + o,
                     da + b * da_stride, dmc + o);
      } else {  // inactive: dh and dc pass on unchanged
        std::fill(da + b * da_stride, da + b * da_stride + 4 * H, T(0));
        std::fill(dmc + o, dmc + o + H, T(0));
      }
    }
  });
}

void step_forward(const StepForward& s) {
  const int64_t B = s.h.size(0), H = s.h.size(1);
  AT_DISPATCH_FLOATING_TYPES(s.h.scalar_type(), "nrnm_step_forward", [&] {
    forward_rows(s.t, B, H, s.lengths.data_ptr<int64_t>(), s.xw.data_ptr<scalar_t>(), s.xw.stride(0),
                 s.rec.data_ptr<scalar_t>(), s.mc.data_ptr<scalar_t>(), s.h.data_ptr<scalar_t>(),
                 s.c.data_ptr<scalar_t>(), s.gates.data_ptr<scalar_t>(), s.cells.data_ptr<scalar_t>(),
                 s.out.data_ptr<scalar_t>(), s.h_row.data_ptr<scalar_t>());
  });
}

void step_backward(const StepBackward& s) {
  const int64_t B = s.dh.size(0), H = s.dh.size(1);
  AT_DISPATCH_FLOATING_TYPES(s.dh.scalar_type(), "nrnm_step_backward", [&] {
    backward_rows(s.t, B, H, s.lengths.data_ptr<int64_t>(), s.gates.data_ptr<scalar_t>(),
                  s.c_prev.data_ptr<scalar_t>(), s.cells.data_ptr<scalar_t>(), s.dh.data_ptr<scalar_t>(),
                  s.d_out.data_ptr<scalar_t>(), s.d_h_row.data_ptr<scalar_t>(), s.dc.data_ptr<scalar_t>(),
                  s.da.data_ptr<scalar_t>(), s.da.stride(0), s.dmc.data_ptr<scalar_t>());
  });
}

// Steps may lie apart in a (steps, B, X) tensor (a shard's slice of the batch) but each step's
// (B, X) rows must be contiguous: the row loops index them as b * X.
void check_step_rows(const char* what, std::initializer_list<const at::Tensor*> ts) {
  int i = 0;
  for (const at::Tensor* t : ts) {
    const bool rows = t->dim() == 3 && t->stride(2) == 1 && (t->size(1) == 1 || t->stride(1) == t->size(2));
    TORCH_CHECK(rows, "nrnm_fast: ", what, " takes (steps, B, X) tensors with contiguous steps; tensor ", i,
                " has strides ", t->strides(), " for sizes ", t->sizes());
    ++i;
  }
}

// Views of every step's rows would cost more than the step's work at small batch: pointers instead.
void chunk_forward(const ChunkForward& s) {
  check_step_rows("chunk_forward", {&s.xw, &s.mc, &s.gates, &s.cells, &s.out, &s.h_line});
  TORCH_CHECK(s.h.is_contiguous() && s.c.is_contiguous() && s.rec.is_contiguous(),
              "nrnm_fast: chunk_forward takes a contiguous state");
  const int64_t B = s.h.size(0), H = s.h.size(1), G = s.xw.size(2);
  const int64_t* len = s.lengths.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(s.h.scalar_type(), "nrnm_chunk_forward", [&] {
    const scalar_t *xw = s.xw.data_ptr<scalar_t>(), *mc = s.mc.data_ptr<scalar_t>(),
                   *rec = s.rec.data_ptr<scalar_t>();
    scalar_t *h = s.h.data_ptr<scalar_t>(), *c = s.c.data_ptr<scalar_t>(), *gates = s.gates.data_ptr<scalar_t>(),
             *cells = s.cells.data_ptr<scalar_t>(), *out = s.out.data_ptr<scalar_t>(),
             *h_line = s.h_line.data_ptr<scalar_t>();
    for (int64_t t = s.t0; t <= s.t1; ++t) {
      cpu_loop_matmul(s.h, s.w_hh_t, s.b_gates, s.rec);
      const int64_t row = s.per_step ? t : 0;
      forward_rows(t, B, H, len, xw + (t - s.t0) * s.xw.stride(0), G, rec, mc + (t - s.t0) * s.mc.stride(0), h, c,
                   gates + row * s.gates.stride(0), cells + row * s.cells.stride(0), out + t * s.out.stride(0),
                   h_line + (s.k + t) * s.h_line.stride(0));
    }
  });
}

void chunk_backward(const ChunkBackward& s) {
  check_step_rows("chunk_backward", {&s.gates, &s.cells, &s.d_out, &s.d_h_line, &s.d_xw, &s.d_mc});
  TORCH_CHECK(s.c0.is_contiguous() && s.dh.is_contiguous() && s.dc.is_contiguous() && s.dh_rec.is_contiguous(),
              "nrnm_fast: chunk_backward takes a contiguous state");
  const int64_t B = s.dh.size(0), H = s.dh.size(1), G = s.d_xw.size(2);
  const int64_t* len = s.lengths.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(s.dh.scalar_type(), "nrnm_chunk_backward", [&] {
    const scalar_t *gates = s.gates.data_ptr<scalar_t>(), *cells = s.cells.data_ptr<scalar_t>(),
                   *c0 = s.c0.data_ptr<scalar_t>(), *d_out = s.d_out.data_ptr<scalar_t>(),
                   *d_h_line = s.d_h_line.data_ptr<scalar_t>();
    scalar_t *dh = s.dh.data_ptr<scalar_t>(), *dc = s.dc.data_ptr<scalar_t>(),
             *dh_rec = s.dh_rec.data_ptr<scalar_t>(), *d_xw = s.d_xw.data_ptr<scalar_t>(),
             *d_mc = s.d_mc.data_ptr<scalar_t>();
    const int64_t cell_step = s.cells.stride(0);
    for (int64_t t = s.t1; t >= s.t0; --t) {
      scalar_t* da = d_xw + (t - s.t0) * s.d_xw.stride(0);
      backward_rows(t, B, H, len, gates + t * s.gates.stride(0), t > 0 ? cells + (t - 1) * cell_step : c0,
                    cells + t * cell_step, dh, d_out + t * s.d_out.stride(0),
                    d_h_line + (s.k + t) * s.d_h_line.stride(0), dc, da, G, d_mc + (t - s.t0) * s.d_mc.stride(0));
      if (!raw_matmul(B, 4 * H, H, da, G, s.w_hh, static_cast<const scalar_t*>(nullptr), dh_rec, H))
        cpu_loop_matmul(s.d_xw.select(0, t - s.t0).narrow(1, 0, 4 * H), s.w_hh, at::Tensor(), s.dh_rec);
      for (int64_t b = 0; b < B; ++b)  // dh of an inactive element passes on unchanged
        if (t < len[b]) std::copy(dh_rec + b * H, dh_rec + (b + 1) * H, dh + b * H);
    }
  });
}

// Each head's product is a few rows by a slice of a weight: views and a dispatch per head cost
// more than the product, so the heads run on raw pointers where they can.
void heads_matmul(const at::Tensor& a, const std::vector<LoopWeight>& b, const std::vector<at::Tensor>& bias,
                  const at::Tensor& out) {
  const int64_t nh = static_cast<int64_t>(b.size()), M = a.size(0), K = a.size(1) / nh, N = out.size(1) / nh;
  bool raw = a.stride(1) == 1 && out.stride(1) == 1;
  for (int64_t h = 0; h < nh; ++h) raw = raw && (bias.empty() || bias[h].is_contiguous());
  std::vector<bool> done(nh, false);
  if (raw) {
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "nrnm_heads_matmul", [&] {
      const scalar_t* pa = a.data_ptr<scalar_t>();
      scalar_t* po = out.data_ptr<scalar_t>();
      for (int64_t h = 0; h < nh; ++h)
        done[h] = raw_matmul(M, K, N, pa + h * K, a.stride(0), b[h],
                             bias.empty() ? nullptr : bias[h].data_ptr<scalar_t>(), po + h * N, out.stride(0));
    });
  }
  for (int64_t h = 0; h < nh; ++h)
    if (!done[h])
      cpu_loop_matmul(a.narrow(1, h * K, K), b[h], bias.empty() ? at::Tensor() : bias[h], out.narrow(1, h * N, N));
}

LoopWeight loop_weight(const at::Tensor& w, int64_t max_rows, int64_t uses) {
  const at::Tensor b = w.t();
  if (!packed_gemm_pays(max_rows, uses)) return b;
  RECORD_USER_SCOPE("nrnm::pack_weights");
  const int64_t K = b.size(0), N = b.size(1);
  at::Tensor packed = at::empty({K * N}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "nrnm_loop_weight", [&] {
    pack_panels(K, N, b.data_ptr<scalar_t>(), b.stride(0), b.stride(1), packed.data_ptr<scalar_t>());
  });
  return {b, packed};
}

// Calls f(i, r, row) for each valid block row r of each updating element i, with row its H
// units in a time line (k + T, B, H) whose data is `line`.
template <typename T, typename F>
void for_valid_block_rows(const BlockAttention& a, T* line, int64_t B, int64_t H, const F& f) {
  const int64_t u = static_cast<int64_t>(a.elems.size());
  for (int64_t i = 0; i < u; ++i)
    for (int64_t r = a.k - a.n_valid[i]; r < a.k; ++r) f(i, r, line + ((a.t + 1 + r) * B + a.elems[i]) * H);
}

void block_mean(const BlockAttention& a, const at::Tensor& emb, at::Tensor& xh) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), B = emb.size(1), H = emb.size(2);
  out_tensor(xh, {u, H}, emb.options());
  AT_DISPATCH_FLOATING_TYPES(emb.scalar_type(), "nrnm_block_mean", [&] {
    scalar_t* out = xh.data_ptr<scalar_t>();
    std::fill(out, out + u * H, scalar_t(0));
    for_valid_block_rows(a, emb.data_ptr<scalar_t>(), B, H, [&](int64_t i, int64_t, const scalar_t* row) {
      for (int64_t d = 0; d < H; ++d) out[i * H + d] += row[d];
    });
    for (int64_t i = 0; i < u; ++i)
      for (int64_t d = 0; d < H; ++d) out[i * H + d] /= static_cast<scalar_t>(a.n_valid[i]);
  });
}

void block_mean_backward(const BlockAttention& a, const at::Tensor& d_mean, at::Tensor& d_line) {
  const int64_t B = d_line.size(1), H = d_line.size(2);
  const at::Tensor d_rows = d_mean.contiguous();
  AT_DISPATCH_FLOATING_TYPES(d_line.scalar_type(), "nrnm_block_mean_backward", [&] {
    const scalar_t* g = d_rows.data_ptr<scalar_t>();
    for_valid_block_rows(a, d_line.data_ptr<scalar_t>(), B, H, [&](int64_t i, int64_t, scalar_t* row) {
      const scalar_t n = static_cast<scalar_t>(a.n_valid[i]);
      for (int64_t d = 0; d < H; ++d) row[d] += g[i * H + d] / n;
    });
  });
}

void scatter_add_block_rows(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line) {
  const int64_t B = line.size(1), H = line.size(2), k = a.k;
  const at::Tensor src_rows = rows.contiguous();
  AT_DISPATCH_FLOATING_TYPES(line.scalar_type(), "nrnm_scatter_add_block_rows", [&] {
    const scalar_t* src = src_rows.data_ptr<scalar_t>();
    for_valid_block_rows(a, line.data_ptr<scalar_t>(), B, H, [&](int64_t i, int64_t r, scalar_t* row) {
      const scalar_t* g = src + (i * k + r) * H;
      for (int64_t d = 0; d < H; ++d) row[d] += g[d];
    });
  });
}

// The hoisted input product and its gradient in GEMMs of 256 rows (LayerKernels::input_slab_rows):
// MKL (or packed_gemm, where packed_large_products()) runs them about as fast as one over every
// step, and the call's largest tensors, (T, B, G) at once, whose fresh pages cost more to touch
// than their arithmetic, become buffers that the call reuses (docs/cpu.md, "The input product in
// slabs").
constexpr int64_t kInputSlabRows = 256;

}  // namespace

const LayerKernels& cpu_kernels(bool triton_attention) {
  static const LayerKernels native{step_forward,
                                   step_backward,
                                   chunk_forward,
                                   chunk_backward,
                                   cpu_loop_matmul,
                                   loop_weight,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   folded_attention_forward,
                                   folded_attention_backward,
                                   heads_matmul,
                                   memory_gates_forward,
                                   memory_gates_backward,
                                   memory_tanh,
                                   row_chain_forward,
                                   row_chain_backward,
                                   row_chain_norms,
                                   memory_term_forward,
                                   memory_term_backward,
                                   cpu_weight_grad_matmul,
                                   scatter_add_block_rows,
                                   block_mean,
                                   block_mean_backward,
                                   true,
                                   kInputSlabRows};
  static const LayerKernels triton{step_forward,
                                   step_backward,
                                   nullptr,  // the GPU's step-by-step loop, tested here
                                   nullptr,
                                   cpu_loop_matmul,
                                   loop_weight,
                                   triton_attention_forward,
                                   triton_attention_backward,
                                   indexed::gather_block_rows,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,  // the GPU's ATen forms of the gated write, the tanh, the row
                                   nullptr,  // chain and the memory term, tested here
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,  // the weight gradients through ATen, as on the GPU
                                   indexed::scatter_add_block_rows,
                                   indexed::block_mean,
                                   indexed::block_mean_backward,
                                   false,
                                   0};
  return triton_attention ? triton : native;
}

}  // namespace nrnm
