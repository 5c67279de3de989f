// The weights of one layer call's time loop as its GEMMs take them (LayerKernels::loop_weight:
// transposed views, or copies packed for the CPU's loops), made once per call: the batch shards
// of csrc/batch_shards.h share one set instead of packing a copy each.
//
// Shapes as csrc/layer.h. B: the rows of one step's product (the largest shard's batch); T steps;
// `schedule`: the call's chunks and memory updates (the whole batch's: no shard has more).
#pragma once

#include "layer.h"
#include "layer_kernels.h"
#include "memory_update.h"
#include "schedule.h"

namespace nrnm {

struct ForwardLoopWeights {
  MemoryWeightsT wt;
  LoopWeight w_hh_t;  // (H, 4H) W_hh^T
  LoopWeight w_mc_t;  // (NH, H) W_mc^T
  LoopWeight w_mr_t;  // (NH, NH) W_mr^T, for m @ W_mr^T after each update
  ForwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels, int64_t B,
                     int64_t T, const Schedule& schedule);
};

struct BackwardLoopWeights {
  QueryWeightsT wq;  // for the memory updates' queries and attention, recomputed
  MemoryWeights wb;
  LoopWeight w_hh;  // (4H, H) W_hh
  LoopWeight w_mc;  // (H, NH) W_mc
  BackwardLoopWeights(const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels, int64_t B,
                      int64_t T, const Schedule& schedule);
};

}  // namespace nrnm
