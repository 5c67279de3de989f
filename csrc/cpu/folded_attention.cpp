#include "folded_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lanes.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// One element's block works on Q = N * nh queries (rows (slot, head) of q_keys, d_mixed) and
// its V valid block rows z, given as row pointers; the probabilities p are (Q, V) here.

// out (Q, V): out[q][v] = a_q . z_v, for a (Q, H). Four queries share each read of a row, and
// their four sums are independent chains.
template <typename T>
NRNM_ALWAYS_INLINE void row_dots(int64_t Q, int64_t H, int64_t V, const T* __restrict a, const T* const* z,
                                 T* __restrict out) {
  int64_t q = 0;
  for (; q + 4 <= Q; q += 4) {
    const T* __restrict a0 = a + q * H;
    const T* __restrict a1 = a0 + H;
    const T* __restrict a2 = a1 + H;
    const T* __restrict a3 = a2 + H;
    for (int64_t v = 0; v < V; ++v) {
      const T* __restrict zv = z[v];
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t d = 0; d < H; ++d) {
        const T x = zv[d];
        s0 += a0[d] * x;
        s1 += a1[d] * x;
        s2 += a2[d] * x;
        s3 += a3[d] * x;
      }
      out[q * V + v] = s0;
      out[(q + 1) * V + v] = s1;
      out[(q + 2) * V + v] = s2;
      out[(q + 3) * V + v] = s3;
    }
  }
  for (; q < Q; ++q) {
    const T* __restrict aq = a + q * H;
    for (int64_t v = 0; v < V; ++v) {
      const T* __restrict zv = z[v];
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < H; ++d) s += aq[d] * zv[d];
      out[q * V + v] = s;
    }
  }
}

// out (H) = sum_v w[v * w_stride] rows[v] (plus out itself where kAdd), over V rows: four
// registers of out stay in place while every row's slice is added to them. (GCC left the
// same loops on a T[32] accumulator scalar.)
template <bool kAdd, typename T>
NRNM_ALWAYS_INLINE void combine_rows(int64_t H, int64_t V, const T* __restrict w, int64_t w_stride,
                                     const T* const* rows, T* __restrict out) {
  using L = Lanes<T>;
  using Vec = typename L::type;
  constexpr int64_t n = L::kCount;
  int64_t d0 = 0;
  for (; d0 + 4 * n <= H; d0 += 4 * n) {
    Vec a0{}, a1{}, a2{}, a3{};
    if (kAdd) {
      a0 = L::at(out + d0);
      a1 = L::at(out + d0 + n);
      a2 = L::at(out + d0 + 2 * n);
      a3 = L::at(out + d0 + 3 * n);
    }
    for (int64_t v = 0; v < V; ++v) {
      const Vec wv = Vec{} + w[v * w_stride];
      const T* r = rows[v] + d0;
      a0 += wv * L::at(r);
      a1 += wv * L::at(r + n);
      a2 += wv * L::at(r + 2 * n);
      a3 += wv * L::at(r + 3 * n);
    }
    L::at(out + d0) = a0;
    L::at(out + d0 + n) = a1;
    L::at(out + d0 + 2 * n) = a2;
    L::at(out + d0 + 3 * n) = a3;
  }
  if (d0 == H) return;
  if (!kAdd) std::fill(out + d0, out + H, T(0));
  for (int64_t v = 0; v < V; ++v) {
    const T wv = w[v * w_stride];
    const T* __restrict r = rows[v];
#pragma omp simd
    for (int64_t d = d0; d < H; ++d) out[d] += wv * r[d];
  }
}

// Scores (Q, V) in p, then each query's softmax over its V rows, in place.
template <typename T>
NRNM_ALWAYS_INLINE void softmax_rows(int64_t Q, int64_t V, T scale, T* __restrict p) {
  for (int64_t q = 0; q < Q; ++q) {
    T* __restrict row = p + q * V;
    T top = row[0];
    for (int64_t v = 1; v < V; ++v) top = std::max(top, row[v]);
    T sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      row[v] = std::exp((row[v] - top) * scale);
      sum += row[v];
    }
    const T inv = T(1) / sum;
    for (int64_t v = 0; v < V; ++v) row[v] *= inv;
  }
}

// q_keys (Q, H), rows z (V); writes p (Q, V) and mixed (Q, H).
template <typename T>
NRNM_ALWAYS_INLINE void attend_forward_impl(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys,
                                            const T* const* z, T* p, T* mixed) {
  row_dots(Q, H, V, q_keys, z, p);
  softmax_rows(Q, V, scale, p);
  for (int64_t q = 0; q < Q; ++q) combine_rows<false>(H, V, p + q * V, 1, z, mixed + q * H);
}

