#include "batch_shards.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#include "loop_weights.h"
#include "memory_update.h"
#include "schedule.h"
#include "shard_team.h"

namespace nrnm {
namespace {

struct Shard {
  int64_t begin, size;  // batch elements begin .. begin + size - 1
};

// min(shards, B) shards.
std::vector<Shard> split(int64_t B, int64_t shards) {
  TORCH_CHECK(shards >= 1, "nrnm_fast: batch_shards must be >= 1, got ", shards);
  shards = std::min(shards, B);
  std::vector<Shard> out;
  for (int64_t i = 0, begin = 0; i < shards; ++i) {
    const int64_t size = B / shards + (i < B % shards ? 1 : 0);
    out.push_back({begin, size});
    begin += size;
  }
  return out;
}

// A shard's slice of a tensor along its batch dimension, contiguous (undefined stays undefined).
at::Tensor slice(const at::Tensor& t, int64_t batch_dim, const Shard& s) {
  return t.defined() ? t.narrow(batch_dim, s.begin, s.size).contiguous() : t;
}

// A shard's slice of a (T, B, .) tensor, a view: the layer takes these as they are.
at::Tensor steps_slice(const at::Tensor& t, const Shard& s) { return t.narrow(1, s.begin, s.size); }

// The shard-major blocks of `whole`, whose batch dimension is 1.
std::vector<at::Tensor> blocks(const at::Tensor& whole, const std::vector<Shard>& shards) {
  std::vector<at::Tensor> out;
  std::vector<int64_t> shape = whole.sizes().vec();
  const at::Tensor flat = whole.view({-1});
  int64_t offset = 0;
  for (const Shard& s : shards) {
    shape[1] = s.size;
    const int64_t numel = c10::multiply_integers(shape);
    out.push_back(flat.narrow(0, offset, numel).view(shape));
    offset += numel;
  }
  return out;
}

// Each shard's blocks of the saved tensors (undefined ones stay undefined).
std::vector<LayerSaved> saved_blocks(const LayerSaved& whole, const std::vector<Shard>& shards) {
  std::vector<LayerSaved> out(shards.size());
  for (at::Tensor LayerSaved::*field :
       {&LayerSaved::h_line, &LayerSaved::e_line, &LayerSaved::cells, &LayerSaved::gates, &LayerSaved::r,
        &LayerSaved::kept, &LayerSaved::memories}) {
    if (!(whole.*field).defined()) continue;
    const std::vector<at::Tensor> b = blocks(whole.*field, shards);
    for (size_t i = 0; i < shards.size(); ++i) out[i].*field = b[i];
  }
  return out;
}

// Runs f(i) for every shard, one per thread, with the caller's thread-local state (grad mode,
// dispatch keys) in every thread. Inside, at::parallel_for runs inline and MKL on one thread. A
// thread done with its shards helps with the GEMMs of those still running (csrc/shard_team.h).
template <typename F>
void run_shards(size_t count, const F& f) {
  const at::ThreadLocalState state;
  ShardTeam team(static_cast<int64_t>(count));
  at::parallel_for(0, static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t i = begin; i < end; ++i) team.run_shard(i, [&] { f(static_cast<size_t>(i)); });
    team.help();
  });
}

// The whole batch's schedule: no shard has more chunks or memory updates.
Schedule call_schedule(const at::Tensor& steps0, const at::Tensor& lengths, int64_t T, int64_t stride) {
  const at::Tensor steps_host = steps0.cpu(), len_host = lengths.cpu();
  return Schedule(steps_host.data_ptr<int64_t>(), len_host.data_ptr<int64_t>(), steps_host.size(0), T, stride);
}

LayerState slice_state(const LayerState& s, const Shard& shard) {
  return {slice(s.h, 0, shard), slice(s.c, 0, shard), slice(s.memory, 0, shard),
          slice(s.window, 0, shard), slice(s.ewindow, 0, shard), slice(s.steps, 0, shard)};
}

}  // namespace

