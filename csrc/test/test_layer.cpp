// ctest: the CPU layer (csrc/layer.h with csrc/cpu/kernels.h) against a step-by-step libtorch-autograd
// composition of docs/spec.md, in float64: outputs, final state, and the gradients of the
// input, the initial state and every weight under random upstream gradients. On x86, also
// that a float32 forward and backward on ordinary values meets no subnormal operand (each
// costs a microcode assist; csrc/nrnm_cell.h's gate_exp says how one crept into every step).

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../cpu/kernels.h"
#include "../layer.h"

#if defined(__x86_64__)
#include <ATen/Parallel.h>
#include <xmmintrin.h>
#endif

namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

struct Case {
  const char* name;
  int64_t T, B, D, H, N, k, s, nh, F;
  std::vector<int64_t> lengths, steps;
};

struct Layer {
  Tensor out, h, c, memory, window, ewindow;
};

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b) {
  return F::layer_norm(x, F::LayerNormFuncOptions({x.size(-1)}).weight(w).bias(b).eps(1e-5));
}

// The memory update over the full block of N + 2k rows, invalid rows masked out of keys and mean.
Tensor memory_update(const Tensor& M, const Tensor& window, const Tensor& ewindow, const Tensor& steps,
                     const nrnm::LayerWeights& w, int64_t nh) {
  const int64_t B = M.size(0), N = M.size(1), H = M.size(2), k = window.size(1), dh = H / nh;
  const Tensor n_valid = steps.clamp_max(k);
  const Tensor valid = torch::arange(k).unsqueeze(0) >= (k - n_valid).unsqueeze(1);  // (B, k)
  const Tensor Z = torch::cat({M, ewindow, window}, 1);
  const Tensor key_valid = torch::cat({torch::ones({B, N}, torch::kBool), valid, valid}, 1);
  const auto qkv = torch::addmm(w.b_in, Z.reshape({-1, H}), w.w_in.t()).view({B, -1, 3 * H}).chunk(3, -1);
  auto heads = [&](const Tensor& t) { return t.reshape({B, -1, nh, dh}).transpose(1, 2); };
  Tensor scores = torch::matmul(heads(qkv[0]), heads(qkv[1]).transpose(-1, -2)) / std::sqrt(double(dh));
  scores = scores.masked_fill(key_valid.logical_not().view({B, 1, 1, -1}), -INFINITY);
  const Tensor A = torch::matmul(torch::softmax(scores, -1), heads(qkv[2])).transpose(1, 2).reshape({B, -1, H});
  Tensor Y = layer_norm(Z + torch::matmul(A, w.w_o.t()) + w.b_o, w.ln1_w, w.ln1_b);
  Y = layer_norm(Y + torch::matmul(torch::relu(torch::matmul(Y, w.w_1.t()) + w.b_1), w.w_2.t()) + w.b_2, w.ln2_w,
                 w.ln2_b);
  const Tensor xh = (ewindow * valid.unsqueeze(-1)).sum(1) / n_valid.unsqueeze(1);
  const auto gates = torch::sigmoid(torch::matmul(xh.unsqueeze(1), w.w_gx.t()) +
                                    torch::matmul(torch::tanh(M), w.w_gm.t()) + w.b_g)
                         .chunk(2, -1);
  return gates[0] * torch::tanh(Y.narrow(1, 0, N)) + gates[1] * M;
}

Layer reference_layer(const Tensor& x, const Tensor& lengths, const nrnm::LayerState& s0,
                      const nrnm::LayerWeights& w, const nrnm::LayerConfig& cfg) {
  const int64_t T = x.size(0), B = x.size(1), N = s0.memory.size(1), H = s0.memory.size(2), NH = N * H;
  const Tensor &w_gates = w.w_ih, &b_gates = w.b_gates, &w_r = w.w_xr, &b_r = w.b_r, &w_e = w.w_emb, &b_e = w.b_emb;
  Tensor h = s0.h, c = s0.c, M = s0.memory, window = s0.window, ewindow = s0.ewindow, steps = s0.steps;
  std::vector<Tensor> outs;
  for (int64_t t = 0; t < T; ++t) {
    const Tensor xt = x[t], act = (lengths > t).unsqueeze(1);
    const Tensor m = M.reshape({B, NH});
    const auto a = (torch::addmm(b_gates, xt, w_gates.t()) + torch::mm(h, w.w_hh.t())).chunk(4, 1);
    const Tensor r = torch::sigmoid(torch::addmm(b_r, xt, w_r.t()) + torch::mm(m, w.w_mr.t()));
    const Tensor c_new = torch::sigmoid(a[1]) * c + torch::sigmoid(a[0]) * torch::tanh(a[2]) +
                         torch::mm(r * m, w.w_mc.t());
    const Tensor h_new = torch::sigmoid(a[3]) * torch::tanh(c_new);
    const Tensor e = torch::addmm(b_e, xt, w_e.t());
    const int64_t k = cfg.block_size;
    const Tensor window_new = torch::cat({window.narrow(1, 1, k - 1), h_new.unsqueeze(1)}, 1);
    const Tensor ewindow_new = torch::cat({ewindow.narrow(1, 1, k - 1), e.unsqueeze(1)}, 1);
    const Tensor steps_new = steps + 1;
    const Tensor update = act.squeeze(1) & (steps_new % cfg.stride == 0);
    if (update.any().item<bool>())
      M = torch::where(update.view({B, 1, 1}), memory_update(M, window_new, ewindow_new, steps_new, w, cfg.num_heads),
                       M);
    h = torch::where(act, h_new, h);
    c = torch::where(act, c_new, c);
    window = torch::where(act.unsqueeze(2), window_new, window);
    ewindow = torch::where(act.unsqueeze(2), ewindow_new, ewindow);
    steps = torch::where(act.squeeze(1), steps_new, steps);
    outs.push_back(torch::where(act, h_new, torch::zeros_like(h_new)));
  }
  return {torch::stack(outs), h, c, M, window, ewindow};
}

