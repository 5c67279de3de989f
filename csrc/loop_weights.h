// The weights of one layer call's time loop as its GEMMs take them (LayerKernels::loop_weight:
// transposed views, or copies packed for the CPU's loops), made once per call: the batch shards
// of csrc/batch_shards.h share one set instead of packing a copy each.
//
// Shapes as csrc/layer.h. B: the rows of one step's product (the largest shard's batch); T steps;
// `schedule`: the call's chunks and memory updates (the whole batch's: no shard has more).
// The memory updates' weights are made only for a call with updates: streaming a step at a
// time, most calls have none, and their views alone cost some 40 us a call.
#pragma once

#include <optional>

#include "layer.h"
#include "layer_kernels.h"
#include "memory_update.h"
#include "schedule.h"

namespace nrnm {

// Steps per slab of the input product or its gradient (LayerKernels::input_slab_rows): at least
// the longest chunk; every step where the kernels read the whole embedding line before the loop
// (keys and values of every row) or take no slabs.
int64_t input_slab_steps(const LayerKernels& kernels, const Schedule& schedule, int64_t T, int64_t B);

struct ForwardLoopWeights {
  LoopWeight input_t[3];  // W_ih^T (D, 4H), W_xr^T (D, NH), W_x^T (D, H): the input product's
  std::optional<MemoryWeightsT> wt;  // with updates
  LoopWeight w_hh_t;  // (H, 4H) W_hh^T
  LoopWeight w_mc_t;  // (NH, H) W_mc^T
  LoopWeight w_mr_t;  // (NH, NH) W_mr^T, for m @ W_mr^T after each update; with updates
  ForwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels, int64_t B,
                     int64_t T, const Schedule& schedule);
};

struct BackwardLoopWeights {
  LoopWeight input;  // (G, D) [W_ih; W_xr; W_x], for the input's gradient; only with input_grad
  std::optional<QueryWeightsT> wq;  // for the memory updates' queries and attention, recomputed; with updates
  std::optional<MemoryWeights> wb;  // with updates
  LoopWeight w_hh;  // (4H, H) W_hh
  LoopWeight w_mc;  // (H, NH) W_mc
  BackwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels, int64_t B,
                      int64_t T, const Schedule& schedule, bool input_grad);
};

}  // namespace nrnm
