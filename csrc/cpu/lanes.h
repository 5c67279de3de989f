// Lanes<T, Bytes>: Bytes of T as one GCC vector (by default 32: an AVX2 register, two SSE ones
// on the baseline clone; 64: an AVX-512 register), for loops GCC leaves scalar when written on
// arrays.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "target_clones.h"

namespace nrnm {

template <typename T, int Bytes = 32>
struct Lanes {
  typedef T type __attribute__((vector_size(Bytes)));
  // The same at any address of a T, read or written in place.
  typedef T unaligned __attribute__((vector_size(Bytes), aligned(sizeof(T)), may_alias));
  static constexpr int64_t kCount = Bytes / sizeof(T);
  static const unaligned& at(const T* p) { return *reinterpret_cast<const unaligned*>(p); }
  static unaligned& at(T* p) { return *reinterpret_cast<unaligned*>(p); }
  // Lane indices for __builtin_shuffle.
  typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type index;
  typedef index indices __attribute__((vector_size(Bytes)));
};

namespace lanes_detail {

// x and y hold sums in segments of S lanes, one sum a segment; out gets them in segments of
// S / 2 lanes (each the sum of a segment's halves), x's first, then y's. (Vectors by
// reference: GCC warns of the ABI of vectors by value wherever the target lacks them.)
template <typename L, int S, std::size_t... I>
NRNM_ALWAYS_INLINE void fold(const typename L::type& x, const typename L::type& y, typename L::type& out,
                             std::index_sequence<I...>) {
  constexpr int64_t n = L::kCount, h = S / 2;
  using Idx = typename L::indices;
  // lane o: from x (o < n / 2) or y, segment (o mod n / 2) / h, first half of it
  constexpr auto first = [](int64_t o) { return (o < n / 2 ? 0 : n) + (o % (n / 2)) / h * S + o % h; };
  const Idx lo = {static_cast<typename L::index>(first(I))...};
  const Idx hi = {static_cast<typename L::index>(first(I) + h)...};
  out = __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}

template <typename L, int K, int S, typename T>
NRNM_ALWAYS_INLINE void reduce(typename L::type* v, T* out) {
  constexpr int64_t n = L::kCount;
  if constexpr (K == 1 || S == 1) {
    for (int k = 0; k < K; ++k)
      for (int64_t seg = 0; seg < n / S; ++seg) {
        T s = v[k][seg * S];
        for (int l = 1; l < S; ++l) s += v[k][seg * S + l];
        out[k * (n / S) + seg] = s;
      }
  } else {
    for (int k = 0; k < K / 2; ++k) fold<L, S>(v[2 * k], v[2 * k + 1], v[k], std::make_index_sequence<n>{});
    reduce<L, K / 2, S / 2>(v, out);
  }
}

}  // namespace lanes_detail

// out[k] = the sum of v[k]'s lanes, k < K (a power of 2); v is overwritten. Sums halves of
// vectors in pairs (a shuffle tree), not lane after lane: a vector's lanes summed in order are
// a chain of n dependent adds.
template <typename L, int K, typename T>
NRNM_ALWAYS_INLINE void lane_sums(typename L::type* v, T* out) {
  static_assert(K > 0 && (K & (K - 1)) == 0, "lane_sums takes a power of 2 of vectors");
  lanes_detail::reduce<L, K, static_cast<int>(L::kCount)>(v, out);
}

}  // namespace nrnm