LayerForward sharded_layer_forward(const at::Tensor& x, const at::Tensor& lengths, const LayerState& init,
                                   const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                   bool for_backward, int64_t shards) {
  const std::vector<Shard> parts = split(x.size(1), shards);
  if (parts.size() == 1) return layer_forward(x, lengths, init, w, cfg, kernels, for_backward);

  // One tensor per output and saved tensor, each shard writing its block of it in place: putting
  // shards' tensors together afterwards would hold the saved tensors twice.
  const int64_t T = x.size(0), B = x.size(1), N = init.memory.size(1), H = init.memory.size(2);
  const int64_t k = cfg.block_size;
  LayerForward whole;
  whole.output = at::empty({T, B, H}, x.options());
  whole.saved.h_line = at::empty({k + T, B, H}, x.options());
  whole.saved.e_line = at::empty({k + T, B, H}, x.options());
  if (for_backward) {  // without it layer_forward gives each shard its own scratch rows
    whole.saved.cells = at::empty({T, B, H}, x.options());
    whole.saved.gates = at::empty({T, B, 4 * H}, x.options());
    whole.saved.r = at::empty({T, B, N * H}, x.options());
    const int64_t rows = Schedule::saved_update_rows(T, cfg.stride);
    whole.saved.kept = at::empty({rows, B, N, KeptUpdate::width(H, w.w_1.size(0))}, x.options());
    whole.saved.memories = at::empty({rows, B, N, H}, x.options());
  }
  const auto saved = saved_blocks(whole.saved, parts);
  // parts[0] is the largest shard
  const ForwardLoopWeights loop(w, cfg, kernels, parts[0].size, T, call_schedule(init.steps, lengths, T, cfg.stride));

  std::vector<LayerForward> results(parts.size());
  run_shards(parts.size(), [&](size_t i) {
    const Shard& s = parts[i];
    LayerForward into;
    into.output = whole.output.narrow(1, s.begin, s.size);
    into.saved = saved[i];
    results[i] = layer_forward(steps_slice(x, s), slice(lengths, 0, s), slice_state(init, s), w, cfg, kernels,
                               for_backward, &into, &loop);
  });

  std::vector<std::vector<at::Tensor>> final(6);
  for (const LayerForward& r : results) {
    const LayerState& f = r.final;
    for (auto [list, t] : {std::tie(final[0], f.h), std::tie(final[1], f.c), std::tie(final[2], f.memory),
                           std::tie(final[3], f.window), std::tie(final[4], f.ewindow), std::tie(final[5], f.steps)})
      list.push_back(t);
  }
  whole.final = {at::cat(final[0]), at::cat(final[1]), at::cat(final[2]),
                 at::cat(final[3]), at::cat(final[4]), at::cat(final[5])};
  if (!for_backward) {  // as layer_forward returns them: empty, and distinct
    for (at::Tensor* t : {&whole.saved.cells, &whole.saved.gates, &whole.saved.r, &whole.saved.kept,
                          &whole.saved.memories})
      *t = at::empty({0}, x.options());
  }
  return whole;
}

LayerGrads sharded_layer_backward(const at::Tensor& grad_output, const LayerState& grad_final, const at::Tensor& x,
                                  const at::Tensor& lengths, const LayerState& init, const LayerSaved& saved,
                                  const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                  bool input_grad, int64_t shards) {
  const std::vector<Shard> parts = split(x.size(1), shards);
  if (parts.size() == 1)
    return layer_backward(grad_output, grad_final, x, lengths, init, saved, w, cfg, kernels, input_grad);

  const auto saved_parts = saved_blocks(saved, parts);
  const int64_t T = x.size(0);
  const BackwardLoopWeights loop(w, cfg, kernels, parts[0].size, T, call_schedule(init.steps, lengths, T, cfg.stride),
                                 input_grad);
  std::vector<LayerGrads> results(parts.size());
  run_shards(parts.size(), [&](size_t i) {
    const Shard& s = parts[i];
    results[i] = layer_backward(steps_slice(grad_output, s), slice_state(grad_final, s), steps_slice(x, s),
                                slice(lengths, 0, s), slice_state(init, s), saved_parts[i], w,
                                cfg, kernels, input_grad, &loop);
  });

  LayerGrads grads;
  std::vector<std::vector<at::Tensor>> per_shard(6);
  for (const LayerGrads& g : results) {
    const LayerState& s = g.initial;
    for (auto [list, t] : {std::tie(per_shard[0], g.x), std::tie(per_shard[1], s.h), std::tie(per_shard[2], s.c),
                           std::tie(per_shard[3], s.memory), std::tie(per_shard[4], s.window),
                           std::tie(per_shard[5], s.ewindow)})
      list.push_back(t);
  }
  if (input_grad) grads.x = at::cat(per_shard[0], 1);
  grads.initial = {at::cat(per_shard[1]), at::cat(per_shard[2]), at::cat(per_shard[3]),
                   at::cat(per_shard[4]), at::cat(per_shard[5]), at::Tensor()};
  RECORD_USER_SCOPE("nrnm::sum_shard_gradients");
  std::vector<at::Tensor> weight_grads = results[0].w.list();
  for (size_t i = 1; i < results.size(); ++i) {
    const std::vector<at::Tensor> more = results[i].w.list();
    for (size_t j = 0; j < weight_grads.size(); ++j) weight_grads[j].add_(more[j]);
  }
  grads.w = LayerWeights::from_list(weight_grads);
  return grads;
}

}  // namespace nrnm
