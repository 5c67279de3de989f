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
// for a batch of B with N memory slots and nh heads of dh, and `updates` memory updates. F MLP
// features. (m @ W_mr^T after each update is the layer's: ForwardLoopWeights::w_mr_t.)
//
// The queries' and the attention's (all the backward recomputes, with KeptUpdate):
struct QueryWeightsT {
  LoopWeight w_in;              // (H, 3H) q | k | v; kernels that read keys and values
  LoopWeight w_q;               // (H, H); the folded attention (the others' are undefined)
  at::Tensor b_q;               // (H,) the queries' bias (a view of b_in); the folded attention
  std::vector<LoopWeight> w_k;  // nh x (dh, H): W_k,h, the folded attention's (heads_matmul's b)
  QueryWeightsT(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh,
                int64_t updates);
};

// All of them, for the forward:
struct MemoryWeightsT {
  QueryWeightsT queries;
  // The folded attention's values (LayerKernels::heads_matmul's b and bias):
  std::vector<LoopWeight> w_v_t;  // nh x (H, dh): W_v,h^T
  std::vector<at::Tensor> b_v;    // nh x (dh,): b_v,h (views of b_in)
  RowChainWeights chain;  // W_o^T, W_1^T, W_2^T with the chain's biases and LayerNorms
  LoopWeight w_gm;  // (H, 2H)
  LoopWeight w_gx;  // (H, 2H)
  MemoryWeightsT(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh, int64_t updates);
};

// The same weights untransposed, W (out, in), for the backward's products d @ W.
struct MemoryWeights {
  LoopWeight w_q;                 // (H, H) the queries' rows of w_in; the folded attention
  std::vector<LoopWeight> w_k_t;  // nh x (H, dh): W_k,h^T; the folded attention
  std::vector<LoopWeight> w_v;    // nh x (dh, H): W_v,h; the folded attention
  RowChainWeights chain;  // W_o, W_1, W_2 with the LayerNorms' weights (no biases)
  LoopWeight w_gm;  // (2H, H)
  LoopWeight w_gx;  // (2H, H)
  LoopWeight w_mr;  // (NH, NH) for the gradient of m @ W_mr^T
  MemoryWeights(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh, int64_t updates);
};

// The memory updates' weight gradients over a whole backward pass, in few GEMMs (through
// `matmul`: LayerKernels::weight_grad_matmul); flush() after the last update. (The keys | values
// path adds those of w_in / b_in directly.)
struct UpdateWeightGrads {
  WeightGradRows gm;  // w_gm, b_g
  WeightGradRows gx;  // w_gx
  WeightGradRows w2;  // w_2, b_2
  WeightGradRows w1;  // w_1, b_1
  WeightGradRows wo;  // w_o, b_o
  WeightGradRows wq;  // the queries' rows of w_in, b_in (folded attention)
  WeightGradRows wk;  // the keys' rows of w_in, per head (folded attention)
  WeightGradRows wv;  // the values' rows of w_in, b_in, per head (folded attention)
  UpdateWeightGrads(LayerWeights& grads, int64_t num_heads, WeightGradMatmul matmul);
  void flush();
};

// Intermediates of one memory update; rows of the (u * N, .) matrices are (element, slot). A
// layer call keeps one for all its updates: the kernels write into the tensors the previous
// update left where the shapes match (out_tensor, csrc/layer_kernels.h).
struct UpdateParts {
  at::Tensor mem_rows;    // (u*N, H) memory before the update (a view of it)
  at::Tensor qkv;         // (u, N, 3H) q | k | v of the memory rows (keys_values())
  at::Tensor q;           // (u*N, H) queries (folded attention)
  at::Tensor q_keys;      // (u*N, nh, H) W_k,h^T q_h (folded attention)
  at::Tensor mixed;       // (u*N, nh, H) probability-weighted block rows (folded attention)
  at::Tensor attn_saved;  // what the attention kernel keeps for its backward
  at::Tensor attn;        // (u*N, H) heads concatenated
  RowChain chain;         // through W_o, LayerNorm_1, the MLP and LayerNorm_2 to mt
  at::Tensor xh;          // (u, H) mean of the valid embeddings
  at::Tensor tanh_mem;    // (u, N, H)
  at::Tensor gates;       // (u, N, 2H) input gate | forget gate
  at::Tensor gx;          // (u, 2H) xh @ W_gx^T
  at::Tensor tanh_mt;     // (u, N, H)
  at::Tensor new_mem;     // (u, N, H) the updated memory
};

// The backward's intermediates of one update, kept likewise.
struct UpdateGradParts {
  at::Tensor d_memory;    // (u, N, H) the gradient of the memory before the update
  at::Tensor d_mt;        // (u*N, H)
  at::Tensor d_pre;       // (u, N, 2H) of the gates' input
  at::Tensor d_xh_pre;    // (u, 2H) d_pre summed over an element's slots
  at::Tensor d_xh;        // (u, H)
  RowChainGrads chain;
  at::Tensor d_mixed;     // (u*N, nh, H) (folded attention)
  at::Tensor d_q_keys;    // (u*N, nh, H) (folded attention)
  at::Tensor d_q;         // (u*N, H) (folded attention)
  at::Tensor d_q_memory;  // (u*N, H) d_q @ W_q: the memory's gradient through the queries
};

// What the forward keeps of one memory update for the backward: the outputs of its products
// after the attention, for its u x N memory rows. Views of the update's block (u, N * width(H,
// F)), contiguous, each field a contiguous part of it.
struct KeptUpdate {
  at::Tensor attn;   // (u*N, H) heads concatenated
  at::Tensor y1_in;  // (u*N, H) memory + attn @ W_o^T + b_o
  at::Tensor hid;    // (u*N, F) relu(y1 @ W_1^T + b_1)
  at::Tensor y2_in;  // (u*N, H) y1 + hid @ W_2^T + b_2
  at::Tensor gates;  // (u*N, 2H) input gate | forget gate
  KeptUpdate(const at::Tensor& block, int64_t u, int64_t N, int64_t H, int64_t F);
  static int64_t width(int64_t H, int64_t F) { return 5 * H + F; }
};

// Updates the memory (u, N, H) of the elements a.elems: parts.new_mem (u, N, H) is the result.
// parts.new_mem must not be `memory`'s storage. Writes `kept` where it is given.
void memory_update_forward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                           const LayerWeights& w, const MemoryWeightsT& wt, const LayerKernels& kernels,
                           UpdateParts& parts, const KeptUpdate* kept = nullptr);

// Given grad_new (u, N, H), the gradient of the updated memory, sets grad_parts.d_memory to
// the gradient of `memory`; adds the gradients of the block rows to d_lines, those of the
// LayerNorms to `grads` and those of the other weights the update uses to `weight_grads` (or,
// on the keys | values path, of w_in and b_in to `grads`). Restores the forward's intermediates
// into `parts` from what it kept, recomputing the queries and the attention (weights wq); wb
// holds the weights untransposed for the backward's products. grad_parts.d_memory must not
// be grad_new's storage.
void memory_update_backward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                            const KeptUpdate& kept, const at::Tensor& grad_new, const LayerWeights& w,
                            const QueryWeightsT& wq, const MemoryWeights& wb, const LayerKernels& kernels,
                            LayerWeights& grads, UpdateWeightGrads& weight_grads, BlockLineGrads& d_lines,
                            UpdateParts& parts, UpdateGradParts& grad_parts);

}  // namespace nrnm
