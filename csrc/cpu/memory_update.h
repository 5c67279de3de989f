// The memory update of docs/spec.md for the elements that update after one step,
// with the attention computed for the N memory queries only.
//
// Shapes: u updating elements, N slots, H hidden, k block size.
#pragma once

#include <ATen/ATen.h>

#include "layer.h"

namespace nrnm {

// The memory block of the updating elements. Block rows are oldest first; only the last
// n_valid rows of each element exist (the others are masked out of keys and mean).
struct MemoryBlock {
  at::Tensor memory;   // (u, N, H) memory before the update
  at::Tensor kv_emb;   // (u, k, 2H) keys | values of the block's input embeddings
  at::Tensor kv_hid;   // (u, k, 2H) keys | values of the block's hidden states
  at::Tensor emb;      // (u, k, H) the block's input embeddings
  at::Tensor valid;    // (u, k) bool: the rows that exist
  at::Tensor n_valid;  // (u, 1) rows that exist, min(k, tau), in the memory's dtype
};

// The updated memory (u, N, H).
at::Tensor memory_update_forward(const MemoryBlock& block, const LayerWeights& w, int64_t num_heads);

struct MemoryBlockGrads {
  at::Tensor memory;  // (u, N, H)
  at::Tensor kv_emb;  // (u, k, 2H)
  at::Tensor kv_hid;  // (u, k, 2H)
  at::Tensor emb;     // (u, k, H)
};

// Gradients of the block given grad_new (u, N, H), the gradient of the updated memory.
// Recomputes the forward pass. Adds the weight gradients to `grads` (w_in, b_in, w_o,
// b_o, ln1_*, w_1, b_1, w_2, b_2, ln2_*, w_gx, w_gm, b_g).
MemoryBlockGrads memory_update_backward(const MemoryBlock& block, const at::Tensor& grad_new, const LayerWeights& w,
                                        int64_t num_heads, LayerWeights& grads);

}  // namespace nrnm
