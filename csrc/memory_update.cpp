#include "memory_update.h"

#include <algorithm>
#include <tuple>

namespace nrnm {

namespace {

// out (u, N, H) = tanh(x): the kernels' loop or ATen's.
void tanh_into(const LayerKernels& kernels, const at::Tensor& x, at::Tensor& out) {
  if (kernels.memory_tanh) {
    kernels.memory_tanh(x, out);
  } else {
    at::tanh_out(out_tensor(out, x.sizes(), x.options()), x);
  }
}

// The memory rows' queries and their attention over the block: p.mem_rows, and p.qkv, p.attn,
// p.attn_saved (keys | values) or p.q, p.q_keys, p.mixed, p.attn_saved (folded: p.attn is
// p.mixed's product with the values' weights, left to the caller).
void attend(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines, const LayerWeights& w,
            const QueryWeightsT& wq, const LayerKernels& kernels, UpdateParts& p) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  p.mem_rows = memory.reshape({u * N, H});
  if (kernels.keys_values()) {
    p.qkv = loop_matmul(kernels, p.mem_rows, wq.w_in, w.b_in).view({u, N, 3 * H});
    p.attn = kernels.attention_forward(a, p.qkv, lines.kv_emb, lines.kv_hid, p.attn_saved).view({u * N, H});
  } else {
    const int64_t nh = a.num_heads;
    const at::TensorOptions opts = memory.options();
    kernels.loop_matmul(p.mem_rows, wq.w_q, wq.b_q, out_tensor(p.q, {u * N, H}, opts));
    kernels.heads_matmul(p.q, wq.w_k, {}, out_tensor(p.q_keys, {u * N, nh, H}, opts).view({u * N, nh * H}));
    kernels.folded_attention_forward(a, p.q_keys, memory, lines.emb, lines.hid, p.mixed, p.attn_saved);
  }
}

}  // namespace

KeptUpdate::KeptUpdate(const at::Tensor& block, int64_t u, int64_t N, int64_t H, int64_t F) {
  const at::Tensor flat = block.view({-1});
  const int64_t R = u * N;
  int64_t offset = 0;
  const auto field = [&](int64_t width) {
    const at::Tensor t = flat.narrow(0, offset, R * width).view({R, width});
    offset += R * width;
    return t;
  };
  attn = field(H);
  y1_in = field(H);
  hid = field(F);
  y2_in = field(H);
  gates = field(2 * H);
}

void memory_update_forward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                           const LayerWeights& w, const MemoryWeightsT& wt, const LayerKernels& kernels,
                           UpdateParts& p, const KeptUpdate* kept) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  const at::TensorOptions opts = memory.options();
  if (kept) {  // kernels that write into given out tensors write these straight into the kept block
    p.attn = kept->attn;
    p.chain.y1_in = kept->y1_in;
    p.chain.hid = kept->hid;
    p.chain.y2_in = kept->y2_in;
    p.gates = kept->gates.view({u, N, 2 * H});
  }
  attend(memory, a, lines, w, wt.queries, kernels, p);
  if (!kernels.keys_values()) {
    kernels.heads_matmul(p.mixed.view({u * N, a.num_heads * H}), wt.w_v_t, wt.b_v,
                         out_tensor(p.attn, {u * N, H}, opts));
  }

  RowChain& c = p.chain;
  if (kernels.row_chain_forward) {
    kernels.row_chain_forward(p.attn, p.mem_rows, wt.chain, c);
  } else {
    c.y1_in = loop_matmul(kernels, p.attn, wt.chain.w_o, w.b_o).add_(p.mem_rows);
    std::tie(c.y1, c.mean1, c.rstd1) = at::native_layer_norm(c.y1_in, {H}, w.ln1_w, w.ln1_b, kLayerNormEps);
    c.hid = loop_matmul(kernels, c.y1, wt.chain.w_1, w.b_1).relu_();
    c.y2_in = loop_matmul(kernels, c.hid, wt.chain.w_2, w.b_2).add_(c.y1);
    std::tie(c.mt, c.mean2, c.rstd2) = at::native_layer_norm(c.y2_in, {H}, w.ln2_w, w.ln2_b, kLayerNormEps);
  }

  kernels.block_mean(a, lines.emb, p.xh);
  tanh_into(kernels, memory, p.tanh_mem);
  // M' = ig * tanh(Mt) + fg * M, gates = sigma(tanh(M) @ W_gm^T + b_g + xh @ W_gx^T)
  out_tensor(p.gates, {u, N, 2 * H}, opts);
  kernels.loop_matmul(p.tanh_mem.view({u * N, H}), wt.w_gm, w.b_g, p.gates.view({u * N, 2 * H}));
  kernels.loop_matmul(p.xh, wt.w_gx, {}, out_tensor(p.gx, {u, 2 * H}, opts));
  if (kernels.memory_gates_forward) {
    kernels.memory_gates_forward(p.gates, p.gx, c.mt.view({u, N, H}), memory, p.tanh_mt, p.new_mem);
  } else {
    p.gates.add_(p.gx.unsqueeze(1)).sigmoid_();
    p.tanh_mt = c.mt.view({u, N, H}).tanh();
    p.new_mem = p.gates.narrow(2, 0, H) * p.tanh_mt + p.gates.narrow(2, H, H) * memory;
  }
  if (kept) {  // what the kernels made elsewhere
    for (auto [from, to] : {std::tie(p.attn, kept->attn), std::tie(c.y1_in, kept->y1_in), std::tie(c.hid, kept->hid),
                            std::tie(c.y2_in, kept->y2_in), std::tie(p.gates, kept->gates)})
      if (from.data_ptr() != to.data_ptr()) to.copy_(from.view_as(to));
  }
}

