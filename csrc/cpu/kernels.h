// The CPU's LayerKernels (csrc/layer_kernels.h): at::parallel_for loops over batch rows
// and over updating elements, the attention with folded projections.
#pragma once

#include "../layer_kernels.h"

namespace nrnm {

// The CPU table; with triton_attention the memory update's attention runs through the
// Triton kernels (csrc/triton_attention.h) over keys and values of the time lines and the
// block rows through ATen index ops, as on the GPU, so that the Triton interpreter exercises
// the GPU's path on CPU tensors (its steps one call each and the gated write in ATen ops too).
const LayerKernels& cpu_kernels(bool triton_attention);

}  // namespace nrnm
