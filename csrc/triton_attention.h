// The memory update's attention through the Triton kernels (kernels/block_attention.py).
//
// The C++ layer calls the ops nrnm_fast::block_attention_forward / _backward through the
// dispatcher; their schemas are defined here and their kernels are registered from Python
// by nrnm_fast/triton_attention.py (CUDA, and CPU under TRITON_INTERPRET=1). So the time
// loop stays in C++ while the attention runs in Triton, and the CPU tests exercise the same
// C++-to-Triton path the GPU takes.
#pragma once

#include "layer_kernels.h"

namespace nrnm {

// LayerKernels::attention_forward / attention_backward; `saved` is the (u, nh, N, N + 2k)
// attention probabilities in float32 (float64 for float64 input).
at::Tensor triton_attention_forward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                    const at::Tensor& kv_hid, at::Tensor& saved);
at::Tensor triton_attention_backward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                     const at::Tensor& kv_hid, const at::Tensor& saved, const at::Tensor& d_out,
                                     at::Tensor& d_kv_emb, at::Tensor& d_kv_hid);

}  // namespace nrnm
