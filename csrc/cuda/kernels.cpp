// The CUDA path: the LayerKernels table of csrc/layer_kernels.h on CUDA tensors and the
// CUDA kernels of the layer ops. The time loop and its GEMMs (cuBLAS through ATen) are the
// orchestration of csrc/layer.cpp, shared with the CPU; the step kernels are
// csrc/cuda/cell_kernels.h, the attention runs in Triton (csrc/triton_attention.h) and the
// block rows through ATen index ops (csrc/block_rows.h). Built only when torch has CUDA.

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <type_traits>

#include "../block_rows.h"
#include "../ops.h"
#include "../triton_attention.h"
#include "cell_kernels.h"

namespace nrnm {
namespace {

// The CUDA type of an ATen scalar type: the kernels are instantiated for these.
template <typename scalar_t>
using cuda_t = std::conditional_t<std::is_same_v<scalar_t, at::Half>, __half,
                                  std::conditional_t<std::is_same_v<scalar_t, at::BFloat16>, __nv_bfloat16,
                                                     scalar_t>>;

template <typename scalar_t>
cuda_t<scalar_t>* ptr(const at::Tensor& t) {
  return reinterpret_cast<cuda_t<scalar_t>*>(t.data_ptr<scalar_t>());
}

void step_forward(const StepForward& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.h.scalar_type(), "nrnm_step_forward_cuda", [&] {
    cuda::StepForwardParams<cuda_t<scalar_t>> p;
    p.B = s.h.size(0);
    p.H = s.h.size(1);
    p.t = s.t;
    p.lengths = s.lengths.data_ptr<int64_t>();
    p.xw = ptr<scalar_t>(s.xw);
    p.xw_stride = s.xw.stride(0);
    p.rec = ptr<scalar_t>(s.rec);
    p.mc = ptr<scalar_t>(s.mc);
    p.h = ptr<scalar_t>(s.h);
    p.c = ptr<scalar_t>(s.c);
    p.gates = ptr<scalar_t>(s.gates);
    p.cells = ptr<scalar_t>(s.cells);
    p.out = ptr<scalar_t>(s.out);
    p.h_row = ptr<scalar_t>(s.h_row);
    C10_CUDA_CHECK(cuda::step_forward(p, c10::cuda::getCurrentCUDAStream()));
  });
}

void step_backward(const StepBackward& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.dh.scalar_type(), "nrnm_step_backward_cuda", [&] {
    cuda::StepBackwardParams<cuda_t<scalar_t>> p;
    p.B = s.dh.size(0);
    p.H = s.dh.size(1);
    p.t = s.t;
    p.lengths = s.lengths.data_ptr<int64_t>();
    p.gates = ptr<scalar_t>(s.gates);
    p.c_prev = ptr<scalar_t>(s.c_prev);
    p.cells = ptr<scalar_t>(s.cells);
    p.d_out = ptr<scalar_t>(s.d_out);
    p.d_h_row = ptr<scalar_t>(s.d_h_row);
    p.dh = ptr<scalar_t>(s.dh);
    p.dc = ptr<scalar_t>(s.dc);
    p.da = ptr<scalar_t>(s.da);
    p.da_stride = s.da.stride(0);
    p.dmc = ptr<scalar_t>(s.dmc);
    C10_CUDA_CHECK(cuda::step_backward(p, c10::cuda::getCurrentCUDAStream()));
  });
}

const LayerKernels kCudaKernels{step_forward,
                                step_backward,
                                nullptr,
                                nullptr,
                                aten_matmul,
                                transposed_view,
                                triton_attention_forward,
                                triton_attention_backward,
                                indexed::gather_block_rows,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr,
                                indexed::scatter_add_block_rows,
                                indexed::block_mean,
                                indexed::block_mean_backward,
                                false,
                                0};  // the caching allocator recycles memory: no slabs, either way

void check_cuda(const at::Tensor& x, bool triton_attention, int64_t batch_shards) {
  TORCH_CHECK(triton_attention, "nrnm_fast: on CUDA the memory update's attention runs in Triton: call the op "
              "with triton_attention=True");
  TORCH_CHECK(batch_shards == 1, "nrnm_fast: on CUDA the op runs the whole batch at once: call it with "
              "batch_shards=1, got ", batch_shards);
  TORCH_CHECK(x.is_cuda(), "nrnm_fast: the CUDA kernel got tensors on ", x.device());
}

LayerForwardResult layer_forward_cuda(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& h0,
                                      const at::Tensor& c0, const at::Tensor& memory0, const at::Tensor& window0,
                                      const at::Tensor& ewindow0, const at::Tensor& steps0,
                                      const std::vector<at::Tensor>& weights, int64_t block_size, int64_t stride,
                                      int64_t num_heads, bool triton_attention, bool for_backward,
                                      int64_t batch_shards) {
  check_cuda(x, triton_attention, batch_shards);
  const c10::cuda::CUDAGuard guard(x.device());
  return layer_forward_op(kCudaKernels, x, lengths, h0, c0, memory0, window0, ewindow0, steps0, weights,
                          block_size, stride, num_heads, for_backward, batch_shards);
}

LayerBackwardResult layer_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h,
                                        const at::Tensor& grad_c, const at::Tensor& grad_memory,
                                        const at::Tensor& grad_window, const at::Tensor& grad_ewindow,
                                        const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& h0,
                                        const at::Tensor& c0, const at::Tensor& steps0, const at::Tensor& h_line,
                                        const at::Tensor& e_line, const at::Tensor& cells, const at::Tensor& gates,
                                        const at::Tensor& r, const at::Tensor& kept,
                                        const at::Tensor& memories,
                                        const std::vector<at::Tensor>& weights,
                                        int64_t block_size, int64_t stride, int64_t num_heads,
                                        bool triton_attention, bool input_grad, int64_t batch_shards) {
  check_cuda(x, triton_attention, batch_shards);
  const c10::cuda::CUDAGuard guard(x.device());
  return layer_backward_op(kCudaKernels, grad_output, grad_h, grad_c, grad_memory, grad_window, grad_ewindow, x,
                           lengths, h0, c0, steps0, h_line, e_line, cells, gates, r, kept, memories, weights,
                           block_size, stride, num_heads, input_grad, batch_shards);
}

}  // namespace
}  // namespace nrnm

TORCH_LIBRARY_IMPL(nrnm_fast, CUDA, m) {
  m.impl("layer_forward", &nrnm::layer_forward_cuda);
  m.impl("layer_backward", &nrnm::layer_backward_cuda);
}
