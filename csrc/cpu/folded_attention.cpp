#include "folded_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../nrnm_cell.h"
#include "lanes.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// One element's block works on Q = N * nh queries (rows (slot, head) of q_keys, d_mixed) and
// its V valid block rows z, given as row pointers. The values of (row, query) pairs (scores,
// probabilities, their gradients) are (V, Q) with a stride ld between rows, so that the
// softmax's sums over the rows run along the queries' lanes. An element's block rows are B H
// apart in the time lines, a multiple of 4 KiB at the usual sizes, so they share L1 sets: the
// kernels read each of their vectors once per use, not once per query.

// out[v ld + q] = a_q . z_v for a (Q, H): QB queries against VB rows at a time, the QB VB sums
// in the lanes of as many vectors along H, added across their lanes at the end.
template <typename L, typename T, int QB, int VB>
NRNM_ALWAYS_INLINE void dot_block(int64_t H, const T* __restrict a, const T* const* z, T* __restrict out, int64_t ld) {
  using Vec = typename L::type;
  constexpr int64_t n = L::kCount;
  Vec acc[QB * VB];
  for (int j = 0; j < QB * VB; ++j) acc[j] = Vec{};
  int64_t d = 0;
  for (; d + n <= H; d += n) {
    Vec zv[VB];
    for (int v = 0; v < VB; ++v) zv[v] = L::at(z[v] + d);
    for (int q = 0; q < QB; ++q) {
      const Vec aq = L::at(a + q * H + d);
      for (int v = 0; v < VB; ++v) acc[q * VB + v] += aq * zv[v];
    }
  }
  T sums[QB * VB];
  lane_sums<L, QB * VB>(acc, sums);
  for (int q = 0; q < QB; ++q)
    for (int v = 0; v < VB; ++v) {
      T s = sums[q * VB + v];
      for (int64_t t = d; t < H; ++t) s += a[q * H + t] * z[v][t];
      out[v * ld + q] = s;
    }
}

// Blocks of four queries against four rows where the registers are 64 bytes (32 of them), else
// against two (AVX2 has 16).
template <typename L, typename T>
NRNM_ALWAYS_INLINE void row_dots(int64_t Q, int64_t H, int64_t V, const T* a, const T* const* z, T* out,
                                 int64_t ld) {
  constexpr int VB = sizeof(typename L::type) == 64 ? 4 : 2;
  int64_t q = 0;
  for (; q + 4 <= Q; q += 4) {
    int64_t v = 0;
    for (; v + VB <= V; v += VB) dot_block<L, T, 4, VB>(H, a + q * H, z + v, out + v * ld + q, ld);
    if (VB == 4 && v + 2 <= V) {
      dot_block<L, T, 4, 2>(H, a + q * H, z + v, out + v * ld + q, ld);
      v += 2;
    }
    if (v < V) dot_block<L, T, 4, 1>(H, a + q * H, z + v, out + v * ld + q, ld);
  }
  for (; q < Q; ++q) {
    int64_t v = 0;
    for (; v + 4 <= V; v += 4) dot_block<L, T, 1, 4>(H, a + q * H, z + v, out + v * ld + q, ld);
    for (; v < V; ++v) dot_block<L, T, 1, 1>(H, a + q * H, z + v, out + v * ld + q, ld);
  }
}

// out_j (H) = sum_i w[j wj + i wi] in_i (plus out_j itself where kAdd) for G outputs and R
// inputs, on the vector at d: G accumulators while each input's vector is read once.
template <typename L, int G, bool kAdd, typename T>
NRNM_ALWAYS_INLINE void mix_vector(int64_t d, int64_t R, const T* __restrict w, int64_t wj, int64_t wi,
                                   const T* const* in, T* const* out) {
  using Vec = typename L::type;
  Vec acc[G];
  for (int j = 0; j < G; ++j) acc[j] = kAdd ? Vec(L::at(out[j] + d)) : Vec{};
  for (int64_t i = 0; i < R; ++i) {
    const Vec x = L::at(in[i] + d);
    for (int j = 0; j < G; ++j) acc[j] += w[j * wj + i * wi] * x;
  }
  for (int j = 0; j < G; ++j) L::at(out[j] + d) = acc[j];
}

// out_j (H) = sum_i w[j wj + i wi] in_i (plus out_j itself where kAdd), j < J outputs, i < R
// inputs: per vector along H, outputs eight at a time (eight independent sums).
template <typename L, bool kAdd, typename T>
NRNM_ALWAYS_INLINE void mix_rows(int64_t H, int64_t J, int64_t R, const T* w, int64_t wj, int64_t wi,
                                 const T* const* in, T* const* out) {
  constexpr int64_t n = L::kCount;
  int64_t d = 0;
  for (; d + n <= H; d += n) {
    int64_t j = 0;
    for (; j + 8 <= J; j += 8) mix_vector<L, 8, kAdd>(d, R, w + j * wj, wj, wi, in, out + j);
    if (j + 4 <= J) {
      mix_vector<L, 4, kAdd>(d, R, w + j * wj, wj, wi, in, out + j);
      j += 4;
    }
    if (j + 2 <= J) {
      mix_vector<L, 2, kAdd>(d, R, w + j * wj, wj, wi, in, out + j);
      j += 2;
    }
    if (j < J) mix_vector<L, 1, kAdd>(d, R, w + j * wj, wj, wi, in, out + j);
  }
  for (int64_t j = 0; j < J; ++j)
    for (int64_t t = d; t < H; ++t) {
      T s = kAdd ? out[j][t] : T(0);
      for (int64_t i = 0; i < R; ++i) s += w[j * wj + i * wi] * in[i][t];
      out[j][t] = s;
    }
}

