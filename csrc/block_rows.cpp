#include "block_rows.h"

namespace nrnm {
namespace indexed {
namespace {

// (u * k,) rows of a time line viewed as ((k + T) * B, H): (t + 1 + r) * B + elems[i].
at::Tensor row_index(const BlockAttention& a, int64_t B) {
  const at::Tensor r = at::arange(a.k, a.elems_index.options());
  return ((r + (a.t + 1)).mul_(B).unsqueeze(0) + a.elems_index.unsqueeze(1)).view({-1});
}

// (u, k, 1) 1 where block row r exists (r >= k - n_valid[i]), else 0, in `like`'s dtype.
at::Tensor valid_rows(const BlockAttention& a, const at::Tensor& like) {
  const at::Tensor r = at::arange(a.k, a.n_valid_index.options());
  return (r.unsqueeze(0) >= (a.k - a.n_valid_index).unsqueeze(1)).unsqueeze(-1).to(like.scalar_type());
}

}  // namespace

at::Tensor gather_block_rows(const BlockAttention& a, const at::Tensor& line) {
  const int64_t B = line.size(1), H = line.size(2);
  return line.view({-1, H}).index_select(0, row_index(a, B)).view({-1, a.k, H});
}

void scatter_add_block_rows(const BlockAttention& a, const at::Tensor& rows, at::Tensor& line) {
  const int64_t B = line.size(1), H = line.size(2);
  // The rows of one call are distinct, so index_add_ is deterministic even with atomics.
  line.view({-1, H}).index_add_(0, row_index(a, B), (rows * valid_rows(a, rows)).view({-1, H}));
}

at::Tensor block_mean(const BlockAttention& a, const at::Tensor& line) {
  const at::Tensor rows = gather_block_rows(a, line);
  return (rows * valid_rows(a, rows)).sum(1).div_(a.n_valid_index.unsqueeze(1).to(rows.scalar_type()));
}

}  // namespace indexed
}  // namespace nrnm
