// A chunk's memory term (r * m) W_mc^T with r = sigma(x W_xr^T + b_r + m W_mr^T), and its
// backward (LayerKernels::memory_term_forward / _backward, csrc/layer_kernels.h) on the CPU:
// the gate rows as one loop and the product through cpu_loop_matmul, where ATen took about
// 5 calls forward and 15 backward per chunk.
//
// Shapes: j steps of the chunk, B batch, N slots, H hidden, NH = N * H. rx, r, d_rx (j, B, NH)
// step rows with unit stride along NH (rx a view of the hoisted input GEMM's output, d_rx of
// its gradient, r of the rows the forward keeps for the backward); mr (B, NH) = m W_mr^T + b_r
// and m (B, NH) contiguous.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

// Writes the memory term (j, B, H) to mc, and r to `r` where defined; w_mc_t is W_mc^T (NH, H).
void memory_term_forward(const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m, const LoopWeight& w_mc_t,
                         at::Tensor& mc, const at::Tensor& r);

// Given d_mc (j, B, H) and the forward's r: writes the gradient of x W_xr^T to d_rx, adds
// the gradient of m (through r * m) to d_m (B, NH) and that of m W_mr^T to d_mr (B, NH);
// writes r * m (j * B, NH) to rm for W_mc's gradient. w_mc is W_mc (H, NH).
void memory_term_backward(const at::Tensor& d_mc, const at::Tensor& r, const at::Tensor& m, const LoopWeight& w_mc,
                          const at::Tensor& d_rx, const at::Tensor& d_m, const at::Tensor& d_mr, at::Tensor& rm);

}  // namespace nrnm