int failures = 0;

void expect_close(const std::string& what, const Tensor& actual, const Tensor& expected) {
  const double scale = std::max(expected.abs().max().item<double>(), 1e-300);
  const double err = (actual - expected).abs().max().item<double>() / scale;
  if (!(err <= 1e-10)) {
    std::printf("  FAIL %s: relative error %.3g\n", what.c_str(), err);
    ++failures;
  }
}

// A random layer of `cs` in `dtype`: its weights (LayerWeights::list's order), input and initial state.
struct Inputs {
  std::vector<Tensor> ws;
  Tensor x, lengths;
  nrnm::LayerState s0;
  nrnm::LayerConfig cfg;
};

Inputs random_inputs(const Case& cs, torch::Dtype dtype) {
  torch::manual_seed(0);
  const auto opts = torch::TensorOptions().dtype(dtype);
  const int64_t T = cs.T, B = cs.B, D = cs.D, H = cs.H, N = cs.N, NH = N * H, k = cs.k;
  auto rnd = [&](std::vector<int64_t> shape, double scale) { return torch::randn(shape, opts) * scale; };
  Inputs in;
  in.ws = {rnd({4 * H, D}, 0.4), rnd({NH, D}, 0.4),      rnd({H, D}, 0.4),        rnd({4 * H}, 0.4),
           rnd({NH}, 0.4),       rnd({H}, 0.4),          rnd({4 * H, H}, 0.4),    rnd({NH, NH}, 0.4),
           rnd({H, NH}, 0.4),    rnd({3 * H, H}, 0.4),   rnd({3 * H}, 0.4),       rnd({H, H}, 0.4),
           rnd({H}, 0.4),        1 + rnd({H}, 0.2),      rnd({H}, 0.4),           rnd({cs.F, H}, 0.4),
           rnd({cs.F}, 0.4),     rnd({H, cs.F}, 0.4),    rnd({H}, 0.4),           1 + rnd({H}, 0.2),
           rnd({H}, 0.4),        rnd({2 * H, H}, 0.4),   rnd({2 * H, H}, 0.4),    rnd({2 * H}, 0.4)};
  in.x = rnd({T, B, D}, 1.0);
  in.lengths = torch::tensor(cs.lengths, torch::kLong);
  in.s0 = {rnd({B, H}, 0.5), rnd({B, H}, 0.5), rnd({B, N, H}, 0.5), rnd({B, k, H}, 0.5), rnd({B, k, H}, 0.5),
           torch::tensor(cs.steps, torch::kLong)};
  in.cfg = {k, cs.s, cs.nh};
  return in;
}