// Each query's softmax over its V scores s (V, Q), scaled, in place; top and sum (Q) are
// scratch. Each pass runs along the queries' lanes, and the exps over all V Q scores at once:
// with the queries' loop inside, as scalar code, its exps had taken most of the attention's time
// at H = 128. gate_exp is the gate loops' vectorizable exp; below -40 it returns exp(-40), which
// moves a probability by under 5e-18.
template <typename T>
NRNM_ALWAYS_INLINE void softmax_columns(int64_t Q, int64_t V, T scale, T* __restrict s, T* __restrict top,
                                        T* __restrict sum) {
#pragma omp simd
  for (int64_t q = 0; q < Q; ++q) {
    top[q] = s[q];
    sum[q] = 0;
  }
  for (int64_t v = 1; v < V; ++v) {
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) top[q] = std::max(top[q], s[v * Q + q]);
  }
  for (int64_t v = 0; v < V; ++v) {
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) s[v * Q + q] = (s[v * Q + q] - top[q]) * scale;
  }
#pragma omp simd
  for (int64_t i = 0; i < V * Q; ++i) s[i] = gate_exp(s[i]);
  for (int64_t v = 0; v < V; ++v) {
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) sum[q] += s[v * Q + q];
  }
#pragma omp simd
  for (int64_t q = 0; q < Q; ++q) sum[q] = T(1) / sum[q];
  for (int64_t v = 0; v < V; ++v) {
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) s[v * Q + q] *= sum[q];
  }
}

// q_keys (Q, H), rows z (V); writes p (V, Q) and mixed (Q, H). Scratch: out_rows (Q) and
// columns (2 Q).
template <typename L, typename T>
NRNM_ALWAYS_INLINE void attend_forward_impl(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys,
                                            const T* const* z, T* p, T* mixed, T** out_rows, T* columns) {
  row_dots<L>(Q, H, V, q_keys, z, p, Q);
  softmax_columns(Q, V, scale, p, columns, columns + Q);
  for (int64_t q = 0; q < Q; ++q) out_rows[q] = mixed + q * H;
  mix_rows<L, false>(H, Q, V, p, 1, Q, z, out_rows);
}

// Given d_mixed g (Q, H) and, in w (V, 2 Q), p in the columns Q..2Q: writes d_q_keys (Q, H)
// and adds each row's gradient to dz[v] (H); the columns 0..Q of w end up holding the scores'
// gradients ds. Scratch: p_dp (Q), rows (2 Q) and out_rows (Q).
template <typename L, typename T>
NRNM_ALWAYS_INLINE void attend_backward_impl(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys,
                                             const T* const* z, const T* g, T* __restrict w, T* d_q_keys,
                                             T* const* dz, T* __restrict p_dp, const T** rows, T** out_rows) {
  const int64_t ld = 2 * Q;
  row_dots<L>(Q, H, V, g, z, w, ld);  // dp
  for (int64_t q = 0; q < Q; ++q) p_dp[q] = 0;
  for (int64_t v = 0; v < V; ++v)
    for (int64_t q = 0; q < Q; ++q) p_dp[q] += w[v * ld + Q + q] * w[v * ld + q];
  for (int64_t v = 0; v < V; ++v)
    for (int64_t q = 0; q < Q; ++q) w[v * ld + q] = w[v * ld + Q + q] * (w[v * ld + q] - p_dp[q]) * scale;
  for (int64_t q = 0; q < Q; ++q) out_rows[q] = d_q_keys + q * H;
  mix_rows<L, false>(H, Q, V, w, 1, ld, z, out_rows);
  // row v's score with query q is q_keys_q . z_v, its weight in the mix p[v][q]
  for (int64_t q = 0; q < Q; ++q) {
    rows[q] = q_keys + q * H;
    rows[Q + q] = g + q * H;
  }
  mix_rows<L, true>(H, V, 2 * Q, w, ld, 1, rows, dz);
}

// The kernels on 32-byte vectors in the clones (plain functions: GCC clones no templates), on
// 64-byte ones where the CPU has AVX-512.
NRNM_CPU_CLONES void attend_forward_narrow(int64_t Q, int64_t H, int64_t V, float scale, const float* q_keys,
                                           const float* const* z, float* p, float* mixed, float** out_rows,
                                           float* columns) {
  attend_forward_impl<Lanes<float, 32>>(Q, H, V, scale, q_keys, z, p, mixed, out_rows, columns);
}

