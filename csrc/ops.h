// The layer ops torch.ops.nrnm_fast.layer_forward / layer_backward (schemas in ops.cpp):
// argument checks and the call into csrc/layer.h, for a device's LayerKernels table. Each
// device registers a kernel that passes its table (CPU: ops.cpp, CUDA: cuda/kernels.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "layer_kernels.h"

namespace nrnm {

// (output, h, c, memory, window, ewindow, steps, then what the backward needs: h_line,
// e_line, cells, gates, r, kept, memories; the last five empty without for_backward);
// csrc/layer.h's LayerForward.
using LayerForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor>;

// (grad x, grad h0, c0, memory0, window0, ewindow0, grads of the 24 weights).
using LayerBackwardResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;

LayerForwardResult layer_forward_op(const LayerKernels& kernels, const at::Tensor& x, const at::Tensor& lengths,
                                    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& memory0,
                                    const at::Tensor& window0, const at::Tensor& ewindow0, const at::Tensor& steps0,
                                    const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                    int64_t num_heads, bool for_backward, int64_t batch_shards);

LayerBackwardResult layer_backward_op(const LayerKernels& kernels, const at::Tensor& grad_output,
                                      const at::Tensor& grad_h, const at::Tensor& grad_c,
                                      const at::Tensor& grad_memory, const at::Tensor& grad_window,
                                      const at::Tensor& grad_ewindow, const at::Tensor& x, const at::Tensor& lengths,
                                      const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& steps0,
                                      const at::Tensor& h_line, const at::Tensor& e_line, const at::Tensor& cells,
                                      const at::Tensor& gates, const at::Tensor& r, const at::Tensor& kept,
                                      const at::Tensor& memories,
                                      const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                      int64_t num_heads, bool input_grad, int64_t batch_shards);

}  // namespace nrnm
