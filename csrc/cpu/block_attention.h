// Attention of the N memory queries over one memory block, per (updating element, head),
// reading keys and values in place from the time lines: no block is gathered or copied.
//
// Shapes: u updating elements, N slots, H hidden, nh heads of dh = H / nh, k block size,
// T steps, B batch. Block keys j: the N memory rows, then k embedding rows, then k hidden
// rows (time-line rows t + 1 .. t + k); the first k - n_valid[i] of each k are masked.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

// qkv: (u, N, 3H) q | k | v of the memory rows; kv_emb, kv_hid: (k + T, B, 2H) keys | values
// of every time-line row. Returns the attention output (u, N, H), heads concatenated, and
// writes the probabilities to probs (u, nh, N, N + 2k), 0 at masked keys.
at::Tensor block_attention_forward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                   const at::Tensor& kv_hid, at::Tensor& probs);

// Given d_out (u, N, H): returns d_qkv (u, N, 3H) and writes the gradients of the block's
// keys / values to d_kv_emb, d_kv_hid (u, k, 2H), block rows oldest first (0 where masked).
at::Tensor block_attention_backward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                    const at::Tensor& kv_hid, const at::Tensor& probs, const at::Tensor& d_out,
                                    at::Tensor& d_kv_emb, at::Tensor& d_kv_hid);

}  // namespace nrnm
