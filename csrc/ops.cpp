// torch.library registration of the layer ops (schemas and CPU kernels); the fake kernels
// and the autograd formula are registered in nrnm_fast/layer_ops.py. Linked into the Python
// extension (setup.py) and into the libtorch library (CMakeLists.txt).

#include "ops.h"

#include <algorithm>
#include <utility>

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "cpu/kernels.h"
#include "batch_shards.h"
#include "layer.h"

namespace nrnm {
namespace {

void check_like_x(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), "nrnm_fast.layer_forward: ", name, " must be on ", x.device(),
              " like x, got ", t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "nrnm_fast.layer_forward: ", name, " must have dtype ",
              x.scalar_type(), " like x, got ", t.scalar_type());
}

// (min, max) of a non-empty int64 tensor, read on the host: one copy from a device (none on the
// CPU) instead of a reduction and a sync for each.
std::pair<int64_t, int64_t> host_range(const at::Tensor& t) {
  const at::Tensor host = t.cpu().contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(p, p + host.numel());
  return {*lo, *hi};
}

// Checks what the kernels rely on (the Python module checks the user's arguments first).
void check_args(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& h0, const at::Tensor& c0,
                const at::Tensor& memory0, const at::Tensor& steps0, const std::vector<at::Tensor>& weights,
                int64_t block_size, int64_t stride, int64_t num_heads) {
  TORCH_CHECK(x.dim() == 3, "nrnm_fast: x must be (T, B, D), got ", x.sizes());
  const int64_t T = x.size(0), B = x.size(1);
  TORCH_CHECK(T >= 1 && B >= 1, "nrnm_fast: x needs T >= 1 and B >= 1, got ", x.sizes());
  TORCH_CHECK(memory0.dim() == 3 && memory0.size(0) == B, "nrnm_fast: memory0 must be (B, N, H), got ",
              memory0.sizes());
  const int64_t H = memory0.size(2);
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && c0.sizes() == h0.sizes(),
              "nrnm_fast: h0 and c0 must be (B, H) = (", B, ", ", H, "), got ", h0.sizes(), " and ", c0.sizes());
  TORCH_CHECK(lengths.scalar_type() == at::kLong && steps0.scalar_type() == at::kLong,
              "nrnm_fast: lengths and steps0 must be int64");
  TORCH_CHECK(lengths.sizes() == at::IntArrayRef({B}) && steps0.sizes() == at::IntArrayRef({B}),
              "nrnm_fast: lengths and steps0 must be (B,)");
  TORCH_CHECK(lengths.device() == x.device() && steps0.device() == x.device(),
              "nrnm_fast: lengths and steps0 must be on ", x.device(), " like x");
  TORCH_CHECK(block_size >= 1 && stride >= 1 && stride <= block_size,
              "nrnm_fast: need 1 <= stride <= block_size, got stride ", stride, ", block_size ", block_size);
  TORCH_CHECK(num_heads >= 1 && H % num_heads == 0, "nrnm_fast: hidden size ", H,
              " must be divisible by num_heads ", num_heads);
  TORCH_CHECK(static_cast<int>(weights.size()) == LayerWeights::kCount, "nrnm_fast: expected ",
              LayerWeights::kCount, " weight tensors, got ", weights.size());
  for (const at::Tensor& t : weights) check_like_x(t, "every weight", x);
  for (const at::Tensor* t : {&h0, &c0, &memory0}) check_like_x(*t, "every state tensor", x);
  const auto [lo, hi] = host_range(lengths);
  TORCH_CHECK(lo >= 1 && hi <= T, "nrnm_fast: lengths must lie in 1..", T, ", got ", lo, "..", hi);
  TORCH_CHECK(host_range(steps0).first >= 0, "nrnm_fast: steps0 must be >= 0");
}

std::vector<at::Tensor> contiguous(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.contiguous());
  return out;
}

