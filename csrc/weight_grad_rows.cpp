#include "weight_grad_rows.h"

#include <algorithm>

namespace nrnm {
namespace {

// Rows enough for a GEMM near peak; a buffer of at most kBufferBytes unless one add needs more.
constexpr int64_t kTargetRows = 256;
constexpr int64_t kBufferBytes = int64_t{1} << 20;

}  // namespace

WeightGradRows::WeightGradRows(at::Tensor grad, at::Tensor bias, int64_t heads)
    : grad_(std::move(grad)), bias_(std::move(bias)), heads_(heads) {}

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
  d_rows_.narrow(0, used_, r).copy_(d);
  x_rows_.narrow(0, used_, r).copy_(x);
  used_ += r;
}

void WeightGradRows::flush() {
  if (used_ == 0) return;
  accumulate(d_rows_.narrow(0, 0, used_), x_rows_.narrow(0, 0, used_));
  used_ = 0;
}

void WeightGradRows::accumulate(const at::Tensor& d, const at::Tensor& x) {
  if (bias_.defined()) bias_.add_(d.sum(0));
  const int64_t a = d.size(1) / heads_, b = x.size(1) / heads_;
  for (int64_t h = 0; h < heads_; ++h)
    grad_.narrow(0, h * a, a).addmm_(d.narrow(1, h * a, a).t(), x.narrow(1, h * b, b));
}

}  // namespace nrnm