// Given d_mixed g (Q, H) and p (Q, V): writes d_q_keys (Q, H), adds each row's gradient to
// dz[v] (H); ds (Q, V) is scratch, q_rows and g_rows (Q) get the rows' pointers of q_keys and g.
template <typename T>
NRNM_ALWAYS_INLINE void attend_backward_impl(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys,
                                             const T* const* z, const T* __restrict p, const T* g,
                                             T* __restrict ds, T* d_q_keys, T* const* dz, const T** q_rows,
                                             const T** g_rows) {
  for (int64_t q = 0; q < Q; ++q) {
    q_rows[q] = q_keys + q * H;
    g_rows[q] = g + q * H;
  }
  row_dots(Q, H, V, g, z, ds);  // dp
  for (int64_t q = 0; q < Q; ++q) {
    const T* __restrict pq = p + q * V;
    T* __restrict dq = ds + q * V;
    T p_dot_dp = 0;
    for (int64_t v = 0; v < V; ++v) p_dot_dp += pq[v] * dq[v];
    for (int64_t v = 0; v < V; ++v) dq[v] = pq[v] * (dq[v] - p_dot_dp) * scale;
  }
  for (int64_t q = 0; q < Q; ++q) combine_rows<false>(H, V, ds + q * V, 1, z, d_q_keys + q * H);
  // row v's score with query q is q_keys_q . z_v, its weight in the mix p[q][v]
  for (int64_t v = 0; v < V; ++v) {
    combine_rows<true>(H, Q, ds + v, V, q_rows, dz[v]);
    combine_rows<true>(H, Q, p + v, V, g_rows, dz[v]);
  }
}

NRNM_CPU_CLONES void attend_forward(int64_t Q, int64_t H, int64_t V, float scale, const float* q_keys,
                                    const float* const* z, float* p, float* mixed) {
  attend_forward_impl(Q, H, V, scale, q_keys, z, p, mixed);
}

void attend_forward(int64_t Q, int64_t H, int64_t V, double scale, const double* q_keys, const double* const* z,
                    double* p, double* mixed) {
  attend_forward_impl(Q, H, V, scale, q_keys, z, p, mixed);
}

NRNM_CPU_CLONES void attend_backward(int64_t Q, int64_t H, int64_t V, float scale, const float* q_keys,
                                     const float* const* z, const float* p, const float* g, float* ds,
                                     float* d_q_keys, float* const* dz, const float** q_rows, const float** g_rows) {
  attend_backward_impl(Q, H, V, scale, q_keys, z, p, g, ds, d_q_keys, dz, q_rows, g_rows);
}

void attend_backward(int64_t Q, int64_t H, int64_t V, double scale, const double* q_keys, const double* const* z,
                     const double* p, const double* g, double* ds, double* d_q_keys, double* const* dz,
                     const double** q_rows, const double** g_rows) {
  attend_backward_impl(Q, H, V, scale, q_keys, z, p, g, ds, d_q_keys, dz, q_rows, g_rows);
}

// Element i's valid block rows (the N memory rows, then its valid embedding and hidden rows)
// in tensors shaped as the block's sources: memory-shaped (u, N, H) and time-line-shaped
// (k + T, B, H). Writes their pointers to rows and their block positions j to cols; returns V.
template <typename T>
int64_t valid_rows(const BlockAttention& a, int64_t i, int64_t N, int64_t H, int64_t B, T* memory, T* emb, T* hid,
                   T** rows, int64_t* cols) {
  const int64_t k = a.k, first = k - a.n_valid[i];
  int64_t V = 0;
  for (int64_t n = 0; n < N; ++n, ++V) {
    rows[V] = memory + (i * N + n) * H;
    cols[V] = n;
  }
  for (int64_t line = 0; line < 2; ++line) {
    T* base = line == 0 ? emb : hid;
    for (int64_t r = first; r < k; ++r, ++V) {
      rows[V] = base + ((a.t + 1 + r) * B + a.elems[i]) * H;
      cols[V] = N + line * k + r;
    }
  }
  return V;
}

// Elements per task: one element's block is about 2 nh N (N + 2k) H multiply-adds; fewer than
// ~64k per task cost more in threading than they save.
int64_t element_grain(int64_t nh, int64_t N, int64_t J, int64_t H) {
  return std::max<int64_t>(1, 65536 / (2 * nh * N * J * H));
}

// probs (u, nh, N, J) holds query (n, h) of element i at ((i nh + h) N + n) J; the kernels'
// (Q, V) rows are q = n nh + h over the valid columns.
template <typename T>
T* probs_row(T* probs, int64_t i, int64_t q, int64_t N, int64_t nh, int64_t J) {
  return probs + ((i * nh + q % nh) * N + q / nh) * J;
}

