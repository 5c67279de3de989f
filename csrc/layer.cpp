// The layer over a whole sequence (csrc/layer.h), following ARCHITECTURE.md's plan:
// input-side GEMMs hoisted out of the step loop (over slabs of many steps); the memory term
// of each chunk between memory updates in one GEMM; per step one recurrent GEMM and one fused
// element-wise loop; memory updates with N query rows (the key and value projections folded
// out of the block, or keys and values computed once per step); weight gradients as GEMMs
// over all steps after the backward loop. Its phases are named profiler scopes ("nrnm::steps",
// ...: free unless a profiler listens), which benchmarks/phases.py sums under torch.profiler.

#include "layer.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "loop_weights.h"
#include "memory_update.h"
#include "schedule.h"

namespace nrnm {

std::vector<at::Tensor> LayerWeights::list() const {
  return {w_ih, w_xr, w_emb, b_gates, b_r, b_emb, w_hh, w_mr, w_mc, w_in, b_in, w_o, b_o, ln1_w, ln1_b,
          w_1, b_1, w_2, b_2, ln2_w, ln2_b, w_gx, w_gm, b_g};
}

LayerWeights LayerWeights::from_list(const std::vector<at::Tensor>& ws) {
  TORCH_CHECK(static_cast<int>(ws.size()) == kCount, "nrnm_fast: expected ", kCount, " weight tensors, got ",
              ws.size());
  return {ws[0],  ws[1],  ws[2],  ws[3],  ws[4],  ws[5],  ws[6],  ws[7],  ws[8],  ws[9],  ws[10], ws[11],
          ws[12], ws[13], ws[14], ws[15], ws[16], ws[17], ws[18], ws[19], ws[20], ws[21], ws[22], ws[23]};
}

namespace {

at::Tensor index_tensor(const std::vector<int64_t>& v, const at::Device& device) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
}

// Every memory update of one call, planned on the host. Its index tensors reach the device
// in one copy each per call and each update takes views of them: a copy from pageable host
// memory inside the loop would make the host wait for the GPU to drain its queue.
struct UpdatePlan {
  std::vector<BlockAttention> updates;  // one per chunk with an event, in time order
  // Rows of saved.memories viewed as ((E + 1) * B, N, H), per update (u,): where each updating
  // element's memory is after the update, and before it (its previous update's row, or row b).
  // Like the updates' index tensors, undefined where the layer and its kernels need none.
  std::vector<at::Tensor> slots_after, slots_before;
  // Per update: where the whole batch updates and its rows after the update are the contiguous
  // rows r .. r + B - 1 (so before it r - B ..), r; else -1. Those updates need no index ops.
  std::vector<int64_t> whole_batch_row;
  std::vector<int64_t> final_slots;  // (B,) each element's row after its last update

