// The memory update's row-wise chain after the attention (LayerKernels::row_chain_forward /
// row_chain_backward, csrc/layer_kernels.h) on the CPU: its three products through
// cpu_loop_matmul, the residual adds, LayerNorms and relu as loops over the rows. The ATen
// form (csrc/memory_update.cpp's fallback) is about a dozen calls each way per update, each
// 1-15 us here: more than the arithmetic on a shard's few memory rows.
//
// Shapes: R = u x N memory rows, H hidden, F MLP features; attn, memory_rows contiguous.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

void row_chain_forward(const at::Tensor& attn, const at::Tensor& memory_rows, const RowChainWeights& w,
                       RowChain& out);
void row_chain_backward(const RowChain& f, const at::Tensor& d_mt, const RowChainWeights& w, RowChainGrads& grads);
void row_chain_norms(RowChain& c, const RowChainWeights& w);

}  // namespace nrnm