template <typename T>
void forward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* q_keys, const T* memory,
                  const T* emb, const T* hid, T* mixed, T* probs) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, J = N + 2 * a.k, Q = N * nh;
  const T scale = T(1) / std::sqrt(T(H / nh));
  at::parallel_for(0, u, element_grain(nh, N, J, H), [&](int64_t begin, int64_t end) {
    std::vector<T*> z(J);
    std::vector<int64_t> cols(J);
    std::vector<T> p(Q * J);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t V = valid_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                   const_cast<T*>(hid), z.data(), cols.data());
      attend_forward(Q, H, V, scale, q_keys + i * Q * H, z.data(), p.data(), mixed + i * Q * H);
      for (int64_t q = 0; q < Q; ++q) {
        T* row = probs_row(probs, i, q, N, nh, J);
        std::fill(row, row + J, T(0));
        for (int64_t v = 0; v < V; ++v) row[cols[v]] = p[q * V + v];
      }
    }
  });
}

template <typename T>
void backward_impl(const BlockAttention& a, int64_t N, int64_t H, int64_t B, const T* q_keys, const T* memory,
                   const T* emb, const T* hid, const T* probs, const T* d_mixed, T* d_q_keys, T* d_memory, T* d_emb,
                   T* d_hid) {
  const int64_t u = static_cast<int64_t>(a.elems.size()), nh = a.num_heads, J = N + 2 * a.k, Q = N * nh;
  const T scale = T(1) / std::sqrt(T(H / nh));
  // Tasks own whole elements: an element's block rows (its memory, its time-line rows) are its own.
  at::parallel_for(0, u, element_grain(nh, N, J, H), [&](int64_t begin, int64_t end) {
    std::vector<T*> z(J), dz(J);
    std::vector<int64_t> cols(J);
    std::vector<T> p(Q * J), ds(Q * J);
    std::vector<const T*> q_rows(Q), g_rows(Q);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t V = valid_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                   const_cast<T*>(hid), z.data(), cols.data());
      valid_rows(a, i, N, H, B, d_memory, d_emb, d_hid, dz.data(), cols.data());
      for (int64_t q = 0; q < Q; ++q) {
        const T* row = probs_row(probs, i, q, N, nh, J);
        for (int64_t v = 0; v < V; ++v) p[q * V + v] = row[cols[v]];
      }
      attend_backward(Q, H, V, scale, q_keys + i * Q * H, z.data(), p.data(), d_mixed + i * Q * H, ds.data(),
                      d_q_keys + i * Q * H, dz.data(), q_rows.data(), g_rows.data());
    }
  });
}

}  // namespace

void folded_attention_forward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                              const at::Tensor& emb, const at::Tensor& hid, at::Tensor& mixed, at::Tensor& probs) {
  const int64_t u = memory.size(0), N = memory.size(1), H = memory.size(2), B = emb.size(1);
  TORCH_CHECK(q_keys.is_contiguous(), "nrnm_fast: folded_attention_forward takes contiguous q_keys");
  out_tensor(mixed, q_keys.sizes(), q_keys.options());
  out_tensor(probs, {u, a.num_heads, N, N + 2 * a.k}, q_keys.options());
  const at::Tensor mem = memory.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q_keys.scalar_type(), "nrnm_folded_attention_forward", [&] {
    forward_impl<scalar_t>(a, N, H, B, q_keys.data_ptr<scalar_t>(), mem.data_ptr<scalar_t>(),
                           emb.data_ptr<scalar_t>(), hid.data_ptr<scalar_t>(), mixed.data_ptr<scalar_t>(),
                           probs.data_ptr<scalar_t>());
  });
}

void folded_attention_backward(const BlockAttention& a, const at::Tensor& q_keys, const at::Tensor& memory,
                               const at::Tensor& emb, const at::Tensor& hid, const at::Tensor& probs,
                               const at::Tensor& d_mixed, at::Tensor& d_q_keys, at::Tensor& d_memory,
                               at::Tensor& d_emb, at::Tensor& d_hid) {
  const int64_t N = memory.size(1), H = memory.size(2), B = emb.size(1);
  TORCH_CHECK(d_memory.is_contiguous() && d_emb.is_contiguous() && d_hid.is_contiguous(),
              "nrnm_fast: the folded attention's backward adds into contiguous gradients only");
  TORCH_CHECK(q_keys.is_contiguous(), "nrnm_fast: folded_attention_backward takes contiguous q_keys");
  out_tensor(d_q_keys, q_keys.sizes(), q_keys.options());
  const at::Tensor mem = memory.contiguous(), g = d_mixed.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q_keys.scalar_type(), "nrnm_folded_attention_backward", [&] {
    backward_impl<scalar_t>(a, N, H, B, q_keys.data_ptr<scalar_t>(), mem.data_ptr<scalar_t>(),
                            emb.data_ptr<scalar_t>(), hid.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                            g.data_ptr<scalar_t>(), d_q_keys.data_ptr<scalar_t>(), d_memory.data_ptr<scalar_t>(),
                            d_emb.data_ptr<scalar_t>(), d_hid.data_ptr<scalar_t>());
  });
}

}  // namespace nrnm
