#include "loop_weights.h"

#include <algorithm>

namespace nrnm {
namespace {

int64_t num_slots(const LayerWeights& w) { return w.w_mr.size(0) / w.w_hh.size(1); }

int64_t num_chunks(const Schedule& schedule) { return static_cast<int64_t>(schedule.chunks.size()); }

int64_t num_slabs(int64_t T, int64_t slab_steps) { return (T + slab_steps - 1) / slab_steps; }

}  // namespace

int64_t input_slab_steps(const LayerKernels& kernels, const Schedule& schedule, int64_t T, int64_t B) {
  if (kernels.input_slab_rows <= 0 || kernels.keys_values()) return T;
  int64_t steps = (kernels.input_slab_rows + B - 1) / B;
  for (const Chunk& c : schedule.chunks) steps = std::max(steps, c.t1 - c.t0 + 1);
  return std::min(steps, T);
}

ForwardLoopWeights::ForwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                       int64_t B, int64_t T, const Schedule& schedule)
    : w_hh_t(kernels.loop_weight(w.w_hh, B, T)),
      w_mc_t(kernels.loop_weight(w.w_mc, cfg.stride * B, num_chunks(schedule))) {
  const int64_t slab_steps = input_slab_steps(kernels, schedule, T, B), slabs = num_slabs(T, slab_steps);
  const at::Tensor* input_weights[3] = {&w.w_ih, &w.w_xr, &w.w_emb};
  for (int i = 0; i < 3; ++i) input_t[i] = kernels.loop_weight(*input_weights[i], slab_steps * B, slabs);
  const int64_t updates = schedule.updates();
  if (updates == 0) return;
  wt.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
  w_mr_t = kernels.loop_weight(w.w_mr, B, updates);
}

BackwardLoopWeights::BackwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                         int64_t B, int64_t T, const Schedule& schedule, bool input_grad)
    : w_hh(kernels.loop_weight(w.w_hh.t(), B, T)),
      w_mc(kernels.loop_weight(w.w_mc.t(), cfg.stride * B, num_chunks(schedule))) {
  if (input_grad) {
    const int64_t slab_steps = input_slab_steps(kernels, schedule, T, B);
    input = kernels.loop_weight(at::cat({w.w_ih, w.w_xr, w.w_emb}).t(), slab_steps * B, num_slabs(T, slab_steps));
  }
  const int64_t updates = schedule.updates();
  if (updates == 0) return;
  wq.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
  wb.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
}

}  // namespace nrnm
