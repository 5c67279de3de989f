// The memory update's gated write, M' = sigma(a_i) * tanh(Mt) + sigma(a_f) * M, as one loop
// over the u x N x H units (docs/spec.md), forward and backward, and the tanh of its inputs. The ATen form of the same
// math is csrc/memory_update.cpp's fallback for tables without these.
//
// Shapes: u updating elements, N slots, H hidden; all tensors contiguous.
#pragma once

#include <ATen/ATen.h>

#include "../layer_kernels.h"

namespace nrnm {

// out = tanh(x), x and out (u, N, H): LayerKernels::memory_tanh. ATen's float tanh is MKL's
// vector library, which took 2.5 ns an element on a Zen 5 EPYC (its sigmoid 0.25), 3% of a
// fwd+bwd at T256-B32-H128; this loop takes csrc/nrnm_cell.h's gate_tanh.
void memory_tanh(const at::Tensor& x, at::Tensor& out);

// pre (u, N, 2H): tanh(M) W_gm^T + b_g, overwritten by the gates sigma(pre + gx) (input gate
// | forget gate); gx (u, 2H): xh W_gx^T, shared by an element's slots; mt, memory (u, N, H).
// Writes tanh(mt) to tanh_mt (u, N, H) and M' to new_memory (u, N, H).
void memory_gates_forward(at::Tensor& pre, const at::Tensor& gx, const at::Tensor& mt, const at::Tensor& memory,
                          at::Tensor& tanh_mt, at::Tensor& new_memory);

// Given grad_new (u, N, H), the gradient of M': sets d_mt (u * N, H), d_pre (u, N, 2H) the
// gradient of the gates' input, d_xh_pre (u, 2H) its sum over an element's slots, and
// d_memory (u, N, H) to the gradient of M through the write (grad_new * fg) and through the
// gates' input tanh(M) W_gm^T ((d_pre W_gm) (1 - tanh(M)^2)); tanh_memory (u, N, H) is tanh(M),
// w_gm is W_gm (2H, H) as loop_weight makes it.
void memory_gates_backward(const at::Tensor& gates, const at::Tensor& tanh_mt, const at::Tensor& memory,
                           const at::Tensor& tanh_memory, const at::Tensor& grad_new, const LoopWeight& w_gm,
                           at::Tensor& d_memory, at::Tensor& d_mt, at::Tensor& d_pre, at::Tensor& d_xh_pre);

}  // namespace nrnm
