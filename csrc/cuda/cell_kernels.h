// The element-wise part of one NRNM recurrence step on the GPU: the CUDA twins of the CPU
// step loops (csrc/cpu/), running the same per-unit math (csrc/nrnm_cell.h) so that the CPU
// tests also cover the formulas.
//
// No ATen here: the kernels are built by nvcc alone, one .cu per dtype, and the callers wrap
// tensors themselves. T is float, double, __half or __nv_bfloat16 (instantiated in
// cell_kernels_{fp32,fp64,fp16,bf16}.cu); the math runs in float (double for double).
//
// Shapes: B batch, H hidden units; gate blocks are ordered i, f, g, o. Every pointer is to
// device memory; rows are contiguous and, unless a stride is given, packed. No two arrays
// overlap. Element b is active at step t when t < lengths[b]; inactive elements are padding
// past the end of their sequence and carry their state through unchanged.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace nrnm::cuda {

template <typename T>
struct StepForwardParams {
  int64_t B, H;
  int64_t t;               // the step index within the call
  const int64_t* lengths;  // (B,)
  const T* xw;             // (B, xw_stride) columns [0, 4H): x @ W_ih^T
  int64_t xw_stride;       // elements between rows of xw: the hoisted input GEMM has more columns than the gates
  const T* rec;            // (B, 4H) h @ W_hh^T + b_ih + b_hh
  const T* mc;             // (B, H) memory term ((r * m) @ W_mc^T)
  T* h;                    // (B, H) state, updated in place where active
  T* c;                    // (B, H) state, updated in place where active
  T* gates;                // (B, 4H) out: sigma(i), sigma(f), tanh(g), sigma(o) for the backward; 0 where inactive
  T* cells;                // (B, H) out: the new cell; the unchanged c where inactive (the next step's c_prev)
  T* out;                  // (B, H) out: h' where active; untouched where inactive (the output there stays 0)
  T* h_row;                // (B, H) out: the hidden time line's row of step t: h' where active, the unchanged h
                           // where inactive, so that memory blocks see the carried state
};

// One step forward, launched on `stream`. Returns the launch error, if any.
template <typename T>
cudaError_t step_forward(const StepForwardParams<T>& p, cudaStream_t stream);

template <typename T>
struct StepBackwardParams {
  int64_t B, H;
  int64_t t;               // the step index within the call
  const int64_t* lengths;  // (B,)
  const T* gates;          // (B, 4H) the activations step_forward saved at step t
  const T* c_prev;         // (B, H) cell before step t
  const T* cells;          // (B, H) cell after step t
  const T* d_out;          // (B, H) gradient of the output row
  const T* d_h_row;        // (B, H) gradient of the time line's row
  const T* dh;             // (B, H) gradient reaching h' from later steps
  T* dc;                   // (B, H) in: gradient of the new cell; out: of the previous cell; unchanged where inactive
  T* da;                   // (B, da_stride) out columns [0, 4H): gradient of the pre-activations; 0 where inactive
  int64_t da_stride;       // elements between rows of da: it is written in place into the input GEMM's gradient
  T* dmc;                  // (B, H) out: gradient of the memory term; 0 where inactive
};

// One step backward, launched on `stream`. Returns the launch error, if any. Where inactive,
// dh passes on untouched: the caller keeps it rather than the recurrent gradient.
template <typename T>
cudaError_t step_backward(const StepBackwardParams<T>& p, cudaStream_t stream);

}  // namespace nrnm::cuda
