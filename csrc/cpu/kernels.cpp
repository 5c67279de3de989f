#include "kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../block_rows.h"
#include "../triton_attention.h"
#include "cell_rows.h"
#include "folded_attention.h"
#include "small_gemm.h"

namespace nrnm {
namespace {

// Element-wise work on fewer units than this per thread costs more in threading than it saves.
constexpr int64_t kGrain = 8192;

int64_t row_grain(int64_t H) { return std::max<int64_t>(1, kGrain / H); }

void step_forward(const StepForward& s) {
  const int64_t B = s.h.size(0), H = s.h.size(1), xw_stride = s.xw.stride(0);
  const int64_t* len = s.lengths.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(s.h.scalar_type(), "nrnm_step_forward", [&] {
    const scalar_t *xw = s.xw.data_ptr<scalar_t>(), *rec = s.rec.data_ptr<scalar_t>(),
                   *mc = s.mc.data_ptr<scalar_t>();
    scalar_t *h = s.h.data_ptr<scalar_t>(), *c = s.c.data_ptr<scalar_t>(), *gates = s.gates.data_ptr<scalar_t>(),
             *cells = s.cells.data_ptr<scalar_t>(), *out = s.out.data_ptr<scalar_t>(),
             *h_row = s.h_row.data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = b * H;
        if (s.t < len[b]) {
          forward_row(H, xw + b * xw_stride, rec + 4 * o, mc + o, h + o, c + o, gates + 4 * o, cells + o, out + o,
                      h_row + o);
        } else {
          std::fill(gates + 4 * o, gates + 4 * o + 4 * H, scalar_t(0));
          std::copy(c + o, c + o + H, cells + o);
          std::copy(h + o, h + o + H, h_row + o);
        }
      }
    });
  });
}

void step_backward(const StepBackward& s) {
  const int64_t B = s.dh.size(0), H = s.dh.size(1), da_stride = s.da.stride(0);
  const int64_t* len = s.lengths.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(s.dh.scalar_type(), "nrnm_step_backward", [&] {
    const scalar_t *gates = s.gates.data_ptr<scalar_t>(), *c_prev = s.c_prev.data_ptr<scalar_t>(),
                   *cells = s.cells.data_ptr<scalar_t>(), *d_out = s.d_out.data_ptr<scalar_t>(),
                   *d_h_row = s.d_h_row.data_ptr<scalar_t>(), *dh = s.dh.data_ptr<scalar_t>();
    scalar_t *dc = s.dc.data_ptr<scalar_t>(), *da = s.da.data_ptr<scalar_t>(), *dmc = s.dmc.data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = b * H;
        if (s.t < len[b]) {
          backward_row(H, gates + 4 * o, c_prev + o, cells + o, dh + o, d_out + o, d_h_row + o, dc + o,
                       da + b * da_stride, dmc + o);
        } else {  // inactive: dh and dc pass on unchanged
          std::fill(da + b * da_stride, da + b * da_stride + 4 * H, scalar_t(0));
          std::fill(dmc + o, dmc + o + H, scalar_t(0));
        }
      }
    });
  });
}

void loop_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, const at::Tensor& out) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const bool small = small_gemm_pays(M) && a.stride(1) == 1 && out.stride(1) == 1 && b.is_contiguous() &&
                     (!bias.defined() || bias.is_contiguous());
  if (!small) return aten_matmul(a, b, bias, out);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "nrnm_loop_matmul", [&] {
    small_gemm(M, K, N, a.data_ptr<scalar_t>(), a.stride(0), b.data_ptr<scalar_t>(),
               bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), out.stride(0));
  });
}

// Each head's product is a few rows by a slice of a weight: views and a dispatch per head cost
// more than the product where small_gemm runs it, so those run on raw pointers.
void heads_matmul(const at::Tensor& a, const std::vector<at::Tensor>& b, const std::vector<at::Tensor>& bias,
                  const at::Tensor& out) {
  const int64_t nh = static_cast<int64_t>(b.size()), M = a.size(0), K = a.size(1) / nh, N = out.size(1) / nh;
  bool raw = small_gemm_pays(M) && a.stride(1) == 1 && out.stride(1) == 1;
  for (int64_t h = 0; h < nh; ++h)
    raw = raw && b[h].is_contiguous() && (bias.empty() || bias[h].is_contiguous());
  if (!raw) {
    for (int64_t h = 0; h < nh; ++h)
      loop_matmul(a.narrow(1, h * K, K), b[h], bias.empty() ? at::Tensor() : bias[h], out.narrow(1, h * N, N));
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "nrnm_heads_matmul", [&] {
    const scalar_t* pa = a.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    for (int64_t h = 0; h < nh; ++h)
      small_gemm(M, K, N, pa + h * K, a.stride(0), b[h].data_ptr<scalar_t>(),
                 bias.empty() ? nullptr : bias[h].data_ptr<scalar_t>(), po + h * N, out.stride(0));
  });
}

at::Tensor loop_weight(const at::Tensor& w, int64_t max_rows) {
  return small_gemm_pays(max_rows) ? w.t().contiguous() : w.t();
}

at::Tensor block_mean(const BlockAttention& a, const at::Tensor& emb) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), B = emb.size(1), H = emb.size(2), k = a.k;
  at::Tensor xh = at::zeros({u, H}, emb.options());
  AT_DISPATCH_FLOATING_TYPES(emb.scalar_type(), "nrnm_block_mean", [&] {
    const scalar_t* e = emb.data_ptr<scalar_t>();
    scalar_t* out = xh.data_ptr<scalar_t>();
    for (int64_t i = 0; i < u; ++i) {
      for (int64_t r = k - a.n_valid[i]; r < k; ++r) {
        const scalar_t* row = e + ((a.t + 1 + r) * B + a.elems[i]) * H;
        for (int64_t d = 0; d < H; ++d) out[i * H + d] += row[d];
      }
      for (int64_t d = 0; d < H; ++d) out[i * H + d] /= static_cast<scalar_t>(a.n_valid[i]);
    }
  });
  return xh;
}

void scatter_add_block_rows(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), B = line.size(1), H = line.size(2), k = a.k;
  const at::Tensor src_rows = rows.contiguous();
  AT_DISPATCH_FLOATING_TYPES(line.scalar_type(), "nrnm_scatter_add_block_rows", [&] {
    const scalar_t* src = src_rows.data_ptr<scalar_t>();
    scalar_t* dst = line.data_ptr<scalar_t>();
    for (int64_t i = 0; i < u; ++i)
      for (int64_t r = k - a.n_valid[i]; r < k; ++r) {
        scalar_t* row = dst + ((a.t + 1 + r) * B + a.elems[i]) * H;
        const scalar_t* g = src + (i * k + r) * H;
        for (int64_t d = 0; d < H; ++d) row[d] += g[d];
      }
  });
}

}  // namespace

const LayerKernels& cpu_kernels(bool triton_attention) {
  static const LayerKernels native{step_forward,
                                   step_backward,
                                   loop_matmul,
                                   loop_weight,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   folded_attention_forward,
                                   folded_attention_backward,
                                   heads_matmul,
                                   scatter_add_block_rows,
                                   block_mean};
  static const LayerKernels triton{step_forward,
                                   step_backward,
                                   loop_matmul,
                                   loop_weight,
                                   triton_attention_forward,
                                   triton_attention_backward,
                                   indexed::gather_block_rows,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   indexed::scatter_add_block_rows,
                                   indexed::block_mean};
  return triton_attention ? triton : native;
}

}  // namespace nrnm
