#include "triton_attention.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

namespace nrnm {
namespace {

using ForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                                       int64_t);
using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
    int64_t, const at::Tensor&, const at::Tensor&);

// The op's handle; its kernels must have been registered from Python by then.
c10::OperatorHandle find_op(const char* name) {
  const auto op = c10::Dispatcher::singleton().findOp({name, ""});
  TORCH_CHECK(op.has_value(), "nrnm_fast: ", name, " is not registered (load the nrnm_fast._C extension)");
  return *op;
}

void check_kernel(const c10::OperatorHandle& op, const at::Tensor& like) {
  const c10::DispatchKey key = like.is_cuda() ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
  TORCH_CHECK(op.hasKernelForDispatchKey(key), "nrnm_fast: ",
              op.schema().name(), " has no kernel for ", like.device(),
              " tensors: `import nrnm_fast.triton_attention` registers the Triton kernels (on CPU tensors they "
              "need TRITON_INTERPRET=1)");
}

}  // namespace

at::Tensor triton_attention_forward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                    const at::Tensor& kv_hid, at::Tensor& saved) {
  static const auto op = find_op("nrnm_fast::block_attention_forward");
  check_kernel(op, qkv);
  at::Tensor out;
  std::tie(out, saved) = op.typed<ForwardSig>().call(qkv, kv_emb, kv_hid, a.elems_index, a.n_valid_index, a.t, a.k,
                                                     a.num_heads);
  return out;
}

at::Tensor triton_attention_backward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                     const at::Tensor& kv_hid, const at::Tensor& saved, const at::Tensor& d_out,
                                     at::Tensor& d_kv_emb, at::Tensor& d_kv_hid) {
  static const auto op = find_op("nrnm_fast::block_attention_backward");
  check_kernel(op, qkv);
  const at::Tensor d_out_rows = d_out.contiguous().view({qkv.size(0), qkv.size(1), -1});  // (u, N, H)
  at::Tensor d_qkv;
  std::tie(d_qkv, d_kv_emb, d_kv_hid) = op.typed<BackwardSig>().call(
      qkv, kv_emb, kv_hid, a.elems_index, a.n_valid_index, a.t, a.k, a.num_heads, saved, d_out_rows);
  return d_qkv;
}

}  // namespace nrnm

TORCH_LIBRARY_FRAGMENT(nrnm_fast, m) {
  m.def(
      "block_attention_forward(Tensor qkv, Tensor kv_emb, Tensor kv_hid, Tensor elems, Tensor n_valid, int t, "
      "int block_size, int num_heads) -> (Tensor out, Tensor probs)");
  m.def(
      "block_attention_backward(Tensor qkv, Tensor kv_emb, Tensor kv_hid, Tensor elems, Tensor n_valid, int t, "
      "int block_size, int num_heads, Tensor probs, Tensor d_out) -> (Tensor d_qkv, Tensor d_kv_emb, "
      "Tensor d_kv_hid)");
}
