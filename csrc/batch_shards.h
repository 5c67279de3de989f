// The layer (csrc/layer.h) with its batch split into contiguous shards that run in parallel,
// one shard per CPU thread. Each shard's step loop, small per-step GEMMs and memory updates run
// on one core: they scale poorly over threads (a (B, H) x (H, 4H) GEMM per step, ~30 small ops
// per memory update), whole shards do not depend on each other.
//
// Layout: the saved tensors keep their shapes (csrc/layer.h LayerSaved) but are stored
// shard-major: shard i's block, e.g. (k + T, B_i, H) for h_line, follows shard i - 1's in the
// tensor's memory. The backward must be given the same number of shards as the forward.
// Shards are contiguous batch ranges of sizes B / S or B / S + 1, the larger ones first.
#pragma once

#include <ATen/ATen.h>

#include "layer.h"

namespace nrnm {

// layer_forward over min(shards, B) batch shards (shards >= 1); one shard is layer_forward itself.
LayerForward sharded_layer_forward(const at::Tensor& x, const at::Tensor& lengths, const LayerState& initial,
                                   const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                   bool for_backward, int64_t shards);

// layer_backward of a sharded_layer_forward with the same `shards`.
LayerGrads sharded_layer_backward(const at::Tensor& grad_output, const LayerState& grad_final, const at::Tensor& x,
                                  const at::Tensor& lengths, const LayerState& initial, const LayerSaved& saved,
                                  const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                  bool input_grad, int64_t shards);

}  // namespace nrnm