namespace {

// The forward's intermediates of an update that the backward reads, from what it kept: the
// queries and the attention computed again, the LayerNorms and the element-wise parts too.
void restore_update(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                    const KeptUpdate& kept, const LayerWeights& w, const QueryWeightsT& wq,
                    const RowChainWeights& chain, const LayerKernels& kernels, UpdateParts& p) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  attend(memory, a, lines, w, wq, kernels, p);
  p.attn = kept.attn;
  RowChain& c = p.chain;
  c.y1_in = kept.y1_in;
  c.hid = kept.hid;
  c.y2_in = kept.y2_in;
  if (kernels.row_chain_norms) {
    kernels.row_chain_norms(c, chain);
  } else {
    std::tie(c.y1, c.mean1, c.rstd1) = at::native_layer_norm(c.y1_in, {H}, w.ln1_w, w.ln1_b, kLayerNormEps);
    std::tie(c.mt, c.mean2, c.rstd2) = at::native_layer_norm(c.y2_in, {H}, w.ln2_w, w.ln2_b, kLayerNormEps);
  }
  kernels.block_mean(a, lines.emb, p.xh);
  tanh_into(kernels, memory, p.tanh_mem);
  p.gates = kept.gates.view({u, N, 2 * H});
  tanh_into(kernels, c.mt.view({u, N, H}), p.tanh_mt);
}

// Rows [i H, (i + 1) H) of a (3H, ...) tensor: the queries', keys' or values' part of w_in, b_in.
at::Tensor in_part(const at::Tensor& t, int64_t i) {
  const int64_t H = t.size(0) / 3;
  return t.narrow(0, i * H, H);
}

}  // namespace

// An update multiplies up to B x N memory rows, and up to B rows for xh.
QueryWeightsT::QueryWeightsT(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh,
                             int64_t updates) {
  const int64_t H = w.w_o.size(0), dh = H / nh;
  if (kernels.keys_values()) {
    w_in = kernels.loop_weight(w.w_in, B * N, updates);
  } else {
    w_q = kernels.loop_weight(in_part(w.w_in, 0), B * N, updates);
    b_q = in_part(w.b_in, 0);
    for (int64_t h = 0; h < nh; ++h)
      w_k.push_back(kernels.loop_weight(in_part(w.w_in, 1).narrow(0, h * dh, dh).t(), B * N, updates));
  }
}

MemoryWeightsT::MemoryWeightsT(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N,
                               int64_t nh, int64_t updates)
    : queries(w, kernels, B, N, nh, updates) {
  const int64_t H = w.w_o.size(0), dh = H / nh;
  if (!kernels.keys_values()) {
    for (int64_t h = 0; h < nh; ++h) {
      w_v_t.push_back(kernels.loop_weight(in_part(w.w_in, 2).narrow(0, h * dh, dh), B * N, updates));
      b_v.push_back(in_part(w.b_in, 2).narrow(0, h * dh, dh));
    }
  }
  chain = {kernels.loop_weight(w.w_o, B * N, updates),
           kernels.loop_weight(w.w_1, B * N, updates),
           kernels.loop_weight(w.w_2, B * N, updates),
           w.b_o, w.b_1, w.b_2, w.ln1_w, w.ln1_b, w.ln2_w, w.ln2_b};
  w_gm = kernels.loop_weight(w.w_gm, B * N, updates);
  w_gx = kernels.loop_weight(w.w_gx, B, updates);
}

