// The device-specific pieces of one NRNM layer, as a table of functions, so that one
// orchestration (csrc/layer.cpp: schedule, GEMMs, memory updates, backward) runs on every
// device. Tables: csrc/cpu/kernels.h (CPU loops), csrc/cuda/kernels.cpp (CUDA kernels),
// and either may take its attention from the Triton kernels (csrc/triton_attention.h).
//
// Shapes: T steps, B batch, H hidden, N memory slots, G columns of the hoisted input GEMM
// (gates first), u updating elements, k block size, nh heads.
//
// The memory updates' kernels write their results to out arguments (at::Tensor&) that the
// layer keeps from one update to the next: a kernel reuses an out tensor that already has the
// shape it writes (out_tensor below) and makes a new one otherwise, so that a layer call
// allocates them once instead of once per update.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "weight_grad_rows.h"

namespace nrnm {

// The memory blocks of the elements that update after step t.
struct BlockAttention {
  int64_t t;                     // the step after which the elements update
  std::vector<int64_t> elems;    // (u,) batch indices of the updating elements
  std::vector<int64_t> n_valid;  // (u,) rows of each block that exist, min(k, tau)
  int64_t k, num_heads;
  // The same on the layer's device, for kernels that index with tensors (built on the host,
  // so that a GPU gets them in one copy each instead of a dozen small kernels per use).
  at::Tensor elems_index;        // (u,) int64: elems
  at::Tensor n_valid_index;      // (u,) int64: n_valid
  at::Tensor line_rows;          // (u * k,) int64: row (t + 1 + r) * B + elems[i] of a time line viewed ((k + T) * B, H)
  at::Tensor valid_rows;         // (u, k, 1) in the layer's dtype: 1 where block row r exists (r >= k - n_valid[i]), else 0
};

// A weight as the time loop's GEMMs take it (LayerKernels::loop_weight, made once per layer
// call): b (K, N), a view or a copy, and, for kernels that pack it for their GEMM (the CPU's:
// csrc/cpu/small_gemm.h), the same in their layout. A tensor converts to an unpacked one.
struct LoopWeight {
  at::Tensor b;       // (K, N)
  at::Tensor packed;  // (K * N,) b in the kernels' layout, or undefined
  LoopWeight(at::Tensor b = at::Tensor(), at::Tensor packed = at::Tensor())  // NOLINT: implicit on purpose
      : b(std::move(b)), packed(std::move(packed)) {}
};

// One recurrence step of every element (csrc/nrnm_cell.h per unit). Element b is active
// when t < lengths[b]; inactive elements keep h and c, get zero gates, the old cell in
// `cells`, the old h in `h_row`, and an untouched output row.
struct StepForward {
  int64_t t;
  at::Tensor lengths;  // (B,) int64 on the layer's device
  at::Tensor xw;       // (B, 4H + NH) row-strided view: columns [0, 4H) are x @ W_ih^T
  at::Tensor rec;      // (B, 4H) h @ W_hh^T + b_ih + b_hh
  at::Tensor mc;       // (B, H) memory term
  at::Tensor h, c;     // (B, H) state, updated in place
  at::Tensor gates;    // (B, 4H) out: sigma(i), sigma(f), tanh(g), sigma(o)
  at::Tensor cells;    // (B, H) out: the new cell
  at::Tensor out;      // (B, H) out: h' (the layer output row of step t)
  at::Tensor h_row;    // (B, H) out: h' (the hidden time line's row of step t)
};

// Backward of one step: dh (from later steps) + d_out + d_h_row reaches h'.
struct StepBackward {
  int64_t t;
  at::Tensor lengths;           // (B,)
  at::Tensor gates, c_prev, cells;  // (B, 4H), (B, H), (B, H) as saved by the forward
  at::Tensor d_out, d_h_row, dh;    // (B, H)
  at::Tensor dc;                // (B, H) in: of the new cell; out: of the previous cell
  at::Tensor da;                // (B, G) row-strided view: out columns [0, 4H), 0 where inactive
  at::Tensor dmc;               // (B, H) out, 0 where inactive
};

// The steps t0..t1 of a chunk (between memory updates) at once, each a recurrent GEMM and
// StepForward's math, for kernels that need no per-step views of the sequences. "Step rows":
// each step's (B, X) rows contiguous; steps may lie apart (a shard's slice of the batch).
struct ChunkForward {
  int64_t t0, t1;
  int64_t k;                // time-line row k + t holds step t
  bool per_step;            // gates and cells keep a row per step (else every step writes row 0)
  at::Tensor lengths;       // (B,) int64
  at::Tensor xw;            // (t1 - t0 + 1, B, 4H + NH) step rows: columns [0, 4H) of row t - t0 are x_t @ W_ih^T
  LoopWeight w_hh_t;        // (H, 4H) W_hh^T
  at::Tensor b_gates;       // (4H,) b_ih + b_hh
  at::Tensor mc;            // (t1 - t0 + 1, B, H) step rows: the chunk's memory terms
  at::Tensor h, c;          // (B, H) state, updated in place
  at::Tensor rec;           // (B, 4H) scratch
  at::Tensor gates, cells;  // (T or 1, B, 4H), (T or 1, B, H) step rows, out
  at::Tensor out;           // (T, B, H) step rows, out: rows t0..t1
  at::Tensor h_line;        // (k + T, B, H) step rows, out: rows k + t0 .. k + t1
};

// The backward of steps t1 down to t0, each StepBackward's math and dh = da @ W_hh for the
// active elements (inactive ones pass dh and dc on).
struct ChunkBackward {
  int64_t t0, t1;
  int64_t k;                // time-line row k + t holds step t
  at::Tensor lengths;       // (B,) int64
  at::Tensor gates, cells;  // (T, B, 4H), (T, B, H) step rows, as saved by the forward
  at::Tensor c0;            // (B, H) the cell before step 0
  at::Tensor d_out;         // (T, B, H) step rows
  at::Tensor d_h_line;      // (k + T, B, H) step rows
  LoopWeight w_hh;          // (4H, H) W_hh
  at::Tensor dh, dc;        // (B, H) in: after step t1; out: before step t0
  at::Tensor dh_rec;        // (B, H) scratch
  at::Tensor d_xw;          // (t1 - t0 + 1, B, G) step rows, out: columns [0, 4H), 0 where inactive
  at::Tensor d_mc;          // (t1 - t0 + 1, B, H) step rows, out: 0 where inactive
};

// The LayerNorms' eps (docs/spec.md).
constexpr double kLayerNormEps = 1e-5;

// The memory update's row-wise chain after the attention, on its R = u x N memory rows
// (docs/spec.md): y1_in = attn W_o^T + b_o + M, y1 = LayerNorm_1(y1_in),
// hid = relu(y1 W_1^T + b_1), y2_in = hid W_2^T + b_2 + y1, Mt = LayerNorm_2(y2_in).
struct RowChain {
  at::Tensor y1_in, y1, y2_in, mt;  // (R, H)
  at::Tensor hid;                   // (R, F) after the relu
  at::Tensor mean1, rstd1, mean2, rstd2;  // (R, 1) the LayerNorms' statistics
};

// Its weights: the forward's products take b = W^T (W_o^T (H, H), W_1^T (H, F), W_2^T (F, H)),
// the backward's d @ W take b = W (W_o, W_1, W_2).
struct RowChainWeights {
  LoopWeight w_o, w_1, w_2;
  at::Tensor b_o, b_1, b_2;               // (H,), (F,), (H,)
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;  // (H,)
};

// The chain's gradients given d_mt (R, H): of y2_in (R, H), hid (R, F, the relu's mask
// applied), y1_in (R, H) and attn (R, H); the LayerNorms' weight and bias gradients (H,) are
// added to ln1_w .. ln2_b.
struct RowChainGrads {
  at::Tensor d_y2_in, d_hid, d_y1_in, d_attn;
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;
};

// t itself where it already has `shape`, else a new tensor of that shape in t.
inline at::Tensor& out_tensor(at::Tensor& t, at::IntArrayRef shape, const at::TensorOptions& options) {
  if (!t.defined() || t.sizes() != shape) t = at::empty(shape, options);
  return t;
}

struct LayerKernels {
  void (*step_forward)(const StepForward& s);
  void (*step_backward)(const StepBackward& s);
  // Optional (null: the layer runs loop_matmul and step_forward / step_backward per step).
  void (*chunk_forward)(const ChunkForward& c);
  void (*chunk_backward)(const ChunkBackward& c);
  // The time loop's small GEMMs (per step: B rows; per memory update: u x N or u rows):
  // out (M, N) = a (M, K) @ b (K, N) + bias (N,) (undefined: no bias). a and out may be
  // row-strided views.
  void (*loop_matmul)(const at::Tensor& a, const LoopWeight& b, const at::Tensor& bias, const at::Tensor& out);
  // w (N, K) as loop_matmul's b = w^T (K, N) for `uses` products of up to max_rows rows each: a
  // transposed view, or packed where loop_matmul is faster with it, packing included (made once
  // per layer call).
  LoopWeight (*loop_weight)(const at::Tensor& w, int64_t max_rows, int64_t uses);