  UpdatePlan(const Schedule& schedule, const int64_t* steps0, const LayerConfig& cfg, int64_t B,
             const at::TensorOptions& options, bool host_blocks) {
    const int64_t k = cfg.block_size;
    std::vector<int64_t> elems, n_valid, rows, after, before, offsets;
    std::vector<double> valid;
    final_slots.resize(B);
    for (int64_t b = 0; b < B; ++b) final_slots[b] = b;
    for (const Chunk& chunk : schedule.chunks) {
      if (chunk.event.empty()) continue;
      offsets.push_back(static_cast<int64_t>(elems.size()));
      BlockAttention a{chunk.t1, chunk.event, {}, k, cfg.num_heads, {}, {}, {}, {}};
      for (int64_t b : chunk.event) {
        a.n_valid.push_back(std::min(k, steps0[b] + chunk.t1 + 1));
        for (int64_t r = 0; r < k; ++r) {
          rows.push_back((chunk.t1 + 1 + r) * B + b);
          valid.push_back(r >= k - a.n_valid.back() ? 1.0 : 0.0);
        }
        before.push_back(final_slots[b]);
        final_slots[b] += B;
        after.push_back(final_slots[b]);
      }
      const int64_t first = after[offsets.back()];
      bool whole = static_cast<int64_t>(chunk.event.size()) == B;
      for (int64_t i = 0; whole && i < B; ++i) whole = after[offsets.back() + i] == first + i;
      whole_batch_row.push_back(whole ? first : -1);
      elems.insert(elems.end(), a.elems.begin(), a.elems.end());
      n_valid.insert(n_valid.end(), a.n_valid.begin(), a.n_valid.end());
      updates.push_back(std::move(a));
    }
    // Kernels that read the host vectors index nothing where whole batches update (every element at
    // once, as without per-element steps or lengths): then no index tensors, whose dozen ATen calls
    // weigh on a streamed step of one element.
    const bool whole_batches =
        std::all_of(whole_batch_row.begin(), whole_batch_row.end(), [](int64_t row) { return row >= 0; });
    if (updates.empty() || (host_blocks && whole_batches)) return;
    const at::Device device = options.device();
    const at::Tensor elems_d = index_tensor(elems, device), n_valid_d = index_tensor(n_valid, device);
    const at::Tensor rows_d = index_tensor(rows, device), after_d = index_tensor(after, device);
    const at::Tensor before_d = index_tensor(before, device);
    const at::Tensor valid_d = at::tensor(valid, at::TensorOptions().dtype(at::kDouble)).to(options);
    slots_after.resize(updates.size());
    slots_before.resize(updates.size());
    for (size_t e = 0; e < updates.size(); ++e) {
      BlockAttention& a = updates[e];
      const int64_t off = offsets[e], u = static_cast<int64_t>(a.elems.size());
      if (whole_batch_row[e] < 0 || !host_blocks) {  // the layer's own index ops
        a.elems_index = elems_d.narrow(0, off, u);
        slots_after[e] = after_d.narrow(0, off, u);
        slots_before[e] = before_d.narrow(0, off, u);
      }
      if (!host_blocks) {
        a.n_valid_index = n_valid_d.narrow(0, off, u);
        a.line_rows = rows_d.narrow(0, off * k, u * k);
        a.valid_rows = valid_d.narrow(0, off * k, u * k).view({u, k, 1});
      }
    }
  }
};

// rows (k, B) of the time line holding each element's final window: lengths[b] + j.
at::Tensor final_window_rows(const at::Tensor& lengths, int64_t k) {
  return lengths.view({1, -1}) + at::arange(k, lengths.options()).view({-1, 1});
}

// The input products x_t W_ih^T | x_t W_xr^T (gates | memory gate) for the steps of each chunk,
// computed a slab of steps at a time into one buffer that the call reuses
// (LayerKernels::input_slab_rows), each weight's GEMM (LayerKernels::loop_matmul: on the CPU one
// or two rows, a streamed step's, read the weight in place) writing its columns; each slab's
// embeddings x_t W_x^T + b_x go straight to the time line's rows of its steps, which are one
// matrix (a shard's block of the line, or the whole batch's). The other terms' biases join them
// later, in passes that read them anyway: the gates' in the per-step GEMM, the memory gate's in
// m @ W_mr^T.
class InputSlabs {
 public:
  // x (T, B, D), a view (a shard's) or contiguous; e_rows (T, B, H) the time line's rows of steps
  // 0..T-1, contiguous; w_t: W_ih^T, W_xr^T, W_x^T as ForwardLoopWeights::input_t.
  InputSlabs(const at::Tensor& x, const LoopWeight (&w_t)[3], const at::Tensor& b_emb, const LayerKernels& kernels,
             const at::Tensor& e_rows, int64_t slab_steps)
      : x_(x), w_t_(w_t), b_emb_(b_emb), e_rows_(e_rows), kernels_(kernels),
        buffer_(at::empty({slab_steps, x.size(1), w_t[0].b.size(1) + w_t[1].b.size(1)}, x.options())) {}

  // (t1 - t0 + 1, B, 4H + NH): the rows of steps t0..t1, in the buffer from step t0 on unless
  // there already.
  at::Tensor rows(int64_t t0, int64_t t1) {
    if (t0 < begin_ || t1 >= end_) {
      RECORD_USER_SCOPE("nrnm::input_product");
      const int64_t T = e_rows_.size(0), H = e_rows_.size(2), width = buffer_.size(2);
      begin_ = t0;
      end_ = std::min(T, t0 + buffer_.size(0));
      TORCH_CHECK(t1 < end_, "nrnm_fast: an input slab of ", buffer_.size(0), " steps for steps ", t0, "..", t1);
      const at::Tensor slab_rows = buffer_.narrow(0, 0, end_ - begin_).view({-1, width});
      const at::Tensor x_rows = x_.narrow(0, begin_, end_ - begin_).reshape({-1, x_.size(2)});
      const int64_t gates = w_t_[0].b.size(1);
      kernels_.loop_matmul(x_rows, w_t_[0], at::Tensor(), slab_rows.narrow(1, 0, gates));
      kernels_.loop_matmul(x_rows, w_t_[1], at::Tensor(), slab_rows.narrow(1, gates, width - gates));
      kernels_.loop_matmul(x_rows, w_t_[2], b_emb_, e_rows_.narrow(0, begin_, end_ - begin_).view({-1, H}));
    }
    return buffer_.narrow(0, t0 - begin_, t1 - t0 + 1);
  }