void check_cpu_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "nrnm_fast: the CPU path supports float32 and float64, got ", x.scalar_type());
}

// Triton's kernels on CPU tensors run in its interpreter, in Python: one thread at a time.
void check_shards(int64_t batch_shards, bool triton_attention) {
  TORCH_CHECK(batch_shards == 1 || !triton_attention,
              "nrnm_fast: with triton_attention the CPU op runs one batch shard, got batch_shards ", batch_shards);
}

LayerForwardResult layer_forward_cpu(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& memory0, const at::Tensor& window0,
                                     const at::Tensor& ewindow0, const at::Tensor& steps0,
                                     const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                     int64_t num_heads, bool triton_attention, bool for_backward,
                                     int64_t batch_shards) {
  check_cpu_dtype(x);
  check_shards(batch_shards, triton_attention);
  return layer_forward_op(cpu_kernels(triton_attention), x, lengths, h0, c0, memory0, window0, ewindow0, steps0,
                          weights, block_size, stride, num_heads, for_backward, batch_shards);
}

LayerBackwardResult layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h,
                                       const at::Tensor& grad_c, const at::Tensor& grad_memory,
                                       const at::Tensor& grad_window, const at::Tensor& grad_ewindow,
                                       const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& h0,
                                       const at::Tensor& c0, const at::Tensor& steps0, const at::Tensor& h_line,
                                       const at::Tensor& e_line, const at::Tensor& cells, const at::Tensor& gates,
                                       const at::Tensor& r, const at::Tensor& kept, const at::Tensor& memories,
                                       const std::vector<at::Tensor>& weights,
                                       int64_t block_size, int64_t stride, int64_t num_heads,
                                       bool triton_attention, bool input_grad, int64_t batch_shards) {
  check_cpu_dtype(x);
  check_shards(batch_shards, triton_attention);
  return layer_backward_op(cpu_kernels(triton_attention), grad_output, grad_h, grad_c, grad_memory, grad_window,
                           grad_ewindow, x, lengths, h0, c0, steps0, h_line, e_line, cells, gates, r, kept, memories,
                           weights, block_size, stride, num_heads, input_grad, batch_shards);
}

}  // namespace

LayerForwardResult layer_forward_op(const LayerKernels& kernels, const at::Tensor& x, const at::Tensor& lengths,
                                    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& memory0,
                                    const at::Tensor& window0, const at::Tensor& ewindow0, const at::Tensor& steps0,
                                    const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                    int64_t num_heads, bool for_backward, int64_t batch_shards) {
  check_args(x, lengths, h0, c0, memory0, steps0, weights, block_size, stride, num_heads);
  const at::AutoDispatchBelowADInplaceOrView below_views;  // see layer_backward_op
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const LayerState init{h0.contiguous(), c0.contiguous(), memory0.contiguous(),
                        window0.contiguous(), ewindow0.contiguous(), steps0.contiguous()};
  const LayerForward f = sharded_layer_forward(x.contiguous(), lengths.contiguous(), init,
                                               LayerWeights::from_list(contiguous(weights)),
                                               {block_size, stride, num_heads}, kernels, for_backward, batch_shards);
  return {f.output, f.final.h, f.final.c, f.final.memory, f.final.window, f.final.ewindow, f.final.steps,
          f.saved.h_line, f.saved.e_line, f.saved.cells, f.saved.gates, f.saved.r, f.saved.kept, f.saved.memories};
}

