// The Python module nrnm_fast._C: importing it loads this library, whose static
// initialisers register the ops of csrc/ops.cpp as torch.ops.nrnm_fast.*.

#include <torch/extension.h>

#include "cpu/small_gemm.h"
#include "cpu/target_clones.h"
#include "shard_team.h"

PYBIND11_MODULE(_C, module) {
  module.doc() = "nrnm_fast C++ ops, registered as torch.ops.nrnm_fast.*";
  module.def("avx512_kernels_enabled", &nrnm::avx512_kernels_enabled,
             "Whether the CPU ops run their AVX-512 kernels (the CPU has AVX-512 and NRNM_DISABLE_AVX512 is not 1)");
  module.def("packed_large_products", &nrnm::packed_large_products,
             "Whether the CPU ops run their large products (the input product, its gradient, the weight gradients) "
             "in their own AVX-512 GEMM rather than through at::mm (by default: on AVX-512 CPUs not made by Intel)");
  module.def("set_packed_large_products", &nrnm::set_packed_large_products, pybind11::arg("on"),
             "Overrides packed_large_products for this process (tests and A/B measurements); AVX-512 CPUs only");
  module.def("min_shared_work", &nrnm::min_shared_work,
             "Multiply-adds below which a batch shard's GEMM units are grouped before a thread done with its own "
             "shard may take them");
  module.def("set_min_shared_work", &nrnm::set_min_shared_work, pybind11::arg("multiply_adds"),
             "Overrides min_shared_work for this process (tests: 1 offers every GEMM of two units or more)");
  module.def("units_helped", &nrnm::units_helped,
             "GEMM units (column panels, blocks of rows) that a thread ran for another thread's batch shard since "
             "the process started");
}