 private:
  at::Tensor x_;
  const LoopWeight (&w_t_)[3];
  at::Tensor b_emb_, e_rows_;
  const LayerKernels& kernels_;
  at::Tensor buffer_;
  int64_t begin_ = 0, end_ = 0;  // the buffer holds steps begin_ .. end_ - 1
};

// The gradient of InputSlabs' products, walking back a slab of steps at a time: the loop
// writes each chunk's rows (gates | memory gate) into one buffer that the call reuses, and
// before the buffer takes earlier steps its slab leaves through the GEMMs that the whole
// (T, B, G) gradient went through at once: the input's gradient and the input weights' and
// W_hh's. A slab's embedding columns are the embedding line's gradient, whose row of step t
// is final once every memory update at step t or later (all that read it) is done.
//
// Shapes as layer_backward's; `grads` gets w_ih, w_xr, w_emb, b_gates, b_r, b_emb and w_hh
// (zeros to add to) and x's gradient (T, B, D) where input_grad, through `input`
// (BackwardLoopWeights::input).
class GradSlabs {
 public:
  GradSlabs(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& h_line, const at::Tensor& d_e_line,
            const LayerWeights& w, const LoopWeight& input, const LayerKernels& kernels, int64_t k,
            int64_t slab_steps, bool input_grad, LayerGrads& grads)
      : x_(x), h0_(h0), h_line_(h_line), d_e_line_(d_e_line), w_(w), input_(input), kernels_(kernels), k_(k),
        grads_(grads),
        buffer_(at::empty({slab_steps, x.size(1), w.w_ih.size(0) + w.w_xr.size(0) + w.w_emb.size(0)},
                          x.options())),
        base_(x.size(0)), begin_(x.size(0)), end_(x.size(0)) {
    if (input_grad) grads_.x = at::empty_like(x, at::MemoryFormat::Contiguous);
  }

  // (t1 - t0 + 1, B, G): the rows of steps t0..t1; a chunk at a time, walking back.
  at::Tensor rows(int64_t t0, int64_t t1) {
    if (t0 < base_) {
      flush();
      end_ = t1 + 1;
      base_ = std::max<int64_t>(0, end_ - buffer_.size(0));
    }
    begin_ = t0;
    return buffer_.narrow(0, t0 - base_, t1 - t0 + 1);
  }

  // The GEMMs of the steps the buffer holds; once more after the loop.
  void flush() {
    const int64_t n = end_ - begin_;
    if (n == 0) return;
    RECORD_USER_SCOPE("nrnm::input_product_backward");
    const int64_t B = buffer_.size(1), G = buffer_.size(2), H = h_line_.size(2), NH = w_.w_xr.size(0);
    const int64_t D = x_.size(2);
    const at::Tensor slab = buffer_.narrow(0, begin_ - base_, n);
    slab.narrow(2, G - H, H).copy_(d_e_line_.narrow(0, k_ + begin_, n));
    const at::Tensor d_rows = slab.view({n * B, G}), x_rows = x_.narrow(0, begin_, n).reshape({n * B, D});
    const at::Tensor d_terms[3] = {d_rows.narrow(1, 0, 4 * H), d_rows.narrow(1, 4 * H, NH),
                                   d_rows.narrow(1, 4 * H + NH, H)};
    at::Tensor* weight_grads[3] = {&grads_.w.w_ih, &grads_.w.w_xr, &grads_.w.w_emb};
    at::Tensor* bias_grads[3] = {&grads_.w.b_gates, &grads_.w.b_r, &grads_.w.b_emb};
    if (grads_.x.defined())
      kernels_.loop_matmul(d_rows, input_, at::Tensor(), grads_.x.narrow(0, begin_, n).view({n * B, D}));
    const WeightGradMatmul matmul = kernels_.weight_grad_matmul;
    for (int i = 0; i < 3; ++i) {
      add_weight_grad(matmul, *weight_grads[i], d_terms[i], x_rows);
      bias_grads[i]->add_(d_terms[i].sum(0));
    }
    // dW_hh = sum_t da_t^T h_{t-1}: step 0 reads h0, step t > 0 the time line's row of step t - 1.
    const int64_t from = std::max<int64_t>(begin_, 1);
    if (begin_ == 0) add_weight_grad(matmul, grads_.w.w_hh, d_terms[0].narrow(0, 0, B), h0_);
    if (end_ > from)
      add_weight_grad(matmul, grads_.w.w_hh, d_terms[0].narrow(0, (from - begin_) * B, (end_ - from) * B),
                      h_line_.narrow(0, k_ + from - 1, end_ - from).view({-1, H}));
    end_ = begin_;
  }

