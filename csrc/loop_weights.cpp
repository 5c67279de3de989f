#include "loop_weights.h"

namespace nrnm {
namespace {

int64_t num_slots(const LayerWeights& w) { return w.w_mr.size(0) / w.w_hh.size(1); }

int64_t num_chunks(const Schedule& schedule) { return static_cast<int64_t>(schedule.chunks.size()); }

}  // namespace

ForwardLoopWeights::ForwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                       int64_t B, int64_t T, const Schedule& schedule)
    : w_hh_t(kernels.loop_weight(w.w_hh, B, T)),
      w_mc_t(kernels.loop_weight(w.w_mc, cfg.stride * B, num_chunks(schedule))) {
  const int64_t updates = schedule.updates();
  if (updates == 0) return;
  wt.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
  w_mr_t = kernels.loop_weight(w.w_mr, B, updates);
}

BackwardLoopWeights::BackwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                                         int64_t B, int64_t T, const Schedule& schedule)
    : w_hh(kernels.loop_weight(w.w_hh.t(), B, T)),
      w_mc(kernels.loop_weight(w.w_mc.t(), cfg.stride * B, num_chunks(schedule))) {
  const int64_t updates = schedule.updates();
  if (updates == 0) return;
  wq.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
  wb.emplace(w, kernels, B, num_slots(w), cfg.num_heads, updates);
}

}  // namespace nrnm