  // The attention of the N memory queries over the N + 2k rows of each block comes in one of
  // two forms; the other form's functions are null (keys_values() tells which).
  //
  // Keys and values of every time-line row computed once, read in place from the time lines
  // kv_emb, kv_hid (k + T, B, 2H) (row k + t holds step t); qkv (u, N, 3H). Returns (u, N, H)
  // and sets `saved` to what the backward needs.
  at::Tensor (*attention_forward)(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                  const at::Tensor& kv_hid, at::Tensor& saved);
  // Given d_out (u, N, H): returns d_qkv (u, N, 3H) and sets d_kv_emb, d_kv_hid (u, k, 2H),
  // the gradients of each block row's key | value, oldest first, 0 where masked.
  at::Tensor (*attention_backward)(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                   const at::Tensor& kv_hid, const at::Tensor& saved, const at::Tensor& d_out,
                                   at::Tensor& d_kv_emb, at::Tensor& d_kv_hid);
  // The block rows (u, k, H) of a time line (k + T, B, H): rows t + 1 .. t + k of each element.
  at::Tensor (*gather_block_rows)(const BlockAttention& a, const at::Tensor& line);

  // Or the key and value projections folded out of the block (csrc/cpu/folded_attention.h):
  // q_keys (u * N, nh, H), memory (u, N, H), the time lines emb, hid (k + T, B, H); sets
  // mixed (u * N, nh, H), the probability-weighted block rows, and `saved`.
  void (*folded_attention_forward)(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                                   const at::Tensor& emb, const at::Tensor& hid, at::Tensor& mixed,
                                   at::Tensor& saved);
  // Given d_mixed (u * N, nh, H): sets d_q_keys (u * N, nh, H) and adds the block rows'
  // gradients to d_memory (u, N, H), d_emb and d_hid (k + T, B, H).
  void (*folded_attention_backward)(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                                    const at::Tensor& emb, const at::Tensor& hid, const at::Tensor& saved,
                                    const at::Tensor& d_mixed, at::Tensor& d_q_keys, at::Tensor& d_memory,
                                    at::Tensor& d_emb, at::Tensor& d_hid);
  // The per-head products around it: for each head h, out_h = a_h @ b[h] + bias[h] (no bias
  // where `bias` is empty), where a_h, out_h are the h-th of nh equal column blocks of a
  // (M, nh K) and out (M, nh N), row-strided, and b[h] (K, N) is as loop_matmul's b.
  void (*heads_matmul)(const at::Tensor& a, const std::vector<LoopWeight>& b, const std::vector<at::Tensor>& bias,
                       const at::Tensor& out);