 private:
  at::Tensor x_, h0_, h_line_, d_e_line_;
  const LayerWeights& w_;
  const LoopWeight& input_;
  const LayerKernels& kernels_;
  int64_t k_;
  LayerGrads& grads_;
  at::Tensor buffer_;
  // Buffer row i holds step base_ + i; steps begin_ .. end_ - 1 are written and not yet flushed.
  int64_t base_, begin_, end_;
};

struct Dims {
  int64_t T, B, H, N, NH, F, k, s, nh, kept_width;
  Dims(const at::Tensor& x, const at::Tensor& memory, const LayerWeights& w, const LayerConfig& cfg)
      : T(x.size(0)), B(x.size(1)), H(memory.size(2)), N(memory.size(1)), NH(N * H), F(w.w_1.size(0)),
        k(cfg.block_size), s(cfg.stride), nh(cfg.num_heads), kept_width(KeptUpdate::width(H, F)) {}
};

}  // namespace

LayerForward layer_forward(const at::Tensor& x, const at::Tensor& lengths, const LayerState& init,
                           const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                           bool for_backward, const LayerForward* into, const ForwardLoopWeights* loop) {
  const Dims d(x, init.memory, w, cfg);
  const int64_t T = d.T, B = d.B, H = d.H, N = d.N, NH = d.NH, k = d.k;
  // The schedule is planned on the host: one copy of steps and lengths per call.
  const at::Tensor steps_host = init.steps.cpu(), len_host = lengths.cpu();
  const int64_t* steps0 = steps_host.data_ptr<int64_t>();
  const Schedule schedule(steps0, len_host.data_ptr<int64_t>(), B, T, d.s);

  const at::Tensor &b_gates = w.b_gates, &b_r = w.b_r;

  // The caller's tensors where `into` has them, new ones elsewhere.
  const LayerForward none;
  const LayerForward& given = into ? *into : none;
  const auto place = [&](const at::Tensor& t, at::IntArrayRef shape) {
    if (!t.defined()) return at::empty(shape, x.options());
    TORCH_CHECK(t.sizes() == shape && t.scalar_type() == x.scalar_type() && t.device() == x.device(),
                "nrnm_fast: layer_forward got a tensor of ", t.sizes(), " to write ", shape, " into");
    return t;
  };
  LayerSaved saved;
  saved.e_line = place(given.saved.e_line, {k + T, B, H});
  saved.e_line.narrow(0, 0, k).copy_(init.ewindow.transpose(0, 1));
  std::optional<ForwardLoopWeights> own_loop;
  const ForwardLoopWeights& lw = loop ? *loop : own_loop.emplace(w, cfg, kernels, B, T, schedule);
  InputSlabs inputs(x, lw.input_t, w.b_emb, kernels, saved.e_line.narrow(0, k, T),
                    input_slab_steps(kernels, schedule, T, B));
  if (kernels.keys_values()) inputs.rows(0, T - 1);
  saved.h_line = place(given.saved.h_line, {k + T, B, H});
  saved.h_line.narrow(0, 0, k).copy_(init.window.transpose(0, 1));
  // Only the backward reads the gates and cells of past steps and the memories before each update.
  saved.cells = place(given.saved.cells, {for_backward ? T : 1, B, H});
  saved.gates = place(given.saved.gates, {for_backward ? T : 1, B, 4 * H});
  // Only the backward reads r, kept and memories: inference returns them empty, (0,) as the fake kernel says.
  const auto backward_only = [&](std::vector<int64_t> shape) { return for_backward ? shape : std::vector<int64_t>{0}; };
  saved.r = place(given.saved.r, backward_only({T, B, NH}));
  saved.kept = place(given.saved.kept, backward_only({Schedule::saved_update_rows(T, d.s), B, N, d.kept_width}));
  // The updates' kept blocks, one after the other: update e takes the next u_e rows.
  const at::Tensor kept_rows = saved.kept.view({-1, N * d.kept_width});
  int64_t kept_row = 0;
  saved.memories = place(given.saved.memories, backward_only({Schedule::saved_update_rows(T, d.s), B, N, H}));
  if (for_backward) {
    saved.memories.zero_();
    saved.memories[0].copy_(init.memory);
  }

  // Keys and values of every time-line row, computed once (blocks overlap), for kernels that read them.
  at::Tensor w_kv, b_kv;
  BlockLines lines{saved.e_line, saved.h_line, at::Tensor(), at::Tensor()};
  if (kernels.keys_values()) {
    w_kv = w.w_in.narrow(0, H, 2 * H);
    b_kv = w.b_in.narrow(0, H, 2 * H);
    lines.kv_emb = at::addmm(b_kv, saved.e_line.view({(k + T) * B, H}), w_kv.t()).view({k + T, B, 2 * H});
    lines.kv_hid = at::empty({k + T, B, 2 * H}, x.options());
    at::Tensor kv_rows = lines.kv_hid.narrow(0, 0, k).view({k * B, 2 * H});
    at::addmm_out(kv_rows, b_kv, saved.h_line.narrow(0, 0, k).view({k * B, H}), w_kv.t());
  }
  at::Tensor mem = init.memory.clone();
  // m @ W_mr^T + b_r: changes only at updates.
  at::Tensor mr = loop_matmul(kernels, mem.view({B, NH}), lw.w_mr_t.b.defined() ? lw.w_mr_t : w.w_mr.t(), b_r);
  const UpdatePlan plan(schedule, steps0, cfg, B, x.options(), kernels.host_blocks);
  size_t update = 0;
  at::Tensor h = init.h.clone(), c = init.c.clone();
  at::Tensor output = place(given.output, {T, B, H});
  // The step kernels write the rows of active elements only; where every element runs all T steps
  // they write every row, and zeroing first would be one more pass over the (T, B, H) output.
  const int64_t* len = len_host.data_ptr<int64_t>();
  const bool every_step_active = std::all_of(len, len + B, [T](int64_t l) { return l == T; });
  if (!every_step_active) output.zero_();
  at::Tensor rec = at::empty({B, 4 * H}, x.options());
  const LoopWeight &w_hh_t = lw.w_hh_t, &w_mc_t = lw.w_mc_t;
  // The memory updates' intermediates and the chunks' memory terms: allocated once, reused.
  UpdateParts parts;
  at::Tensor mc;

  for (const Chunk& chunk : schedule.chunks) {
    const int64_t t0 = chunk.t0, j = chunk.t1 - chunk.t0 + 1;
    const at::Tensor xw = inputs.rows(t0, chunk.t1), rx = xw.narrow(2, 4 * H, NH);
    // (r * m) @ W_mc^T for the whole chunk: r depends on x and m only.
    const at::Tensor r = for_backward ? saved.r.narrow(0, t0, j) : at::Tensor();
    {
      RECORD_USER_SCOPE("nrnm::memory_term");
      if (kernels.memory_term_forward) {
        kernels.memory_term_forward(rx, mr, mem.view({B, NH}), w_mc_t, mc, r);
      } else {
        const at::Tensor rm = rx.add(mr).sigmoid_();
        if (r.defined()) r.copy_(rm);
        rm.mul_(mem.view({1, B, NH}));
        mc = at::mm(rm.view({j * B, NH}), w.w_mc.t()).view({j, B, H});
      }
    }
    {
      RECORD_USER_SCOPE("nrnm::steps");
      if (kernels.chunk_forward) {
        kernels.chunk_forward({t0, chunk.t1, k, for_backward, lengths, xw, w_hh_t, b_gates, mc, h, c, rec,
                               saved.gates, saved.cells, output, saved.h_line});
      } else {
        for (int64_t t = t0; t <= chunk.t1; ++t) {
          kernels.loop_matmul(h, w_hh_t, b_gates, rec);
          const int64_t row = for_backward ? t : 0;
          kernels.step_forward({t, lengths, xw[t - t0], rec, mc[t - t0], h, c, saved.gates[row], saved.cells[row],
                                output[t], saved.h_line[k + t]});
        }
      }
    }
    if (kernels.keys_values()) {
      at::Tensor kv_rows = lines.kv_hid.narrow(0, k + t0, j).view({j * B, 2 * H});
      at::addmm_out(kv_rows, b_kv, saved.h_line.narrow(0, k + t0, j).view({j * B, H}), w_kv.t());
    }
    if (chunk.event.empty()) continue;

    RECORD_USER_SCOPE("nrnm::memory_update");
    const BlockAttention& a = plan.updates[update];
    const int64_t whole_row = plan.whole_batch_row[update];
    const int64_t u = static_cast<int64_t>(a.elems.size());
    std::optional<KeptUpdate> kept;
    if (for_backward) {
      kept.emplace(kept_rows.narrow(0, kept_row, u), u, N, H, d.F);
      kept_row += u;
    }
    const KeptUpdate* keep = kept ? &*kept : nullptr;
    if (whole_row >= 0) {
      memory_update_forward(mem, a, lines, w, *lw.wt, kernels, parts, keep);
      std::swap(mem, parts.new_mem);  // the old memory's storage takes the next update's result
      kernels.loop_matmul(mem.view({B, NH}), lw.w_mr_t, b_r, mr);
      if (for_backward) saved.memories.view({-1, N, H}).narrow(0, whole_row, B).copy_(mem);
    } else {
      const at::Tensor& idx = a.elems_index;
      memory_update_forward(mem.index_select(0, idx), a, lines, w, *lw.wt, kernels, parts, keep);
      const at::Tensor& new_mem = parts.new_mem;
      mem.index_copy_(0, idx, new_mem);
      mr.index_copy_(0, idx, loop_matmul(kernels, new_mem.view({-1, NH}), lw.w_mr_t, b_r));
      if (for_backward) saved.memories.view({-1, N, H}).index_copy_(0, plan.slots_after[update], new_mem);
    }
    ++update;
  }
  if (for_backward)  // the rows no update took: defined
    kept_rows.narrow(0, kept_row, kept_rows.size(0) - kept_row).zero_();

  // Each element's final windows (B, k, H): rows lengths[b] .. lengths[b] + k - 1 of the time lines.
  at::Tensor rows;
  if (!every_step_active) rows = final_window_rows(lengths, k).unsqueeze(-1).expand({k, B, H});
  const auto final_window = [&](const at::Tensor& line) {
    return (every_step_active ? line.narrow(0, T, k) : line.gather(0, rows)).transpose(0, 1).contiguous();
  };
  LayerForward result;
  result.output = output;
  result.final = {h, c, mem, final_window(saved.h_line), final_window(saved.e_line), init.steps + lengths};
  result.saved = saved;
  if (!for_backward) {  // the scratch rows out as r and the others: empty, distinct (op outputs must not alias)
    for (at::Tensor* t : {&result.saved.cells, &result.saved.gates}) *t = at::empty({0}, x.options());
  }
  return result;
}

