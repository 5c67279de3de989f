// One NRNM layer over a whole sequence, forward and backward (docs/spec.md), on any device:
// the orchestration is here, the device-specific kernels come from a LayerKernels table.
//
// Shapes: T steps, B batch, D input features, H hidden, N memory slots, NH = N * H,
// k block size, F MLP features, G = 4H + NH + H (columns of the hoisted input product).
// Every tensor is contiguous and on one device (steps / lengths int64, on any device).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "layer_kernels.h"

namespace nrnm {

// One layer's weights as the op takes them. The input side's three products with x are
// columns [0, 4H), [4H, 4H + NH) and [4H + NH, G) of the hoisted input product: the LSTM
// gates, the memory gate and the input embedding (W_x, b_x of docs/spec.md).
struct LayerWeights {
  at::Tensor w_ih;     // (4H, D)
  at::Tensor w_xr;     // (NH, D)
  at::Tensor w_emb;    // (H, D) W_x
  at::Tensor b_gates;  // (4H,) b_ih + b_hh
  at::Tensor b_r;      // (NH,)
  at::Tensor b_emb;    // (H,) b_x
  at::Tensor w_hh;     // (4H, H)
  at::Tensor w_mr;     // (NH, NH)
  at::Tensor w_mc;     // (H, NH)
  at::Tensor w_in;     // (3H, H) rows q, k, v
  at::Tensor b_in;     // (3H,)
  at::Tensor w_o;      // (H, H)
  at::Tensor b_o;      // (H,)
  at::Tensor ln1_w;    // (H,)
  at::Tensor ln1_b;    // (H,)
  at::Tensor w_1;      // (F, H)
  at::Tensor b_1;      // (F,)
  at::Tensor w_2;      // (H, F)
  at::Tensor b_2;      // (H,)
  at::Tensor ln2_w;    // (H,)
  at::Tensor ln2_b;    // (H,)
  at::Tensor w_gx;     // (2H, H) rows: input gate, forget gate
  at::Tensor w_gm;     // (2H, H)
  at::Tensor b_g;      // (2H,)

  static constexpr int kCount = 24;
  std::vector<at::Tensor> list() const;
  static LayerWeights from_list(const std::vector<at::Tensor>& ws);
};

struct ForwardLoopWeights;   // csrc/loop_weights.h
struct BackwardLoopWeights;

struct LayerConfig {
  int64_t block_size;  // k
  int64_t stride;      // s
  int64_t num_heads;   // nh
};

// The layer's state: h, c (B, H); memory (B, N, H); window, ewindow (B, k, H); steps (B,) int64.
struct LayerState {
  at::Tensor h, c, memory, window, ewindow, steps;
};

// What the forward pass keeps for the backward pass.
struct LayerSaved {
  at::Tensor h_line;   // (k + T, B, H) window rows of the initial state, then h' of every step
  at::Tensor e_line;   // (k + T, B, H) ewindow rows of the initial state, then every step's embedding
  at::Tensor cells;    // (T, B, H) c' of every step (the previous cell for inactive steps)
  at::Tensor gates;    // (T, B, 4H) activations sigma(i), sigma(f), tanh(g), sigma(o)
  at::Tensor r;        // (T, B, NH) the memory gate sigma(x W_xr^T + b_r + m W_mr^T) of every step
  // (ceil(T / s) + 1, B, N, 5H + F) what the memory updates keep for the backward (csrc/memory_update.h,
  // KeptUpdate): viewed as rows of N (5H + F), the updates' blocks of u rows one after the other, then
  // zeros (csrc/schedule.h Schedule::saved_update_rows)
  at::Tensor kept;
  at::Tensor memories; // (ceil(T / s) + 1, B, N, H) memory of each element before its e-th update
};

struct LayerForward {
  at::Tensor output;  // (T, B, H) h' of every step, 0 where inactive
  LayerState final;
  LayerSaved saved;
};

// Runs the layer. x (T, B, D), contiguous or a batch slice of a contiguous (T, B', D) tensor;
// lengths (B,) int64 in 1..T. Without for_backward (inference) saved.cells, .gates, .r, .kept
// and .memories come back empty (0 elements): each step's gates and cells go to one scratch
// row, and the memories are not kept.
// `into`: where its output and saved tensors are defined, the layer writes them there instead of
// into new tensors (shapes as above; the output may be a batch slice of a larger (T, B', H)
// tensor: only each step's (B, H) rows must be contiguous; the saved tensors contiguous).
// `loop`: the time loop's weights (csrc/loop_weights.h) made by the caller for products of at
// least B rows (the batch shards share one set); null: made here.
LayerForward layer_forward(const at::Tensor& x, const at::Tensor& lengths, const LayerState& initial,
                           const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                           bool for_backward = true, const LayerForward* into = nullptr,
                           const ForwardLoopWeights* loop = nullptr);

struct LayerGrads {
  at::Tensor x;  // (T, B, D); undefined without input_grad
  LayerState initial;  // gradients of h, c, memory, window, ewindow (steps undefined)
  LayerWeights w;
};

// Gradients of every input given the gradients of the output (T, B, H) and of the final
// state (h, c, memory, window, ewindow; undefined tensors count as zero). grad_output and x
// may be batch slices of larger (T, B', .) tensors (each step's rows contiguous); every other
// tensor is contiguous. Without input_grad the gradient of x is not computed (grads.x stays
// undefined): the layer's first input rarely needs one, and it is a (T B, G) x (G, D) GEMM.
// `loop` as in layer_forward.
LayerGrads layer_backward(const at::Tensor& grad_output, const LayerState& grad_final, const at::Tensor& x,
                          const at::Tensor& lengths, const LayerState& initial, const LayerSaved& saved,
                          const LayerWeights& w, const LayerConfig& cfg, const LayerKernels& kernels,
                          bool input_grad, const BackwardLoopWeights* loop = nullptr);

}  // namespace nrnm
