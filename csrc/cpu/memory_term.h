// A chunk's memory term (r * m) W_mc^T with r = sigma(x W_xr^T + b_r + m W_mr^T), and its
// backward (LayerKernels::memory_term_forward / _backward, csrc/layer_kernels.h) on the CPU:
// the gate rows as one loop and the product through cpu_loop_matmul, where ATen took about
// 5 calls forward and 15 backward per chunk.
//
// Shapes: j steps of the chunk, B batch, N slots, H hidden, NH = N * H. rx (j, B, NH) step
// rows with unit stride along NH (a view of the hoisted input GEMM's output or of its
// gradient); mr (B, NH) = m W_mr^T + b_r and m (B, NH) contiguous.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

// Writes the memory term (j, B, H) to mc; w_mc_t is W_mc^T (NH, H).
void memory_term_forward(const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m, const LoopWeight& w_mc_t,
                         at::Tensor& mc);

// Given d_mc (j, B, H): overwrites rx with the gradient of x W_xr^T, adds the gradient of m
// (through r * m) to d_m (B, NH) and that of m W_mr^T to d_mr (B, NH); writes r * m
// (j * B, NH) to rm for W_mc's gradient. w_mc is W_mc (H, NH).
void memory_term_backward(const at::Tensor& d_mc, const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m,
                          const LoopWeight& w_mc, const at::Tensor& d_m, const at::Tensor& d_mr, at::Tensor& rm);

}  // namespace nrnm