NRNM_CPU_CLONES void attend_backward_narrow(int64_t Q, int64_t H, int64_t V, float scale, const float* q_keys,
                                            const float* const* z, const float* g, float* w, float* d_q_keys,
                                            float* const* dz, float* p_dp, const float** rows, float** out_rows) {
  attend_backward_impl<Lanes<float, 32>>(Q, H, V, scale, q_keys, z, g, w, d_q_keys, dz, p_dp, rows, out_rows);
}

NRNM_CPU_CLONES void attend_forward_narrow(int64_t Q, int64_t H, int64_t V, double scale, const double* q_keys,
                                           const double* const* z, double* p, double* mixed, double** out_rows,
                                           double* columns) {
  attend_forward_impl<Lanes<double, 32>>(Q, H, V, scale, q_keys, z, p, mixed, out_rows, columns);
}

NRNM_CPU_CLONES void attend_backward_narrow(int64_t Q, int64_t H, int64_t V, double scale, const double* q_keys,
                                            const double* const* z, const double* g, double* w, double* d_q_keys,
                                            double* const* dz, double* p_dp, const double** rows, double** out_rows) {
  attend_backward_impl<Lanes<double, 32>>(Q, H, V, scale, q_keys, z, g, w, d_q_keys, dz, p_dp, rows, out_rows);
}

#ifdef NRNM_CPU_AVX512
template <typename T>
NRNM_CPU_AVX512 void attend_forward_wide(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys, const T* const* z,
                                         T* p, T* mixed, T** out_rows, T* columns) {
  attend_forward_impl<Lanes<T, 64>>(Q, H, V, scale, q_keys, z, p, mixed, out_rows, columns);
}

template <typename T>
NRNM_CPU_AVX512 void attend_backward_wide(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys,
                                          const T* const* z, const T* g, T* w, T* d_q_keys, T* const* dz, T* p_dp,
                                          const T** rows, T** out_rows) {
  attend_backward_impl<Lanes<T, 64>>(Q, H, V, scale, q_keys, z, g, w, d_q_keys, dz, p_dp, rows, out_rows);
}
#endif

template <typename T>
void attend_forward(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys, const T* const* z, T* p, T* mixed,
                    T** out_rows, T* columns) {
#ifdef NRNM_CPU_AVX512
  if (avx512_kernels_enabled()) return attend_forward_wide(Q, H, V, scale, q_keys, z, p, mixed, out_rows, columns);
#endif
  attend_forward_narrow(Q, H, V, scale, q_keys, z, p, mixed, out_rows, columns);
}

template <typename T>
void attend_backward(int64_t Q, int64_t H, int64_t V, T scale, const T* q_keys, const T* const* z, const T* g,
                     T* w, T* d_q_keys, T* const* dz, T* p_dp, const T** rows, T** out_rows) {
#ifdef NRNM_CPU_AVX512
  if (avx512_kernels_enabled())
    return attend_backward_wide(Q, H, V, scale, q_keys, z, g, w, d_q_keys, dz, p_dp, rows, out_rows);
#endif
  attend_backward_narrow(Q, H, V, scale, q_keys, z, g, w, d_q_keys, dz, p_dp, rows, out_rows);
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
    std::vector<T> p(J * Q), columns(2 * Q);
    std::vector<T*> out_rows(Q);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t V = valid_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                   const_cast<T*>(hid), z.data(), cols.data());
      attend_forward(Q, H, V, scale, q_keys + i * Q * H, z.data(), p.data(), mixed + i * Q * H, out_rows.data(),
                     columns.data());
      for (int64_t q = 0; q < Q; ++q) {
        T* row = probs_row(probs, i, q, N, nh, J);
        std::fill(row, row + J, T(0));
        for (int64_t v = 0; v < V; ++v) row[cols[v]] = p[v * Q + q];
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
    std::vector<T> w(J * 2 * Q), p_dp(Q);
    std::vector<const T*> rows(2 * Q);
    std::vector<T*> out_rows(Q);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t V = valid_rows(a, i, N, H, B, const_cast<T*>(memory), const_cast<T*>(emb),
                                   const_cast<T*>(hid), z.data(), cols.data());
      valid_rows(a, i, N, H, B, d_memory, d_emb, d_hid, dz.data(), cols.data());
      for (int64_t q = 0; q < Q; ++q) {
        const T* row = probs_row(probs, i, q, N, nh, J);
        for (int64_t v = 0; v < V; ++v) w[v * 2 * Q + Q + q] = row[cols[v]];
      }
      attend_backward(Q, H, V, scale, q_keys + i * Q * H, z.data(), d_mixed + i * Q * H, w.data(),
                      d_q_keys + i * Q * H, dz.data(), p_dp.data(), rows.data(), out_rows.data());
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
