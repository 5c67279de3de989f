#include "folded_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace nrnm {
namespace {

// The rows z_j of element i's block (N + 2k of them) in some tensors shaped as the block's
// sources: memory-shaped (u, N, H) and time-line-shaped (k + T, B, H); nullptr where masked.
template <typename T>
std::vector<T*> block_rows(const BlockAttention& a, int64_t i, int64_t N, int64_t H, int64_t B, T* memory, T* emb,
                           T* hid) {
  const int64_t k = a.k;
  std::vector<T*> rows(N + 2 * k, nullptr);
  for (int64_t n = 0; n < N; ++n) rows[n] = memory + (i * N + n) * H;
  for (int64_t r = k - a.n_valid[i]; r < k; ++r) {
    const int64_t line_row = ((a.t + 1 + r) * B + a.elems[i]) * H;
    rows[N + r] = emb + line_row;
    rows[N + k + r] = hid + line_row;
  }
  return rows;
}

template <typename T>
T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// y += alpha * x over n elements
template <typename T>
void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

// Elements per task: one element's block is nh * N * (N + 2k) row products of H; fewer than
// ~64k multiply-adds per task cost more in threading than they save.
int64_t element_grain(int64_t nh, int64_t N, int64_t J, int64_t H) {
  return std::max<int64_t>(1, 65536 / (nh * N * J * H));
}

template <typename T>
void forward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* q_keys, const T* memory,
                  const T* emb, const T* hid, T* mixed, T* probs) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, J = N + 2 * a.k;
  const T scale = T(1) / std::sqrt(T(H / nh));
  at::parallel_for(0, u, element_grain(nh, N, J, H), [&](int64_t begin, int64_t end) {
    std::vector<T> s(J);
    for (int64_t i = begin; i < end; ++i) {
      const std::vector<T*> z = block_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                           const_cast<T*>(hid));
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t h = 0; h < nh; ++h) {
          const int64_t query = (i * N + n) * nh + h;
          const T* q = q_keys + query * H;
          T top = -std::numeric_limits<T>::infinity();
          for (int64_t j = 0; j < J; ++j) {
            if (!z[j]) continue;
            s[j] = dot(q, z[j], H) * scale;
            top = std::max(top, s[j]);
          }
          T sum = 0;
          for (int64_t j = 0; j < J; ++j) {
            s[j] = z[j] ? std::exp(s[j] - top) : T(0);
            sum += s[j];
          }
          T* p = probs + ((i * nh + h) * N + n) * J;
          T* o = mixed + query * H;
          std::fill(o, o + H, T(0));
          for (int64_t j = 0; j < J; ++j) {
            p[j] = s[j] / sum;
            if (z[j]) axpy(p[j], z[j], o, H);
          }
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* q_keys, const T* memory,
                   const T* emb, const T* hid, const T* probs, const T* d_mixed, T* d_q_keys, T* d_memory, T* d_emb,
                   T* d_hid) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, J = N + 2 * a.k;
  const T scale = T(1) / std::sqrt(T(H / nh));
  // Tasks own whole elements: an element's block rows (its memory, its time-line rows) are its own.
  at::parallel_for(0, u, element_grain(nh, N, J, H), [&](int64_t begin, int64_t end) {
    std::vector<T> dp(J);
    for (int64_t i = begin; i < end; ++i) {
      const std::vector<T*> z = block_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                           const_cast<T*>(hid));
      const std::vector<T*> dz = block_rows(a, i, N, H, B, d_memory, d_emb, d_hid);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t h = 0; h < nh; ++h) {
          const int64_t query = (i * N + n) * nh + h;
          const T *q = q_keys + query * H, *g = d_mixed + query * H;
          const T* p = probs + ((i * nh + h) * N + n) * J;
          T p_dot_dp = 0;
          for (int64_t j = 0; j < J; ++j) {
            dp[j] = z[j] ? dot(g, z[j], H) : T(0);
            p_dot_dp += p[j] * dp[j];
          }
          T* dq = d_q_keys + query * H;
          std::fill(dq, dq + H, T(0));
          for (int64_t j = 0; j < J; ++j) {
            if (!z[j]) continue;
            const T d_score = p[j] * (dp[j] - p_dot_dp) * scale;
            axpy(d_score, z[j], dq, H);
            axpy(d_score, q, dz[j], H);
            axpy(p[j], g, dz[j], H);
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor folded_attention_forward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                                    const at::Tensor& emb, const at::Tensor& hid, at::Tensor& probs) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2), B = emb.size(1);
  at::Tensor mixed = at::empty_like(q_keys);
  probs = at::empty({u, a.num_heads, N, N + 2 * a.k}, q_keys.options());
  const at::Tensor mem = memory.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q_keys.scalar_type(), "nrnm_folded_attention_forward", [&] {
    forward_impl<scalar_t>(a, N, H, B, q_keys.data_ptr<scalar_t>(), mem.data_ptr<scalar_t>(),
                           emb.data_ptr<scalar_t>(), hid.data_ptr<scalar_t>(), mixed.data_ptr<scalar_t>(),
                           probs.data_ptr<scalar_t>());
  });
  return mixed;
}

at::Tensor folded_attention_backward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                                     const at::Tensor& emb, const at::Tensor& hid, const at::Tensor& probs,
                                     const at::Tensor& d_mixed, at::Tensor& d_memory, at::Tensor& d_emb,
                                     at::Tensor& d_hid) {
  const int64_t N = memory.size(1), H = memory.size(2), B = emb.size(1);
  TORCH_CHECK(d_memory.is_contiguous() && d_emb.is_contiguous() && d_hid.is_contiguous(),
              "nrnm_fast: the folded attention's backward adds into contiguous gradients only");
  at::Tensor d_q_keys = at::empty_like(q_keys);
  const at::Tensor mem = memory.contiguous(), g = d_mixed.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q_keys.scalar_type(), "nrnm_folded_attention_backward", [&] {
    backward_impl<scalar_t>(a, N, H, B, q_keys.data_ptr<scalar_t>(), mem.data_ptr<scalar_t>(),
                            emb.data_ptr<scalar_t>(), hid.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                            g.data_ptr<scalar_t>(), d_q_keys.data_ptr<scalar_t>(), d_memory.data_ptr<scalar_t>(),
                            d_emb.data_ptr<scalar_t>(), d_hid.data_ptr<scalar_t>());
  });
  return d_q_keys;
}

}  // namespace nrnm
