#include "weight_grad_rows.h"

#include <ATen/Dispatch.h>
#include <ATen/record_function.h>

#include <algorithm>

namespace nrnm {
namespace {

// Rows enough for a GEMM near peak; a buffer of at most kBufferBytes unless one add needs more.
// The bytes reach 256 rows up to H = 512 for the widest rows (the per-head keys' q | d_q_keys,
// 5H wide): at 1 MB those flushed every 64 rows (T128-B64-H512, an update's u N), at 65 GFLOP/s
// against 120 at 256 rows.
constexpr int64_t kTargetRows = 256;
constexpr int64_t kBufferBytes = int64_t{4} << 20;

// src (r, c) into rows [at, at + r) of the contiguous buffer (capacity, c). On the CPU a copy
// per row: an update adds a few rows, and a view and copy_ of them cost ~3 us (TensorIterator).
void copy_rows(const at::Tensor& src, const at::Tensor& buffer, int64_t at) {
  const int64_t r = src.size(0), c = src.size(1);
  if (!src.device().is_cpu() || src.stride(1) != 1 || src.scalar_type() != buffer.scalar_type()) {
    buffer.narrow(0, at, r).copy_(src);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "nrnm_weight_grad_rows", [&] {
    const scalar_t* from = src.data_ptr<scalar_t>();
    scalar_t* to = buffer.data_ptr<scalar_t>() + at * c;
    for (int64_t i = 0; i < r; ++i) std::copy(from + i * src.stride(0), from + i * src.stride(0) + c, to + i * c);
  });
}

}  // namespace

WeightGradRows::WeightGradRows(at::Tensor grad, at::Tensor bias, int64_t heads, WeightGradMatmul matmul)
    : grad_(std::move(grad)), bias_(std::move(bias)), heads_(heads), matmul_(matmul) {}

void WeightGradRows::add(const at::Tensor& d, const at::Tensor& x) {
  const int64_t r = d.size(0);
  if (!d_rows_.defined()) {
    const int64_t row_bytes = (d.size(1) + x.size(1)) * d.element_size();
    const int64_t capacity = std::max(r, std::min(kTargetRows, kBufferBytes / row_bytes));
    d_rows_ = at::empty({capacity, d.size(1)}, d.options());
    x_rows_ = at::empty({capacity, x.size(1)}, x.options());
  }
  const int64_t capacity = d_rows_.size(0);
  if (used_ + r > capacity) flush();
  if (r > capacity) return accumulate(d, x);
  copy_rows(d, d_rows_, used_);
  copy_rows(x, x_rows_, used_);
  used_ += r;
}

void WeightGradRows::flush() {
  if (used_ == 0) return;
  accumulate(d_rows_.narrow(0, 0, used_), x_rows_.narrow(0, 0, used_));
  used_ = 0;
}

void WeightGradRows::accumulate(const at::Tensor& d, const at::Tensor& x) {
  RECORD_USER_SCOPE("nrnm::weight_gradients");
  if (bias_.defined()) bias_.add_(d.sum(0));
  const int64_t a = d.size(1) / heads_, b = x.size(1) / heads_;
  for (int64_t h = 0; h < heads_; ++h)
    add_weight_grad(matmul_, grad_.narrow(0, h * a, a), d.narrow(1, h * a, a), x.narrow(1, h * b, b));
}

}  // namespace nrnm
