// The memory update of docs/spec.md for the elements that update after one step, with the
// attention computed for the N memory queries only, over keys and values of the time lines
// or with the key and value projections folded out of the block (csrc/cpu/folded_attention.h).
//
// Shapes: u updating elements, N slots, H hidden, k block size, T steps, B batch.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "layer.h"
#include "layer_kernels.h"
#include "weight_grad_rows.h"

namespace nrnm {

// The time lines the memory blocks read: row k + t holds step t, rows 0..k-1 the initial windows.
struct BlockLines {
  at::Tensor emb;     // (k + T, B, H) the input embeddings
  at::Tensor hid;     // (k + T, B, H) the hidden states
  // Only for kernels that read keys and values (LayerKernels::keys_values()), else undefined:
  at::Tensor kv_emb;  // (k + T, B, 2H) keys | values of the input embeddings
  at::Tensor kv_hid;  // (k + T, B, 2H) keys | values of the hidden states
};

// Gradients of the time lines' rows (k + T, B, H), accumulated by the memory updates.
struct BlockLineGrads {
  at::Tensor emb, hid;
};

// The memory update's weights as the right operands of its products x @ W^T, i.e. W^T (in,
// out), as LayerKernels::loop_weight makes them (views, or packed copies), once per layer call
// for a batch of B with N memory slots and nh heads of dh. F MLP features.
struct MemoryWeightsT {
  LoopWeight w_in;                // (H, 3H) q | k | v; kernels that read keys and values
  LoopWeight w_q;                 // (H, H); the folded attention (the others' are undefined)
  // The folded attention's per-head weights (LayerKernels::heads_matmul's b and bias):
  std::vector<LoopWeight> w_k;    // nh x (dh, H): W_k,h
  std::vector<LoopWeight> w_v_t;  // nh x (H, dh): W_v,h^T
  std::vector<at::Tensor> b_v;    // nh x (dh,): b_v,h (views of b_in)
  RowChainWeights chain;  // W_o^T, W_1^T, W_2^T with the chain's biases and LayerNorms
  LoopWeight w_gm;  // (H, 2H)
  LoopWeight w_gx;  // (H, 2H)
  LoopWeight w_mr;  // (NH, NH), for m @ W_mr^T after each update
  MemoryWeightsT(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh);
};

// The same weights untransposed, W (out, in), for the backward's products d @ W.
struct MemoryWeights {
  LoopWeight w_q;                 // (H, H) the queries' rows of w_in; the folded attention
  std::vector<LoopWeight> w_k_t;  // nh x (H, dh): W_k,h^T; the folded attention
  std::vector<LoopWeight> w_v;    // nh x (dh, H): W_v,h; the folded attention
  RowChainWeights chain;  // W_o, W_1, W_2 with the LayerNorms' weights (no biases)
  LoopWeight w_gm;  // (2H, H)
  LoopWeight w_gx;  // (2H, H)
  LoopWeight w_mr;  // (NH, NH)
  MemoryWeights(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh);
};

// The memory updates' weight gradients over a whole backward pass, in few GEMMs; flush()
// after the last update. (The keys | values path adds those of w_in / b_in directly.)
struct UpdateWeightGrads {
  WeightGradRows gm;  // w_gm, b_g
  WeightGradRows gx;  // w_gx
  WeightGradRows w2;  // w_2, b_2
  WeightGradRows w1;  // w_1, b_1
  WeightGradRows wo;  // w_o, b_o
  WeightGradRows wq;  // the queries' rows of w_in, b_in (folded attention)
  WeightGradRows wk;  // the keys' rows of w_in, per head (folded attention)
  WeightGradRows wv;  // the values' rows of w_in, b_in, per head (folded attention)
  UpdateWeightGrads(LayerWeights& grads, int64_t num_heads);
  void flush();
};

// The updated memory (u, N, H) of the elements a.elems, whose memory is `memory` (u, N, H).
at::Tensor memory_update_forward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                                 const LayerWeights& w, const MemoryWeightsT& wt, const LayerKernels& kernels);

// Given grad_new (u, N, H), the gradient of the updated memory, returns the gradient of
// `memory`; adds the gradients of the block rows to d_lines, those of the LayerNorms to
// `grads` and those of the other weights the update uses to `weight_grads` (or, on the keys |
// values path, of w_in and b_in to `grads`). Recomputes the forward pass (weights wt); wb
// holds the weights untransposed for the backward's products.
at::Tensor memory_update_backward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                                  const at::Tensor& grad_new, const LayerWeights& w, const MemoryWeightsT& wt,
                                  const MemoryWeights& wb, const LayerKernels& kernels, LayerWeights& grads,
                                  UpdateWeightGrads& weight_grads, BlockLineGrads& d_lines);

}  // namespace nrnm
