// The memory update's gated write, M' = sigma(a_i) * tanh(Mt) + sigma(a_f) * M, as one loop
// over the u x N x H units (docs/spec.md), forward and backward. The ATen form of the same
// math is csrc/memory_update.cpp's fallback for tables without these.
//
// Shapes: u updating elements, N slots, H hidden; all tensors contiguous.
#pragma once

#include <ATen/ATen.h>

namespace nrnm {

// pre (u, N, 2H): tanh(M) W_gm^T + b_g, overwritten by the gates sigma(pre + gx) (input gate
// | forget gate); gx (u, 2H): xh W_gx^T, shared by an element's slots; mt, memory (u, N, H).
// Writes tanh(mt) to tanh_mt (u, N, H) (allocated here) and returns M' (u, N, H).
at::Tensor memory_gates_forward(at::Tensor& pre, const at::Tensor& gx, const at::Tensor& mt,
                                const at::Tensor& memory, at::Tensor& tanh_mt);

// Given grad_new (u, N, H), the gradient of M': sets d_memory (u, N, H) to its direct part
// grad_new * fg, d_mt (u * N, H) and d_pre (u, N, 2H), the gradient of the gates' input.
void memory_gates_backward(const at::Tensor& gates, const at::Tensor& tanh_mt, const at::Tensor& memory,
                           const at::Tensor& grad_new, at::Tensor& d_memory, at::Tensor& d_mt, at::Tensor& d_pre);

}  // namespace nrnm
