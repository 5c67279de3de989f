#include "memory_update.h"

#include <cmath>
#include <limits>
#include <tuple>

namespace nrnm {
namespace {

constexpr double kLayerNormEps = 1e-5;

// Intermediates of one memory update; rows of the (u * N, .) matrices are (element, slot).
struct UpdateParts {
  at::Tensor mem_rows;             // (u*N, H) memory before the update
  at::Tensor q, keys, values;      // (u, nh, N, dh), (u, nh, N + 2k, dh) x2
  at::Tensor probs;                // (u, nh, N, N + 2k)
  at::Tensor attn;                 // (u*N, H) heads concatenated
  at::Tensor y1_in, y1, mean1, rstd1;
  at::Tensor hid;                  // (u*N, F) after the relu
  at::Tensor y2_in, mt, mean2, rstd2;
  at::Tensor xh;                   // (u, H) mean of the valid embeddings
  at::Tensor tanh_mem;             // (u, N, H)
  at::Tensor gates;                // (u, N, 2H) input gate | forget gate
  at::Tensor tanh_mt;              // (u, N, H)
  at::Tensor new_mem;              // (u, N, H)
};

// (u, rows, H) -> (u, nh, rows, dh)
at::Tensor split_heads(const at::Tensor& t, int64_t nh) {
  return t.reshape({t.size(0), t.size(1), nh, t.size(2) / nh}).transpose(1, 2);
}

// (u, nh, rows, dh) -> (u, rows, H)
at::Tensor merge_heads(const at::Tensor& t) {
  return t.transpose(1, 2).reshape({t.size(0), t.size(2), t.size(1) * t.size(3)});
}

UpdateParts forward_parts(const MemoryBlock& b, const LayerWeights& w, int64_t nh) {
  const int64_t u = b.memory.size(0), N = b.memory.size(1), H = b.memory.size(2);
  UpdateParts p;
  p.mem_rows = b.memory.reshape({u * N, H});

  // Only the memory rows are queries; their keys and values join the block's.
  const at::Tensor qkv = at::addmm(w.b_in, p.mem_rows, w.w_in.t()).view({u, N, 3 * H});
  p.q = split_heads(qkv.narrow(2, 0, H), nh);
  p.keys = split_heads(at::cat({qkv.narrow(2, H, H), b.kv_emb.narrow(2, 0, H), b.kv_hid.narrow(2, 0, H)}, 1), nh);
  p.values =
      split_heads(at::cat({qkv.narrow(2, 2 * H, H), b.kv_emb.narrow(2, H, H), b.kv_hid.narrow(2, H, H)}, 1), nh);
  const double scale = 1.0 / std::sqrt(static_cast<double>(H / nh));
  at::Tensor scores = at::matmul(p.q, p.keys.transpose(-1, -2)).mul_(scale);
  const at::Tensor key_valid = at::cat({at::ones({u, N}, b.valid.options()), b.valid, b.valid}, 1);
  scores.masked_fill_(key_valid.logical_not().view({u, 1, 1, -1}), -std::numeric_limits<double>::infinity());
  p.probs = at::softmax(scores, -1);
  p.attn = merge_heads(at::matmul(p.probs, p.values)).reshape({u * N, H});

  p.y1_in = at::addmm(w.b_o, p.attn, w.w_o.t()).add_(p.mem_rows);
  std::tie(p.y1, p.mean1, p.rstd1) = at::native_layer_norm(p.y1_in, {H}, w.ln1_w, w.ln1_b, kLayerNormEps);
  p.hid = at::addmm(w.b_1, p.y1, w.w_1.t()).relu_();
  p.y2_in = at::addmm(w.b_2, p.hid, w.w_2.t()).add_(p.y1);
  std::tie(p.mt, p.mean2, p.rstd2) = at::native_layer_norm(p.y2_in, {H}, w.ln2_w, w.ln2_b, kLayerNormEps);

  p.xh = (b.emb * b.valid.unsqueeze(-1).to(b.emb.scalar_type())).sum(1).div_(b.n_valid);
  p.tanh_mem = b.memory.tanh();
  p.gates = at::addmm(w.b_g, p.tanh_mem.reshape({u * N, H}), w.w_gm.t())
                .view({u, N, 2 * H})
                .add_(at::mm(p.xh, w.w_gx.t()).unsqueeze(1))
                .sigmoid_();
  p.tanh_mt = p.mt.view({u, N, H}).tanh();
  p.new_mem = p.gates.narrow(2, 0, H) * p.tanh_mt + p.gates.narrow(2, H, H) * b.memory;
  return p;
}

}  // namespace

at::Tensor memory_update_forward(const MemoryBlock& block, const LayerWeights& w, int64_t num_heads) {
  return forward_parts(block, w, num_heads).new_mem;
}

MemoryBlockGrads memory_update_backward(const MemoryBlock& block, const at::Tensor& grad_new, const LayerWeights& w,
                                        int64_t num_heads, LayerWeights& grads) {
  const UpdateParts p = forward_parts(block, w, num_heads);
  const int64_t u = block.memory.size(0), N = block.memory.size(1), H = block.memory.size(2);
  const int64_t k = block.emb.size(1), nh = num_heads;
  const at::Tensor ig = p.gates.narrow(2, 0, H), fg = p.gates.narrow(2, H, H);

  // M' = ig * tanh(Mt) + fg * M
  at::Tensor d_mem = grad_new * fg;
  const at::Tensor d_mt = (grad_new * ig).mul_(1 - p.tanh_mt * p.tanh_mt).reshape({u * N, H});
  const at::Tensor d_pre = at::cat({grad_new * p.tanh_mt, grad_new * block.memory}, 2).mul_(p.gates * (1 - p.gates));

  // gates = sigma(xh @ W_gx^T + tanh(M) @ W_gm^T + b_g)
  const at::Tensor d_pre_rows = d_pre.reshape({u * N, 2 * H});
  grads.b_g.add_(d_pre_rows.sum(0));
  grads.w_gm.addmm_(d_pre_rows.t(), p.tanh_mem.reshape({u * N, H}));
  const at::Tensor d_xh_pre = d_pre.sum(1);  // xh is shared by the N slots
  grads.w_gx.addmm_(d_xh_pre.t(), p.xh);
  d_mem.add_(at::mm(d_pre_rows, w.w_gm).view({u, N, H}).mul_(1 - p.tanh_mem * p.tanh_mem));
  const at::Tensor d_emb =
      block.valid.unsqueeze(-1).to(grad_new.scalar_type()) * at::mm(d_xh_pre, w.w_gx).div_(block.n_valid).unsqueeze(1);

  // Mt = LayerNorm_2(Y1 + relu(Y1 @ W_1^T + b_1) @ W_2^T + b_2)
  at::Tensor d_y2_in, d_ln2_w, d_ln2_b;
  std::tie(d_y2_in, d_ln2_w, d_ln2_b) = at::native_layer_norm_backward(
      d_mt, p.y2_in, {H}, p.mean2, p.rstd2, w.ln2_w, w.ln2_b, {true, true, true});
  grads.ln2_w.add_(d_ln2_w);
  grads.ln2_b.add_(d_ln2_b);
  grads.b_2.add_(d_y2_in.sum(0));
  grads.w_2.addmm_(d_y2_in.t(), p.hid);
  const at::Tensor d_hid = at::mm(d_y2_in, w.w_2).mul_(p.hid > 0);
  grads.b_1.add_(d_hid.sum(0));
  grads.w_1.addmm_(d_hid.t(), p.y1);
  const at::Tensor d_y1 = at::addmm(d_y2_in, d_hid, w.w_1);

  // Y1 = LayerNorm_1(M + A @ W_o^T + b_o)
  at::Tensor d_y1_in, d_ln1_w, d_ln1_b;
  std::tie(d_y1_in, d_ln1_w, d_ln1_b) = at::native_layer_norm_backward(
      d_y1, p.y1_in, {H}, p.mean1, p.rstd1, w.ln1_w, w.ln1_b, {true, true, true});
  grads.ln1_w.add_(d_ln1_w);
  grads.ln1_b.add_(d_ln1_b);
  d_mem.add_(d_y1_in.view({u, N, H}));
  grads.b_o.add_(d_y1_in.sum(0));
  grads.w_o.addmm_(d_y1_in.t(), p.attn);

  // A = softmax(Q K^T / sqrt(dh)) V per head
  const at::Tensor d_attn = split_heads(at::mm(d_y1_in, w.w_o).view({u, N, H}), nh);
  const at::Tensor d_probs = at::matmul(d_attn, p.values.transpose(-1, -2));
  const at::Tensor d_values = merge_heads(at::matmul(p.probs.transpose(-1, -2), d_attn));
  const double scale = 1.0 / std::sqrt(static_cast<double>(H / nh));
  const at::Tensor d_scores =
      at::_softmax_backward_data(d_probs, p.probs, -1, p.probs.scalar_type()).mul_(scale);
  const at::Tensor d_q = merge_heads(at::matmul(d_scores, p.keys));
  const at::Tensor d_keys = merge_heads(at::matmul(d_scores.transpose(-1, -2), p.q));

  // q, k, v of the memory rows
  const at::Tensor d_qkv =
      at::cat({d_q, d_keys.narrow(1, 0, N), d_values.narrow(1, 0, N)}, 2).reshape({u * N, 3 * H});
  grads.b_in.add_(d_qkv.sum(0));
  grads.w_in.addmm_(d_qkv.t(), p.mem_rows);
  d_mem.add_(at::mm(d_qkv, w.w_in).view({u, N, H}));

  MemoryBlockGrads g;
  g.memory = d_mem;
  g.kv_emb = at::cat({d_keys.narrow(1, N, k), d_values.narrow(1, N, k)}, 2);
  g.kv_hid = at::cat({d_keys.narrow(1, N + k, k), d_values.narrow(1, N + k, k)}, 2);
  g.emb = d_emb;
  return g;
}

}  // namespace nrnm