MemoryWeights::MemoryWeights(const LayerWeights& w, const LayerKernels& kernels, int64_t B, int64_t N, int64_t nh,
                             int64_t updates) {
  const int64_t H = w.w_o.size(0), dh = H / nh;
  if (!kernels.keys_values()) {
    w_q = kernels.loop_weight(in_part(w.w_in, 0).t(), B * N, updates);
    for (int64_t h = 0; h < nh; ++h) {
      w_k_t.push_back(kernels.loop_weight(in_part(w.w_in, 1).narrow(0, h * dh, dh), B * N, updates));
      w_v.push_back(kernels.loop_weight(in_part(w.w_in, 2).narrow(0, h * dh, dh).t(), B * N, updates));
    }
  }
  chain = {kernels.loop_weight(w.w_o.t(), B * N, updates),
           kernels.loop_weight(w.w_1.t(), B * N, updates),
           kernels.loop_weight(w.w_2.t(), B * N, updates),
           at::Tensor(),
           at::Tensor(),
           at::Tensor(),
           w.ln1_w,
           w.ln1_b,
           w.ln2_w,
           w.ln2_b};
  for (auto [out, weight, rows] : {std::tuple{&w_gm, &w.w_gm, B * N}, std::tuple{&w_gx, &w.w_gx, B},
                                   std::tuple{&w_mr, &w.w_mr, B}})
    *out = kernels.loop_weight(weight->t(), rows, updates);
}

UpdateWeightGrads::UpdateWeightGrads(LayerWeights& grads, int64_t num_heads, WeightGradMatmul matmul)
    : gm(grads.w_gm, grads.b_g, 1, matmul),
      gx(grads.w_gx, at::Tensor(), 1, matmul),
      w2(grads.w_2, grads.b_2, 1, matmul),
      w1(grads.w_1, grads.b_1, 1, matmul),
      wo(grads.w_o, grads.b_o, 1, matmul),
      wq(in_part(grads.w_in, 0), in_part(grads.b_in, 0), 1, matmul),
      wk(in_part(grads.w_in, 1), at::Tensor(), num_heads, matmul),
      wv(in_part(grads.w_in, 2), in_part(grads.b_in, 2), num_heads, matmul) {}

void UpdateWeightGrads::flush() {
  for (WeightGradRows* g : {&gm, &gx, &w2, &w1, &wo, &wq, &wk, &wv}) g->flush();
}