LayerBackwardResult layer_backward_op(const LayerKernels& kernels, const at::Tensor& grad_output,
                                      const at::Tensor& grad_h, const at::Tensor& grad_c,
                                      const at::Tensor& grad_memory, const at::Tensor& grad_window,
                                      const at::Tensor& grad_ewindow, const at::Tensor& x, const at::Tensor& lengths,
                                      const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& steps0,
                                      const at::Tensor& h_line, const at::Tensor& e_line, const at::Tensor& cells,
                                      const at::Tensor& gates, const at::Tensor& r, const at::Tensor& kept,
                                      const at::Tensor& memories,
                                      const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                      int64_t num_heads, bool input_grad, int64_t batch_shards) {
  // The layer's few thousand ATen calls on its own tensors need no autograd or view tracking:
  // skipping those dispatch keys, as ATen's own kernels do below autograd, saves their overhead.
  const at::AutoDispatchBelowADInplaceOrView below_views;
  // The op computes in its inputs' dtype: under autocast, ATen's GEMMs inside it would otherwise
  // return bfloat16 / float16 products to kernels that work in x's dtype (and fail, or mix dtypes).
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const LayerState grad_final{grad_h.contiguous(), grad_c.contiguous(), grad_memory.contiguous(),
                              grad_window.contiguous(), grad_ewindow.contiguous(), at::Tensor()};
  const LayerState init{h0.contiguous(), c0.contiguous(), at::Tensor(), at::Tensor(), at::Tensor(),
                        steps0.contiguous()};
  const LayerSaved saved{h_line.contiguous(), e_line.contiguous(), cells.contiguous(), gates.contiguous(),
                         r.contiguous(), kept.contiguous(), memories.contiguous()};
  const LayerGrads g = sharded_layer_backward(grad_output.contiguous(), grad_final, x.contiguous(),
                                              lengths.contiguous(), init, saved,
                                              LayerWeights::from_list(contiguous(weights)),
                                              {block_size, stride, num_heads}, kernels, input_grad,
                                              batch_shards);
  return {input_grad ? g.x : at::empty({0}, x.options()), g.initial.h, g.initial.c, g.initial.memory,
          g.initial.window, g.initial.ewindow, g.w.list()};
}

}  // namespace nrnm

// triton_attention: run the memory update's attention with the Triton kernels
// (csrc/triton_attention.h) instead of the device's own. for_backward: keep what
// layer_backward needs (without it, for inference, cells, gates, r, kept and memories come back empty).
// batch_shards: split the batch into this many shards (at most B) run in parallel on the CPU's threads
// (csrc/batch_shards.h; 1 on CUDA); the backward takes the forward's. input_grad: compute grad_x
// (without it grad_x comes back empty: x needs no gradient, and its GEMM is skipped).
TORCH_LIBRARY(nrnm_fast, m) {
  m.def(
      "layer_forward(Tensor x, Tensor lengths, Tensor h0, Tensor c0, Tensor memory0, Tensor window0, "
      "Tensor ewindow0, Tensor steps0, Tensor[] weights, int block_size, int stride, int num_heads, "
      "bool triton_attention, bool for_backward, int batch_shards) -> "
      "(Tensor output, Tensor h, Tensor c, Tensor memory, Tensor window, Tensor ewindow, Tensor steps, "
      "Tensor h_line, Tensor e_line, Tensor cells, Tensor gates, Tensor r, Tensor kept, Tensor memories)");
  m.def(
      "layer_backward(Tensor grad_output, Tensor grad_h, Tensor grad_c, Tensor grad_memory, Tensor grad_window, "
      "Tensor grad_ewindow, Tensor x, Tensor lengths, Tensor h0, Tensor c0, Tensor steps0, Tensor h_line, "
      "Tensor e_line, Tensor cells, Tensor gates, Tensor r, Tensor kept, Tensor memories, Tensor[] weights, "
      "int block_size, int stride, int num_heads, bool triton_attention, bool input_grad, int batch_shards) -> "
      "(Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_memory0, Tensor grad_window0, "
      "Tensor grad_ewindow0, Tensor[] grad_weights)");
}

TORCH_LIBRARY_IMPL(nrnm_fast, CPU, m) {
  m.impl("layer_forward", &nrnm::layer_forward_cpu);
  m.impl("layer_backward", &nrnm::layer_backward_cpu);
}
