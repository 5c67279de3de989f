#include "block_rows.h"

namespace nrnm {
namespace indexed {

at::Tensor gather_block_rows(const BlockAttention& a, const at::Tensor& line) {
  const int64_t H = line.size(2);
  return line.view({-1, H}).index_select(0, a.line_rows).view({-1, a.k, H});
}

void scatter_add_block_rows(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line) {
  const int64_t H = line.size(2);
  // The rows of one call are distinct, so index_add_ is deterministic even with atomics.
  line.view({-1, H}).index_add_(0, a.line_rows, (rows * a.valid_rows).view({-1, H}));
}

void block_mean(const BlockAttention& a, const at::Tensor& line, at::Tensor& mean) {
  const at::Tensor n_valid = a.n_valid_index.unsqueeze(1).to(line.scalar_type());
  mean = (gather_block_rows(a, line) * a.valid_rows).sum(1).div_(n_valid);
}

void block_mean_backward(const BlockAttention& a, const at::Tensor& d_mean, at::Tensor& d_line) {
  const at::Tensor n_valid = a.n_valid_index.unsqueeze(1).to(d_mean.scalar_type());
  scatter_add_block_rows(a, (d_mean / n_valid).unsqueeze(1).expand({-1, a.k, -1}), d_line);
}

}  // namespace indexed
}  // namespace nrnm