void memory_update_backward(const at::Tensor& memory, const BlockAttention& a, const BlockLines& lines,
                            const KeptUpdate& kept, const at::Tensor& grad_new, const LayerWeights& w,
                            const QueryWeightsT& wq, const MemoryWeights& wb, const LayerKernels& kernels,
                            LayerWeights& grads, UpdateWeightGrads& weight_grads, BlockLineGrads& d_lines,
                            UpdateParts& p, UpdateGradParts& gp) {
  restore_update(memory, a, lines, kept, w, wq, wb.chain, kernels, p);
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2);
  const at::TensorOptions opts = memory.options();
  // M' = ig * tanh(Mt) + fg * M, gates = sigma(xh @ W_gx^T + tanh(M) @ W_gm^T + b_g)
  at::Tensor &d_mem = gp.d_memory, &d_mt = gp.d_mt, &d_pre = gp.d_pre, &d_xh_pre = gp.d_xh_pre;
  if (kernels.memory_gates_backward) {
    kernels.memory_gates_backward(p.gates, p.tanh_mt, memory, p.tanh_mem, grad_new, wb.w_gm, d_mem, d_mt, d_pre,
                                  d_xh_pre);
  } else {
    const at::Tensor ig = p.gates.narrow(2, 0, H), fg = p.gates.narrow(2, H, H);
    d_mem = grad_new * fg;
    d_mt = (grad_new * ig).mul_(1 - p.tanh_mt * p.tanh_mt).reshape({u * N, H});
    d_pre = at::cat({grad_new * p.tanh_mt, grad_new * memory}, 2).mul_(p.gates * (1 - p.gates));
    d_xh_pre = d_pre.sum(1);  // xh is shared by the N slots
    d_mem.add_(loop_matmul(kernels, d_pre.view({u * N, 2 * H}), wb.w_gm)
                   .view({u, N, H})
                   .mul_(1 - p.tanh_mem * p.tanh_mem));
  }
  weight_grads.gm.add(d_pre.view({u * N, 2 * H}), p.tanh_mem.view({u * N, H}));
  weight_grads.gx.add(d_xh_pre, p.xh);
  // xh is the mean of the block's valid embedding rows
  kernels.loop_matmul(d_xh_pre, wb.w_gx, {}, out_tensor(gp.d_xh, {u, H}, opts));
  kernels.block_mean_backward(a, gp.d_xh, d_lines.emb);

  // Mt = LayerNorm_2(Y1 + relu(Y1 @ W_1^T + b_1) @ W_2^T + b_2), Y1 = LayerNorm_1(M + A @ W_o^T + b_o)
  const RowChain& c = p.chain;
  RowChainGrads& g = gp.chain;
  g.ln1_w = grads.ln1_w, g.ln1_b = grads.ln1_b, g.ln2_w = grads.ln2_w, g.ln2_b = grads.ln2_b;
  if (kernels.row_chain_backward) {
    kernels.row_chain_backward(c, d_mt, wb.chain, g);
  } else {
    at::Tensor d_ln_w, d_ln_b;
    std::tie(g.d_y2_in, d_ln_w, d_ln_b) = at::native_layer_norm_backward(d_mt, c.y2_in, {H}, c.mean2, c.rstd2,
                                                                         w.ln2_w, w.ln2_b, {true, true, true});
    g.ln2_w.add_(d_ln_w);
    g.ln2_b.add_(d_ln_b);
    g.d_hid = loop_matmul(kernels, g.d_y2_in, wb.chain.w_2).mul_(c.hid > 0);
    const at::Tensor d_y1 = loop_matmul(kernels, g.d_hid, wb.chain.w_1).add_(g.d_y2_in);
    std::tie(g.d_y1_in, d_ln_w, d_ln_b) = at::native_layer_norm_backward(d_y1, c.y1_in, {H}, c.mean1, c.rstd1,
                                                                         w.ln1_w, w.ln1_b, {true, true, true});
    g.ln1_w.add_(d_ln_w);
    g.ln1_b.add_(d_ln_b);
    g.d_attn = loop_matmul(kernels, g.d_y1_in, wb.chain.w_o);
  }
  weight_grads.w2.add(g.d_y2_in, c.hid);
  weight_grads.w1.add(g.d_hid, c.y1);
  weight_grads.wo.add(g.d_y1_in, p.attn);
  d_mem.add_(g.d_y1_in.view({u, N, H}));

  // attention of the memory queries over the block
  const at::Tensor& d_attn = g.d_attn;
  if (kernels.keys_values()) {
    at::Tensor d_kv_emb, d_kv_hid;  // (u, k, 2H)
    const at::Tensor d_qkv =
        kernels.attention_backward(a, p.qkv, lines.kv_emb, lines.kv_hid, p.attn_saved, d_attn, d_kv_emb, d_kv_hid)
            .view({u * N, 3 * H});
    // keys | values of the block rows are row @ W_kv^T + b_kv; rows in several blocks get several terms
    const at::Tensor w_kv = w.w_in.narrow(0, H, 2 * H);
    at::Tensor g_w_kv = grads.w_in.narrow(0, H, 2 * H), g_b_kv = grads.b_in.narrow(0, H, 2 * H);
    const int64_t k = a.k;
    for (auto [line, d_kv, d_line] : {std::tie(lines.emb, d_kv_emb, d_lines.emb),
                                      std::tie(lines.hid, d_kv_hid, d_lines.hid)}) {
      const at::Tensor d_kv_rows = d_kv.view({u * k, 2 * H});
      g_w_kv.addmm_(d_kv_rows.t(), kernels.gather_block_rows(a, line).view({u * k, H}));
      g_b_kv.add_(d_kv_rows.sum(0));
      kernels.scatter_add_block_rows(a, at::mm(d_kv_rows, w_kv).view({u, k, H}), d_line);
    }
    grads.b_in.add_(d_qkv.sum(0));
    grads.w_in.addmm_(d_qkv.t(), p.mem_rows);
    d_mem.add_(loop_matmul(kernels, d_qkv, w.w_in).view({u, N, H}));
  } else {
    // attn_h = mixed_h @ W_v,h^T + b_v,h; q_keys_h = q_h @ W_k,h; the keys' bias has no gradient
    // (it shifts all of a softmax's scores alike)
    const int64_t nh = a.num_heads;
    weight_grads.wv.add(d_attn, p.mixed.view({u * N, nh * H}));
    kernels.heads_matmul(d_attn, wb.w_v, {}, out_tensor(gp.d_mixed, {u * N, nh, H}, opts).view({u * N, nh * H}));
    kernels.folded_attention_backward(a, p.q_keys, memory, lines.emb, lines.hid, p.attn_saved, gp.d_mixed,
                                      gp.d_q_keys, d_mem, d_lines.emb, d_lines.hid);
    const at::Tensor d_q_keys = gp.d_q_keys.view({u * N, nh * H});
    weight_grads.wk.add(p.q, d_q_keys);
    kernels.heads_matmul(d_q_keys, wb.w_k_t, {}, out_tensor(gp.d_q, {u * N, H}, opts));
    weight_grads.wq.add(gp.d_q, p.mem_rows);
    kernels.loop_matmul(gp.d_q, wb.w_q, {}, out_tensor(gp.d_q_memory, {u * N, H}, opts));
    d_mem.add_(gp.d_q_memory.view({u, N, H}));
  }
}

}  // namespace nrnm
