// The Python module nrnm_fast._C: importing it loads this library, whose static
// initialisers register the ops of csrc/ops.cpp as torch.ops.nrnm_fast.*.

#include <torch/extension.h>

#include "cpu/target_clones.h"

PYBIND11_MODULE(_C, module) {
  module.doc() = "nrnm_fast C++ ops, registered as torch.ops.nrnm_fast.*";
  module.def("avx512_kernels_enabled", &nrnm::avx512_kernels_enabled,
             "Whether the CPU ops run their AVX-512 kernels (the CPU has AVX-512 and NRNM_DISABLE_AVX512 is not 1)");
}
