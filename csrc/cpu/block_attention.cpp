#include "block_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

namespace nrnm {
namespace {

// Where key / value j of one (element, head) lives: a memory row of qkv, or a time-line row.
template <typename T>
struct BlockRows {
  std::vector<T*> keys, values;  // nullptr where masked

  // base_mem: qkv-shaped (u, N, 3H); base_emb / base_hid: (k + T, B, 2H) time lines, or
  // (u, k, 2H) per-block rows when `per_block`.
  BlockRows(const BlockAttention& a, int64_t i, int64_t h, int64_t N, int64_t H, int64_t B, T* base_mem,
            T* base_emb, T* base_hid, bool per_block = false)
      : keys(N + 2 * a.k, nullptr), values(N + 2 * a.k, nullptr) {
    const int64_t dh = H / a.num_heads, k = a.k, b = a.elems[i];
    for (int64_t j = 0; j < N; ++j) {
      keys[j] = base_mem + (i * N + j) * 3 * H + H + h * dh;
      values[j] = keys[j] + H;
    }
    for (int64_t r = k - a.n_valid[i]; r < k; ++r) {
      const int64_t row = (per_block ? i * k + r : (a.t + 1 + r) * B + b) * 2 * H + h * dh;
      keys[N + r] = base_emb + row;
      values[N + r] = base_emb + row + H;
      keys[N + k + r] = base_hid + row;
      values[N + k + r] = base_hid + row + H;
    }
  }
};

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

// One (element, head) pair per task; pairs are cheap, so only many of them are split over threads.
constexpr int64_t kPairGrain = 16;

template <typename T>
void forward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* qkv, const T* kv_emb,
                  const T* kv_hid, T* out, T* probs) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, dh = H / nh, J = N + 2 * a.k;
  const T scale = T(1) / std::sqrt(T(dh));
  at::parallel_for(0, u * nh, kPairGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> s(J);
    for (int64_t ih = begin; ih < end; ++ih) {
      const int64_t i = ih / nh, h = ih % nh;
      const BlockRows<T> rows(a, i, h, N, H, B, const_cast<T*>(qkv), const_cast<T*>(kv_emb),
                              const_cast<T*>(kv_hid));
      for (int64_t n = 0; n < N; ++n) {
        const T* q = qkv + (i * N + n) * 3 * H + h * dh;
        T top = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < J; ++j) {
          if (!rows.keys[j]) continue;
          s[j] = dot(q, rows.keys[j], dh) * scale;
          top = std::max(top, s[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j < J; ++j) {
          s[j] = rows.keys[j] ? std::exp(s[j] - top) : T(0);
          sum += s[j];
        }
        T* p = probs + ((i * nh + h) * N + n) * J;
        T* o = out + (i * N + n) * H + h * dh;
        std::fill(o, o + dh, T(0));
        for (int64_t j = 0; j < J; ++j) {
          p[j] = s[j] / sum;
          if (rows.keys[j]) axpy(p[j], rows.values[j], o, dh);
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* qkv, const T* kv_emb,
                   const T* kv_hid, const T* probs, const T* d_out, T* d_qkv, T* d_kv_emb, T* d_kv_hid) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, dh = H / nh, J = N + 2 * a.k;
  const T scale = T(1) / std::sqrt(T(dh));
  at::parallel_for(0, u * nh, kPairGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> ds(J);
    for (int64_t ih = begin; ih < end; ++ih) {
      const int64_t i = ih / nh, h = ih % nh;
      const BlockRows<T> rows(a, i, h, N, H, B, const_cast<T*>(qkv), const_cast<T*>(kv_emb),
                              const_cast<T*>(kv_hid));
      const BlockRows<T> grads(a, i, h, N, H, B, d_qkv, d_kv_emb, d_kv_hid, /*per_block=*/true);
      for (int64_t n = 0; n < N; ++n) {
        const T* q = qkv + (i * N + n) * 3 * H + h * dh;
        const T* g = d_out + (i * N + n) * H + h * dh;
        const T* p = probs + ((i * nh + h) * N + n) * J;
        T p_dot_dp = 0;
        for (int64_t j = 0; j < J; ++j) {
          ds[j] = rows.keys[j] ? dot(g, rows.values[j], dh) : T(0);  // d p_j
          p_dot_dp += p[j] * ds[j];
        }
        T* dq = d_qkv + (i * N + n) * 3 * H + h * dh;
        for (int64_t j = 0; j < J; ++j) {
          if (!rows.keys[j]) continue;
          const T d_score = p[j] * (ds[j] - p_dot_dp) * scale;
          axpy(d_score, rows.keys[j], dq, dh);
          axpy(d_score, q, grads.keys[j], dh);
          axpy(p[j], g, grads.values[j], dh);
        }
      }
    }
  });
}

}  // namespace

at::Tensor block_attention_forward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                   const at::Tensor& kv_hid, at::Tensor& probs) {
  const int64_t u = qkv.size(0), N = qkv.size(1), H = qkv.size(2) / 3, B = kv_emb.size(1);
  at::Tensor out = at::empty({u, N, H}, qkv.options());
  probs = at::empty({u, a.num_heads, N, N + 2 * a.k}, qkv.options());
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "nrnm_block_attention_forward", [&] {
    forward_impl<scalar_t>(a, N, H, B, qkv.data_ptr<scalar_t>(), kv_emb.data_ptr<scalar_t>(),
                           kv_hid.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor block_attention_backward(const BlockAttention& a, const at::Tensor& qkv, const at::Tensor& kv_emb,
                                    const at::Tensor& kv_hid, const at::Tensor& probs, const at::Tensor& d_out,
                                    at::Tensor& d_kv_emb, at::Tensor& d_kv_hid) {
  const int64_t u = qkv.size(0), N = qkv.size(1), H = qkv.size(2) / 3, B = kv_emb.size(1);
  at::Tensor d_qkv = at::zeros_like(qkv);
  d_kv_emb = at::zeros({u, a.k, 2 * H}, qkv.options());
  d_kv_hid = at::zeros({u, a.k, 2 * H}, qkv.options());
  const at::Tensor g = d_out.contiguous();
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "nrnm_block_attention_backward", [&] {
    backward_impl<scalar_t>(a, N, H, B, qkv.data_ptr<scalar_t>(), kv_emb.data_ptr<scalar_t>(),
                            kv_hid.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                            d_qkv.data_ptr<scalar_t>(), d_kv_emb.data_ptr<scalar_t>(),
                            d_kv_hid.data_ptr<scalar_t>());
  });
  return d_qkv;
}

}  // namespace nrnm