  // Optional (null: ATen ops in csrc/memory_update.cpp): the memory update's gated write
  // M' = sigma(pre_i + gx_i) tanh(Mt) + sigma(pre_f + gx_f) M in one pass
  // (csrc/cpu/memory_gates.h: pre (u, N, 2H) becomes the gates; gx (u, 2H); mt, memory
  // (u, N, H); sets tanh_mt and new_memory, M') and its backward through the gates' input
  // pre = tanh(M) W_gm^T + b_g too (w_gm = W_gm as loop_weight makes it; sets d_memory
  // (u, N, H), the gradient of M through the write and through tanh(M), d_mt (u * N, H),
  // d_pre (u, N, 2H) and d_xh_pre (u, 2H), d_pre summed over an element's slots).
  void (*memory_gates_forward)(at::Tensor& pre, const at::Tensor& gx, const at::Tensor& mt, const at::Tensor& memory,
                               at::Tensor& tanh_mt, at::Tensor& new_memory);
  void (*memory_gates_backward)(const at::Tensor& gates, const at::Tensor& tanh_mt, const at::Tensor& memory,
                                const at::Tensor& tanh_memory, const at::Tensor& grad_new, const LoopWeight& w_gm,
                                at::Tensor& d_memory, at::Tensor& d_mt, at::Tensor& d_pre, at::Tensor& d_xh_pre);

