// ctest: the CUDA step kernels (csrc/cuda/cell_kernels.cuh), run on the host one emulated
// thread at a time (csrc/test/cuda_host_emulation.h), against the CPU path's step functions
// (csrc/cpu/kernels.h). This checks what the GPU's kernels add to the shared per-unit math
// of csrc/nrnm_cell.h: their grid, index arithmetic, row strides, gate layout, inactive rows
// and the conversions of the half types, without a GPU. Built when CUDA's headers are found.

#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "../cpu/kernels.h"
// The emulation redefines CUDA's qualifiers: after every other header.
#include "cuda_host_emulation.h"
#include "../cuda/cell_kernels.cuh"

namespace {

using torch::Tensor;
namespace kernels = nrnm::cuda::detail;

int failures = 0;

void expect_close(const std::string& what, const Tensor& actual, const Tensor& expected, double tol) {
  const double scale = std::max(expected.abs().max().item<double>(), 1e-30);
  const double err = (actual.to(torch::kDouble) - expected.to(torch::kDouble)).abs().max().item<double>() / scale;
  if (!(err <= tol)) {
    std::printf("  FAIL %s: relative error %.3g > %.3g\n", what.c_str(), err, tol);
    ++failures;
  }
}

// The device type of an ATen dtype's elements.
template <typename T>
T* ptr(const Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

struct Case {
  const char* name;
  int64_t B, H, t;
  std::vector<int64_t> lengths;
};

// Inputs of one step forward and backward in float64, then cast: the CPU path runs in
// `reference` (float or double), the emulated kernels in T.
struct StepData {
  Tensor xw, rec, mc, h, c, gates, cells, out, h_row;  // forward
  Tensor c_prev, d_out, d_h_row, dh, dc, da, dmc;      // backward (gates and cells from the forward)

  StepData(int64_t B, int64_t H) {
    const auto opts = torch::TensorOptions().dtype(torch::kDouble);
    const int64_t G = 7 * H;  // the hoisted GEMM's row: gates first, then columns the step must not touch
    xw = torch::randn({B, G}, opts);
    rec = torch::randn({B, 4 * H}, opts);
    mc = torch::randn({B, H}, opts) * 0.5;
    h = torch::randn({B, H}, opts);
    c = torch::randn({B, H}, opts);
    gates = torch::full({B, 4 * H}, 7.0, opts);  // sentinels: every written value differs
    cells = torch::full({B, H}, 7.0, opts);
    out = torch::full({B, H}, 7.0, opts);
    h_row = torch::full({B, H}, 7.0, opts);
    c_prev = torch::randn({B, H}, opts);
    d_out = torch::randn({B, H}, opts);
    d_h_row = torch::randn({B, H}, opts);
    dh = torch::randn({B, H}, opts);
    dc = torch::randn({B, H}, opts);
    da = torch::full({B, G}, 7.0, opts);
    dmc = torch::full({B, H}, 7.0, opts);
  }

  StepData to(torch::Dtype dtype) const {
    StepData d = *this;
    for (Tensor* t : d.all()) *t = t->to(dtype).clone();
    return d;
  }

  std::vector<Tensor*> all() {
    return {&xw, &rec, &mc, &h, &c, &gates, &cells, &out, &h_row, &c_prev, &d_out, &d_h_row, &dh, &dc, &da, &dmc};
  }
};

// One step forward then backward through the CPU path's table.
void run_cpu(StepData& d, int64_t t, const Tensor& lengths) {
  const nrnm::LayerKernels& k = nrnm::cpu_kernels(false);
  k.step_forward({t, lengths, d.xw, d.rec, d.mc, d.h, d.c, d.gates, d.cells, d.out, d.h_row});
  k.step_backward({t, lengths, d.gates, d.c_prev, d.cells, d.d_out, d.d_h_row, d.dh, d.dc, d.da, d.dmc});
}

// The same through the CUDA kernels, emulated on the host, in T.
template <typename T>
void run_emulated(StepData& d, int64_t t, const Tensor& lengths) {
  const int64_t B = d.h.size(0), H = d.h.size(1);
  nrnm::cuda::StepForwardParams<T> f{B, H, t, lengths.data_ptr<int64_t>(), ptr<T>(d.xw), d.xw.stride(0),
                                     ptr<T>(d.rec), ptr<T>(d.mc), ptr<T>(d.h), ptr<T>(d.c), ptr<T>(d.gates),
                                     ptr<T>(d.cells), ptr<T>(d.out), ptr<T>(d.h_row)};
  const kernels::LaunchShape s = kernels::launch_shape(B, H);
  emulation::launch(s.grid, s.block, kernels::step_forward_kernel<T>, f);
  nrnm::cuda::StepBackwardParams<T> b{B, H, t, lengths.data_ptr<int64_t>(), ptr<T>(d.gates), ptr<T>(d.c_prev),
                                      ptr<T>(d.cells), ptr<T>(d.d_out), ptr<T>(d.d_h_row), ptr<T>(d.dh),
                                      ptr<T>(d.dc), ptr<T>(d.da), d.da.stride(0), ptr<T>(d.dmc)};
  emulation::launch(s.grid, s.block, kernels::step_backward_kernel<T>, b);
}

void compare(const char* dtype, StepData& emulated, StepData& cpu, double tol) {
  const std::vector<std::string> names = {"xw",    "rec",    "mc",      "h",  "c",  "gates", "cells", "out",
                                          "h_row", "c_prev", "d_out", "d_h_row", "dh", "dc",    "da",    "dmc"};
  const std::vector<Tensor*> a = emulated.all(), b = cpu.all();
  for (size_t i = 0; i < names.size(); ++i) expect_close(std::string(dtype) + " " + names[i], *a[i], *b[i], tol);
}

// The half types against the float CPU path on the same (rounded) inputs.
template <typename T>
void run_half(const StepData& data, torch::Dtype dtype, const char* name, int64_t t, const Tensor& lengths) {
  StepData emulated = data.to(dtype), cpu = emulated.to(torch::kFloat);
  run_emulated<T>(emulated, t, lengths);
  run_cpu(cpu, t, lengths);
  compare(name, emulated, cpu, 1e-2);
}

void run(const Case& cs) {
  torch::manual_seed(0);
  const Tensor lengths = torch::tensor(cs.lengths, torch::kLong);
  const StepData data(cs.B, cs.H);

  StepData emulated = data.to(torch::kDouble), cpu = data.to(torch::kDouble);
  run_emulated<double>(emulated, cs.t, lengths);
  run_cpu(cpu, cs.t, lengths);
  compare("float64", emulated, cpu, 1e-14);

  emulated = data.to(torch::kFloat);
  cpu = data.to(torch::kFloat);
  run_emulated<float>(emulated, cs.t, lengths);
  run_cpu(cpu, cs.t, lengths);
  compare("float32", emulated, cpu, 1e-6);

  run_half<__half>(data, torch::kHalf, "float16", cs.t, lengths);
  run_half<__nv_bfloat16>(data, torch::kBFloat16, "bfloat16", cs.t, lengths);
}

}  // namespace

int main() {
  const std::vector<Case> cases = {
      {"active and inactive rows, H not a multiple of a warp", 5, 37, 2, {3, 1, 5, 2, 9}},
      {"two blocks per row, the second partial", 3, 300, 0, {1, 1, 1}},
      {"one unit", 1, 1, 0, {1}},
  };
  int passed = 0;
  for (const Case& cs : cases) {
    const int before = failures;
    run(cs);
    std::printf("%s: %s\n", failures == before ? "PASS" : "FAIL", cs.name);
    passed += failures == before;
  }
  std::printf("%d passed, %d failed\n", passed, static_cast<int>(cases.size()) - passed);
  return passed == static_cast<int>(cases.size()) ? 0 : 1;
}