void run(const Case& cs) {
  const Inputs in = random_inputs(cs, torch::kFloat64);
  const std::vector<Tensor>& ws = in.ws;
  const Tensor &x = in.x, &lengths = in.lengths, &steps = in.s0.steps;
  const nrnm::LayerState& s0 = in.s0;
  const nrnm::LayerConfig& cfg = in.cfg;

  const nrnm::LayerForward fast = nrnm::layer_forward(x, lengths, s0, nrnm::LayerWeights::from_list(ws), cfg,
                                                              nrnm::cpu_kernels(false));

  std::vector<Tensor> leaves = {x, s0.h, s0.c, s0.memory, s0.window, s0.ewindow};
  leaves.insert(leaves.end(), ws.begin(), ws.end());
  for (Tensor& t : leaves) t = t.detach().requires_grad_(true);
  std::vector<Tensor> leaf_ws(leaves.begin() + 6, leaves.end());
  const Layer ref = reference_layer(leaves[0], lengths, {leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], steps},
                                    nrnm::LayerWeights::from_list(leaf_ws), cfg);

  expect_close("output", fast.output, ref.out);
  expect_close("h", fast.final.h, ref.h);
  expect_close("c", fast.final.c, ref.c);
  expect_close("memory", fast.final.memory, ref.memory);
  expect_close("window", fast.final.window, ref.window);
  expect_close("ewindow", fast.final.ewindow, ref.ewindow);
  if (!torch::equal(fast.final.steps, steps + lengths)) {
    std::printf("  FAIL steps\n");
    ++failures;
  }

  const std::vector<Tensor> outs = {ref.out, ref.h, ref.c, ref.memory, ref.window, ref.ewindow};
  std::vector<Tensor> upstream;
  for (const Tensor& o : outs) upstream.push_back(torch::randn_like(o));
  const auto ref_grads = torch::autograd::grad(outs, leaves, upstream, false, false, true);
  const nrnm::LayerGrads g = nrnm::layer_backward(
      upstream[0], {upstream[1], upstream[2], upstream[3], upstream[4], upstream[5], Tensor()}, x, lengths, s0,
      fast.saved, nrnm::LayerWeights::from_list(ws), cfg, nrnm::cpu_kernels(false), true);

  const std::vector<std::string> names = {"grad x", "grad h0", "grad c0", "grad memory0", "grad window0",
                                          "grad ewindow0"};
  const std::vector<Tensor> fast_grads = {g.x, g.initial.h, g.initial.c, g.initial.memory, g.initial.window,
                                          g.initial.ewindow};
  for (size_t i = 0; i < names.size(); ++i) expect_close(names[i], fast_grads[i], ref_grads[i]);
  const std::vector<Tensor> fast_w = g.w.list();
  for (size_t i = 0; i < fast_w.size(); ++i) {
    const Tensor expected = ref_grads[6 + i].defined() ? ref_grads[6 + i] : torch::zeros_like(fast_w[i]);
    expect_close("grad weight " + std::to_string(i), fast_w[i], expected);
  }
}

#if defined(__x86_64__)
// The float32 layer's forward and backward on this thread (one thread: MXCSR is per thread) with
// MXCSR's sticky flags cleared first: DE says an operand was subnormal, UE that a result was.
void check_no_subnormals(const Case& cs) {
  const Inputs in = random_inputs(cs, torch::kFloat32);
  const nrnm::LayerWeights w = nrnm::LayerWeights::from_list(in.ws);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  _mm_setcsr(_mm_getcsr() & ~0x3fu);
  const nrnm::LayerForward f = nrnm::layer_forward(in.x, in.lengths, in.s0, w, in.cfg, nrnm::cpu_kernels(false));
  const Tensor d_out = torch::randn_like(f.output);
  nrnm::layer_backward(d_out, {}, in.x, in.lengths, in.s0, f.saved, w, in.cfg, nrnm::cpu_kernels(false), true);
  const unsigned flags = _mm_getcsr();
  at::set_num_threads(threads);
  const bool denormal_operand = flags & 0x2u, underflow = flags & 0x10u;
  if (denormal_operand || underflow) {
    std::printf("  FAIL float32 forward and backward: %s%s\n", denormal_operand ? "a subnormal operand " : "",
                underflow ? "a subnormal result" : "");
    ++failures;
  }
}
#endif

}  // namespace

int main() {
  const std::vector<Case> cases = {
      {"lengths, per-element steps, k not a multiple of s", 9, 3, 5, 8, 2, 5, 3, 2, 6, {9, 4, 1}, {0, 2, 7}},
      {"stride 1, one slot, one head", 6, 2, 3, 4, 1, 2, 1, 1, 4, {6, 6}, {1, 0}},
      {"stride == block size, four heads", 11, 1, 4, 8, 3, 4, 4, 4, 8, {11}, {3}},
  };
  int passed = 0;
  for (const Case& cs : cases) {
    const int before = failures;
    run(cs);
    std::printf("%s: %s\n", failures == before ? "PASS" : "FAIL", cs.name);
    passed += failures == before;
  }
#if defined(__x86_64__)
  {
    const int before = failures;
    // Packed GEMMs (16 rows), full vectors and tails in the gate loops (H = 40), memory updates.
    check_no_subnormals({"float32", 24, 16, 24, 40, 2, 8, 4, 4, 40, std::vector<int64_t>(16, 24),
                         std::vector<int64_t>(16, 0)});
    std::printf("%s: float32 forward and backward without subnormal operands or results\n",
                failures == before ? "PASS" : "FAIL");
    passed += failures == before;
  }
  const int total = static_cast<int>(cases.size()) + 1;
#else
  const int total = static_cast<int>(cases.size());
#endif
  std::printf("%d passed, %d failed\n", passed, total - passed);
  return passed == total ? 0 : 1;
}