LayerGrads layer_backward(const at::Tensor& grad_output, const LayerState& grad_final, const at::Tensor& x,
                          const at::Tensor& lengths, const LayerState& init, const LayerSaved& saved,
                          const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                          bool input_grad, const BackwardLoopWeights* loop) {
  const Dims d(x, saved.memories[0], w, cfg);
  const int64_t T = d.T, B = d.B, H = d.H, N = d.N, NH = d.NH, k = d.k;
  const at::Device device = x.device();
  const at::Tensor steps_host = init.steps.cpu(), len_host = lengths.cpu();
  const int64_t* steps0 = steps_host.data_ptr<int64_t>();
  const int64_t* len = len_host.data_ptr<int64_t>();
  const Schedule schedule(steps0, len, B, T, d.s);
  auto zeros = [&](at::IntArrayRef shape) { return at::zeros(shape, x.options()); };
  auto grad_or_zeros = [&](const at::Tensor& g, at::IntArrayRef shape) {
    return g.defined() ? g.clone() : zeros(shape);
  };

  LayerGrads grads;
  {
    std::vector<at::Tensor> gw;
    for (const at::Tensor& t : w.list()) gw.push_back(at::zeros_like(t));
    grads.w = LayerWeights::from_list(gw);
  }
  UpdateWeightGrads update_grads(grads.w, d.nh, kernels.weight_grad_matmul);
  WeightGradRows w_mr_grad(grads.w.w_mr, at::Tensor(), 1, kernels.weight_grad_matmul),
      w_mc_grad(grads.w.w_mc, at::Tensor(), 1, kernels.weight_grad_matmul);

  std::optional<BackwardLoopWeights> own_loop;
  const BackwardLoopWeights& lw = loop ? *loop : own_loop.emplace(w, cfg, kernels, B, T, schedule, input_grad);
  const LoopWeight &w_hh = lw.w_hh, &w_mc = lw.w_mc;
  BlockLines lines{saved.e_line, saved.h_line, at::Tensor(), at::Tensor()};
  if (kernels.keys_values()) {
    const at::Tensor w_kv = w.w_in.narrow(0, H, 2 * H), b_kv = w.b_in.narrow(0, H, 2 * H);
    lines.kv_emb = at::addmm(b_kv, saved.e_line.view({(k + T) * B, H}), w_kv.t()).view({k + T, B, 2 * H});
    lines.kv_hid = at::addmm(b_kv, saved.h_line.view({(k + T) * B, H}), w_kv.t()).view({k + T, B, 2 * H});
  }

  // Gradients of the time lines: each final window row is one of their rows.
  at::Tensor d_h_line = zeros({k + T, B, H}), d_e_line = zeros({k + T, B, H});
  BlockLineGrads d_lines{d_e_line, d_h_line};  // the same tensors, written by the memory updates
  const at::Tensor rows = final_window_rows(lengths, k).unsqueeze(-1).expand({k, B, H});
  if (grad_final.window.defined()) d_h_line.scatter_add_(0, rows, grad_final.window.transpose(0, 1));
  if (grad_final.ewindow.defined()) d_e_line.scatter_add_(0, rows, grad_final.ewindow.transpose(0, 1));

  at::Tensor dh = grad_or_zeros(grad_final.h, {B, H}), dc = grad_or_zeros(grad_final.c, {B, H});
  at::Tensor d_mem = grad_or_zeros(grad_final.memory, {B, N, H});
  at::Tensor d_mr = zeros({B, NH});  // gradient of m @ W_mr^T of each element's current memory
  const at::Tensor d_out = grad_output.defined() ? grad_output : zeros({T, B, H});
  // Gradient of the hoisted input GEMM's output: gates | memory gate | embedding, in slabs.
  GradSlabs d_inputs(x, init.h, saved.h_line, d_e_line, w, lw.input, kernels, k,
                     input_slab_steps(kernels, schedule, T, B), input_grad, grads);
  at::Tensor dh_rec = at::empty({B, H}, x.options());
  // (T, B): which elements a step updates, for kernels that run the backward's steps one by one
  const at::Tensor active = kernels.chunk_backward
                                ? at::Tensor()
                                : at::arange(T, lengths.options()).unsqueeze(1) < lengths.unsqueeze(0);

  // Memory of each element after its last update, walked back through saved.memories.
  const UpdatePlan plan(schedule, steps0, cfg, B, x.options(), kernels.host_blocks);
  size_t update = plan.updates.size();
  // The updates' kept blocks (as the forward laid them out), walked back from their end.
  const at::Tensor kept_rows = saved.kept.view({-1, N * d.kept_width});
  int64_t kept_row = 0;
  for (const BlockAttention& a : plan.updates) kept_row += static_cast<int64_t>(a.elems.size());
  const at::Tensor memory_rows = saved.memories.view({-1, N, H});
  at::Tensor mem = memory_rows.index_select(0, index_tensor(plan.final_slots, device));
  // The memory updates' and the chunks' intermediates: allocated once, reused.
  UpdateParts parts;
  UpdateGradParts grad_parts;
  const at::Tensor grad_new = at::empty({B, N, H}, x.options());  // of an update of the whole batch
  at::Tensor d_mc, rm;  // a chunk's memory term's gradient, and its r * m

  for (auto it = schedule.chunks.rbegin(); it != schedule.chunks.rend(); ++it) {
    const Chunk& chunk = *it;
    const int64_t t0 = chunk.t0, t1 = chunk.t1, j = t1 - t0 + 1;
    if (!chunk.event.empty()) {
      RECORD_USER_SCOPE("nrnm::memory_update_backward");
      const BlockAttention& a = plan.updates[--update];
      const int64_t whole_row = plan.whole_batch_row[update];
      const int64_t u = static_cast<int64_t>(a.elems.size());
      kept_row -= u;
      const KeptUpdate kept(kept_rows.narrow(0, kept_row, u), u, N, H, d.F);
      const QueryWeightsT& wq = *lw.wq;
      const MemoryWeights& wb = *lw.wb;
      // The updated memory feeds later memory terms directly and through m @ W_mr^T.
      if (whole_row >= 0) {
        kernels.loop_matmul(d_mr, wb.w_mr, {}, grad_new.view({B, NH}));
        grad_new.add_(d_mem);
        w_mr_grad.add(d_mr, mem.view({B, NH}));
        d_mr.zero_();
        const at::Tensor before = memory_rows.narrow(0, whole_row - B, B);
        memory_update_backward(before, a, lines, kept, grad_new, w, wq, wb, kernels, grads.w, update_grads, d_lines,
                               parts, grad_parts);
        std::swap(d_mem, grad_parts.d_memory);  // d_mem's old storage takes the next update's result
        mem.copy_(before);
      } else {
        const at::Tensor& idx = a.elems_index;
        const at::Tensor d_mr_u = d_mr.index_select(0, idx);
        const at::Tensor grad_new_u =
            d_mem.index_select(0, idx).add_(loop_matmul(kernels, d_mr_u, wb.w_mr).view({u, N, H}));
        w_mr_grad.add(d_mr_u, mem.index_select(0, idx).view({u, NH}));
        d_mr.index_fill_(0, idx, 0);

        const at::Tensor before = memory_rows.index_select(0, plan.slots_before[update]);
        memory_update_backward(before, a, lines, kept, grad_new_u, w, wq, wb, kernels, grads.w, update_grads,
                               d_lines, parts, grad_parts);
        d_mem.index_copy_(0, idx, grad_parts.d_memory);
        mem.index_copy_(0, idx, before);
      }
    }

    out_tensor(d_mc, {j, B, H}, x.options());
    const at::Tensor d_xw = d_inputs.rows(t0, t1);  // (j, B, G)
    {
      RECORD_USER_SCOPE("nrnm::steps_backward");
      if (kernels.chunk_backward) {
        kernels.chunk_backward({t0, t1, k, lengths, saved.gates, saved.cells, init.c, d_out, d_h_line, w_hh, dh, dc,
                                dh_rec, d_xw, d_mc});
      } else {
        for (int64_t t = t1; t >= t0; --t) {
          kernels.step_backward({t, lengths, saved.gates[t], t > 0 ? saved.cells[t - 1] : init.c, saved.cells[t],
                                 d_out[t], d_h_line[k + t], dh, dc, d_xw[t - t0], d_mc[t - t0]});
          kernels.loop_matmul(d_xw[t - t0].narrow(1, 0, 4 * H), w_hh, at::Tensor(), dh_rec);
          // Inactive elements pass dh on: one masked copy (one kernel on a GPU) unless all are active.
          bool all_active = true;
          for (int64_t b = 0; b < B; ++b) all_active = all_active && t < len[b];
          if (all_active) {
            std::swap(dh, dh_rec);
          } else {
            dh.copy_(at::where(active[t].unsqueeze(1), dh_rec, dh));
          }
        }
      }
    }

    // The chunk's memory term (r * m) @ W_mc^T with r = sigma(x W_xr^T + b_r + m W_mr^T).
    at::Tensor d_rx_chunk = d_xw.narrow(2, 4 * H, NH);
    const at::Tensor d_mc_rows = d_mc.view({j * B, H}), r = saved.r.narrow(0, t0, j);
    {
      RECORD_USER_SCOPE("nrnm::memory_term_backward");
      if (kernels.memory_term_backward) {
        kernels.memory_term_backward(d_mc, r, mem.view({B, NH}), w_mc, d_rx_chunk, d_mem.view({B, NH}), d_mr, rm);
        w_mc_grad.add(d_mc_rows, rm);
      } else {
        const at::Tensor m = mem.view({1, B, NH});
        w_mc_grad.add(d_mc_rows, (r * m).view({j * B, NH}));
        const at::Tensor d_rm = at::mm(d_mc_rows, w.w_mc).view({j, B, NH});
        at::mul_out(d_rx_chunk, d_rm * m, r * (1 - r));
        d_mem.add_((d_rm * r).sum(0).view({B, N, H}));
        d_mr.add_(d_rx_chunk.sum(0));
      }
    }
  }

  lines = BlockLines();  // recomputed keys and values, if any, are not needed any more
  d_inputs.flush();
  update_grads.flush();
  w_mr_grad.flush();
  w_mc_grad.flush();

  // The initial memory also feeds the first steps' m @ W_mr^T.
  d_mem.add_(at::mm(d_mr, w.w_mr).view({B, N, H}));
  grads.w.w_mr.addmm_(d_mr.t(), saved.memories[0].view({B, NH}));

  grads.initial = {dh, dc, d_mem, d_h_line.narrow(0, 0, k).transpose(0, 1).contiguous(),
                   d_e_line.narrow(0, 0, k).transpose(0, 1).contiguous(), at::Tensor()};
  return grads;
}

}  // namespace nrnm