  // Optional (null: ATen's tanh): out (u, N, H) = tanh(x (u, N, H)), of the memory and of the
  // candidate memory, in the forward and in the backward's restored update.
  void (*memory_tanh)(const at::Tensor& x, at::Tensor& out);

  // Optional (null: ATen ops in csrc/memory_update.cpp): the row-wise chain in one call each
  // way (csrc/cpu/row_chain.h). attn, memory_rows (R, H).
  void (*row_chain_forward)(const at::Tensor& attn, const at::Tensor& memory_rows, const RowChainWeights& w,
                            RowChain& out);
  void (*row_chain_backward)(const RowChain& f, const at::Tensor& d_mt, const RowChainWeights& w,
                             RowChainGrads& grads);
  // Optional (null: ATen's layer_norm): the chain's LayerNorms from its y1_in and y2_in, for the
  // backward's restored update: y1, mean1, rstd1, mt, mean2, rstd2.
  void (*row_chain_norms)(RowChain& c, const RowChainWeights& w);

  // Optional (null: ATen ops in csrc/layer.cpp): a chunk's memory term mc (j, B, H) =
  // (r * m) W_mc^T, r = sigma(rx + mr), and its backward from the r the forward kept, one call
  // each (csrc/cpu/memory_term.h: rx, r, d_rx (j, B, NH) step rows, mr and m (B, NH); w_mc_t =
  // W_mc^T, w_mc = W_mc as loop_weight makes them; the backward sets rm (j * B, NH) = r * m for
  // W_mc's gradient).
  void (*memory_term_forward)(const at::Tensor& rx, const at::Tensor& mr, const at::Tensor& m,
                              const LoopWeight& w_mc_t, at::Tensor& mc, const at::Tensor& r);
  void (*memory_term_backward)(const at::Tensor& d_mc, const at::Tensor& r, const at::Tensor& m,
                               const LoopWeight& w_mc, const at::Tensor& d_rx, const at::Tensor& d_m,
                               const at::Tensor& d_mr, at::Tensor& rm);

  // Optional (null: ATen's addmm_): the weight gradients' products grad += d^T x, of as many
  // rows as the backward buffers (csrc/weight_grad_rows.h) or a slab of steps holds.
  WeightGradMatmul weight_grad_matmul;

  // Adds the valid block rows (u, k, H) to their rows of a time line (k + T, B, H).
  void (*scatter_add_block_rows)(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line);
  // Sets mean (u, H) to the mean of each block's valid rows of a time line (k + T, B, H).
  void (*block_mean)(const BlockAttention& a, const at::Tensor& line, at::Tensor& mean);
  // Its backward: adds d_mean (u, H) / n_valid to each valid block row of d_line (k + T, B, H).
  void (*block_mean_backward)(const BlockAttention& a, const at::Tensor& d_mean, at::Tensor& d_line);

  // The kernels read BlockAttention's host vectors only: the layer leaves its index tensors
  // undefined (a few views per memory update, each costing about as much as the update's
  // arithmetic at small batch) except where it indexes with them itself.
  bool host_blocks;

  // Rows (steps x batch) per GEMM of the hoisted input product and of its gradient, which the
  // layer computes a slab of steps at a time in one buffer each way (0: every step at once).
  int64_t input_slab_rows;

  bool keys_values() const { return attention_forward != nullptr; }
};

// loop_matmul with ATen's GEMM (the CUDA table's; the CPU's where MKL is faster).
inline void aten_matmul(const at::Tensor& a, const LoopWeight& b, const at::Tensor& bias, const at::Tensor& out) {
  at::Tensor result = out;
  if (bias.defined()) {
    at::addmm_out(result, bias, a, b.b);
  } else {
    at::mm_out(result, a, b.b);
  }
}

// loop_weight as a transposed view (the CUDA table's).
inline LoopWeight transposed_view(const at::Tensor& w, int64_t /*max_rows*/, int64_t /*uses*/) { return w.t(); }

// a @ b + bias through kernels.loop_matmul, into a new (M, N) tensor.
inline at::Tensor loop_matmul(const LayerKernels& kernels, const at::Tensor& a, const LoopWeight& b,
                              const at::Tensor& bias = at::Tensor()) {
  at::Tensor out = at::empty({a.size(0), b.b.size(1)}, a.options());
  kernels.loop_matmul(a, b, bias, out);
  return out;
}

}  // namespace nrnm
