// Attention of the N memory queries over one memory block with the key and value projections
// folded out of the block (docs/cpu.md, "The attention with folded projections"): a head's
// score of block row z is q_h . (W_k,h z + b_k,h) = (W_k,h^T q_h) . z + const, and its output
// sum_j p_j (W_v,h z_j + b_v,h) = W_v,h (sum_j p_j z_j) + b_v,h. So the block rows are read as
// they are, in place (memory rows, then the time lines' rows): no keys or values per row.
// The constant q_h . b_k,h cancels in the softmax.
//
// Shapes: u updating elements, N slots, H hidden, nh heads of dh = H / nh, k block size,
// T steps, B batch. Block rows j: the N memory rows, then k embedding rows, then k hidden
// rows (time-line rows t + 1 .. t + k); the first k - n_valid[i] of each k are masked.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

// q_keys: (u * N, nh, H) the queries in row space, W_k,h^T q_h per head (rows element-major,
// then slot); memory (u, N, H); emb, hid: (k + T, B, H) time lines. Writes the mixed rows
// (u * N, nh, H), sum_j p_j z_j per query and head, to mixed and the probabilities to
// probs (u, nh, N, N + 2k), 0 at masked rows. Scores are scaled by 1 / sqrt(dh).
void folded_attention_forward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                              const at::Tensor& emb, const at::Tensor& hid, at::Tensor& mixed, at::Tensor& probs);

// Given d_mixed (u * N, nh, H): writes d_q_keys (u * N, nh, H) and adds the gradients of the
// block rows to d_memory (u, N, H) and to the valid rows of d_emb, d_hid (k + T, B, H).
void folded_attention_backward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                               const at::Tensor& emb, const at::Tensor& hid, const at::Tensor& probs,
                               const at::Tensor& d_mixed, at::Tensor& d_q_keys, at::Tensor& d_memory,
                               at::Tensor& d_emb, at::Tensor& d_hid);

}  // namespace nrnm
