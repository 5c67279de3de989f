// Gather, scatter-add and mean of memory-block rows with ATen index ops: one
// implementation for every device (the CUDA path and the Triton path use it; the CPU
// path has its own loops in csrc/cpu/kernels.cpp).
//
// Shapes: u updating elements, k block size, T steps, B batch, H hidden.
#pragma once

#include "layer_kernels.h"

namespace nrnm {
namespace indexed {

// The block rows (u, k, H) of a time line (k + T, B, H).
at::Tensor gather_block_rows(const BlockAttention& a, const at::Tensor& line);
// Adds the valid block rows (u, k, H) to their rows of a time line (k + T, B, H).
void scatter_add_block_rows(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line);
// Sets mean (u, H) to the mean of each block's valid rows of a time line (k + T, B, H).
void block_mean(const BlockAttention& a, const at::Tensor& line, at::Tensor& mean);
// Its backward: adds d_mean (u, H) / n_valid to each valid block row of d_line (k + T, B, H).
void block_mean_backward(const BlockAttention& a, const at::Tensor& d_mean, at::Tensor& d_line);

}  // namespace indexed
}  // namespace nrnm
