// The Python module nrnm_fast._C: importing it loads this library, whose static
// initialisers register the ops of csrc/ops.cpp as torch.ops.nrnm_fast.*.

#include <torch/extension.h>

PYBIND11_MODULE(_C, module) { module.doc() = "nrnm_fast C++ ops, registered as torch.ops.nrnm_fast.*"; }
